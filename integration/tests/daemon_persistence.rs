//! What berthd keeps across restarts (graceful and `kill -9`): images, content, labels,
//! namespaces, leases, snapshots and their mounts; and the bolt plugin's
//! `content_sharing_policy` (shared adopts a blob another namespace has, isolated makes each
//! namespace send its own bytes), observed through Debian's `ctr`.

use std::process::Stdio;

use integration::daemon::TestDaemon;
use integration::image::TestImage;
use sha2::{Digest, Sha256};

fn state(d: &TestDaemon) -> Vec<String> {
    let ns = d.namespace().to_string();
    let mut out = vec![
        d.ctr_ok(&["images", "ls"]),
        d.ctr_ok(&["content", "ls", "-q"]),
        d.ctr_ok(&["snapshots", "ls"]),
        d.ctr_ok(&["leases", "ls", "-q"]),
        d.ctr_ok(&["namespaces", "ls"]),
    ];
    out.push(ns);
    out
}

#[test]
fn everything_survives_sigterm_and_kill_9_restarts() {
    let img = TestImage::busybox().expect("test image");
    let mut d = TestDaemon::start().expect("start berthd");
    let tmp = tempfile::tempdir().expect("tmp");
    let tar = tmp.path().join("busybox.tar");
    std::fs::write(&tar, img.oci_archive().expect("archive")).expect("write");
    d.ctr_ok(&["images", "import", &tar.display().to_string()]);
    d.ctr_ok(&["namespaces", "label", d.namespace(), "kept=yes"]);
    d.ctr_ok(&["leases", "create", "--id", "survivor"]);
    d.ctr_ok(&["content", "label", img.config_digest(), "note=kept"]);
    d.ctr_ok(&["snapshots", "prepare", "work", &img.diff_ids()[0]]);
    let before = state(&d);
    let uuid = d
        .ctr_ok(&["version"])
        .lines()
        .find(|l| l.contains("UUID"))
        .map(str::to_string);

    let status = d.stop_daemon().expect("running");
    assert!(status.contains("exit status: 0"), "{status}");
    d.restart().expect("restart after SIGTERM");
    assert_eq!(state(&d), before, "state after a graceful restart");

    d.kill9();
    d.restart().expect("restart after kill -9");
    assert_eq!(state(&d), before, "state after kill -9");
    assert_eq!(
        d.ctr_ok(&["version"])
            .lines()
            .find(|l| l.contains("UUID"))
            .map(str::to_string),
        uuid
    );
    assert!(d.ctr_ok(&["content", "ls"]).contains("note=kept"));

    // The active snapshot still mounts, on top of the unpacked layer.
    let target = tempfile::tempdir().expect("mountpoint");
    let cmd = d.ctr_ok(&[
        "snapshots",
        "mounts",
        &target.path().display().to_string(),
        "work",
    ]);
    let o = std::process::Command::new("sh")
        .arg("-c")
        .arg(cmd.trim())
        .output()
        .expect("mount");
    assert!(
        o.status.success(),
        "{cmd}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    let ok = target.path().join("bin/busybox").is_file();
    let _ = std::process::Command::new("umount")
        .arg(target.path())
        .status();
    assert!(ok, "image files visible through the restored snapshot");
}

fn ingest(d: &TestDaemon, ns: &str, r#ref: &str, data: &[u8], size: usize, dgst: &str) -> bool {
    let mut child = d
        .ctr_command()
        .args([
            "--namespace",
            ns,
            "content",
            "ingest",
            "--expected-size",
            &size.to_string(),
            "--expected-digest",
            dgst,
            r#ref,
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("ctr content ingest");
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().expect("stdin");
        let _ = stdin.write_all(data);
    }
    child.wait().expect("wait").success()
}

fn sharing(policy: &str) -> (bool, bool) {
    let extra = format!(
        "[plugins.\"io.containerd.metadata.v1.bolt\"]\n  content_sharing_policy = \"{policy}\"\n"
    );
    let d = TestDaemon::builder()
        .extra_config(&extra)
        .start()
        .expect("start berthd");
    let data: Vec<u8> = (0..50_000u32).map(|i| (i % 199) as u8).collect();
    let dgst = format!("sha256:{}", hex::encode(Sha256::digest(&data)));
    assert!(
        ingest(&d, "ns-a", "a", &data, data.len(), &dgst),
        "first namespace ingests"
    );
    // Namespace b announces the same digest but sends no bytes.
    let adopted = ingest(&d, "ns-b", "b", b"", data.len(), &dgst);
    let visible = d
        .ctr_ok(&["--namespace", "ns-b", "content", "ls", "-q"])
        .contains(&dgst);
    (adopted, visible)
}

#[test]
fn shared_policy_adopts_existing_blobs_across_namespaces() {
    assert_eq!(sharing("shared"), (true, true));
}

#[test]
fn isolated_policy_requires_each_namespace_to_send_the_bytes() {
    assert_eq!(sharing("isolated"), (false, false));
}

/// Kills berthd with SIGKILL at several points during `ctr images import` and checks the
/// invariant the metadata store promises: every blob it lists can be read in full, every
/// snapshot it lists can be stat'ed, and after a restart a clean import still works.
#[test]
fn kill_9_during_import_never_leaves_metadata_pointing_at_missing_data() {
    let img = TestImage::layers().expect("test image");
    let tmp = tempfile::tempdir().expect("tmp");
    let tar = tmp.path().join("layers.tar");
    std::fs::write(&tar, img.oci_archive().expect("archive")).expect("write");
    let tar = tar.display().to_string();
    let mut d = TestDaemon::start().expect("start berthd");
    for delay_ms in [5u64, 20, 60, 150] {
        let mut import = d
            .ctr_command()
            .args(["images", "import", &tar])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("ctr import");
        std::thread::sleep(std::time::Duration::from_millis(delay_ms));
        d.kill9();
        // ctr keeps retrying a dead socket; it is the client that goes away with the daemon.
        let _ = import.kill();
        let _ = import.wait();
        d.restart().expect("restart after kill -9");
        for dg in d.ctr_ok(&["content", "ls", "-q"]).lines() {
            let info = d.ctr_ok(&["content", "ls"]);
            let got = d.ctr(&["content", "get", dg]);
            assert!(
                got.status.success(),
                "listed blob {dg} unreadable after kill at {delay_ms}ms:\n{info}"
            );
            let actual = format!("sha256:{}", hex::encode(Sha256::digest(&got.stdout)));
            assert_eq!(actual, dg, "blob {dg} content is intact");
        }
        for line in d.ctr_ok(&["snapshots", "ls"]).lines().skip(1) {
            // containerd's unpacker names its active snapshots "extract-<unique> <chain id>":
            // the key itself holds a space.
            let mut fields = line.split_whitespace();
            let first = fields.next().expect("key");
            let key = match (first.starts_with("extract-"), fields.next()) {
                (true, Some(chain)) => format!("{first} {chain}"),
                _ => first.to_string(),
            };
            d.ctr_ok(&["snapshots", "info", &key]);
        }
        d.ctr_ok(&[
            "images",
            "rm",
            "--sync",
            "docker.io/library/berth-layers:test",
        ]);
    }
    d.ctr_ok(&["images", "import", &tar]);
    assert!(d.ctr_ok(&["images", "check"]).contains("complete (5/5)"));
}

/// `[proxy_plugins]` of type snapshot: a second berthd uses the first one's native
/// snapshotter over containerd's Snapshots API (the first berthd stands in for an external
/// snapshotter plugin; requests arrive in the `berth-proxy` namespace).
#[test]
fn proxy_snapshotter_plugin_serves_snapshots_from_another_process() {
    let remote = TestDaemon::start().expect("start the remote berthd");
    let extra = format!(
        "[proxy_plugins]\n  [proxy_plugins.native]\n    type = \"snapshot\"\n    address = \"{}\"\n",
        remote.address().display()
    );
    // Named like the built-in one it replaces, so requests reach the remote's `native`.
    let d = TestDaemon::builder()
        .extra_config(&extra)
        .start()
        .expect("start berthd with a proxy plugin");
    let plugins = d.ctr_ok(&["plugins", "ls", "type==io.containerd.snapshotter.v1"]);
    assert!(
        plugins
            .lines()
            .any(|l| l.starts_with("io.containerd.snapshotter.v1")
                && l.contains("native")
                && l.trim_end().ends_with("ok")),
        "{plugins}"
    );

    let s = |args: &[&str]| {
        let mut v = vec!["snapshots", "--snapshotter", "native"];
        v.extend_from_slice(args);
        d.ctr_ok(&v)
    };
    s(&["prepare", "p-base", ""]);
    s(&["commit", "p-committed", "p-base"]);
    s(&["prepare", "p-child", "p-committed"]);
    let tree = s(&["tree"]);
    assert!(
        tree.contains("p-committed") && tree.contains("\\_ p-child"),
        "{tree}"
    );
    let mounts = s(&["mounts", "/mnt", "p-child"]);
    assert!(mounts.contains("/mnt"), "{mounts}");
    // The snapshots live in the remote process, under the proxy namespace.
    let remote_ls = remote.ctr_ok(&[
        "--namespace",
        "berth-proxy",
        "snapshots",
        "--snapshotter",
        "native",
        "ls",
    ]);
    assert_eq!(remote_ls.lines().count(), 3, "{remote_ls}");
    assert!(
        remote_ls.contains("/p-committed") && remote_ls.contains("/p-child"),
        "{remote_ls}"
    );
    // Removal and GC go through the proxy too.
    s(&["rm", "p-child"]);
    s(&["rm", "p-committed"]);
    std::thread::sleep(std::time::Duration::from_millis(500));
    let remote_ls = remote.ctr_ok(&[
        "--namespace",
        "berth-proxy",
        "snapshots",
        "--snapshotter",
        "native",
        "ls",
    ]);
    assert_eq!(
        remote_ls.lines().count(),
        1,
        "backend snapshots collected:\n{remote_ls}"
    );
}
