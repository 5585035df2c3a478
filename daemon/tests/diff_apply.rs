//! Layer apply behaviour on real filesystems: metadata, every entry type, compressions,
//! whiteouts in both modes (delete on a full view, overlay whiteouts in an upper directory,
//! checked through real overlayfs mounts), parent attributes from lower layers, sparse files.

mod diff_support;

use std::collections::HashMap;
use std::ffi::OsStr;
use std::fs;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::Path;

use daemon::diff::compression::{
    MEDIA_TYPE_DOCKER_LAYER, MEDIA_TYPE_LAYER, MEDIA_TYPE_LAYER_GZIP, MEDIA_TYPE_LAYER_ZSTD,
};
use daemon::diff::{apply_layer, apply_to_mounts, ApplyTarget};
use daemon::snapshots::mount::{mount_all, unmount_all};
use daemon::snapshots::{
    fsutil, Backend, NativeSnapshotter, OverlayConfig, OverlaySnapshotter, Snapshotter,
};
use diff_support::{assert_same_tree, describe, sha256, Layer};
use tar::EntryType;

fn rich_layer() -> Layer {
    Layer::new()
        .mtime(1_500_000_000)
        .dir("etc", 0o755)
        .file("etc/hosts", b"127.0.0.1 localhost\n", 0o644)
        .pax(&[
            ("SCHILY.xattr.user.berth", b"yes"),
            ("mtime", b"1500000123.25"),
        ])
        .file("etc/xattr-file", b"x", 0o600)
        .owner(1000, 1001)
        .file("home-file", b"owned", 0o640)
        .owner(0, 0)
        .file("setuid", b"#!", 0o4755)
        .symlink("etc/hosts", "hosts-link")
        .link("etc/hosts", "hosts-hard")
        .fifo("fifo", 0o600)
        .device(EntryType::Char, "null", 1, 3)
        .device(EntryType::Block, "loop9", 7, 9)
        .dir("deep", 0o711)
        .pax(&[("path", "deep/pax-long-name-".repeat(8).as_bytes())])
        .file("placeholder", b"via pax path", 0o644)
}

#[test]
fn apply_creates_every_entry_type_with_its_metadata() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let root = tmp.path();
    let tar = rich_layer().tar();
    let d = apply_layer(
        tar.as_slice(),
        MEDIA_TYPE_LAYER,
        &ApplyTarget::Dir(root),
        None,
    )
    .expect("apply");
    assert_eq!(d.digest, sha256(&tar));
    assert_eq!(d.size, tar.len() as i64);
    assert_eq!(d.media_type, MEDIA_TYPE_LAYER);

    let md = |p: &str| fs::symlink_metadata(root.join(p)).unwrap_or_else(|e| panic!("{p}: {e}"));
    assert_eq!(
        fs::read(root.join("etc/hosts")).expect("read"),
        b"127.0.0.1 localhost\n"
    );
    assert_eq!(md("etc").mode() & 0o7777, 0o755);
    assert_eq!(
        md("etc").mtime(),
        1_500_000_000,
        "directory mtime is set after its children"
    );
    assert_eq!(md("etc/hosts").mtime(), 1_500_000_000);
    let x = md("etc/xattr-file");
    assert_eq!(
        (x.mtime(), x.mtime_nsec()),
        (1_500_000_123, 250_000_000),
        "PAX sub-second mtime"
    );
    assert_eq!(
        fsutil::lgetxattr(&root.join("etc/xattr-file"), OsStr::new("user.berth"))
            .expect("getxattr"),
        Some(b"yes".to_vec())
    );
    let h = md("home-file");
    assert_eq!((h.uid(), h.gid(), h.mode() & 0o7777), (1000, 1001, 0o640));
    assert_eq!(
        md("setuid").mode() & 0o7777,
        0o4755,
        "set-id bits survive chown"
    );
    assert_eq!(
        fs::read_link(root.join("hosts-link")).expect("readlink"),
        Path::new("etc/hosts")
    );
    assert_eq!(
        md("hosts-hard").ino(),
        md("etc/hosts").ino(),
        "hard link shares the inode"
    );
    assert!(md("fifo").file_type().is_fifo());
    let null = md("null");
    assert!(null.file_type().is_char_device());
    assert_eq!(null.rdev(), nix::sys::stat::makedev(1, 3));
    let lp = md("loop9");
    assert!(lp.file_type().is_block_device());
    assert_eq!(lp.rdev(), nix::sys::stat::makedev(7, 9));
    assert_eq!(md("deep").mode() & 0o7777, 0o711);
    let long = "deep/pax-long-name-".repeat(8);
    assert_eq!(
        fs::read(root.join(&long)).expect("pax path"),
        b"via pax path"
    );
    assert!(
        !root.join("placeholder").exists(),
        "the PAX path overrides the header name"
    );
}

