//! `berth version`, `plugins ls`, `namespaces create/ls/label/rm` and connection errors,
//! driven against a private Debian containerd 1.6.20 and checked byte-for-byte against
//! Debian's `ctr` where ctr's output is deterministic; the same against berthd.

mod cli_common;

use cli_common::{stderr, stdout, Daemon};

fn version_plugins_namespaces(d: &Daemon) {
    let v = d.berth_ok(&["version"]);
    assert!(v.starts_with("Client:\n  Version:  "), "{v}");
    assert!(v.contains("\nServer:\n  Version:  "), "{v}");
    assert!(v.contains("  UUID: "), "{v}");

    // Same table as ctr's, column for column.
    let plugins = d.berth_ok(&["plugins", "ls"]);
    assert_eq!(
        plugins,
        d.ctr_ok(&["plugins", "ls"]),
        "plugins ls differs from ctr"
    );
    assert!(plugins.starts_with("TYPE "), "{plugins}");
    let quiet = d.berth_ok(&["plugins", "ls", "-q"]);
    assert!(quiet.lines().any(|l| l == "overlayfs"), "{quiet}");

    // A closed stdout pipe (`berth plugins ls | head -0`) ends berth quietly, no panic.
    let mut child = d
        .berth_command()
        .args(["plugins", "ls"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn berth");
    drop(child.stdout.take());
    let closed = child.wait_with_output().expect("wait berth");
    assert!(!stderr(&closed).contains("panicked"), "{}", stderr(&closed));
    assert_ne!(closed.status.code(), Some(101));

    d.berth_ok(&["namespaces", "create", "cli-ns-a", "team=blue"]);
    d.berth_ok(&["namespaces", "label", "cli-ns-a", "tier=1"]);
    let ls = d.berth_ok(&["namespaces", "ls"]);
    assert_eq!(
        ls,
        d.ctr_ok(&["namespaces", "ls"]),
        "namespaces ls differs from ctr"
    );
    assert!(
        ls.lines()
            .any(|l| l.trim_end() == "cli-ns-a team=blue,tier=1"),
        "{ls}"
    );
    // An empty value clears the label.
    d.berth_ok(&["namespaces", "label", "cli-ns-a", "tier="]);
    let ls = d.berth_ok(&["ns", "ls", "-q"]);
    assert!(ls.lines().any(|l| l == "cli-ns-a"), "{ls}");
    assert!(d
        .berth_ok(&["ns", "ls"])
        .lines()
        .any(|l| l.trim_end() == "cli-ns-a team=blue"));

    // Creating it twice is an error naming it.
    let dup = d.berth(&["namespaces", "create", "cli-ns-a"]);
    assert!(!dup.status.success());
    assert!(stderr(&dup).contains("cli-ns-a"), "{}", stderr(&dup));

    // A non-empty namespace cannot be removed; the message says so.
    ingest(d, "cli-ns-b", b"keeps the namespace busy");
    let busy = d.berth(&["namespaces", "rm", "cli-ns-b"]);
    assert_eq!(busy.status.code(), Some(1), "{}", stderr(&busy));
    assert!(
        stderr(&busy).starts_with("berth: unable to delete cli-ns-b: "),
        "{}",
        stderr(&busy)
    );
    let digest = integration::image::sha256_digest(b"keeps the namespace busy");
    assert_eq!(
        d.berth_ok(&["-n", "cli-ns-b", "content", "rm", &digest]),
        format!("{digest}\n")
    );

    let rm = d.berth_ok(&["namespaces", "rm", "cli-ns-a", "cli-ns-b"]);
    assert_eq!(rm, "cli-ns-a\ncli-ns-b\n");
    assert!(!d.berth_ok(&["ns", "ls", "-q"]).contains("cli-ns-a"));
}

/// `berth -n <ns> content ingest <ref>` with `data` on stdin.
fn ingest(d: &Daemon, ns: &str, data: &[u8]) {
    use std::io::Write as _;
    let mut child = d
        .berth_command()
        .args(["-n", ns, "content", "ingest", "cli-ingest"])
        .stdin(std::process::Stdio::piped())
        .spawn()
        .expect("spawn berth content ingest");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(data)
        .expect("write stdin");
    let status = child.wait().expect("wait berth");
    assert!(status.success(), "content ingest failed: {status}");
}

/// `berth` drives containerd's own daemon unchanged.
#[test]
fn version_plugins_and_namespaces_against_containerd() {
    version_plugins_namespaces(&Daemon::containerd());
}

/// … containerd 2.x (compared with its own `ctr`) …
#[test]
fn version_plugins_and_namespaces_against_containerd2() {
    let Some(d) = Daemon::containerd2("version_plugins_and_namespaces_against_containerd2") else {
        return;
    };
    version_plugins_namespaces(&d);
}

/// … and berthd the same way.
#[test]
fn version_plugins_and_namespaces_against_berthd() {
    version_plugins_namespaces(&Daemon::berthd());
}

#[test]
fn missing_socket_fails_fast_with_the_address() {
    let dir = tempfile::tempdir().expect("tempdir");
    let sock = dir.path().join("nothing.sock");
    let o = std::process::Command::new(integration::bins::berth_bin("berth", "cli"))
        .arg("--address")
        .arg(&sock)
        .arg("version")
        .output()
        .expect("run berth");
    assert_eq!(o.status.code(), Some(1));
    let err = stderr(&o);
    assert!(
        err.starts_with(&format!(
            "berth: failed to dial {:?}",
            sock.display().to_string()
        )),
        "{err}"
    );
    // The client part is printed before connecting, as ctr does.
    assert!(stdout(&o).starts_with("Client:"), "{}", stdout(&o));
}

#[test]
fn bad_flags_are_usage_errors() {
    let o = std::process::Command::new(integration::bins::berth_bin("berth", "cli"))
        .args(["images", "ls", "--no-such-flag"])
        .output()
        .expect("run berth");
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("--no-such-flag"), "{}", stderr(&o));
}
