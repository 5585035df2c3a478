//! The test images are deterministic and valid for real tools (skopeo, umoci, containerd).

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::Command;

use integration::image::{Expected, TestImage, LAYERS_ABSENT, LAYERS_EXPECTED};
use integration::require_bin;

#[test]
fn busybox_image_digests_are_stable_across_builds() {
    let a = TestImage::build_busybox().expect("build");
    let b = TestImage::build_busybox().expect("build again");
    assert_eq!(a.manifest_digest(), b.manifest_digest());
    assert_eq!(a.config_digest(), b.config_digest());
    assert_eq!(a.layer_digests(), b.layer_digests());
    assert_eq!(a.diff_ids(), b.diff_ids());
    assert_eq!(a.oci_archive().expect("tar"), b.oci_archive().expect("tar"));
    assert_eq!(
        a.docker_archive().expect("tar"),
        b.docker_archive().expect("tar")
    );
    let l = TestImage::build_layers().expect("layers");
    assert_eq!(
        l.manifest_digest(),
        TestImage::layers().expect("cached").manifest_digest()
    );
    assert_eq!(l.layers.len(), 4);
    assert_eq!(
        l.layers[0].diff_id, a.layers[0].diff_id,
        "layers image starts with busybox"
    );
}

#[test]
fn busybox_config_has_cmd_env_and_diff_ids() {
    let img = TestImage::busybox().expect("build");
    let cfg: serde_json::Value = serde_json::from_slice(&img.config.data).expect("config json");
    assert_eq!(cfg["config"]["Cmd"], serde_json::json!(["sh"]));
    assert!(cfg["config"]["Env"][0]
        .as_str()
        .expect("env")
        .starts_with("PATH=/"));
    assert_eq!(cfg["rootfs"]["diff_ids"], serde_json::json!(img.diff_ids()));
    let m: serde_json::Value = serde_json::from_slice(&img.manifest.data).expect("manifest json");
    assert_eq!(m["config"]["digest"], img.config_digest());
    assert_eq!(m["layers"][0]["digest"], img.layer_digests()[0]);
}