#[test]
fn compressions_and_media_types_give_the_same_tree_and_diff_id() {
    let tar = rich_layer().tar();
    let want = sha256(&tar);
    let reference = tempfile::tempdir().expect("tempdir");
    apply_layer(
        tar.as_slice(),
        MEDIA_TYPE_LAYER,
        &ApplyTarget::Dir(reference.path()),
        Some(&want),
    )
    .expect("tar");
    for (media_type, blob) in [
        (MEDIA_TYPE_LAYER_GZIP, rich_layer().gzip()),
        (MEDIA_TYPE_LAYER_ZSTD, rich_layer().zstd()),
        (MEDIA_TYPE_DOCKER_LAYER, rich_layer().gzip()),
        (
            "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
            rich_layer().gzip(),
        ),
        // containerd sniffs the stream: an uncompressed tar under a gzip media type applies,
        // and so does anything under Docker's uncompressed type (often mislabelled gzip).
        (MEDIA_TYPE_LAYER_GZIP, rich_layer().tar()),
        (
            "application/vnd.docker.image.rootfs.diff.tar",
            rich_layer().gzip(),
        ),
        (
            "application/vnd.docker.image.rootfs.diff.tar",
            rich_layer().tar(),
        ),
    ] {
        let t = tempfile::tempdir().expect("tempdir");
        let d = apply_layer(
            blob.as_slice(),
            media_type,
            &ApplyTarget::Dir(t.path()),
            Some(&want),
        )
        .unwrap_or_else(|e| panic!("{media_type}: {e}"));
        assert_eq!(d.digest, want, "{media_type}");
        assert_same_tree(reference.path(), t.path(), true, media_type);
    }
}

#[test]
fn whiteouts_and_opaque_dirs_delete_on_a_full_view() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let root = tmp.path();
    let base = Layer::new()
        .dir("a", 0o755)
        .file("a/keep", b"k", 0o644)
        .file("a/gone", b"g", 0o644)
        .dir("a/sub", 0o755)
        .file("a/sub/gone-too", b"g", 0o644)
        .dir("opq", 0o755)
        .file("opq/old1", b"o", 0o644)
        .dir("opq/olddir", 0o755)
        .file("opq/olddir/x", b"o", 0o644)
        .dir("opq/kept-dir", 0o755)
        .file("opq/kept-dir/old", b"o", 0o644)
        .tar();
    apply_layer(
        base.as_slice(),
        MEDIA_TYPE_LAYER,
        &ApplyTarget::Dir(root),
        None,
    )
    .expect("base");
    let upper = Layer::new()
        .whiteout("a/.wh.gone")
        .whiteout("a/.wh.sub")
        .whiteout("a/.wh.never-existed")
        // Entries of this layer that come before the opaque marker survive it.
        .file("opq/new-before", b"n", 0o644)
        .dir("opq/kept-dir", 0o755)
        .file("opq/kept-dir/new", b"n", 0o644)
        .whiteout("opq/.wh..wh..opq")
        .file("opq/new-after", b"n", 0o644)
        .tar();
    apply_layer(
        upper.as_slice(),
        MEDIA_TYPE_LAYER,
        &ApplyTarget::Dir(root),
        None,
    )
    .expect("upper");
    let mut names: Vec<String> = describe(root, false).into_keys().collect();
    names.sort();
    assert_eq!(
        names,
        [
            "",
            "a",
            "a/keep",
            "opq",
            "opq/kept-dir",
            "opq/kept-dir/new",
            "opq/new-after",
            "opq/new-before"
        ],
        "whiteouts removed exactly the whited-out entries"
    );
}

