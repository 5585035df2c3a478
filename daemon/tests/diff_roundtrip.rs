//! The walking differ, tested by round trip: diff(lower, upper) applied onto a copy of lower
//! must reproduce upper (types, modes, owners, xattrs, link targets, content, file mtimes).
//! Also end to end through both snapshotters with `diff_mounts`.

mod diff_support;

use std::collections::HashMap;
use std::fs;
use std::io::Read;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::Path;

use daemon::diff::compression::{decompress, MEDIA_TYPE_LAYER};
use daemon::diff::{
    apply_layer, apply_to_mounts, diff_mounts, write_diff, ApplyTarget, Compression, DiffOptions,
};
use daemon::snapshots::mount::{mount_all, unmount_all};
use daemon::snapshots::{
    fsutil, Backend, NativeSnapshotter, OverlayConfig, OverlaySnapshotter, Snapshotter,
};
use diff_support::{assert_same_tree, describe, sha256, Layer};
use nix::sys::stat::{makedev, mknod, Mode, SFlag};

fn set_mtime(p: &Path, secs: i64, nsec: i64) {
    let t = nix::sys::time::TimeSpec::new(secs, nsec);
    nix::sys::stat::utimensat(
        nix::fcntl::AT_FDCWD,
        p,
        &t,
        &t,
        nix::sys::stat::UtimensatFlags::NoFollowSymlink,
    )
    .expect("utimensat");
}

fn populate_lower(l: &Path) {
    fs::create_dir_all(l.join("etc/conf.d")).expect("mkdir");
    fs::write(l.join("etc/hosts"), "old hosts").expect("write");
    fs::write(l.join("etc/unchanged"), "same").expect("write");
    fs::write(l.join("etc/conf.d/a"), "a").expect("write");
    fs::write(l.join("etc/chmod-me"), "m").expect("write");
    fs::write(l.join("etc/chown-me"), "o").expect("write");
    fs::create_dir_all(l.join("gone-dir/sub")).expect("mkdir");
    fs::write(l.join("gone-dir/sub/f"), "x").expect("write");
    fs::write(l.join("gone-file"), "x").expect("write");
    fs::create_dir(l.join("dir-to-file")).expect("mkdir");
    fs::write(l.join("dir-to-file/child"), "c").expect("write");
    fs::write(l.join("file-to-dir"), "f").expect("write");
    symlink("etc/hosts", l.join("link")).expect("symlink");
    fs::create_dir(l.join("opaque")).expect("mkdir");
    fs::write(l.join("opaque/old"), "o").expect("write");
}

/// upper = lower + changes of every kind.
fn make_upper(l: &Path, u: &Path) {
    fsutil::copy_dir(l, u).expect("copy lower");
    fs::write(u.join("etc/hosts"), "new hosts!").expect("modify");
    fs::set_permissions(u.join("etc/chmod-me"), fs::Permissions::from_mode(0o600)).expect("chmod");
    std::os::unix::fs::lchown(u.join("etc/chown-me"), Some(1234), Some(4321)).expect("chown");
    fs::remove_dir_all(u.join("gone-dir")).expect("rm dir");
    fs::remove_file(u.join("gone-file")).expect("rm file");
    fs::remove_dir_all(u.join("dir-to-file")).expect("rm");
    fs::write(u.join("dir-to-file"), "now file").expect("write");
    fs::remove_file(u.join("file-to-dir")).expect("rm");
    fs::create_dir(u.join("file-to-dir")).expect("mkdir");
    fs::write(u.join("file-to-dir/inside"), "i").expect("write");
    fs::remove_file(u.join("link")).expect("rm link");
    symlink("/absolute/target", u.join("link")).expect("symlink");
    fs::create_dir_all(u.join("new/deep/er")).expect("mkdir");
    fs::write(u.join("new/deep/er/file"), vec![5u8; 300_000]).expect("write");
    fs::hard_link(u.join("new/deep/er/file"), u.join("new/hardlink")).expect("link");
    fsutil::lsetxattr(&u.join("new/deep/er/file"), "user.k".as_ref(), b"v").expect("xattr");
    mknod(
        &u.join("new/null"),
        SFlag::S_IFCHR,
        Mode::from_bits_truncate(0o666),
        makedev(1, 3),
    )
    .expect("mknod");
    nix::unistd::mkfifo(&u.join("new/fifo"), Mode::from_bits_truncate(0o644)).expect("mkfifo");
    fs::remove_file(u.join("opaque/old")).expect("rm");
    fs::write(u.join("opaque/new"), "n").expect("write");
    fs::write(u.join("long-name-".repeat(20)), "long").expect("write long");
    // Same size and whole-second mtime but different content: only a content compare sees it.
    fs::write(u.join("etc/conf.d/a"), "b").expect("write");
    set_mtime(&l.join("etc/conf.d/a"), 1_600_000_000, 0);
    set_mtime(&u.join("etc/conf.d/a"), 1_600_000_000, 0);
}

