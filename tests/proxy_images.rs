//! Issue 24: the limited socket builds, pulls, pushes, saves, copies, exports and
//! commits the user's own, through the real docker CLI, the real daemon and a real
//! registry on loopback; and the same attacks that work on the raw socket (the
//! test's own check that they are attacks) change nothing through it: no host
//! network for a build, no fetch from the host, no other user's image or container,
//! no shared tag re-pointed.

mod common;

use std::path::Path;
use std::process::Stdio;

use common::proxy_rig::*;
use common::registry::{Bait, Registry};
use common::*;
use privledger::pb;

/// `docker ARGS` on `sock` with `env`: (success, stdout, stderr).
async fn docker_on(sock: &Path, args: &[&str], env: &[(&str, &str)]) -> (bool, String, String) {
    let mut cmd = tokio::process::Command::new("docker");
    cmd.args(args)
        .env("DOCKER_HOST", format!("unix://{}", sock.display()))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().await.unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).trim().to_string(),
        String::from_utf8_lossy(&out.stderr).trim().to_string(),
    )
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'.' | b'_' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

const CLASSIC: &[(&str, &str)] = &[("DOCKER_BUILDKIT", "0")];

async fn works(sock: &Path, args: &[&str]) -> String {
    let (ok, out, err) = docker_on(sock, args, CLASSIC).await;
    assert!(ok, "docker {args:?} must work: {err}");
    out
}

async fn refused_saying(sock: &Path, args: &[&str], why: &str) {
    let (ok, out, err) = docker_on(sock, args, CLASSIC).await;
    assert!(!ok, "docker {args:?} must be refused; it printed {out}");
    assert!(
        err.contains(why),
        "docker {args:?}: {err:?} should say {why:?}"
    );
}

/// A build context directory holding `dockerfile` (and a file to copy).
fn context(dockerfile: &str) -> tempfile::TempDir {
    let d = tempfile::tempdir().unwrap();
    std::fs::write(d.path().join("Dockerfile"), dockerfile).unwrap();
    std::fs::write(d.path().join("hello.txt"), "hello from the context\n").unwrap();
    d
}

/// Images the test made on the raw socket, and every image of its registry: removed
/// at the end (children before their parents).
struct Debris(Vec<String>, String);

impl Drop for Debris {
    fn drop(&mut self) {
        let listed = std::process::Command::new("docker")
            .args([
                "images",
                "--digests",
                "--format",
                "{{.Repository}} {{.Tag}} {{.Digest}}",
            ])
            .output();
        if let Ok(o) = listed {
            // By name, never by id: a tag of the shared test image has its id.
            for line in String::from_utf8_lossy(&o.stdout).lines() {
                let f: Vec<&str> = line.split(' ').collect();
                if let [repo, tag, digest] = f[..] {
                    if repo.starts_with(&self.1) {
                        self.0.push(if tag == "<none>" {
                            format!("{repo}@{digest}")
                        } else {
                            format!("{repo}:{tag}")
                        });
                    }
                }
            }
        }
        for i in self.0.iter().rev() {
            let _ = std::process::Command::new("docker")
                .args(["rmi", "-f", i])
                .output();
        }
    }
}

fn image_id(name: &str) -> String {
    docker(&["image", "inspect", "-f", "{{.Id}}", name])
}

/// The host's own socket: the attacks must work there, or they test nothing.
const HOST: &str = "/var/run/docker.sock";