#[test]
fn existing_entries_are_replaced_and_directories_merged() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let root = tmp.path();
    fs::create_dir_all(root.join("dir-becomes-file/child")).expect("mkdir");
    fs::write(root.join("file-becomes-dir"), "f").expect("write");
    fs::create_dir(root.join("merged")).expect("mkdir");
    fs::write(root.join("merged/existing"), "stay").expect("write");
    let l = Layer::new()
        .file("dir-becomes-file", b"now a file", 0o644)
        .dir("file-becomes-dir", 0o750)
        .file("file-becomes-dir/inner", b"i", 0o644)
        .dir("merged", 0o701)
        .file("merged/new", b"n", 0o644)
        .tar();
    apply_layer(
        l.as_slice(),
        MEDIA_TYPE_LAYER,
        &ApplyTarget::Dir(root),
        None,
    )
    .expect("apply");
    assert_eq!(
        fs::read(root.join("dir-becomes-file")).expect("read"),
        b"now a file"
    );
    assert_eq!(
        fs::read(root.join("file-becomes-dir/inner")).expect("read"),
        b"i"
    );
    assert_eq!(
        fs::metadata(root.join("file-becomes-dir"))
            .expect("stat")
            .mode()
            & 0o777,
        0o750
    );
    assert_eq!(
        fs::read(root.join("merged/existing")).expect("kept"),
        b"stay"
    );
    assert_eq!(
        fs::metadata(root.join("merged")).expect("stat").mode() & 0o777,
        0o701,
        "metadata merged"
    );
}

#[test]
fn sparse_files_keep_their_holes() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let mut data = vec![0u8; 8 * 1024 * 1024];
    *data.last_mut().expect("non-empty") = 1;
    data[4096] = 2;
    let l = Layer::new()
        .file("sparse", &data, 0o644)
        .file("zeros", &vec![0u8; 1024 * 1024], 0o644)
        .tar();
    apply_layer(
        l.as_slice(),
        MEDIA_TYPE_LAYER,
        &ApplyTarget::Dir(tmp.path()),
        None,
    )
    .expect("apply");
    let m = fs::metadata(tmp.path().join("sparse")).expect("stat");
    assert_eq!(m.len(), data.len() as u64);
    assert_eq!(fs::read(tmp.path().join("sparse")).expect("read"), data);
    assert!(
        m.blocks() * 512 < 1024 * 1024,
        "8 MiB mostly-zero file allocates {} bytes",
        m.blocks() * 512
    );
    let z = fs::metadata(tmp.path().join("zeros")).expect("stat");
    assert_eq!(z.len(), 1024 * 1024, "trailing hole sized by truncate");
}

struct Mounted(std::path::PathBuf);
impl Drop for Mounted {
    fn drop(&mut self) {
        let _ = unmount_all(&self.0);
    }
}

fn view_tree(sn: &Backend, key: &str, parent: &str, at: &Path) -> HashMapTree {
    let m = sn.view(key, parent, HashMap::new()).expect("view");
    fs::create_dir_all(at).expect("mkdir");
    mount_all(&m, at).expect("mount view");
    let g = Mounted(at.to_path_buf());
    let t = describe(at, true);
    drop(g);
    sn.remove(key).expect("remove view");
    t
}

type HashMapTree = std::collections::BTreeMap<String, String>;