#[test]
fn diff_then_apply_onto_lower_reproduces_upper() {
    for compression in [
        Compression::Gzip,
        Compression::Zstd,
        Compression::Uncompressed,
    ] {
        let tmp = tempfile::tempdir().expect("tempdir");
        let (l, u, c) = (
            tmp.path().join("lower"),
            tmp.path().join("upper"),
            tmp.path().join("copy"),
        );
        for d in [&l, &u, &c] {
            fs::create_dir(d).expect("mkdir");
        }
        populate_lower(&l);
        make_upper(&l, &u);
        fsutil::copy_dir(&l, &c).expect("copy lower");

        let opts = DiffOptions {
            compression,
            media_type: None,
        };
        let (blob, res) = write_diff(&l, &u, Vec::new(), &opts).expect("diff");
        assert_eq!(
            res.descriptor.digest,
            sha256(&blob),
            "{compression:?}: digest of the written bytes"
        );
        assert_eq!(res.descriptor.size, blob.len() as i64);
        assert_eq!(res.descriptor.media_type, compression.oci_media_type());
        let (_, mut plain) = decompress(blob.as_slice()).expect("decompress");
        let mut tar = Vec::new();
        plain.read_to_end(&mut tar).expect("read");
        assert_eq!(
            res.diff_id,
            sha256(&tar),
            "diff_id is the uncompressed digest"
        );
        assert_eq!(res.uncompressed_size, tar.len() as u64);

        // Unchanged files are not in the layer; deletions are whiteouts.
        let names: Vec<String> = tar::Archive::new(tar.as_slice())
            .entries()
            .expect("entries")
            .map(|e| {
                e.expect("entry")
                    .path()
                    .expect("path")
                    .display()
                    .to_string()
            })
            .collect();
        assert!(!names.iter().any(|n| n == "etc/unchanged"), "{names:?}");
        for wh in [".wh.gone-dir", ".wh.gone-file", "opaque/.wh.old"] {
            assert!(
                names.iter().any(|n| n == wh),
                "missing whiteout {wh} in {names:?}"
            );
        }
        assert!(
            !names.iter().any(|n| n.starts_with("gone-dir/")),
            "no entries under a deleted dir: {names:?}"
        );
        assert!(
            names.iter().any(|n| n == "etc/conf.d/a"),
            "same-size change found by content: {names:?}"
        );

        let d = apply_layer(
            blob.as_slice(),
            opts.compression.oci_media_type(),
            &ApplyTarget::Dir(&c),
            Some(&res.diff_id),
        )
        .expect("apply diff");
        assert_eq!(d.digest, res.diff_id);
        assert_same_tree(&u, &c, true, &format!("{compression:?} round trip"));
        let hl = fs::metadata(c.join("new/hardlink")).expect("stat");
        let f = fs::metadata(c.join("new/deep/er/file")).expect("stat");
        assert_eq!(
            std::os::unix::fs::MetadataExt::ino(&hl),
            std::os::unix::fs::MetadataExt::ino(&f),
            "hard link kept"
        );
    }
}

#[test]
fn identical_trees_give_an_empty_layer() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let (l, u) = (tmp.path().join("l"), tmp.path().join("u"));
    fs::create_dir(&l).expect("mkdir");
    fs::create_dir(&u).expect("mkdir");
    populate_lower(&l);
    fsutil::copy_dir(&l, &u).expect("copy");
    let (blob, res) = write_diff(
        &l,
        &u,
        Vec::new(),
        &DiffOptions {
            compression: Compression::Uncompressed,
            media_type: None,
        },
    )
    .expect("diff");
    assert_eq!(
        blob,
        vec![0u8; 1024],
        "an empty layer is just the end-of-archive blocks"
    );
    assert_eq!(res.diff_id, sha256(&blob));
}

struct Mounted(std::path::PathBuf);
impl Drop for Mounted {
    fn drop(&mut self) {
        let _ = unmount_all(&self.0);
    }
}

fn open(backend: &str, root: &Path) -> Backend {
    match backend {
        "overlayfs" => Backend::Overlay(
            OverlaySnapshotter::open(root, OverlayConfig::default()).expect("open overlayfs"),
        ),
        _ => Backend::Native(NativeSnapshotter::open(root).expect("open native")),
    }
}

