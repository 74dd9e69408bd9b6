//! Fuzzing the decoders of what is stored: entry bodies (whole, and the header the
//! audit stream reads) and state checkpoints, from arbitrary bytes and from mutations
//! of real ones (the committed corpus in `fuzz/corpus/`, plus seeds made here). The
//! property: an answer or an error, never a panic. A bounded run (proptest cases)
//! goes with every `cargo test`; `PROPTEST_CASES` runs longer.
//!
//! `PRIVLEDGER_FUZZ_WRITE_CORPUS=1 cargo test --lib decode_fuzz` rewrites the corpus
//! from the seeds.

use std::path::PathBuf;

use proptest::prelude::*;

use super::entry::{Entry, EntryRecord};
use super::event::*;
use super::log::RawEntry;
use super::state::State;
use super::*;

fn corpus_dir(kind: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/corpus")
        .join(kind)
}

/// The committed corpus of `kind`, each file one input.
pub(crate) fn corpus(kind: &str) -> Vec<Vec<u8>> {
    let mut files: Vec<_> = std::fs::read_dir(corpus_dir(kind))
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    files.sort();
    files.iter().filter_map(|p| std::fs::read(p).ok()).collect()
}

/// Writes `inputs` as the corpus of `kind` when asked to.
pub(crate) fn maybe_write_corpus(kind: &str, inputs: &[Vec<u8>]) {
    if std::env::var_os("PRIVLEDGER_FUZZ_WRITE_CORPUS").is_none() {
        return;
    }
    let dir = corpus_dir(kind);
    std::fs::create_dir_all(&dir).unwrap();
    for (i, b) in inputs.iter().enumerate() {
        std::fs::write(dir.join(format!("seed-{i:03}")), b).unwrap();
    }
}

/// Entry bodies and a checkpoint of a ledger that has seen one of most things.
fn seeds() -> (Vec<Vec<u8>>, Vec<u8>) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let store = std::sync::Arc::new(crate::store::SledStore::open(dir.path()).unwrap());
        let l = Ledger::open(store, LedgerConfig::default()).unwrap();
        let spec = |socket| GrantSpec {
            socket,
            socket_mode: SocketMode::Rw,
            privileged: socket == SocketAccess::Raw,
            limits: Limits {
                max_containers: (socket == SocketAccess::Limited).then_some(3),
                ..Limits::default()
            },
        };
        let cmds = vec![
            Command::ServerStarted {
                version: "1".into(),
            },
            Command::CreateGroup { group: "g".into() },
            Command::AddMember {
                group: "g".into(),
                user: "jörg".into(),
                reason: None,
            },
            Command::IssueGrant {
                subject: Subject::Group("g".into()),
                spec: spec(SocketAccess::Raw),
                expires_at_ns: Some(now_ns() + 3_600_000_000_000),
                reason: "line one\nline two".into(),
            },
            Command::IssueGrant {
                subject: Subject::User("alice".into()),
                spec: spec(SocketAccess::Limited),
                expires_at_ns: None,
                reason: "r".into(),
            },
            Command::CreateToken {
                name: "hub".into(),
                role: Role::Spawner,
                secret_sha256: "ab".repeat(32),
                expires_at_ns: Some(now_ns() + 3_600_000_000_000),
            },
            Command::AuthorizeSpawn {
                user: "jörg".into(),
                server_name: "gpu".into(),
                image: "img:1".into(),
            },
            Command::RevokeGrant {
                grant_id: 5,
                reason: "done".into(),
            },
            Command::RemoveMember {
                group: "g".into(),
                user: "jörg".into(),
                reason: Some("test".into()),
            },
            Command::RevokeToken { name: "hub".into() },
        ];
        for (i, c) in cmds.into_iter().enumerate() {
            l.submit("admin", Some(format!("r{i}")), c).await.unwrap();
        }
        let head = l.snapshot().seq;
        let bodies = (1..=head)
            .map(|s| l.entry(s).unwrap().unwrap().body.to_vec())
            .collect();
        let cp = l.snapshot().to_checkpoint().unwrap();
        l.shutdown().await;
        (bodies, cp)
    })
}

/// `seed` with the bytes at `flips` replaced and, with `cut`, truncated.
pub(crate) fn mutate(seed: &[u8], flips: &[(usize, u8)], cut: Option<usize>) -> Vec<u8> {
    let mut b = seed.to_vec();
    for &(at, byte) in flips {
        if !b.is_empty() {
            let i = at % b.len();
            b[i] = byte;
        }
    }
    if let Some(c) = cut {
        b.truncate(c % (b.len() + 1));
    }
    b
}

fn decode_entry(body: Vec<u8>) {
    let raw = |body: &[u8]| RawEntry {
        seq: 7,
        hash: [1; 32],
        body: bytes::Bytes::copy_from_slice(body),
    };
    // Each may fail; none may panic.
    let _ = Entry::decode(raw(&body));
    let _ = EntryRecord::decode(raw(&body), &StreamFilter::default());
    let by_kind =
        StreamFilter::parse(&["grant_issued".into(), "stale_grant".into()], None).unwrap();
    let _ = EntryRecord::decode(raw(&body), &by_kind);
    let by_subject = StreamFilter::parse(&[], Some("jörg".into())).unwrap();
    let _ = EntryRecord::decode(raw(&body), &by_subject);
}

fn inputs(kind: &str, fresh: Vec<Vec<u8>>) -> Vec<Vec<u8>> {
    maybe_write_corpus(kind, &fresh);
    let mut all = corpus(kind);
    all.extend(fresh);
    all
}

#[test]
fn the_corpus_decodes_as_it_did_when_it_was_written() {
    // Every committed seed is a real stored body or checkpoint: it must still decode
    // (a format change that breaks them must be deliberate).
    for body in corpus("entries") {
        let raw = RawEntry {
            seq: 1,
            hash: [0; 32],
            body: body.into(),
        };
        Entry::decode(raw).unwrap();
    }
    for cp in corpus("checkpoints") {
        State::from_checkpoint(&cp[..]).unwrap();
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2048, ..ProptestConfig::default() })]

    #[test]
    fn entry_decoding_never_panics_on_arbitrary_bytes(b in proptest::collection::vec(any::<u8>(), 0..512)) {
        decode_entry(b);
    }

    #[test]
    fn entry_decoding_never_panics_on_mutated_entries(
        pick in any::<proptest::sample::Index>(),
        flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 0..8),
        cut in proptest::option::of(any::<usize>()),
    ) {
        thread_local!(static SEEDS: Vec<Vec<u8>> = inputs("entries", seeds().0));
        SEEDS.with(|s| decode_entry(mutate(pick.get::<Vec<u8>>(s), &flips, cut)));
    }

    #[test]
    fn checkpoint_decoding_never_panics(
        flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 0..8),
        cut in proptest::option::of(any::<usize>()),
        junk in proptest::collection::vec(any::<u8>(), 0..64),
        pick in any::<proptest::sample::Index>(),
    ) {
        thread_local!(static SEEDS: Vec<Vec<u8>> = inputs("checkpoints", vec![seeds().1]));
        SEEDS.with(|s| {
            let _ = State::from_checkpoint(&mutate(pick.get::<Vec<u8>>(s), &flips, cut)[..]);
        });
        let _ = State::from_checkpoint(&junk[..]);
    }
}