fn base_and_upper() -> (Vec<u8>, Vec<u8>) {
    let base = Layer::new()
        .mtime(1_400_000_000)
        .owner(5, 6)
        .dir("usr", 0o700)
        .owner(0, 0)
        .dir("usr/lib", 0o755)
        .file("usr/lib/a", b"a", 0o644)
        .file("usr/lib/b", b"b", 0o644)
        .dir("var", 0o755)
        .dir("var/cache", 0o755)
        .file("var/cache/old", b"old", 0o644)
        .file("top", b"top", 0o644)
        .tar();
    // No directory entries for usr/: the applier must create it with the lower's attributes.
    let upper = Layer::new()
        .mtime(1_400_000_500)
        .file("usr/lib/c", b"c", 0o644)
        .whiteout("usr/lib/.wh.a")
        .whiteout(".wh.top")
        .whiteout("var/cache/.wh..wh..opq")
        .file("var/cache/new", b"new", 0o644)
        .tar();
    (base, upper)
}

/// The same two layers through both snapshotters: overlayfs takes the upper-dir path with
/// overlay whiteouts, native deletes on a mounted copy; both views must be identical.
#[test]
fn overlay_upper_and_native_produce_the_same_merged_view() {
    let fss = fs::read_to_string("/proc/filesystems").expect("read /proc/filesystems");
    assert!(
        fss.contains("\toverlay\n"),
        "overlayfs missing: load the `overlay` kernel module"
    );
    let (base, upper) = base_and_upper();
    let mut views = Vec::new();
    for backend in ["overlayfs", "native"] {
        let tmp = tempfile::tempdir().expect("tempdir");
        let root = tmp.path().join("root");
        let sn = match backend {
            "overlayfs" => Backend::Overlay(
                OverlaySnapshotter::open(&root, OverlayConfig::default()).expect("open"),
            ),
            _ => Backend::Native(NativeSnapshotter::open(&root).expect("open")),
        };
        let m1 = sn.prepare("l1-a", "", HashMap::new()).expect("prepare");
        let d1 = apply_to_mounts(&m1, base.as_slice(), MEDIA_TYPE_LAYER, Some(&sha256(&base)))
            .expect("apply base");
        assert_eq!(d1.digest, sha256(&base));
        sn.commit("l1", "l1-a", HashMap::new()).expect("commit");
        let m2 = sn.prepare("l2-a", "l1", HashMap::new()).expect("prepare");
        if backend == "overlayfs" {
            assert_eq!(
                m2[0].fs_type, "overlay",
                "the second layer is applied into the upper dir"
            );
        }
        apply_to_mounts(
            &m2,
            upper.as_slice(),
            MEDIA_TYPE_LAYER,
            Some(&sha256(&upper)),
        )
        .expect("apply upper");
        if let Backend::Overlay(ov) = &sn {
            let id = fs::read_dir(ov.root().join("snapshots"))
                .expect("read")
                .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
                .max_by_key(|n| n.parse::<u64>().unwrap_or(0))
                .expect("a snapshot dir");
            let up = ov.upper_path(&id);
            let wh = fs::symlink_metadata(up.join("top")).expect("whiteout node for top");
            assert!(
                wh.file_type().is_char_device() && wh.rdev() == 0,
                "overlay whiteout is a 0/0 char device"
            );
            assert_eq!(
                fsutil::lgetxattr(&up.join("var/cache"), OsStr::new("trusted.overlay.opaque"))
                    .expect("xattr"),
                Some(b"y".to_vec()),
                "opaque marker becomes trusted.overlay.opaque=y"
            );
            let usr = fs::symlink_metadata(up.join("usr")).expect("usr created in upper");
            assert_eq!(
                (usr.uid(), usr.gid(), usr.mode() & 0o7777),
                (5, 6, 0o700),
                "parent attrs copied from lower"
            );
        }
        sn.commit("l2", "l2-a", HashMap::new()).expect("commit");
        let t = view_tree(&sn, "v", "l2", &tmp.path().join("view"));
        sn.close().expect("close");
        views.push(t);
    }
    assert_eq!(views[0], views[1], "overlayfs and native views differ");
    let names: Vec<&String> = views[0].keys().collect();
    assert_eq!(
        names,
        [
            "",
            "usr",
            "usr/lib",
            "usr/lib/b",
            "usr/lib/c",
            "var",
            "var/cache",
            "var/cache/new"
        ],
        "merged view after whiteouts"
    );
    assert!(
        views[0]["usr"].contains("mode=700 uid=5 gid=6"),
        "{}",
        views[0]["usr"]
    );
}