/// Snapshot-level round trip on both backends: unpack a base layer, change things through
/// the mounted active snapshot, `diff_mounts` it, then rebuild it elsewhere from the two
/// layers and compare the views.
#[test]
fn diff_mounts_round_trip_through_both_snapshotters() {
    let base = Layer::new()
        .dir("etc", 0o755)
        .file("etc/hosts", b"hosts", 0o644)
        .file("etc/passwd", b"root:x:0:0", 0o644)
        .dir("bin", 0o755)
        .file("bin/sh", b"shell", 0o755)
        .dir("opq", 0o755)
        .file("opq/old", b"old", 0o644)
        .tar();
    for backend in ["overlayfs", "native"] {
        let tmp = tempfile::tempdir().expect("tempdir");
        let sn = open(backend, &tmp.path().join("a"));
        let m = sn.prepare("base-a", "", HashMap::new()).expect("prepare");
        apply_to_mounts(&m, base.as_slice(), MEDIA_TYPE_LAYER, None).expect("apply base");
        sn.commit("base", "base-a", HashMap::new()).expect("commit");
        let work = sn
            .prepare("work", "base", HashMap::new())
            .expect("prepare work");
        let target = tmp.path().join("work-mnt");
        fs::create_dir(&target).expect("mkdir");
        {
            mount_all(&work, &target).expect("mount");
            let _g = Mounted(target.clone());
            fs::write(target.join("etc/hosts"), "changed hosts").expect("write");
            fs::remove_file(target.join("etc/passwd")).expect("rm");
            fs::remove_dir_all(target.join("opq")).expect("rm opq");
            fs::create_dir(target.join("opq")).expect("mkdir opq");
            fs::write(target.join("opq/new"), "new").expect("write");
            fs::create_dir_all(target.join("usr/local/bin")).expect("mkdir");
            fs::write(target.join("usr/local/bin/tool"), "tool").expect("write");
            fs::set_permissions(target.join("bin/sh"), fs::Permissions::from_mode(0o700))
                .expect("chmod");
        }
        let lower = sn
            .view("base-view", "base", HashMap::new())
            .expect("view base");
        let (blob, res) =
            diff_mounts(&lower, &work, Vec::new(), &DiffOptions::default()).expect("diff_mounts");
        assert_eq!(
            res.descriptor.media_type,
            "application/vnd.oci.image.layer.v1.tar+gzip"
        );
        sn.remove("base-view").expect("remove view");
        sn.commit("top", "work", HashMap::new())
            .expect("commit work");

        // Rebuild from the layers in a fresh snapshotter of the same kind.
        let sn2 = open(backend, &tmp.path().join("b"));
        let m = sn2.prepare("l1-a", "", HashMap::new()).expect("prepare");
        apply_to_mounts(&m, base.as_slice(), MEDIA_TYPE_LAYER, None).expect("apply base");
        sn2.commit("l1", "l1-a", HashMap::new()).expect("commit");
        let m = sn2.prepare("l2-a", "l1", HashMap::new()).expect("prepare");
        apply_to_mounts(
            &m,
            blob.as_slice(),
            &res.descriptor.media_type,
            Some(&res.diff_id),
        )
        .expect("apply diff");
        sn2.commit("l2", "l2-a", HashMap::new()).expect("commit");

        let (va, vb) = (tmp.path().join("va"), tmp.path().join("vb"));
        fs::create_dir(&va).expect("mkdir");
        fs::create_dir(&vb).expect("mkdir");
        let ma = sn.view("va", "top", HashMap::new()).expect("view");
        let mb = sn2.view("vb", "l2", HashMap::new()).expect("view");
        mount_all(&ma, &va).expect("mount");
        let _ga = Mounted(va.clone());
        mount_all(&mb, &vb).expect("mount");
        let _gb = Mounted(vb.clone());
        assert_same_tree(&va, &vb, true, &format!("{backend}: rebuilt from layers"));
        let names: Vec<String> = describe(&vb, false).into_keys().collect();
        assert!(
            names.contains(&"opq/new".to_string()) && !names.contains(&"opq/old".to_string()),
            "{names:?}"
        );
        assert!(!names.contains(&"etc/passwd".to_string()), "{names:?}");
    }
}

