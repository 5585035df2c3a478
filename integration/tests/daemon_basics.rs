//! berthd as a process and as containerd's API for Debian's `ctr` 1.6.20: version, plugins,
//! namespaces (with the non-empty refusal), config handling (`config default` round trip,
//! typo warnings with their line, invalid values refused), sockets and directory modes,
//! `oom_score`, sd_notify READY=1/STOPPING=1 and graceful SIGTERM.

use std::os::unix::fs::PermissionsExt;
use std::process::Command;
use std::time::Duration;

use integration::daemon::{DaemonError, TestDaemon};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

fn berthd() -> std::path::PathBuf {
    integration::bins::berthd_bin()
}

fn mode(p: &std::path::Path) -> u32 {
    std::fs::metadata(p)
        .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
        .permissions()
        .mode()
        & 0o7777
}

const TEMPLATE: &str = r#"version = 2
root = "{root}"
state = "{state}"
oom_score = 321

[grpc]
  address = "{address}"
"#;

#[test]
fn ctr_version_and_plugins_ls_render() {
    let d = TestDaemon::start().expect("start berthd");
    let v = d.ctr_ok(&["version"]);
    assert!(v.contains("Server:") && v.contains("berth"), "{v}");
    let uuid = v
        .lines()
        .find_map(|l| l.trim().strip_prefix("UUID: "))
        .expect("uuid line")
        .to_string();
    assert_eq!(uuid.len(), 36, "{uuid}");

    let plugins = d.ctr_ok(&["plugins", "ls"]);
    let row = |t: &str, id: &str| {
        plugins
            .lines()
            .find(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                f.first() == Some(&t) && f.get(1) == Some(&id)
            })
            .unwrap_or_else(|| panic!("no plugin {t} {id} in\n{plugins}"))
            .trim_end()
            .to_string()
    };
    let overlay = row("io.containerd.snapshotter.v1", "overlayfs");
    assert!(
        overlay.ends_with("ok"),
        "{overlay}\n{}",
        d.ctr_ok(&["plugins", "ls", "-d", "id==overlayfs"])
    );
    assert!(row("io.containerd.snapshotter.v1", "native").ends_with("ok"));
    assert!(row("io.containerd.snapshotter.v1", "btrfs").ends_with("skip"));
    assert!(row("io.containerd.snapshotter.v1", "zfs").ends_with("skip"));
    assert!(row("io.containerd.snapshotter.v1", "aufs").ends_with("skip"));
    assert!(row("io.containerd.snapshotter.v1", "devmapper").ends_with("error"));
    assert!(row("io.containerd.grpc.v1", "content").ends_with("ok"));
    let detailed = d.ctr_ok(&["plugins", "ls", "-d", "id==btrfs"]);
    assert!(
        detailed.contains("must be a btrfs filesystem"),
        "{detailed}"
    );
    let filtered = d.ctr_ok(&["plugins", "ls", "type==io.containerd.grpc.v1"]);
    assert!(
        filtered
            .lines()
            .skip(1)
            .all(|l| l.starts_with("io.containerd.grpc.v1")),
        "{filtered}"
    );

    // The server UUID survives a restart (persisted in root).
    let mut d = d;
    d.restart().expect("restart");
    assert!(d.ctr_ok(&["version"]).contains(&uuid));
}

#[test]
fn namespaces_create_label_list_and_refuse_to_remove_non_empty() {
    let d = TestDaemon::start().expect("start berthd");
    d.ctr_ok(&["namespaces", "create", "team-a", "owner=me"]);
    let dup = d.ctr(&["namespaces", "create", "team-a"]);
    assert!(String::from_utf8_lossy(&dup.stderr).contains("already exists"));
    d.ctr_ok(&["namespaces", "label", "team-a", "tier=gold"]);
    let ls = d.ctr_ok(&["namespaces", "ls"]);
    let line = ls
        .lines()
        .find(|l| l.starts_with("team-a"))
        .expect("listed");
    assert!(
        line.contains("owner=me") && line.contains("tier=gold"),
        "{line}"
    );
    let bad = d.ctr(&["namespaces", "create", "bad/name"]);
    assert!(String::from_utf8_lossy(&bad.stderr).contains("invalid argument"));

    // Something in it: a lease. Removal names what is left and keeps the namespace.
    d.ctr_ok(&["--namespace", "team-a", "leases", "create", "--id", "keep"]);
    let refused = d.ctr(&["namespaces", "rm", "team-a"]);
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(
        err.contains("must be empty")
            && err.contains("leases")
            && err.contains("failed precondition"),
        "{err}"
    );
    assert!(d
        .ctr_ok(&["namespaces", "ls", "-q"])
        .lines()
        .any(|l| l == "team-a"));
    d.ctr_ok(&["--namespace", "team-a", "leases", "rm", "keep"]);
    d.ctr_ok(&["namespaces", "rm", "team-a"]);
    assert!(!d
        .ctr_ok(&["namespaces", "ls", "-q"])
        .lines()
        .any(|l| l == "team-a"));
}