fn grant(build: bool, pull: &[String], push: &[String]) -> pb::Limits {
    pb::Limits {
        allow_build: Some(build),
        pull_allow: pull.to_vec(),
        push_allow: push.to_vec(),
        ..limits(6, 4, 2)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_limited_user_builds_pulls_copies_and_exports_their_own_and_nothing_else() {
    let Some(mut r) = Rig::start().await else {
        return;
    };
    let Some(reg) = Registry::start().await else {
        return;
    };
    let mut debris = Debris(Vec::new(), format!("{}/", reg.addr));
    let host = Path::new(HOST);
    let (alice, bob) = (r.user("alice"), r.user("bob"));
    let rg = reg.addr.clone();
    r.grant_limited(
        &alice,
        grant(
            true,
            &[
                format!("{rg}/lib/**"),
                format!("{rg}/hub/**"),
                format!("{rg}/{alice}/**"),
            ],
            &[format!("{rg}/**")],
        ),
    )
    .await;
    r.grant_limited(&bob, grant(true, &[], &[])).await;
    let a = r.spawn(&alice).await;
    let b = r.spawn(&bob).await;
    let tag = r.tag.clone();

    // The registry holds a library image and the hub's image; the hub's tag here
    // was made here (not pulled), as an operator's local build is.
    let lib = format!("{rg}/lib/busybox:{tag}");
    docker(&["tag", TEST_IMAGE, &lib]);
    docker(&["push", &lib]);
    docker(&["rmi", &lib]);
    debris.0.push(lib.clone());
    let shared = format!("{rg}/hub/notebook:{tag}");
    let other = context("FROM privledger-test-busybox:latest\nRUN echo other > /other\n");
    docker(&[
        "build",
        "-q",
        "-t",
        &shared,
        &other.path().display().to_string(),
    ]);
    docker(&["push", &shared]);
    let shared_local = context("FROM privledger-test-busybox:latest\nRUN echo hub > /hub\n");
    docker(&[
        "build",
        "-q",
        "-t",
        &shared,
        &shared_local.path().display().to_string(),
    ]);
    let shared_id = image_id(&shared);
    debris.0.push(shared_id.clone());

    // 1. Build and run: the classic builder by DOCKER_BUILDKIT=0 and by the CLI's
    // own choice (no buildx here; the socket says the classic builder is the one).
    let app = format!("{alice}/app:1");
    let ctx = context(
        "FROM privledger-test-busybox:latest\nCOPY hello.txt /hello.txt\nRUN echo built > /built\nLABEL purpose=test\n",
    );
    let cdir = ctx.path().display().to_string();
    works(&a, &["build", "-t", &app, &cdir]).await;
    let (ok, _, err) = docker_on(&a, &["build", "-t", &format!("{alice}/app:2"), &cdir], &[]).await;
    assert!(ok, "a build with the CLI's default builder: {err}");
    let out = works(&a, &["run", "--rm", &app, "cat", "/hello.txt", "/built"]).await;
    assert_eq!(out, "hello from the context\nbuilt");
    let labels = docker(&["image", "inspect", "-f", "{{json .Config.Labels}}", &app]);
    assert!(
        labels.contains(&format!("\"privledger.owner\":\"{alice}\"")),
        "{labels}"
    );
    let app_id = image_id(&app);

    // 2. A build's refusals, each checked against the raw socket first.
    let bait_ctx = context("FROM privledger-test-busybox:latest\n");
    let tarball = {
        let out = std::process::Command::new("tar")
            .args([
                "-c",
                "-C",
                &bait_ctx.path().display().to_string(),
                "Dockerfile",
            ])
            .output()
            .unwrap();
        out.stdout
    };
    let bait = Bait::start(tarball, "application/x-tar").await;
    let fetch = context(&format!(
        "FROM privledger-test-busybox:latest\nADD http://{}/payload /payload\n",
        bait.addr
    ));
    let fdir = fetch.path().display().to_string();
    let hostnet = ["build", "--network", "host", "-q", &cdir];
    let cgroup = [
        "build",
        "--cgroup-parent",
        "/privledger-escape",
        "-q",
        &cdir,
    ];
    for (args, why) in [
        (&hostnet[..], "networkmode"),
        (&["build", "-q", &fdir][..], "ADD http"),
        (&cgroup[..], "cgroupparent"),
    ] {
        let before = bait.hits();
        refused_saying(&a, args, why).await;
        assert_eq!(
            bait.hits(),
            before,
            "docker {args:?}: nothing reached the host's service"
        );
        if why != "cgroupparent" {
            let (ok, made, err) = docker_on(host, args, CLASSIC).await;
            assert!(ok, "the raw socket builds {args:?}: {err}");
            debris.0.push(made);
        }
    }
    // A context the daemon fetches itself (the CLI downloads a URL context on its own
    // side, so this is the API's `remote`).
    let remote = format!(
        "/build?q=1&remote={}",
        urlencode(&format!("http://{}/ctx.tar", bait.addr))
    );
    let before = bait.hits();
    let (status, body) = raw(&a, "POST", &remote, None).await;
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("query remote"), "{body}");
    assert_eq!(bait.hits(), before);
    let (status, body) = raw(host, "POST", &remote, None).await;
    assert_eq!(
        status, 200,
        "the raw socket fetches a remote context: {body}"
    );
    assert!(bait.hits() >= 2, "the raw socket fetched ADD and remote");
    let unlisted = context(&format!("FROM {rg}/elsewhere/x:{tag}\n"));
    refused_saying(
        &a,
        &["build", "-q", &unlisted.path().display().to_string()],
        "would pull",
    )
    .await;
    refused_saying(
        &b,
        &["build", "-q", "-t", &format!("{alice}/x"), &cdir],
        "not yours to tag",
    )
    .await;
    let bk = docker_on(&a, &["build", "-q", &cdir], &[("DOCKER_BUILDKIT", "1")]).await;
    assert!(!bk.0, "BuildKit is not served");
    for path in ["/build?version=2", "/session", "/grpc"] {
        let (status, body) = raw(&a, "POST", path, None).await;
        assert_eq!(status, 403, "{path}: {body}");
        assert!(body.contains("classic builder"), "{path}: {body}");
    }
    // --pull pulls every base afresh: one off the pull list is refused even when here.
    refused_saying(&a, &["build", "-q", "--pull", &cdir], "would pull").await;

    // 3. The shared tag is not re-pointed: not by a build, a tag, a pull or a commit;
    // on the raw socket each of these would.
    refused_saying(
        &a,
        &["build", "-q", "-t", &shared, &cdir],
        "not yours to tag",
    )
    .await;
    refused_saying(&a, &["tag", &app, &shared], "not yours to tag").await;
    refused_saying(&a, &["pull", &shared], "was not pulled from its registry").await;
    assert_eq!(
        image_id(&shared),
        shared_id,
        "the hub's tag still names its image"
    );
    let raw_shared = format!("{rg}/hub/raw:{tag}");
    docker(&["tag", &shared, &raw_shared]);
    let (ok, _, err) = docker_on(host, &["tag", &app, &raw_shared], &[]).await;
    assert!(
        ok && image_id(&raw_shared) == app_id,
        "the raw socket re-points a tag: {err}"
    );
    docker(&["rmi", &raw_shared]);

    // 4. Pull inside and outside the list; push onto the user's own namespace only.
    works(&a, &["pull", &lib]).await;
    refused_saying(
        &a,
        &["pull", &format!("{rg}/elsewhere/x:{tag}")],
        "pull list",
    )
    .await;
    refused_saying(&b, &["pull", &lib], "allows no pulls").await;
    let pushed = format!("{rg}/{alice}/app:1");
    works(&a, &["tag", &app, &pushed]).await;
    works(&a, &["push", &pushed]).await;
    refused_saying(&a, &["push", &lib], "not yours to push").await;
    works(&a, &["rmi", &pushed]).await;
    works(&a, &["pull", &pushed]).await;
    assert_eq!(image_id(&pushed), app_id, "pushed and pulled back");

    // 5. Save one's own and the pull list's; another user's image is neither saved,
    // tagged, nor removed (by name or by id).
    let work = tempfile::tempdir().unwrap();
    let saved = work.path().join("app.tar");
    works(&a, &["save", "-o", &saved.display().to_string(), &app]).await;
    assert!(std::fs::metadata(&saved).unwrap().len() > 1000);
    let secret = format!("{bob}/secret:1");
    let (ok, _, err) = docker_on(&b, &["build", "-q", "-t", &secret, &cdir], CLASSIC).await;
    assert!(ok, "{err}");
    let secret_id = image_id(&secret);
    let other_tar = work.path().join("secret.tar").display().to_string();
    refused_saying(&a, &["save", "-o", &other_tar, &secret], "neither yours").await;
    refused_saying(
        &a,
        &["tag", &secret, &format!("{alice}/stolen")],
        "neither yours",
    )
    .await;
    refused_saying(&a, &["rmi", &secret], "not yours to remove").await;
    refused_saying(&a, &["rmi", "-f", &secret_id], "not yours to remove").await;
    assert_eq!(image_id(&secret), secret_id);
    // Nor run, built from, or used as a cache.
    refused_saying(
        &a,
        &["run", "--rm", &secret, "true"],
        "another user's image",
    )
    .await;
    let from_secret = context(&format!("FROM {secret}\n"));
    let fsdir = from_secret.path().display().to_string();
    refused_saying(&a, &["build", "-q", &fsdir], "another user's image").await;
    refused_saying(
        &a,
        &["build", "-q", "--cache-from", &secret, &cdir],
        "another user's image",
    )
    .await;
    let (ok, made, err) = docker_on(host, &["build", "-q", &fsdir], CLASSIC).await;
    assert!(ok, "the raw socket builds from anyone's image: {err}");
    debris.0.push(made);

    // 6. Copy in and out, export and commit, on one's own container only.
    let c1 = format!("cp-{tag}");
    works(&a, &["run", "-d", "--name", &c1, &app, "sleep", "600"]).await;
    let file = work.path().join("in.txt");
    std::fs::write(&file, "copied in\n").unwrap();
    works(
        &a,
        &["cp", &file.display().to_string(), &format!("{c1}:/in.txt")],
    )
    .await;
    let back = work.path().join("back.txt");
    works(
        &a,
        &["cp", &format!("{c1}:/in.txt"), &back.display().to_string()],
    )
    .await;
    assert_eq!(std::fs::read_to_string(&back).unwrap(), "copied in\n");
    let exported = work.path().join("fs.tar");
    works(&a, &["export", "-o", &exported.display().to_string(), &c1]).await;
    assert!(std::fs::metadata(&exported).unwrap().len() > 100_000);
    let snap = format!("{alice}/snap:1");
    works(&a, &["commit", "--change", "ENV SNAP=1", &c1, &snap]).await;
    let out = works(
        &a,
        &["run", "--rm", &snap, "sh", "-c", "cat /in.txt; echo $SNAP"],
    )
    .await;
    assert_eq!(out, "copied in\n1");
    refused_saying(&a, &["commit", &c1, &shared], "not yours to tag").await;
    refused_saying(
        &a,
        &["commit", "--change", "ONBUILD RUN id", &c1, &snap],
        "ONBUILD",
    )
    .await;
    // A commit's config is a create's, less the host's: no owner label of another,
    // no host settings.
    for (body, why) in [
        (r#"{"Labels":{"privledger.owner":"someone"}}"#, "privledger"),
        (r#"{"HostConfig":{"Privileged":true}}"#, "HostConfig"),
        (r#"{"Env":["A=1"],"Frobnicate":1}"#, "Frobnicate"),
    ] {
        let path = format!("/commit?container={c1}&repo={alice}/raw");
        let (status, answer) = raw(&a, "POST", &path, Some(body)).await;
        assert_eq!(status, 403, "{body}: {answer}");
        assert!(answer.contains(why), "{body}: {answer}");
    }
    let bc = format!("bobs-{tag}");
    let (ok, _, err) = docker_on(
        &b,
        &["run", "-d", "--name", &bc, &secret, "sleep", "600"],
        &[],
    )
    .await;
    assert!(ok, "{err}");
    let stolen = work.path().join("stolen").display().to_string();
    refused_saying(
        &a,
        &["cp", &format!("{bc}:/built"), &stolen],
        "No such container",
    )
    .await;
    refused_saying(&a, &["export", "-o", &stolen, &bc], "No such container").await;
    refused_saying(
        &a,
        &["commit", &bc, &format!("{alice}/bobs")],
        "No such container",
    )
    .await;

    // 7. Prune touches only one's own; removal of one's own tag works.
    works(&a, &["rm", "-f", &c1]).await;
    works(&a, &["rmi", &snap]).await;
    works(&a, &["image", "prune", "-af"]).await;
    assert_eq!(
        image_id(&secret),
        secret_id,
        "bob's image survives alice's prune"
    );
    assert_eq!(image_id(&shared), shared_id);
    let (present, _, _) = docker_on(host, &["image", "inspect", &app], &[]).await;
    assert!(!present, "alice's unused images were pruned");

    // The test's own check: what works here works on the raw socket too, and a pull
    // there does replace the hub's tag.
    let raw_app = format!("{rg}/rawcheck/app:{tag}");
    debris.0.push(raw_app.clone());
    for args in [
        vec!["build", "-q", "-t", &raw_app, &cdir],
        vec!["run", "--rm", &raw_app, "cat", "/built"],
        vec!["save", "-o", &other_tar, &raw_app],
        vec![
            "run",
            "-d",
            "--name",
            &format!("raw-{tag}"),
            &raw_app,
            "sleep",
            "600",
        ],
        vec![
            "cp",
            &file.display().to_string(),
            &format!("raw-{tag}:/in.txt"),
        ],
        vec![
            "cp",
            &format!("raw-{tag}:/in.txt"),
            &back.display().to_string(),
        ],
        vec![
            "export",
            "-o",
            &exported.display().to_string(),
            &format!("raw-{tag}"),
        ],
        vec!["commit", &format!("raw-{tag}"), &format!("{raw_app}-snap")],
        vec!["rm", "-f", &format!("raw-{tag}")],
        vec!["rmi", &format!("{raw_app}-snap")],
    ] {
        let (ok, _, err) = docker_on(host, &args, CLASSIC).await;
        assert!(ok, "the raw socket: docker {args:?}: {err}");
    }
    let (ok, _, err) = docker_on(host, &["pull", &shared], &[]).await;
    assert!(
        ok && image_id(&shared) != shared_id,
        "a raw pull replaces the hub's tag: {err}"
    );

    // 8. The record: every build, pull, tag, push, commit and delete, with the image
    // ids they made or removed.
    let calls = proxy_calls(&mut r).await;
    let mine: Vec<&serde_json::Value> = calls
        .iter()
        .filter(|c| c["user"] == alice.as_str())
        .collect();
    let completed = |p: &str| {
        mine.iter()
            .filter(|c| c["outcome"] == "completed" && c["path"].as_str().unwrap_or("").contains(p))
            .count()
    };
    assert!(completed("/build") >= 2, "{mine:#?}");
    assert!(completed("/images/create") >= 2, "pulls");
    assert!(completed("/commit") >= 1);
    assert!(completed("/tag") >= 1);
    assert!(mine.iter().any(|c| c["outcome"] == "completed"
        && c["images"]
            .as_array()
            .is_some_and(|i| i.iter().any(|x| x == app_id.as_str()))));
    assert!(mine
        .iter()
        .any(|c| c["removed"].as_array().is_some_and(|i| !i.is_empty())));
    for c in &calls {
        let text = c.to_string();
        assert!(
            !text.contains("X-Registry-Auth") && !text.contains("auth"),
            "{text}"
        );
    }
    let refusals = mine.iter().filter(|c| c["outcome"] == "refused").count();
    assert!(refusals >= 10, "every refusal is on the record: {refusals}");

    // `report images --user`: the images the ledger saw the user make, less those
    // it saw removed.
    let report = |user: &str| {
        let out = std::process::Command::new(binary())
            .args([
                "--server",
                &format!("http://{}", r.s.addr),
                "--token",
                &r.s.admin_token,
            ])
            .args(["report", "images", "--user", user, "--json"])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap()
    };
    let held = report(&alice);
    let ids: Vec<&str> = held["images"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["image"].as_str().unwrap())
        .collect();
    assert!(
        ids.contains(&image_id(TEST_IMAGE).as_str()),
        "the pull: {held}"
    );
    assert!(
        !ids.contains(&app_id.as_str()),
        "pruned, so no longer held: {held}"
    );
    assert!(
        !ids.contains(&secret_id.as_str()),
        "bob's image is not alice's"
    );
    let bobs = report(&bob);
    assert!(bobs.to_string().contains(&secret_id), "{bobs}");
}

/// Imports, `load`, and the storage budget, which images now count against.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn imports_land_in_the_users_namespace_and_images_count_against_storage() {
    let Some(mut r) = Rig::start_with(|cfg| {
        cfg.docker.proxy_settings.max_build_context = 4 << 20;
    })
    .await
    else {
        return;
    };
    let (carol, dave) = (r.user("carol"), r.user("dave"));
    r.grant_limited(&carol, grant(true, &[], &[])).await;
    r.grant_limited(
        &dave,
        pb::Limits {
            max_storage_gb: Some(0.000_001),
            ..grant(true, &[], &[])
        },
    )
    .await;
    let c = r.spawn(&carol).await;
    let d = r.spawn(&dave).await;
    let host = Path::new(HOST);
    let work = tempfile::tempdir().unwrap();
    let rootfs = work.path().join("rootfs.tar");
    let st = std::process::Command::new("tar")
        .args(["-c", "-f"])
        .arg(&rootfs)
        .args(["-C", "/bin", "busybox"])
        .status()
        .unwrap();
    assert!(st.success());
    let rootfs = rootfs.display().to_string();

    // An import onto the user's namespace is theirs; onto another name it is not.
    let imported = format!("{carol}/imported:1");
    works(&c, &["import", &rootfs, &imported]).await;
    let owner = docker(&[
        "image",
        "inspect",
        "-f",
        "{{index .Config.Labels \"privledger.owner\"}}",
        &imported,
    ]);
    assert_eq!(owner, carol);
    refused_saying(
        &c,
        &["import", &rootfs, &format!("{dave}/planted:1")],
        "not yours to tag",
    )
    .await;
    refused_saying(
        &c,
        &[
            "import",
            "--change",
            "LABEL privledger.owner=x",
            &rootfs,
            &imported,
        ],
        "privledger",
    )
    .await;
    // fromSrc as a URL: the daemon would fetch it from the host's network.
    let (status, body) = raw(
        &c,
        "POST",
        "/images/create?fromSrc=http%3A%2F%2F127.0.0.1%3A9%2Fx.tar&repo=x",
        None,
    )
    .await;
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("fromSrc must be -"), "{body}");
    // `docker load` applies the archive's own tags: refused, saying what to do.
    let saved = work.path().join("saved.tar").display().to_string();
    works(&c, &["save", "-o", &saved, &imported]).await;
    refused_saying(&c, &["load", "-i", &saved], "docker import").await;
    // A form body would have the daemon read parameters past the query's checks.
    let (status, _) = raw(
        &c,
        "POST",
        "/build",
        Some("networkmode=host&remote=http://127.0.0.1:9/"),
    )
    .await;
    assert_eq!(status, 403);
    let (status, body) = raw(host, "GET", "/images/json", None).await;
    assert_eq!(status, 200, "{body}");

    // Over the storage budget: the first build fits, the next is refused.
    let ctx = context("FROM privledger-test-busybox:latest\nRUN echo x > /x\n");
    let cdir = ctx.path().display().to_string();
    works(&d, &["build", "-q", "-t", &format!("{dave}/one"), &cdir]).await;
    refused_saying(
        &d,
        &["build", "-q", "-t", &format!("{dave}/two"), &cdir],
        "storage",
    )
    .await;
    refused_saying(
        &d,
        &["import", &rootfs, &format!("{dave}/three")],
        "storage",
    )
    .await;
    works(&d, &["rmi", &format!("{dave}/one")]).await;
    works(&d, &["build", "-q", "-t", &format!("{dave}/two"), &cdir]).await;

    // A context streams to the daemon as it comes, but its end waits for the check:
    // a Dockerfile at the end of 3 MiB that fetches from the host is refused, and
    // nothing was fetched; past proxy.max_build_context, a context is refused.
    let bait = Bait::start(b"payload".to_vec(), "text/plain").await;
    let late = context(&format!(
        "FROM privledger-test-busybox:latest\nADD http://{}/x /x\n",
        bait.addr
    ));
    std::fs::write(late.path().join("0-first"), vec![1u8; 3 << 20]).unwrap();
    let ldir = late.path().display().to_string();
    refused_saying(&c, &["build", "-q", &ldir], "ADD http").await;
    refused_saying(&c, &["build", "-q", "--compress", &ldir], "ADD http").await;
    assert_eq!(bait.hits(), 0, "the refused build never ran");
    // A base image's ONBUILD trigger runs in the build that uses it: it is checked too.
    let trap = format!("{carol}-trap:{}", r.tag);
    let trapctx = context(&format!(
        "FROM privledger-test-busybox:latest\nONBUILD ADD http://{}/x /x\n",
        bait.addr
    ));
    docker(&[
        "build",
        "-q",
        "-t",
        &trap,
        &trapctx.path().display().to_string(),
    ]);
    let user_of_trap = context(&format!("FROM {trap}\n"));
    let udir = user_of_trap.path().display().to_string();
    refused_saying(&c, &["build", "-q", &udir], "ONBUILD").await;
    assert_eq!(bait.hits(), 0);
    let (ok, made, err) = docker_on(host, &["build", "-q", &udir], CLASSIC).await;
    assert!(
        ok && bait.hits() == 1,
        "the raw socket runs the trigger: {err}"
    );
    let _ = docker_on(host, &["rmi", &made], &[]).await;
    docker(&["rmi", &trap]);
    std::fs::write(late.path().join("0-first"), vec![1u8; 5 << 20]).unwrap();
    refused_saying(&c, &["build", "-q", &ldir], "at most").await;
    let (ok, made, err) = docker_on(host, &["build", "-q", &ldir], CLASSIC).await;
    assert!(ok && bait.hits() == 2, "the raw socket fetches: {err}");
    let _ = docker_on(host, &["rmi", &made], &[]).await;
    // A large context that passes streams through whole.
    let big = context("FROM privledger-test-busybox:latest\nCOPY 0-first /first\n");
    std::fs::write(big.path().join("0-first"), vec![2u8; 3 << 20]).unwrap();
    let out = works(
        &c,
        &[
            "build",
            "-q",
            "-t",
            &format!("{carol}/big"),
            &big.path().display().to_string(),
        ],
    )
    .await;
    assert!(out.starts_with("sha256:"), "{out}");
    let size = works(
        &c,
        &["run", "--rm", &format!("{carol}/big"), "wc", "-c", "/first"],
    )
    .await;
    assert!(size.starts_with(&(3u64 << 20).to_string()), "{size}");
}
