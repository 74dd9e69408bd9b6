//! Access intervals against the point-in-time answer they summarise: on random
//! histories (grants that expire between entries, revocations, membership changes,
//! group deletions, containers starting and stopping), a span contains a position
//! exactly when `check --at` that position meets the level.

use proptest::prelude::*;

use super::event::*;
use super::intervals::{Level, Report, Span};
use super::tests::{op, open, spec, to_cmd, Op};
use super::*;

#[derive(Debug, Clone)]
enum Step {
    Op(Op),
    /// A grant to a user that expires this many tenths of a millisecond from now:
    /// between later entries of the same history.
    Expiring(u8, GrantSpec, u8),
    /// Container `c` of user `u`: action, socket mount, privileged.
    Container(u8, u8, Lifecycle, bool, bool),
}

fn step() -> impl Strategy<Value = Step> {
    let action = prop_oneof![
        Just(Lifecycle::Create),
        Just(Lifecycle::Start),
        Just(Lifecycle::Die),
        Just(Lifecycle::Destroy)
    ];
    prop_oneof![
        6 => op().prop_map(Step::Op),
        2 => (0u8..6, spec(), 1u8..40).prop_map(|(u, s, e)| Step::Expiring(u, s, e)),
        2 => (0u8..4, 0u8..6, action, any::<bool>(), any::<bool>())
            .prop_map(|(c, u, a, s, p)| Step::Container(c, u, a, s, p)),
    ]
}

fn level() -> impl Strategy<Value = Level> {
    prop_oneof![
        Just(Level::default()),
        Just(Level {
            socket: SocketAccess::Limited,
            privileged: false
        }),
        Just(Level {
            socket: SocketAccess::Raw,
            privileged: false
        }),
        Just(Level {
            socket: SocketAccess::None,
            privileged: true
        }),
        Just(Level {
            socket: SocketAccess::Raw,
            privileged: true
        }),
    ]
}

fn command(s: &Step) -> Command {
    match s {
        Step::Op(o) => to_cmd(o),
        Step::Expiring(u, spec, e) => Command::IssueGrant {
            subject: Subject::User(format!("u{u}")),
            spec: spec.clone(),
            expires_at_ns: Some(now_ns() + i64::from(*e) * 100_000),
            reason: "expiring".into(),
        },
        Step::Container(c, u, action, socket, privileged) => {
            Command::RecordContainer(ContainerObserved {
                image: "busybox".into(),
                action: action.as_str().into(),
                daemon_time_ns: now_ns(),
                socket_mounts: if *socket {
                    vec![SocketMount {
                        source: "/var/run/docker.sock".into(),
                        destination: "/var/run/docker.sock".into(),
                        rw: true,
                    }]
                } else {
                    vec![]
                },
                privileged: *privileged,
                running: None,
                ..ContainerObserved::created(
                    &format!("c{c}"),
                    &format!("jupyter-u{u}"),
                    Some(&format!("u{u}")),
                )
            })
        }
    }
}

fn span_at_seq<'a>(r: &'a Report, user: &str, s: Seq) -> Option<&'a Span> {
    r.spans
        .iter()
        .find(|sp| sp.user == user && sp.from_seq <= s && sp.to.is_none_or(|(to, _)| s < to))
}

fn span_at_time<'a>(r: &'a Report, user: &str, t: UnixNanos) -> Option<&'a Span> {
    r.spans
        .iter()
        .find(|sp| sp.user == user && sp.from_ns <= t && sp.to.is_none_or(|(_, to)| t < to))
}

/// A user's spans follow each other without overlapping, each starting before it ends.
fn well_formed(r: &Report) -> Result<(), TestCaseError> {
    for w in r.spans.windows(2) {
        if w[0].user == w[1].user {
            let (to_seq, to_ns) = w[0].to.ok_or_else(|| {
                TestCaseError::fail(format!("an open span is followed by another: {w:?}"))
            })?;
            prop_assert!(to_seq <= w[1].from_seq && to_ns <= w[1].from_ns, "{w:?}");
        }
    }
    for sp in &r.spans {
        if let Some((to_seq, to_ns)) = sp.to {
            prop_assert!(sp.from_seq <= to_seq && sp.from_ns <= to_ns, "{sp:?}");
        }
    }
    Ok(())
}

const USERS: [&str; 6] = ["u0", "u1", "u2", "u3", "u4", "u5"];

