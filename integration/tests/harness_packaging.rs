//! The packaging files are valid: the systemd unit passes `systemd-analyze verify` with the
//! settings a container daemon needs, and the default config is containerd-format TOML with
//! berth's paths.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::process::Command;

use integration::bins::{berth_bin_dir, workspace_root};
use integration::require_bin;

fn unit_text() -> String {
    fs::read_to_string(workspace_root().join("packaging/berthd.service"))
        .expect("read berthd.service")
}

#[test]
fn berthd_unit_passes_systemd_analyze_verify() {
    let analyze = require_bin("systemd-analyze", "systemd");
    let dir = tempfile::tempdir().expect("tmp");
    // ExecStart must name an existing executable: the built berthd, else a stand-in (the unit's
    // syntax is what is checked here, not the binary).
    let built = berth_bin_dir().join("berthd");
    let bin = if built.exists() {
        built
    } else {
        let stand_in = dir.path().join("berthd");
        fs::copy("/bin/true", &stand_in).expect("copy stand-in");
        fs::set_permissions(&stand_in, fs::Permissions::from_mode(0o755)).expect("chmod");
        stand_in
    };
    let unit: String = unit_text()
        .lines()
        .map(|l| {
            if l.starts_with("ExecStart=") {
                format!(
                    "ExecStart={} --config /etc/berth/config.toml",
                    bin.display()
                )
            } else {
                l.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join("\n");
    let path = dir.path().join("berthd.service");
    fs::write(&path, unit).expect("write unit");
    let out = Command::new(analyze)
        .arg("verify")
        .arg(&path)
        .output()
        .expect("run systemd-analyze");
    let msgs = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success() && msgs.trim().is_empty(),
        "systemd-analyze verify: {msgs}"
    );

    // A typo must be caught by the same check (proves the verification is not a no-op).
    fs::write(
        &path,
        unit_text()
            .replace("Delegate=yes", "Delegat=yes")
            .replace("/usr/local/bin/berthd", &bin.to_string_lossy()),
    )
    .expect("write");
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&path)
        .output()
        .expect("run");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("Unknown key"),
        "typo not reported"
    );
}

#[test]
fn berthd_unit_has_container_daemon_settings() {
    let unit = unit_text();
    for want in [
        "Type=notify",
        "KillMode=process",
        "Delegate=yes",
        "LimitNOFILE=1048576",
        "LimitNPROC=infinity",
        "LimitCORE=infinity",
        "TasksMax=infinity",
        "OOMScoreAdjust=-999",
        "ExecStartPre=-/sbin/modprobe overlay",
        "ExecStart=/usr/local/bin/berthd --config /etc/berth/config.toml",
    ] {
        assert!(
            unit.lines().any(|l| l.trim() == want),
            "berthd.service lacks `{want}`"
        );
    }
}

#[test]
fn default_config_is_containerd_format_with_berth_paths() {
    let text = fs::read_to_string(workspace_root().join("packaging/config.toml"))
        .expect("read config.toml");
    let v: toml::Table = toml::from_str(&text).expect("config.toml is valid TOML");
    assert_eq!(v["version"].as_integer(), Some(2));
    assert_eq!(v["root"].as_str(), Some("/var/lib/berth"));
    assert_eq!(v["state"].as_str(), Some("/run/berth"));
    assert_eq!(v["grpc"]["address"].as_str(), Some("/run/berth/berth.sock"));
    assert_eq!(
        v["ttrpc"]["address"].as_str(),
        Some("/run/berth/berth.sock.ttrpc")
    );
    assert!(v["plugins"]
        .as_table()
        .is_some_and(|p| p.contains_key("io.containerd.gc.v1.scheduler")));
}

#[test]
fn scripts_are_executable_and_parse() {
    for s in ["packaging/test.sh", "packaging/quickstart.sh", ".ci/run"] {
        let p = workspace_root().join(s);
        let mode = fs::metadata(&p)
            .unwrap_or_else(|e| panic!("{s}: {e}"))
            .permissions()
            .mode();
        assert!(mode & 0o111 != 0, "{s} must be executable");
        let out = Command::new("bash")
            .arg("-n")
            .arg(&p)
            .output()
            .expect("bash -n");
        assert!(
            out.status.success(),
            "{s}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let ci = fs::read_to_string(workspace_root().join(".ci/run")).expect("read .ci/run");
    assert!(
        ci.contains("exec ./packaging/test.sh"),
        ".ci/run must run exactly the README's test command"
    );
}