#[test]
fn config_default_output_starts_berthd_unchanged() {
    let out = Command::new(berthd())
        .args(["config", "default"])
        .output()
        .expect("run berthd");
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).expect("utf8");
    assert!(text.contains("content_sharing_policy") && text.lines().any(|l| l.starts_with('#')));
    // The default config's paths are the system ones; only the flags move them (the file is
    // used byte for byte).
    let tmp = tempfile::tempdir().expect("tmp");
    // Run it directly, as an operator would.
    let cfg = tmp.path().join("config.toml");
    std::fs::write(&cfg, &text).expect("write config");
    let mut child = Command::new(berthd())
        .arg("--config")
        .arg(&cfg)
        .arg("--root")
        .arg(tmp.path().join("root2"))
        .arg("--state")
        .arg(tmp.path().join("state2"))
        .arg("--address")
        .arg(tmp.path().join("c.sock"))
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn berthd");
    let sock = tmp.path().join("c.sock");
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while !sock.exists() && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(25));
    }
    let ctr = integration::require_bin("ctr", "containerd");
    let v = Command::new(ctr)
        .arg("--address")
        .arg(&sock)
        .arg("version")
        .output()
        .expect("ctr");
    let _ = kill(
        Pid::from_raw(i32::try_from(child.id()).expect("pid")),
        Signal::SIGTERM,
    );
    let status = child.wait().expect("wait");
    let mut log = String::new();
    if let Some(mut e) = child.stderr.take() {
        use std::io::Read;
        let _ = e.read_to_string(&mut log);
    }
    assert!(
        v.status.success(),
        "ctr version failed: {}\nberthd log:\n{log}",
        String::from_utf8_lossy(&v.stderr)
    );
    assert!(
        !log.contains("unknown key"),
        "the default config must not warn:\n{log}"
    );
    assert!(status.success(), "SIGTERM exits 0: {status}\n{log}");
    // `config dump` of the default file equals the defaults.
    let dump = |args: &[&str]| {
        let o = Command::new(berthd()).args(args).output().expect("dump");
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        String::from_utf8(o.stdout).expect("utf8")
    };
    let from_file = dump(&["--config", &cfg.display().to_string(), "config", "dump"]);
    assert!(
        from_file.contains("root = \"/var/lib/berth\"")
            && from_file.contains("content_sharing_policy = \"shared\""),
        "{from_file}"
    );
}

#[test]
fn typo_in_config_warns_with_file_and_line() {
    let tmpl = format!("{TEMPLATE}  adress = \"/nowhere\"\n\n[metrics]\n  adress = \"x\"\n");
    let d = TestDaemon::builder()
        .config(&tmpl)
        .start()
        .expect("berthd starts despite unknown keys");
    let log = d.logs();
    let cfg = d.config_path().display().to_string();
    let warn1 = log
        .lines()
        .find(|l| l.contains("grpc.adress"))
        .unwrap_or_else(|| panic!("no warning in\n{log}"));
    assert!(
        warn1.contains("line: 8") && warn1.contains(&cfg) && warn1.contains("unknown key"),
        "{warn1}"
    );
    let warn2 = log
        .lines()
        .find(|l| l.contains("metrics.adress"))
        .expect("second warning");
    assert!(warn2.contains("line: 11"), "{warn2}");
}

#[test]
fn invalid_config_value_fails_startup_naming_the_key() {
    let tmpl = TEMPLATE.replace("oom_score = 321", "oom_score = \"high\"");
    let err = TestDaemon::builder()
        .config(&tmpl)
        .start()
        .expect_err("must refuse");
    let DaemonError::EarlyExit { tail, .. } = &err else {
        panic!("expected EarlyExit, got {err}")
    };
    assert!(tail.contains("oom_score"), "{tail}");
    let tmpl = format!("{TEMPLATE}\n[plugins.\"io.containerd.metadata.v1.bolt\"]\n  content_sharing_policy = \"sometimes\"\n");
    let err = TestDaemon::builder()
        .config(&tmpl)
        .start()
        .expect_err("must refuse");
    let DaemonError::EarlyExit { tail, .. } = &err else {
        panic!("expected EarlyExit, got {err}")
    };
    assert!(
        tail.contains("content_sharing_policy") && tail.contains("isolated"),
        "{tail}"
    );
}