/// Random trees and random mutations (create, delete, replace file/dir/symlink, chmod, chown,
/// hard link, rewrite), 40 seeds: every diff applied onto a copy of lower gives upper, for
/// both apply modes (full view; overlay upper checked through a real overlay mount).
#[test]
fn random_trees_round_trip() {
    let mut state: u64 = 0x2545_f491_4f6c_dd1d;
    let mut rnd = move |n: u64| {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state % n
    };
    for seed in 0..40 {
        let tmp = tempfile::tempdir().expect("tempdir");
        let (l, u, c) = (
            tmp.path().join("l"),
            tmp.path().join("u"),
            tmp.path().join("c"),
        );
        for d in [&l, &u, &c] {
            fs::create_dir(d).expect("mkdir");
        }
        // Lower: a random tree of depth <= 3.
        let mut dirs = vec![l.clone()];
        for i in 0..(10 + rnd(30)) {
            let parent = dirs[rnd(dirs.len() as u64) as usize].clone();
            let p = parent.join(format!("n{i}"));
            match rnd(4) {
                0 if p.components().count() < l.components().count() + 3 => {
                    fs::create_dir(&p).expect("mkdir");
                    dirs.push(p);
                }
                1 => symlink(format!("../t{}", rnd(5)), &p).expect("symlink"),
                _ => fs::write(&p, format!("content {i} {}", rnd(1000))).expect("write"),
            }
        }
        fsutil::copy_dir(&l, &u).expect("copy");
        fsutil::copy_dir(&l, &c).expect("copy");
        // Mutations on upper.
        let mut all: Vec<std::path::PathBuf> = Vec::new();
        let mut stack = vec![u.clone()];
        while let Some(p) = stack.pop() {
            for e in fs::read_dir(&p).expect("readdir") {
                let e = e.expect("entry").path();
                if fs::symlink_metadata(&e).expect("lstat").is_dir() {
                    stack.push(e.clone());
                }
                all.push(e);
            }
        }
        for _ in 0..(1 + rnd(12)) {
            if all.is_empty() {
                break;
            }
            let p = all[rnd(all.len() as u64) as usize].clone();
            let Ok(md) = fs::symlink_metadata(&p) else {
                continue;
            };
            match rnd(7) {
                0 => {
                    if md.is_dir() {
                        fs::remove_dir_all(&p).expect("rm dir");
                    } else {
                        fs::remove_file(&p).expect("rm");
                    }
                }
                1 if md.is_dir() => {
                    fs::remove_dir_all(&p).expect("rm dir");
                    fs::write(&p, "was a dir").expect("write");
                }
                1 if !md.is_dir() => {
                    fs::remove_file(&p).expect("rm");
                    fs::create_dir(&p).expect("mkdir");
                    fs::write(p.join("inner"), "was a file").expect("write");
                }
                2 if !md.file_type().is_symlink() => {
                    fs::set_permissions(
                        &p,
                        fs::Permissions::from_mode(0o700 | (rnd(0o100) as u32)),
                    )
                    .expect("chmod");
                }
                3 => {
                    std::os::unix::fs::lchown(&p, Some(rnd(3) as u32), Some(rnd(3) as u32))
                        .expect("chown");
                }
                4 if md.is_file() => {
                    fs::hard_link(&p, p.with_extension(format!("hl{}", rnd(100)))).ok();
                }
                5 if md.is_file() => {
                    fs::write(&p, format!("rewritten {}", rnd(1000))).expect("write");
                }
                _ if md.is_dir() => {
                    fs::write(p.join(format!("new{}", rnd(100))), "new").expect("write");
                }
                _ => {}
            }
        }
        let (blob, res) = write_diff(&l, &u, Vec::new(), &DiffOptions::default()).expect("diff");
        apply_layer(
            blob.as_slice(),
            &res.descriptor.media_type,
            &ApplyTarget::Dir(&c),
            Some(&res.diff_id),
        )
        .unwrap_or_else(|e| panic!("seed {seed}: apply: {e}"));
        fs::set_permissions(&c, fs::metadata(&u).expect("stat").permissions()).expect("chmod");
        assert_same_tree(&u, &c, true, &format!("seed {seed} (full view)"));

        // The same layer straight into an overlay upper dir over lower, seen through overlayfs.
        let (up, work, merged) = (
            tmp.path().join("up"),
            tmp.path().join("work"),
            tmp.path().join("m"),
        );
        for d in [&up, &work, &merged] {
            fs::create_dir(d).expect("mkdir");
        }
        let lowers = vec![l.clone()];
        apply_layer(
            blob.as_slice(),
            &res.descriptor.media_type,
            &ApplyTarget::OverlayUpper {
                upper: &up,
                lowers: &lowers,
            },
            Some(&res.diff_id),
        )
        .unwrap_or_else(|e| panic!("seed {seed}: overlay apply: {e}"));
        let m = daemon::snapshots::Mount {
            fs_type: "overlay".into(),
            source: "overlay".into(),
            options: vec![
                "index=off".into(),
                format!("lowerdir={}", l.display()),
                format!("upperdir={}", up.display()),
                format!("workdir={}", work.display()),
            ],
        };
        mount_all(&[m], &merged).expect("mount overlay");
        let _g = Mounted(merged.clone());
        fs::set_permissions(&merged, fs::metadata(&u).expect("stat").permissions()).expect("chmod");
        assert_same_tree(&u, &merged, true, &format!("seed {seed} (overlay upper)"));
    }
}