proptest! {
    #![proptest_config(ProptestConfig::with_cases(32))]
    #[test]
    fn intervals_agree_with_check_at_every_seq_and_instant(
        steps in proptest::collection::vec(step(), 1..50),
        level in level(),
        window in (0.0f64..1.0, 0.0f64..1.0),
        only in proptest::option::of(0usize..6),
    ) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async {
            let dir = tempfile::tempdir().unwrap();
            let l = open(dir.path(), 8);
            for s in &steps {
                let _ = l.submit("p", None, command(s)).await;
            }
            let head = l.snapshot();
            let user = only.map(|i| USERS[i].to_string());
            let users: Vec<&str> = match only {
                Some(i) => vec![USERS[i]],
                None => USERS.to_vec(),
            };
            let (lo, hi) = if window.0 <= window.1 { window } else { (window.1, window.0) };
            let a = (lo * head.seq as f64) as Seq;
            let b = (hi * head.seq as f64).ceil() as Seq;

            // In seqs.
            let r = l
                .access_intervals(Some(At::Seq(a)), Some(At::Seq(b)), user.clone(), level)
                .await
                .unwrap();
            well_formed(&r)?;
            prop_assert!(r.spans.iter().all(|sp| users.contains(&sp.user.as_str())));
            prop_assert_eq!((r.from_seq, r.to_seq), (a, b));
            for s in a..=b {
                let (st, _) = l.state_at(At::Seq(s)).await.unwrap();
                for u in &users {
                    let acc = l.check_access_at(u, At::Seq(s)).await.unwrap();
                    let meets = level.met_by(acc.socket, acc.privileged);
                    let span = span_at_seq(&r, u, s);
                    prop_assert_eq!(meets, span.is_some(), "{} at seq {}: {:?} {:?}", u, s, acc, r);
                    let Some(span) = span else { continue };
                    // Every grant that serves the level here is named by the span.
                    for c in acc.provenance().filter(|c| level.served_by(&c.grant.spec)) {
                        let via = c.via_group.map(str::to_string);
                        prop_assert!(
                            span.grants.iter().any(|g| g.grant.id == c.grant.id && g.via_group == via),
                            "{} at seq {}: grant {} via {:?} missing from {:?}", u, s, c.grant.id, via, span
                        );
                    }
                    // Every container holding the level here is named by the span.
                    for c in st.containers().filter(|c| {
                        c.user.as_deref() == Some(*u) && c.running && level.held_by(c, None)
                    }) {
                        prop_assert!(
                            span.containers.iter().any(|h| h.id == c.id),
                            "{} at seq {}: container {} missing from {:?}", u, s, c.id, span
                        );
                    }
                }
            }
            // Nothing is named that never held: each listed grant served the level at
            // some seq of the span, or at an instant before an expiry ended it.
            for sp in &r.spans {
                for g in &sp.grants {
                    prop_assert!(level.served_by(&g.grant.spec), "{:?}", sp);
                }
            }

            // In time: every entry's instant, the instant before it, and each expiry
            // and the instant before it, within a window of times.
            let mut times: Vec<UnixNanos> = Vec::new();
            for s in 1..=head.seq {
                let e = l.entry(s).unwrap().unwrap();
                times.extend([e.time_ns - 1, e.time_ns, e.time_ns + 1]);
            }
            for g in head.grants() {
                if let Some(e) = g.expires_at_ns {
                    times.extend([e - 1, e, e + 1]);
                }
            }
            times.sort_unstable();
            times.dedup();
            if times.is_empty() {
                // Every step was refused: nothing happened, in seqs or in time.
                l.shutdown().await;
                return Ok(());
            }
            let ta = times[(lo * (times.len() - 1) as f64) as usize];
            let tb = times[(hi * (times.len() - 1) as f64) as usize];
            let r = l
                .access_intervals(Some(At::Time(ta)), Some(At::Time(tb)), user.clone(), level)
                .await
                .unwrap();
            well_formed(&r)?;
            for &t in times.iter().filter(|t| (ta..=tb).contains(*t)) {
                for u in &users {
                    let acc = l.check_access_at(u, At::Time(t)).await.unwrap();
                    let meets = level.met_by(acc.socket, acc.privileged);
                    prop_assert_eq!(
                        meets,
                        span_at_time(&r, u, t).is_some(),
                        "{} at {}: {:?} {:?}", u, t, acc, r
                    );
                }
            }
            l.shutdown().await;
            Ok(())
        })?;
    }
}

/// The window is checked: it cannot end before it starts, nor reach past the head,
/// and the user must be a valid name.
#[tokio::test]
async fn a_window_that_ends_before_it_starts_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let l = open(dir.path(), 100);
    for s in 0..3u8 {
        let _ = l.submit("p", None, to_cmd(&Op::Create(s))).await.unwrap();
    }
    let lvl = Level::default();
    let e = l
        .access_intervals(Some(At::Seq(3)), Some(At::Seq(1)), None, lvl)
        .await
        .unwrap_err();
    assert!(matches!(e, Error::ReversedWindow { .. }), "{e}");
    let e = l
        .access_intervals(None, Some(At::Seq(99)), None, lvl)
        .await
        .unwrap_err();
    assert!(matches!(e, Error::BeyondHead { .. }), "{e}");
    let e = l
        .access_intervals(None, None, Some("bad\nname".into()), lvl)
        .await
        .unwrap_err();
    assert!(matches!(e, Error::InvalidText { .. }), "{e}");
    l.shutdown().await;
}