#[test]
fn sockets_dirs_and_oom_score_are_set_and_sigterm_is_graceful_with_sd_notify() {
    let tmp = tempfile::tempdir().expect("tmp");
    let notify_path = tmp.path().join("notify.sock");
    let notify = std::os::unix::net::UnixDatagram::bind(&notify_path).expect("bind notify socket");
    notify
        .set_read_timeout(Some(Duration::from_secs(20)))
        .expect("timeout");
    let mut d = TestDaemon::builder()
        .config(TEMPLATE)
        .env("NOTIFY_SOCKET", &notify_path)
        .start()
        .expect("start berthd");
    let mut buf = [0u8; 256];
    let n = notify.recv(&mut buf).expect("READY=1 from berthd");
    assert!(String::from_utf8_lossy(&buf[..n]).contains("READY=1"));

    assert_eq!(mode(&d.address()), 0o660, "grpc socket mode");
    assert_eq!(mode(&d.ttrpc_address()), 0o660, "ttrpc socket mode");
    assert_eq!(mode(d.root()), 0o700, "root mode");
    assert_eq!(mode(d.state()), 0o711, "state mode");
    let pid = d.pid().expect("pid");
    let adj = std::fs::read_to_string(format!("/proc/{pid}/oom_score_adj")).expect("oom_score_adj");
    assert_eq!(adj.trim(), "321");
    assert!(
        d.root()
            .join("io.containerd.metadata.v1.bolt/meta.redb")
            .is_file(),
        "metadata database"
    );

    let status = d.stop_daemon().expect("was running");
    assert!(status.contains("exit status: 0"), "{status}");
    let n = notify.recv(&mut buf).expect("STOPPING=1 from berthd");
    assert!(String::from_utf8_lossy(&buf[..n]).contains("STOPPING=1"));
    assert!(
        !d.address().exists() && !d.ttrpc_address().exists(),
        "sockets removed on shutdown"
    );
}

#[test]
fn metrics_endpoint_counts_grpc_requests_and_reports_storage() {
    use std::io::{Read, Write};
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let d = TestDaemon::builder()
        .extra_config(&format!("[metrics]\n  address = \"127.0.0.1:{port}\"\n"))
        .start()
        .expect("start berthd");
    d.ctr_ok(&["version"]);
    d.ctr_ok(&["namespaces", "create", "metrics-ns"]);
    let get = |path: &str| {
        let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect metrics");
        write!(s, "GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").expect("send");
        let mut out = String::new();
        s.read_to_string(&mut out).expect("read");
        out
    };
    let m = get("/v1/metrics");
    assert!(m.starts_with("HTTP/1.1 200"), "{m}");
    assert!(
        m.contains("berth_grpc_requests_total{method=\"/containerd.services.version.v1.Version/Version\"} 1"),
        "{m}"
    );
    assert!(
        m.contains("berth_namespaces ") && m.contains("berth_images{namespace=\"metrics-ns\"} 0"),
        "{m}"
    );
    assert!(get("/nope").starts_with("HTTP/1.1 404"));

    // An imported (and unpacked) image shows up in the gauges.
    let img = integration::image::TestImage::busybox().expect("test image");
    let tmp = tempfile::tempdir().expect("tmp");
    let tar = tmp.path().join("bb.tar");
    std::fs::write(&tar, img.oci_archive().expect("archive")).expect("write");
    d.ctr_ok(&["images", "import", &tar.display().to_string()]);
    let m = get("/v1/metrics");
    let ns = d.namespace();
    assert!(
        m.contains(&format!("berth_images{{namespace=\"{ns}\"}} 1")),
        "{m}"
    );
    assert!(
        m.contains(&format!(
            "berth_images_unpacked{{namespace=\"{ns}\",snapshotter=\"overlayfs\"}} 1"
        )),
        "{m}"
    );
    assert!(
        m.contains(&format!(
            "berth_images_unpacked{{namespace=\"{ns}\",snapshotter=\"native\"}} 0"
        )),
        "{m}"
    );
}

