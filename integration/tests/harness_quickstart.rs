//! The bare-runc reference runner (runc-wrapper + runc, no berthd) runs the test image.

use std::process::Command;

use integration::image::TestImage;
use integration::require_bin;

#[test]
fn quickstart_runner_runs_busybox_and_propagates_exit_code() {
    let _ = require_bin("runc", "runc");
    let dir = tempfile::tempdir().expect("tmp");
    TestImage::busybox()
        .expect("image")
        .write_oci_layout(dir.path())
        .expect("layout");
    let bin = env!("CARGO_BIN_EXE_berth-quickstart-run");

    let out = Command::new(bin).arg(dir.path()).output().expect("run");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("Hello from a berth container! hostname=berth-quickstart pid=1 user=root"),
        "{stdout}"
    );

    let out = Command::new(bin)
        .arg(dir.path())
        .args(["sh", "-c", "cat /etc/passwd; exit 5"])
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(5));
    assert!(String::from_utf8_lossy(&out.stdout).contains("nobody:x:65534"));

    let out = Command::new(bin)
        .arg(dir.path().join("missing"))
        .output()
        .expect("run");
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("index.json"),
        "names the missing file"
    );
}