#[test]
fn skopeo_reads_the_oci_layout() {
    let skopeo = require_bin("skopeo", "skopeo");
    let img = TestImage::busybox().expect("build");
    let dir = tempfile::tempdir().expect("tmp");
    img.write_oci_layout(dir.path()).expect("write layout");
    let out = Command::new(skopeo)
        .args([
            "inspect",
            &format!("oci:{}:{}", dir.path().display(), img.tag()),
        ])
        .output()
        .expect("run skopeo");
    assert!(
        out.status.success(),
        "skopeo inspect: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(v["Digest"], img.manifest_digest());
    assert_eq!(v["Layers"], serde_json::json!(img.layer_digests()));
    assert_eq!(v["Os"], "linux");
}

fn check_tree(root: &Path) {
    for (rel, want) in LAYERS_EXPECTED {
        let p = root.join(rel);
        let m = fs::symlink_metadata(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
        match want {
            Expected::Dir => assert!(m.is_dir(), "{rel} should be a dir"),
            Expected::Symlink(t) => {
                assert!(m.file_type().is_symlink(), "{rel} should be a symlink");
                assert_eq!(
                    fs::read_link(&p).expect("readlink").to_str(),
                    Some(*t),
                    "{rel}"
                );
            }
            Expected::File(content, mode, uid) => {
                assert!(m.is_file(), "{rel} should be a file");
                assert_eq!(fs::read_to_string(&p).expect("read"), *content, "{rel}");
                assert_eq!(m.mode() & 0o7777, *mode, "{rel} mode");
                assert_eq!(m.uid(), *uid, "{rel} uid");
            }
        }
    }
    for rel in LAYERS_ABSENT {
        assert!(
            fs::symlink_metadata(root.join(rel)).is_err(),
            "{rel} must not exist"
        );
    }
    let a = fs::metadata(root.join("data/hardlink")).expect("hardlink");
    let b = fs::metadata(root.join("data/hardlink-src")).expect("src");
    assert_eq!(a.ino(), b.ino(), "hardlink must share the inode");
    assert!(root.join("bin/sh").exists(), "busybox applets are linked");
    let tmp = fs::metadata(root.join("tmp")).expect("tmp");
    assert_eq!(tmp.mode() & 0o7777, 0o1777);
    assert!(fs::read_to_string(root.join("etc/passwd"))
        .expect("passwd")
        .contains("nobody:x:65534"));
}

#[test]
fn umoci_unpacks_layers_image_to_the_expected_tree() {
    let umoci = require_bin("umoci", "umoci");
    let img = TestImage::layers().expect("build");
    let dir = tempfile::tempdir().expect("tmp");
    let layout = dir.path().join("layout");
    img.write_oci_layout(&layout).expect("write layout");
    let bundle = dir.path().join("bundle");
    let out = Command::new(umoci)
        .args(["unpack", "--image"])
        .arg(format!("{}:{}", layout.display(), img.tag()))
        .arg(&bundle)
        .output()
        .expect("run umoci");
    assert!(
        out.status.success(),
        "umoci unpack: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    check_tree(&bundle.join("rootfs"));
}

#[test]
fn reference_unpacker_matches_expected_tree() {
    let img = TestImage::layers().expect("build");
    let dir = tempfile::tempdir().expect("tmp");
    img.unpack_to(dir.path()).expect("unpack");
    check_tree(dir.path());
}

#[test]
fn oci_layout_unpacker_verifies_and_applies_layers() {
    let img = TestImage::layers().expect("build");
    let dir = tempfile::tempdir().expect("tmp");
    let layout = dir.path().join("layout");
    img.write_oci_layout(&layout).expect("layout");
    let rootfs = dir.path().join("rootfs");
    integration::image::unpack_oci_layout(&layout, &rootfs).expect("unpack");
    check_tree(&rootfs);

    // A corrupted blob is refused, naming the digest.
    let victim = layout.join("blobs/sha256").join(img.layers[1].blob.hex());
    fs::write(&victim, b"corrupt").expect("corrupt");
    let err = integration::image::unpack_oci_layout(&layout, &dir.path().join("r2"))
        .expect_err("must refuse")
        .to_string();
    assert!(err.contains(&img.layers[1].blob.digest), "{err}");
}

#[test]
fn berth_testimage_writes_layouts_archives_and_digests() {
    let dir = tempfile::tempdir().expect("tmp");
    let out = Command::new(env!("CARGO_BIN_EXE_berth-testimage"))
        .arg(dir.path())
        .output()
        .expect("run berth-testimage");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let digests: serde_json::Value =
        serde_json::from_slice(&fs::read(dir.path().join("digests.json")).expect("digests.json"))
            .expect("json");
    let bb = TestImage::busybox().expect("build");
    assert_eq!(digests["busybox"]["manifest"], bb.manifest_digest());
    assert_eq!(
        digests["layers"]["layers"].as_array().map(Vec::len),
        Some(4)
    );
    assert_eq!(
        fs::read(dir.path().join("busybox.oci.tar")).expect("tar"),
        bb.oci_archive().expect("tar")
    );
    for f in [
        "busybox/index.json",
        "layers/oci-layout",
        "busybox.docker.tar",
        "layers.oci.tar",
    ] {
        assert!(dir.path().join(f).exists(), "{f} missing");
    }
    let bad = Command::new(env!("CARGO_BIN_EXE_berth-testimage"))
        .output()
        .expect("run");
    assert_eq!(
        bad.status.code(),
        Some(2),
        "usage error without an argument"
    );
}

#[test]
fn skopeo_reads_the_docker_archive() {
    let skopeo = require_bin("skopeo", "skopeo");
    let img = TestImage::busybox().expect("build");
    let dir = tempfile::tempdir().expect("tmp");
    let path = dir.path().join("busybox.docker.tar");
    img.write_docker_archive(&path).expect("write");
    let out = Command::new(skopeo)
        // Selecting the image by its RepoTags entry proves manifest.json names it.
        .args([
            "inspect",
            &format!("docker-archive:{}:busybox:test", path.display()),
        ])
        .output()
        .expect("run skopeo");
    assert!(
        out.status.success(),
        "skopeo inspect: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(v["Os"], "linux", "{v}");
    // docker-archive layers are the uncompressed tars: their digests are the diff IDs.
    assert_eq!(v["Layers"], serde_json::json!(img.diff_ids()));
}
