//! berthd content, snapshots, leases and events through Debian's `ctr` 1.6.20: `content
//! ingest/ls/get/label/rm/active` (with an interrupted ingest resumed at its offset),
//! `snapshots prepare/view/mounts/commit/tree/usage/rm` on overlayfs and native,
//! `leases create/ls/rm`, and `ctr events` showing each service's topics, including one a
//! shim sends through `berthd publish`.

use std::io::{Read, Write};
use std::process::{Command, Stdio};
use std::time::Duration;

use integration::daemon::TestDaemon;
use sha2::{Digest, Sha256};

fn digest(data: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(data)))
}

fn ingest(
    d: &TestDaemon,
    r#ref: &str,
    stdin: std::fs::File,
    size: usize,
    dgst: &str,
) -> std::process::Output {
    d.ctr_command()
        .args([
            "content",
            "ingest",
            "--expected-size",
            &size.to_string(),
            "--expected-digest",
            dgst,
            r#ref,
        ])
        .stdin(Stdio::from(stdin))
        .output()
        .expect("run ctr content ingest")
}

#[test]
fn content_ingest_ls_get_label_rm() {
    let d = TestDaemon::start().expect("start berthd");
    let tmp = tempfile::tempdir().expect("tmp");
    let data = b"berth content test\n".repeat(100);
    let dgst = digest(&data);
    let f = tmp.path().join("blob");
    std::fs::write(&f, &data).expect("write");
    let o = ingest(
        &d,
        "ref-a",
        std::fs::File::open(&f).expect("open"),
        data.len(),
        &dgst,
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let ls = d.ctr_ok(&["content", "ls"]);
    assert!(ls.contains(&dgst) && ls.contains("1.9kB"), "{ls}");
    assert_eq!(
        d.ctr_ok(&["content", "get", &dgst]).as_bytes(),
        data.as_slice()
    );
    d.ctr_ok(&["content", "label", &dgst, "team=storage", "tier=hot"]);
    let ls = d.ctr_ok(&["content", "ls"]);
    assert!(
        ls.contains("team=storage") && ls.contains("tier=hot"),
        "{ls}"
    );
    d.ctr_ok(&["content", "label", &dgst, "tier="]);
    let ls = d.ctr_ok(&["content", "ls"]);
    assert!(
        ls.contains("team=storage") && !ls.contains("tier=hot"),
        "{ls}"
    );
    // Same bytes again: already exists, which ctr treats as success.
    let o = ingest(
        &d,
        "ref-b",
        std::fs::File::open(&f).expect("open"),
        data.len(),
        &dgst,
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    d.ctr_ok(&["content", "rm", &dgst]);
    assert!(d.ctr_ok(&["content", "ls", "-q"]).trim().is_empty());
    let missing = d.ctr(&["content", "get", &dgst]);
    assert!(
        !missing.status.success() && String::from_utf8_lossy(&missing.stderr).contains("not found")
    );
    // A digest that is not one never reaches the filesystem.
    let bad = d.ctr(&["content", "get", "sha256:../../etc/passwd"]);
    assert!(!bad.status.success());
}

#[test]
fn interrupted_ingest_resumes_at_its_offset() {
    let d = TestDaemon::start().expect("start berthd");
    let tmp = tempfile::tempdir().expect("tmp");
    let data: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    let dgst = digest(&data);
    let cut = 100_000;
    let partial = tmp.path().join("partial");
    std::fs::write(&partial, &data[..cut]).expect("write");
    let o = ingest(
        &d,
        "resume-me",
        std::fs::File::open(&partial).expect("open"),
        data.len(),
        &dgst,
    );
    assert!(!o.status.success(), "a short ingest must not commit");
    let active = d.ctr_ok(&["content", "active"]);
    let line = active
        .lines()
        .find(|l| l.starts_with("resume-me"))
        .unwrap_or_else(|| panic!("ingest kept:\n{active}"));
    assert!(line.contains("100kB"), "{line}");

    // Second attempt: the first `cut` bytes are garbage. ctr seeks past what berthd already
    // has, so the digest only matches if berthd kept the first attempt's bytes.
    let mut second = vec![0u8; cut];
    second.extend_from_slice(&data[cut..]);
    let full = tmp.path().join("second");
    std::fs::write(&full, &second).expect("write");
    let o = ingest(
        &d,
        "resume-me",
        std::fs::File::open(&full).expect("open"),
        data.len(),
        &dgst,
    );
    assert!(
        o.status.success(),
        "resume failed: {}\n{}",
        String::from_utf8_lossy(&o.stderr),
        d.log_tail(20)
    );
    assert!(d
        .ctr_ok(&["content", "ls", "-q"])
        .lines()
        .any(|l| l == dgst));
    assert!(!d.ctr_ok(&["content", "active"]).contains("resume-me"));
    assert_eq!(
        d.ctr(&["content", "get", &dgst]).stdout,
        data,
        "content get returns the original bytes"
    );
}

fn snapshot_cycle(d: &TestDaemon, snapshotter: &str) {
    let s = |args: &[&str]| {
        let mut v = vec!["snapshots", "--snapshotter", snapshotter];
        v.extend_from_slice(args);
        d.ctr_ok(&v)
    };
    s(&["prepare", "base-active", ""]);
    // Write through the mounts, then commit.
    let target = tempfile::tempdir().expect("mountpoint");
    let mount = s(&[
        "mounts",
        &target.path().display().to_string(),
        "base-active",
    ]);
    let o = Command::new("sh")
        .arg("-c")
        .arg(mount.trim())
        .output()
        .expect("mount");
    assert!(
        o.status.success(),
        "{mount}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    std::fs::write(target.path().join("hello"), b"from berth\n").expect("write into snapshot");
    assert!(Command::new("umount")
        .arg(target.path())
        .status()
        .expect("umount")
        .success());
    s(&["commit", "base", "base-active"]);
    s(&["prepare", "child", "base"]);
    // Change the child, then `snapshots diff` (walking differ → a gzip layer in content).
    let mount = s(&["mounts", &target.path().display().to_string(), "child"]);
    let o = Command::new("sh")
        .arg("-c")
        .arg(mount.trim())
        .output()
        .expect("mount");
    assert!(
        o.status.success(),
        "{mount}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    std::fs::remove_file(target.path().join("hello")).expect("delete in child");
    std::fs::write(target.path().join("added"), b"new\n").expect("write in child");
    assert!(Command::new("umount")
        .arg(target.path())
        .status()
        .expect("umount")
        .success());
    let diff = d.ctr(&["snapshots", "--snapshotter", snapshotter, "diff", "child"]);
    assert!(
        diff.status.success(),
        "{}",
        String::from_utf8_lossy(&diff.stderr)
    );
    let mut names: Vec<String> =
        tar::Archive::new(flate2::read::GzDecoder::new(diff.stdout.as_slice()))
            .entries()
            .expect("diff is a tar.gz")
            .map(|e| {
                e.expect("entry")
                    .path()
                    .expect("path")
                    .display()
                    .to_string()
            })
            .collect();
    names.sort();
    assert_eq!(names, [".wh.hello", "added"], "diff entries");
    // `snapshots diff` removes its temporary view, which schedules a GC; a view without a
    // gc.root label (ctr labels only prepare and commit) is collectable, in containerd too.
    // So label it as a root right away; if a pending collection took it in between (the
    // label then fails with not found), make it again.
    let mut made = false;
    for _ in 0..5 {
        s(&["view", "look", "base"]);
        let labelled = d.ctr(&[
            "snapshots",
            "--snapshotter",
            snapshotter,
            "label",
            "look",
            "containerd.io/gc.root=test",
        ]);
        if labelled.status.success() {
            made = true;
            break;
        }
        let err = String::from_utf8_lossy(&labelled.stderr);
        assert!(err.contains("not found"), "label look: {err}");
    }
    assert!(
        made,
        "view 'look' collected five times before it could be labelled"
    );
    let tree = s(&["tree"]);
    assert!(
        tree.contains("base") && tree.contains("\\_ child") && tree.contains("\\_ look"),
        "{tree}"
    );
    let ls = s(&["ls"]);
    let kind = |key: &str| {
        ls.lines()
            .find(|l| l.starts_with(key))
            .map(|l| l.split_whitespace().last().unwrap_or("").to_string())
    };
    assert_eq!(kind("base ").as_deref(), Some("Committed"), "{ls}");
    assert_eq!(kind("child").as_deref(), Some("Active"), "{ls}");
    assert_eq!(kind("look").as_deref(), Some("View"), "{ls}");
    let usage = s(&["usage", "base"]);
    assert!(
        usage
            .lines()
            .nth(1)
            .is_some_and(|l| l.starts_with("base") && !l.contains(" 0.0 B")),
        "{usage}"
    );
    // The view shows the committed file.
    let mount = s(&["mounts", &target.path().display().to_string(), "look"]);
    let o = Command::new("sh")
        .arg("-c")
        .arg(mount.trim())
        .output()
        .expect("mount");
    assert!(
        o.status.success(),
        "{mount}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    let seen = std::fs::read_to_string(target.path().join("hello"));
    let _ = Command::new("umount").arg(target.path()).status();
    assert_eq!(seen.expect("file in view"), "from berth\n");
    // A parent with children cannot go.
    let refused = d.ctr(&["snapshots", "--snapshotter", snapshotter, "rm", "base"]);
    assert!(!refused.status.success());
    s(&["rm", "child", "look"]);
    s(&["rm", "base"]);
    assert_eq!(s(&["ls"]).lines().count(), 1, "only the header left");
}

// One daemon per snapshotter: a view carries no `containerd.io/gc.root` label (ctr only
// labels prepare and commit), so, as in containerd, the GC that one cycle's removals trigger
// may collect another cycle's view.
#[test]
fn snapshots_commands_on_overlayfs() {
    let d = TestDaemon::start().expect("start berthd");
    snapshot_cycle(&d, "overlayfs");
    let unknown = d.ctr(&["snapshots", "--snapshotter", "btrfs", "ls"]);
    assert!(!unknown.status.success());
}

#[test]
fn snapshots_commands_on_native() {
    let d = TestDaemon::start().expect("start berthd");
    snapshot_cycle(&d, "native");
}

#[test]
fn leases_create_list_remove() {
    let d = TestDaemon::start().expect("start berthd");
    d.ctr_ok(&[
        "leases",
        "create",
        "--id",
        "l1",
        "--expires",
        "1h",
        "purpose=test",
    ]);
    let generated = d.ctr_ok(&["leases", "create"]);
    let ls = d.ctr_ok(&["leases", "ls"]);
    let l1 = ls
        .lines()
        .find(|l| l.starts_with("l1 "))
        .unwrap_or_else(|| panic!("{ls}"));
    assert!(
        l1.contains("purpose=test") && l1.contains("containerd.io/gc.expire="),
        "{l1}"
    );
    assert!(ls.contains(generated.trim()), "{ls}");
    let dup = d.ctr(&["leases", "create", "--id", "l1"]);
    assert!(String::from_utf8_lossy(&dup.stderr).contains("already exists"));
    d.ctr_ok(&["leases", "rm", "l1", generated.trim()]);
    assert_eq!(d.ctr_ok(&["leases", "ls"]).lines().count(), 1);
    let missing = d.ctr(&["leases", "rm", "l1"]);
    assert!(String::from_utf8_lossy(&missing.stderr).contains("not found"));
}

/// An `Any` for `containerd.events.TaskOOM{container_id}`, protobuf-encoded by hand (two
/// length-delimited fields) so the test needs no codegen.
fn task_oom_any(container_id: &str) -> Vec<u8> {
    let mut inner = vec![0x0a, u8::try_from(container_id.len()).expect("short")];
    inner.extend_from_slice(container_id.as_bytes());
    let url = b"containerd.events.TaskOOM";
    let mut any = vec![0x0a, u8::try_from(url.len()).expect("short")];
    any.extend_from_slice(url);
    any.push(0x12);
    any.push(u8::try_from(inner.len()).expect("short"));
    any.extend_from_slice(&inner);
    any
}

#[test]
fn ctr_events_shows_every_service_topic() {
    let d = TestDaemon::start().expect("start berthd");
    let mut events = d
        .ctr_command()
        .arg("events")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("ctr events");
    // A filtered subscription: containerd's filter syntax over envelope and event fields.
    let mut filtered = d
        .ctr_command()
        .args(["events", "event.key==\"ev-a\""])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("ctr events with a filter");
    std::thread::sleep(Duration::from_millis(500));
    let ns = d.namespace().to_string();
    d.ctr_ok(&["namespaces", "create", "ev-ns"]);
    d.ctr_ok(&["namespaces", "label", "ev-ns", "a=b"]);
    d.ctr_ok(&["namespaces", "rm", "ev-ns"]);
    let tmp = tempfile::tempdir().expect("tmp");
    let f = tmp.path().join("blob");
    std::fs::write(&f, b"event blob").expect("write");
    let dg = digest(b"event blob");
    let o = ingest(&d, "ev", std::fs::File::open(&f).expect("open"), 10, &dg);
    assert!(o.status.success());
    d.ctr_ok(&["content", "rm", &dg]);
    d.ctr_ok(&["snapshots", "prepare", "ev-a", ""]);
    d.ctr_ok(&["snapshots", "commit", "ev-c", "ev-a"]);
    d.ctr_ok(&["snapshots", "rm", "ev-c"]);
    // What a shim does: `berthd --address <sock> publish --topic --namespace`, Any on stdin.
    let mut publish = Command::new(integration::bins::berthd_bin())
        .arg("--address")
        .arg(d.address())
        .args(["publish", "--topic", "/tasks/oom", "--namespace", &ns])
        .stdin(Stdio::piped())
        .spawn()
        .expect("berthd publish");
    publish
        .stdin
        .take()
        .expect("stdin")
        .write_all(&task_oom_any("c-oom"))
        .expect("write event");
    assert!(publish.wait().expect("wait").success());
    std::thread::sleep(Duration::from_millis(500));
    let _ = events.kill();
    let _ = events.wait();
    let _ = filtered.kill();
    let _ = filtered.wait();
    let mut only = String::new();
    filtered
        .stdout
        .take()
        .expect("stdout")
        .read_to_string(&mut only)
        .expect("read");
    let topics: Vec<&str> = only
        .lines()
        .filter_map(|l| l.split_whitespace().nth(5))
        .collect();
    assert_eq!(
        topics,
        ["/snapshot/prepare", "/snapshot/commit"],
        "filtered events:\n{only}"
    );
    let mut out = String::new();
    events
        .stdout
        .take()
        .expect("stdout")
        .read_to_string(&mut out)
        .expect("read events");
    for topic in [
        "/namespaces/create",
        "/namespaces/update",
        "/namespaces/delete",
        "/content/delete",
        "/snapshot/prepare",
        "/snapshot/commit",
        "/snapshot/remove",
        "/tasks/oom",
    ] {
        assert!(
            out.lines().any(|l| l.contains(topic)),
            "no {topic} in ctr events output:\n{out}"
        );
    }
    assert!(out.contains("c-oom") && out.contains(&ns), "{out}");
}

#[test]
fn interrupted_ingest_resumes_after_kill_9_of_berthd() {
    let mut d = TestDaemon::start().expect("start berthd");
    let tmp = tempfile::tempdir().expect("tmp");
    let data: Vec<u8> = (0..200_000u32).map(|i| (i % 241) as u8).collect();
    let dgst = digest(&data);
    let cut = 64_000;
    let partial = tmp.path().join("partial");
    std::fs::write(&partial, &data[..cut]).expect("write");
    let o = ingest(
        &d,
        "survivor",
        std::fs::File::open(&partial).expect("open"),
        data.len(),
        &dgst,
    );
    assert!(!o.status.success());
    d.kill9();
    d.restart().expect("restart");
    assert!(
        d.ctr_ok(&["content", "active"]).contains("survivor"),
        "ingest kept across kill -9"
    );
    let mut second = vec![0u8; cut];
    second.extend_from_slice(&data[cut..]);
    let full = tmp.path().join("second");
    std::fs::write(&full, &second).expect("write");
    let o = ingest(
        &d,
        "survivor",
        std::fs::File::open(&full).expect("open"),
        data.len(),
        &dgst,
    );
    assert!(
        o.status.success(),
        "resume after restart: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert_eq!(d.ctr(&["content", "get", &dgst]).stdout, data);
}

/// `Content.Write` of a partial ingest straight over gRPC (ctr 1.6 has no way to open an
/// ingest under a lease), leaving the ingest open.
async fn write_partial_ingest(d: &TestDaemon, r#ref: &str, lease: Option<&str>, data: &[u8]) {
    use protos::containerd::services::content::v1::{
        content_client::ContentClient, WriteAction, WriteContentRequest,
    };
    let path = d.address();
    let channel = tonic::transport::Endpoint::try_from("http://[::]:50051")
        .expect("endpoint")
        .connect_with_connector(tower::service_fn(move |_| {
            let path = path.clone();
            async move {
                Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(
                    tokio::net::UnixStream::connect(path).await?,
                ))
            }
        }))
        .await
        .expect("connect to berthd");
    let msg = WriteContentRequest {
        action: WriteAction::Write as i32,
        r#ref: r#ref.into(),
        total: 1_000,
        data: data.to_vec(),
        ..Default::default()
    };
    let mut req = tonic::Request::new(tonic::codegen::tokio_stream::iter(vec![msg]));
    req.metadata_mut().insert(
        "containerd-namespace",
        d.namespace().parse().expect("ascii"),
    );
    if let Some(l) = lease {
        req.metadata_mut()
            .insert("containerd-lease", l.parse().expect("ascii"));
    }
    let mut resp = ContentClient::new(channel)
        .write(req)
        .await
        .expect("Content.Write")
        .into_inner();
    let first = resp.message().await.expect("write response");
    assert_eq!(first.map(|m| m.offset), Some(data.len() as i64));
    while resp.message().await.expect("write stream").is_some() {}
}

fn ingest_dirs(d: &TestDaemon) -> usize {
    let dir = d.root().join("io.containerd.content.v1.content/ingest");
    std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
        .count()
}

/// containerd's ingest expiry (`expireat`): an ingest opened without a lease expires 24 h
/// after it was opened and survives collections until then; one opened under a lease has no
/// expiry and is collected — record and bytes on disk — once the lease is gone.
#[test]
fn leased_ingest_goes_with_its_lease_unleased_one_waits_for_its_expiry() {
    let d = TestDaemon::start().expect("start berthd");
    d.ctr_ok(&["leases", "create", "--id", "hold"]);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(write_partial_ingest(
        &d,
        "leased-part",
        Some("hold"),
        b"leased",
    ));
    rt.block_on(write_partial_ingest(&d, "free-part", None, b"free"));
    let active = d.ctr_ok(&["content", "active"]);
    assert!(
        active.contains("leased-part") && active.contains("free-part"),
        "{active}"
    );
    assert_eq!(ingest_dirs(&d), 2);

    // A collection while the lease lives keeps both.
    d.ctr_ok(&["leases", "create", "--id", "trigger"]);
    d.ctr_ok(&["leases", "rm", "--sync", "trigger"]);
    let active = d.ctr_ok(&["content", "active"]);
    assert!(
        active.contains("leased-part") && active.contains("free-part"),
        "{active}"
    );

    d.ctr_ok(&["leases", "rm", "--sync", "hold"]);
    let active = d.ctr_ok(&["content", "active"]);
    assert!(
        !active.contains("leased-part"),
        "leased ingest collected with its lease:\n{active}\n{}",
        d.log_tail(20)
    );
    assert!(
        active.contains("free-part"),
        "unleased ingest kept until its expiry:\n{active}"
    );
    assert_eq!(ingest_dirs(&d), 1, "the collected ingest's bytes are gone");
}
