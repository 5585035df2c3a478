//! `ctr images pull` from a local registry into berthd: ctr 1.6 fetches client-side and
//! drives Content.Write (with expected digests and resumable refs), Images.Create, Leases
//! and the unpack (Snapshots + Diff.Apply), then `ctr images mount` shows the files.

use std::process::Command;

use integration::daemon::TestDaemon;
use integration::image::TestImage;
use integration::registry::Registry;

#[test]
fn ctr_pull_from_local_registry_unpacks_and_mounts() {
    let img = TestImage::busybox().expect("test image");
    let reg = Registry::http().expect("start docker-registry");
    let reference = reg.reference("library/busybox:test");
    reg.push_image(&img, "library/busybox:test")
        .expect("push with skopeo");
    let d = TestDaemon::start().expect("start berthd");
    let out = d.ctr_ok(&["images", "pull", "--plain-http", &reference]);
    assert!(out.contains("done") || out.contains("unpacking"), "{out}");
    let ls = d.ctr_ok(&["images", "ls"]);
    let line = ls
        .lines()
        .find(|l| l.starts_with(&reference))
        .unwrap_or_else(|| panic!("{ls}"));
    let check = d.ctr_ok(&["images", "check"]);
    assert!(
        check.contains("complete") && check.contains("true"),
        "{check}\n{line}"
    );
    // Pulling again finds everything present (Content.Write answers AlreadyExists).
    d.ctr_ok(&["images", "pull", "--plain-http", &reference]);

    let target = tempfile::tempdir().expect("mountpoint");
    let t = target.path().display().to_string();
    d.ctr_ok(&["images", "mount", &reference, &t]);
    let ok = target.path().join("bin/busybox").is_file();
    let _ = Command::new("umount").arg(target.path()).status();
    let _ = d.ctr(&["images", "unmount", &t]);
    assert!(
        ok,
        "pulled image's files are visible through ctr images mount"
    );
}
