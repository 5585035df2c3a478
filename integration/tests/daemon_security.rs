//! Hostile layers through the whole import path (Debian `ctr images import` → Content.Write →
//! Snapshots.Prepare → Diff.Apply): nothing lands outside the snapshot, a corrupt layer or a
//! refused entry fails the unpack without leaving a committed snapshot, and berthd keeps
//! serving (a good image imports right after). The applier's own breakout table lives
//! beside it in `daemon/tests`; this checks the service wiring around it.

use std::path::PathBuf;

use integration::daemon::TestDaemon;
use integration::image::TestImage;
use sha2::{Digest, Sha256};

fn digest(data: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(data)))
}

/// A tar entry with a raw name (the `tar` crate refuses `..` in `set_path`).
fn raw_entry(out: &mut Vec<u8>, name: &str, kind: tar::EntryType, link: &str, data: &[u8]) {
    let mut h = tar::Header::new_ustar();
    {
        let u = h.as_ustar_mut().expect("ustar");
        u.name[..name.len()].copy_from_slice(name.as_bytes());
        u.linkname[..link.len()].copy_from_slice(link.as_bytes());
    }
    h.set_entry_type(kind);
    h.set_mode(if kind == tar::EntryType::Directory {
        0o755
    } else {
        0o644
    });
    h.set_size(data.len() as u64);
    h.set_mtime(1_600_000_000);
    h.set_cksum();
    out.extend_from_slice(h.as_bytes());
    out.extend_from_slice(data);
    let pad = (512 - data.len() % 512) % 512;
    out.extend(std::iter::repeat_n(0u8, pad));
}

fn finish_tar(mut t: Vec<u8>) -> Vec<u8> {
    t.extend(std::iter::repeat_n(0u8, 1024));
    t
}

/// An `ctr images import`-able OCI archive with one uncompressed layer `layer` whose config
/// claims `diff_id`.
fn oci_archive(name: &str, layer: &[u8], media_type: &str, diff_id: &str) -> Vec<u8> {
    let config = serde_json::json!({
        "architecture": integration::image::oci_arch(), "os": "linux",
        "config": {}, "rootfs": {"type": "layers", "diff_ids": [diff_id]},
    })
    .to_string()
    .into_bytes();
    let manifest = serde_json::json!({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": digest(&config), "size": config.len()},
        "layers": [{"mediaType": media_type, "digest": digest(layer), "size": layer.len()}],
    })
    .to_string()
    .into_bytes();
    let index = serde_json::json!({
        "schemaVersion": 2,
        "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": digest(&manifest), "size": manifest.len(),
            "annotations": {"io.containerd.image.name": name, "org.opencontainers.image.ref.name": "test"}}],
    })
    .to_string()
    .into_bytes();
    let mut b = tar::Builder::new(Vec::new());
    let mut add = |path: &str, data: &[u8]| {
        let mut h = tar::Header::new_ustar();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_mtime(1_600_000_000);
        h.set_cksum();
        b.append_data(&mut h, path, data).expect("append");
    };
    add("oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#);
    add("index.json", &index);
    for blob in [&config, &manifest, &layer.to_vec()] {
        add(
            &format!(
                "blobs/sha256/{}",
                digest(blob).trim_start_matches("sha256:")
            ),
            blob,
        );
    }
    b.into_inner().expect("tar")
}

struct Case {
    name: &'static str,
    layer: Vec<u8>,
    media_type: &'static str,
    diff_id: Option<String>,
    must_fail: bool,
}

fn outside(tag: &str) -> PathBuf {
    std::env::temp_dir().join(format!("berth-escape-{tag}-{}", std::process::id()))
}

