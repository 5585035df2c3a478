//! Interoperability with independent tar implementations: layers written by GNU tar (PAX,
//! GNU and gzip) apply to the same tree; layers written by our differ extract with GNU tar
//! and unpack with umoci (an OCI image tool with its own whiteout handling) to the same tree.
//!
//! Needs the Debian packages `tar` and `umoci`; a missing one fails the test, naming it.

mod diff_support;

use std::fs;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::Path;
use std::process::Command;

use daemon::diff::compression::{MEDIA_TYPE_LAYER, MEDIA_TYPE_LAYER_GZIP};
use daemon::diff::{apply_layer, write_diff, ApplyTarget, Compression, DiffOptions};
use daemon::snapshots::fsutil;
use diff_support::{assert_same_tree, oci_layout, sha256};
use nix::sys::stat::{makedev, mknod, Mode, SFlag};

fn need(bin: &str, package: &str) {
    let found = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(bin).is_file()))
        .unwrap_or(false);
    assert!(
        found,
        "`{bin}` not found: install the Debian package `{package}` (apt-get install {package})"
    );
}

fn run(cmd: &mut Command) {
    let out = cmd.output().unwrap_or_else(|e| panic!("run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}):\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn set_mtime(p: &Path, secs: i64) {
    let t = nix::sys::time::TimeSpec::new(secs, 0);
    nix::sys::stat::utimensat(
        nix::fcntl::AT_FDCWD,
        p,
        &t,
        &t,
        nix::sys::stat::UtimensatFlags::NoFollowSymlink,
    )
    .expect("utimensat");
}

/// A tree with every kind of entry; times set last, in whole seconds, so any tar format
/// can carry them exactly.
fn build_tree(root: &Path) {
    fs::create_dir_all(root.join("etc/ssl/certs")).expect("mkdir");
    fs::write(root.join("etc/hosts"), "127.0.0.1 localhost\n").expect("write");
    fs::write(root.join("etc/ssl/certs/ca.pem"), "-----BEGIN-----\n").expect("write");
    fs::create_dir(root.join("bin")).expect("mkdir");
    fs::write(root.join("bin/busybox"), vec![0x7f; 100_000]).expect("write");
    fs::set_permissions(root.join("bin/busybox"), fs::Permissions::from_mode(0o4755))
        .expect("chmod");
    fs::hard_link(root.join("bin/busybox"), root.join("bin/ls")).expect("link");
    symlink("busybox", root.join("bin/sh")).expect("symlink");
    symlink("/etc/hosts", root.join("hosts-abs")).expect("symlink");
    let long_dir = root.join("l".repeat(120));
    fs::create_dir(&long_dir).expect("mkdir long");
    fs::write(long_dir.join("f".repeat(140)), "long path").expect("write long");
    symlink("t".repeat(150), root.join("long-target-link")).expect("symlink long target");
    fs::create_dir(root.join("home")).expect("mkdir");
    fs::write(root.join("home/owned"), "o").expect("write");
    std::os::unix::fs::lchown(root.join("home/owned"), Some(1000), Some(1000)).expect("chown");
    std::os::unix::fs::lchown(root.join("home"), Some(1000), Some(100)).expect("chown");
    fs::set_permissions(root.join("home"), fs::Permissions::from_mode(0o750)).expect("chmod");
    fsutil::lsetxattr(&root.join("etc/hosts"), "user.origin".as_ref(), b"test").expect("xattr");
    fs::create_dir(root.join("dev")).expect("mkdir");
    mknod(
        &root.join("dev/null"),
        SFlag::S_IFCHR,
        Mode::from_bits_truncate(0o666),
        makedev(1, 3),
    )
    .expect("mknod");
    nix::unistd::mkfifo(&root.join("dev/fifo"), Mode::from_bits_truncate(0o600)).expect("mkfifo");
    let mut stack = vec![root.to_path_buf()];
    let mut all = Vec::new();
    while let Some(p) = stack.pop() {
        if fs::symlink_metadata(&p).expect("lstat").is_dir() {
            for e in fs::read_dir(&p).expect("readdir") {
                stack.push(e.expect("entry").path());
            }
        }
        all.push(p);
    }
    for p in all.iter().rev() {
        set_mtime(p, 1_650_000_000);
    }
}

#[test]
fn gnu_tar_layers_apply_to_the_source_tree() {
    need("tar", "tar");
    let tmp = tempfile::tempdir().expect("tempdir");
    let src = tmp.path().join("src");
    fs::create_dir(&src).expect("mkdir");
    build_tree(&src);
    for (format, gzip) in [("posix", false), ("gnu", false), ("posix", true)] {
        let layer = tmp.path().join(format!("layer-{format}-{gzip}.tar"));
        let mut cmd = Command::new("tar");
        cmd.args(["--numeric-owner", &format!("--format={format}")]);
        if format == "posix" {
            cmd.args(["--xattrs", "--xattrs-include=*"]);
        }
        if gzip {
            cmd.arg("-z");
        }
        cmd.arg("-C").arg(&src).arg("-cf").arg(&layer).arg(".");
        run(&mut cmd);
        let dst = tmp.path().join(format!("dst-{format}-{gzip}"));
        fs::create_dir(&dst).expect("mkdir");
        let blob = fs::read(&layer).expect("read layer");
        let mt = if gzip {
            MEDIA_TYPE_LAYER_GZIP
        } else {
            MEDIA_TYPE_LAYER
        };
        apply_layer(blob.as_slice(), mt, &ApplyTarget::Dir(&dst), None)
            .unwrap_or_else(|e| panic!("apply GNU tar --format={format} (gzip {gzip}): {e}"));
        if format == "gnu" {
            // The GNU format cannot carry xattrs (tar refuses --xattrs there): not a loss of ours.
            fsutil::lsetxattr(&dst.join("etc/hosts"), "user.origin".as_ref(), b"test")
                .expect("xattr");
        }
        // GNU tar stores the root "./" entry, which containerd (and we) skip: align it.
        fs::set_permissions(&dst, fs::metadata(&src).expect("stat").permissions()).expect("chmod");
        set_mtime(&dst, 1_650_000_000);
        assert_same_tree(
            &src,
            &dst,
            true,
            &format!("GNU tar --format={format} gzip={gzip}"),
        );
    }
}

#[test]
fn our_layers_extract_with_gnu_tar() {
    need("tar", "tar");
    let tmp = tempfile::tempdir().expect("tempdir");
    let (empty, src) = (tmp.path().join("empty"), tmp.path().join("src"));
    for d in [&empty, &src] {
        fs::create_dir(d).expect("mkdir");
    }
    build_tree(&src);
    for compression in [Compression::Uncompressed, Compression::Gzip] {
        let (blob, res) = write_diff(
            &empty,
            &src,
            Vec::new(),
            &DiffOptions {
                compression,
                media_type: None,
            },
        )
        .expect("diff");
        assert_eq!(res.descriptor.digest, sha256(&blob));
        let layer = tmp.path().join("ours.tar");
        fs::write(&layer, &blob).expect("write layer");
        let out = tmp.path().join(format!("gnu-{compression:?}"));
        fs::create_dir(&out).expect("mkdir");
        let mut cmd = Command::new("tar");
        cmd.args([
            "--xattrs",
            "--xattrs-include=*",
            "--same-owner",
            "--same-permissions",
            "--numeric-owner",
        ]);
        if compression == Compression::Gzip {
            cmd.arg("-z");
        }
        cmd.arg("-C").arg(&out).arg("-xf").arg(&layer);
        run(&mut cmd);
        set_mtime(&out, 1_650_000_000);
        fs::set_permissions(&out, fs::metadata(&src).expect("stat").permissions()).expect("chmod");
        assert_same_tree(
            &src,
            &out,
            true,
            &format!("GNU tar extracting our {compression:?} layer"),
        );
    }
}

/// Two layers from our differ (the second with file and directory deletions and an opaque
/// directory replacement) in an OCI layout, unpacked by umoci.
#[test]
fn umoci_unpacks_our_layers_with_whiteouts() {
    need("umoci", "umoci");
    let tmp = tempfile::tempdir().expect("tempdir");
    let (empty, base, top) = (
        tmp.path().join("empty"),
        tmp.path().join("base"),
        tmp.path().join("top"),
    );
    for d in [&empty, &base, &top] {
        fs::create_dir(d).expect("mkdir");
    }
    build_tree(&base);
    fs::create_dir_all(base.join("var/cache/apt")).expect("mkdir");
    fs::write(base.join("var/cache/apt/pkg.bin"), "cache").expect("write");
    set_mtime(&base.join("var/cache/apt/pkg.bin"), 1_650_000_000);
    fsutil::copy_dir(&base, &top).expect("copy");
    fs::remove_file(top.join("etc/hosts")).expect("rm");
    fs::remove_dir_all(top.join("etc/ssl")).expect("rm dir");
    fs::remove_dir_all(top.join("var/cache")).expect("rm cache");
    fs::create_dir(top.join("var/cache")).expect("mkdir");
    fs::write(top.join("var/cache/fresh"), "fresh").expect("write");
    fs::write(top.join("bin/busybox"), "upgraded").expect("modify");

    let layout = tmp.path().join("layout");
    let mut layers = Vec::new();
    for (lower, upper) in [(&empty, &base), (&base, &top)] {
        let (blob, res) =
            write_diff(lower, upper, Vec::new(), &DiffOptions::default()).expect("diff");
        assert_eq!(sha256(&blob), res.descriptor.digest);
        layers.push((blob, res.descriptor.media_type, res.diff_id));
    }
    oci_layout(&layout, &layers, "test", "docker.io/library/interop:test");

    let bundle = tmp.path().join("bundle");
    run(Command::new("umoci")
        .arg("unpack")
        .arg("--image")
        .arg(format!("{}:test", layout.display()))
        .arg(&bundle));
    let rootfs = bundle.join("rootfs");
    set_mtime(&rootfs, 1_650_000_000);
    fs::set_permissions(&rootfs, fs::metadata(&top).expect("stat").permissions()).expect("chmod");
    assert_same_tree(&top, &rootfs, false, "umoci unpack of our two layers");
}

/// GNU tar's sparse encodings: old GNU (up to 4 regions in the header) and PAX 0.0, 0.1 and
/// 1.0 apply with their holes; old GNU with extension headers (more regions) is refused.
#[test]
fn gnu_tar_sparse_files_apply_with_holes() {
    use std::os::unix::fs::{FileExt, MetadataExt};
    need("tar", "tar");
    let tmp = tempfile::tempdir().expect("tempdir");
    let src = tmp.path().join("src");
    fs::create_dir(&src).expect("mkdir");
    let write_sparse = |name: &str, regions: &[(u64, usize)], size: u64| {
        let f = fs::File::create(src.join(name)).expect("create");
        f.set_len(size).expect("truncate");
        for (i, (off, len)) in regions.iter().enumerate() {
            f.write_all_at(&vec![(i as u8) + 1; *len], *off)
                .expect("pwrite");
        }
        std::os::unix::fs::lchown(src.join(name), Some(0), Some(0)).expect("chown");
    };
    write_sparse("few", &[(0, 4096), (4 << 20, 4096)], 16 << 20);
    write_sparse(
        "many",
        &(0..10u64).map(|i| (i << 20, 4096)).collect::<Vec<_>>(),
        12 << 20,
    );
    set_mtime(&src.join("few"), 1_650_000_000);
    set_mtime(&src.join("many"), 1_650_000_000);
    for (args, files, refused) in [
        (
            vec!["--format=posix", "--sparse-version=0.0"],
            vec!["few", "many"],
            false,
        ),
        (
            vec!["--format=posix", "--sparse-version=0.1"],
            vec!["few", "many"],
            false,
        ),
        (
            vec!["--format=posix", "--sparse-version=1.0"],
            vec!["few", "many"],
            false,
        ),
        (vec!["--format=gnu"], vec!["few"], false),
        (vec!["--format=gnu"], vec!["many"], true),
    ] {
        let layer = tmp.path().join("sparse.tar");
        let mut cmd = Command::new("tar");
        cmd.arg("--sparse")
            .args(&args)
            .arg("-C")
            .arg(&src)
            .arg("-cf")
            .arg(&layer)
            .args(&files);
        run(&mut cmd);
        let dst = tmp.path().join(format!(
            "dst-{}-{}",
            args.join("").replace(['-', '=', '.'], ""),
            files.join("")
        ));
        fs::create_dir(&dst).expect("mkdir");
        let blob = fs::read(&layer).expect("read");
        let r = apply_layer(
            blob.as_slice(),
            MEDIA_TYPE_LAYER,
            &ApplyTarget::Dir(&dst),
            None,
        );
        if refused {
            let e = r.expect_err("extended GNU sparse headers are refused");
            assert!(e.to_string().contains("extended sparse headers"), "{e}");
            continue;
        }
        r.unwrap_or_else(|e| panic!("tar {args:?} {files:?}: {e}"));
        for name in &files {
            let (a, b) = (src.join(name), dst.join(name));
            assert_eq!(
                fs::read(&a).expect("read"),
                fs::read(&b).expect("read"),
                "{args:?}: {name} content"
            );
            let (ma, mb) = (
                fs::metadata(&a).expect("stat"),
                fs::metadata(&b).expect("stat"),
            );
            assert_eq!(ma.len(), mb.len(), "{args:?}: {name} size");
            assert!(
                mb.blocks() * 512 <= 1 << 20,
                "{args:?}: {name} lost its holes ({} bytes allocated)",
                mb.blocks() * 512
            );
            assert_eq!(mb.mtime(), 1_650_000_000, "{args:?}: {name} mtime");
        }
    }
}