#[test]
fn oci_hook_expands_templates_and_passes_the_state() {
    let tmp = tempfile::tempdir().expect("tmp");
    let bundle = tmp.path().join("bundle");
    std::fs::create_dir_all(&bundle).expect("bundle");
    std::fs::write(bundle.join("config.json"), r#"{"root":{"path":"rootfs"}}"#).expect("spec");
    let out = tmp.path().join("out");
    let state = serde_json::json!({
        "ociVersion": "1.0.2", "id": "c1", "status": "creating", "pid": 4242,
        "bundle": bundle, "annotations": {"io.berth/x": "y"},
    });
    let script = format!("echo \"$1 $2 $3 $4\" > {0}; cat >> {0}", out.display());
    let mut child = Command::new(berthd())
        .args([
            "oci-hook",
            "--",
            "sh",
            "-c",
            &script,
            "hook",
            "{{id}}",
            "{{pid}}",
            "{{rootfs}}",
            "{{annotation \"io.berth/x\"}}",
        ])
        .stdin(std::process::Stdio::piped())
        .spawn()
        .expect("berthd oci-hook");
    {
        use std::io::Write;
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(state.to_string().as_bytes())
            .expect("state");
    }
    assert!(child.wait().expect("wait").success());
    let got = std::fs::read_to_string(&out).expect("hook output");
    let mut lines = got.lines();
    assert_eq!(
        lines.next(),
        Some(format!("c1 4242 {} y", bundle.join("rootfs").display()).as_str())
    );
    assert!(
        lines.next().is_some_and(|l| l.contains("\"id\":\"c1\"")),
        "state on the hook's stdin: {got}"
    );
}

#[test]
fn version_flag_prints_version() {
    for flag in ["-v", "--version"] {
        let o = Command::new(berthd())
            .arg(flag)
            .output()
            .expect("berthd -v");
        assert!(o.status.success());
        let s = String::from_utf8_lossy(&o.stdout);
        assert!(
            s.starts_with("berthd ") && s.contains(env!("CARGO_PKG_VERSION")),
            "{s}"
        );
    }
}

#[test]
fn json_log_format_and_socket_owner_from_config() {
    use std::os::unix::fs::MetadataExt;
    let tmpl = "version = 2\nroot = \"{root}\"\nstate = \"{state}\"\n\n[grpc]\n  address = \"{address}\"\n  uid = 0\n  gid = 65534\n\n[ttrpc]\n  uid = 0\n  gid = 65534\n\n[debug]\n  level = \"debug\"\n  format = \"json\"\n";
    let d = TestDaemon::builder()
        .config(tmpl)
        .start()
        .expect("start berthd");
    d.ctr_ok(&["version"]);
    let md = std::fs::metadata(d.address()).expect("socket");
    assert_eq!((md.uid(), md.gid()), (0, 65534), "grpc socket owner");
    let md = std::fs::metadata(d.ttrpc_address()).expect("ttrpc socket");
    assert_eq!(md.gid(), 65534, "ttrpc socket group");
    let logs = d.logs();
    let lines: Vec<&str> = logs.lines().filter(|l| !l.trim().is_empty()).collect();
    assert!(!lines.is_empty());
    for l in &lines {
        let v: serde_json::Value =
            serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}"));
        assert!(v.get("msg").is_some() && v.get("level").is_some(), "{l}");
    }
    assert!(
        logs.contains("serving on"),
        "log crate records are bridged into slog: {logs}"
    );
}

#[test]
fn debug_socket_serves_vars() {
    use std::io::{Read, Write};
    let tmp = tempfile::tempdir().expect("tmp");
    let sock = tmp.path().join("debug.sock");
    let d = TestDaemon::builder()
        .extra_config(&format!("\n[debug]\n  address = \"{}\"\n", sock.display()))
        .start();
    // The harness config already has a [debug] table: a second one is a TOML error.
    let err = d.expect_err("duplicate [debug] table must be refused");
    assert!(err.to_string().contains("debug"), "{err}");

    let tmpl = format!(
        "version = 2\nroot = \"{{root}}\"\nstate = \"{{state}}\"\n\n[grpc]\n  address = \"{{address}}\"\n\n[debug]\n  address = \"{}\"\n",
        sock.display()
    );
    let d = TestDaemon::builder()
        .config(&tmpl)
        .start()
        .expect("start berthd");
    d.ctr_ok(&["version"]);
    assert_eq!(mode(&sock), 0o660);
    let mut s = std::os::unix::net::UnixStream::connect(&sock).expect("connect debug socket");
    write!(s, "GET /debug/vars HTTP/1.1\r\nHost: x\r\n\r\n").expect("send");
    let mut out = String::new();
    s.read_to_string(&mut out).expect("read");
    let body = out.split("\r\n\r\n").nth(1).expect("body");
    let v: serde_json::Value = serde_json::from_str(body).expect("json");
    assert_eq!(v["pid"].as_u64(), d.pid().map(u64::from), "{v}");
    assert_eq!(
        v["grpc_requests"]["/containerd.services.version.v1.Version/Version"], 1,
        "{v}"
    );
}