fn cases() -> Vec<Case> {
    let mut v = Vec::new();
    let dotdot = outside("dotdot");
    let mut t = Vec::new();
    raw_entry(
        &mut t,
        &format!("../../../../../..{}", dotdot.display()),
        tar::EntryType::Regular,
        "",
        b"pwned\n",
    );
    v.push(Case {
        name: "dotdot-path",
        layer: finish_tar(t),
        media_type: "application/vnd.oci.image.layer.v1.tar",
        diff_id: None,
        must_fail: false,
    });

    let via_link = outside("symlink");
    std::fs::create_dir_all(&via_link).expect("target dir");
    let mut t = Vec::new();
    raw_entry(
        &mut t,
        "evil",
        tar::EntryType::Symlink,
        &via_link.display().to_string(),
        b"",
    );
    raw_entry(
        &mut t,
        "evil/pwned",
        tar::EntryType::Regular,
        "",
        b"pwned\n",
    );
    v.push(Case {
        name: "file-through-absolute-symlink",
        layer: finish_tar(t),
        media_type: "application/vnd.oci.image.layer.v1.tar",
        diff_id: None,
        must_fail: false,
    });

    let mut t = Vec::new();
    raw_entry(&mut t, "etc/.wh...", tar::EntryType::Regular, "", b"");
    v.push(Case {
        name: "whiteout-of-dotdot",
        layer: finish_tar(t),
        media_type: "application/vnd.oci.image.layer.v1.tar",
        diff_id: None,
        must_fail: true,
    });

    let good = {
        let mut t = Vec::new();
        raw_entry(
            &mut t,
            "file",
            tar::EntryType::Regular,
            "",
            &vec![b'x'; 10_000],
        );
        finish_tar(t)
    };
    let truncated = good[..3000].to_vec();
    v.push(Case {
        name: "truncated-layer",
        diff_id: Some(digest(&good)),
        layer: truncated,
        media_type: "application/vnd.oci.image.layer.v1.tar",
        must_fail: true,
    });

    v.push(Case {
        name: "gzip-garbage",
        layer: b"\x1f\x8b\x08\x00garbage-not-gzip".to_vec(),
        media_type: "application/vnd.oci.image.layer.v1.tar+gzip",
        diff_id: Some(digest(b"x")),
        must_fail: true,
    });
    v
}

fn cleanup_outside() {
    for tag in ["dotdot", "symlink"] {
        let p = outside(tag);
        let _ = std::fs::remove_dir_all(&p);
        let _ = std::fs::remove_file(&p);
    }
}

#[test]
fn hostile_layers_never_escape_and_berthd_keeps_serving() {
    let d = TestDaemon::start().expect("start berthd");
    let tmp = tempfile::tempdir().expect("tmp");
    for case in cases() {
        let diff_id = case.diff_id.clone().unwrap_or_else(|| digest(&case.layer));
        let name = format!("example.com/hostile/{}:test", case.name);
        let archive = oci_archive(&name, &case.layer, case.media_type, &diff_id);
        let path = tmp.path().join(format!("{}.tar", case.name));
        std::fs::write(&path, archive).expect("write archive");
        let out = d.ctr(&["images", "import", &path.display().to_string()]);
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        if case.must_fail {
            assert!(!out.status.success(), "{}: import must fail", case.name);
            assert!(
                stderr.contains("apply layer") || stderr.contains("diff"),
                "{}: error should come from the applier: {stderr}",
                case.name
            );
            let snaps = d.ctr_ok(&["snapshots", "ls"]);
            assert!(
                !snaps.contains(&diff_id),
                "{}: no committed snapshot after a failed unpack:\n{snaps}",
                case.name
            );
        }
        assert!(
            !outside("dotdot").exists(),
            "{}: wrote {}",
            case.name,
            outside("dotdot").display()
        );
        assert!(
            !outside("symlink").join("pwned").exists(),
            "{}: wrote through the symlink",
            case.name
        );
        // Still serving.
        assert!(
            d.ctr_ok(&["version"]).contains("Server:"),
            "{}: berthd stopped serving",
            case.name
        );
    }
    cleanup_outside();
    // A good image still imports and unpacks afterwards.
    let img = TestImage::busybox().expect("test image");
    let good = tmp.path().join("good.tar");
    std::fs::write(&good, img.oci_archive().expect("archive")).expect("write");
    d.ctr_ok(&["images", "import", &good.display().to_string()]);
    assert!(d.ctr_ok(&["snapshots", "ls"]).contains(&img.diff_ids()[0]));
}