#[test]
fn failed_apply_reports_the_entry_and_keeps_target_contained() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let mut blob = Layer::new()
        .file("ok", b"fine", 0o644)
        .file("broken", &vec![9u8; 100_000], 0o644)
        .gzip();
    blob.truncate(blob.len() - 200);
    let err = apply_layer(
        blob.as_slice(),
        MEDIA_TYPE_LAYER_GZIP,
        &ApplyTarget::Dir(tmp.path()),
        None,
    )
    .expect_err("truncated gzip must fail");
    assert_eq!(
        err.kind(),
        daemon::diff::ErrorKind::InvalidArgument,
        "{err}"
    );
    let msg = err.to_string();
    assert!(msg.contains("corrupt or truncated"), "{msg}");
    // Everything written stays under the target.
    for e in fs::read_dir(tmp.path()).expect("read") {
        let p = e.expect("entry").path();
        assert!(p.starts_with(tmp.path()));
    }
    fs::set_permissions(tmp.path(), fs::Permissions::from_mode(0o755)).expect("chmod");
}

/// `security.*` xattrs are applied (file capabilities, as containerd does), `trusted.*` are
/// not; the walking differ carries `security.capability` back out.
#[test]
fn security_capability_xattr_is_applied_and_diffed() {
    // VFS_CAP_REVISION_2 | effective, permitted = CAP_NET_RAW (13).
    let cap: [u8; 20] = [
        1, 0, 0, 2, 0, 0x20, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    ];
    let tmp = tempfile::tempdir().expect("tempdir");
    let root = tmp.path().join("r");
    fs::create_dir(&root).expect("mkdir");
    let l = Layer::new()
        .pax(&[
            ("SCHILY.xattr.security.capability", &cap),
            ("SCHILY.xattr.trusted.x", b"1"),
        ])
        .file("ping", b"elf", 0o755)
        .tar();
    apply_layer(
        l.as_slice(),
        MEDIA_TYPE_LAYER,
        &ApplyTarget::Dir(&root),
        None,
    )
    .expect("apply");
    let p = root.join("ping");
    assert_eq!(
        fsutil::lgetxattr(&p, OsStr::new("security.capability")).expect("get"),
        Some(cap.to_vec())
    );
    assert_eq!(
        fsutil::lgetxattr(&p, OsStr::new("trusted.x")).expect("get"),
        None
    );
    let empty = tmp.path().join("e");
    fs::create_dir(&empty).expect("mkdir");
    let (blob, _) = daemon::diff::write_diff(
        &empty,
        &root,
        Vec::new(),
        &daemon::diff::DiffOptions {
            compression: daemon::diff::Compression::Uncompressed,
            media_type: None,
        },
    )
    .expect("diff");
    let mut found = false;
    for e in tar::Archive::new(blob.as_slice())
        .entries()
        .expect("entries")
    {
        let mut e = e.expect("entry");
        if let Some(exts) = e.pax_extensions().expect("pax") {
            for x in exts {
                let x = x.expect("ext");
                if x.key() == Ok("SCHILY.xattr.security.capability") {
                    assert_eq!(x.value_bytes(), cap);
                    found = true;
                }
            }
        }
    }
    assert!(found, "the differ carries security.capability");
}
