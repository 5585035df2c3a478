//! Interoperability with containerd 1.6 itself (Debian's `containerd` and `ctr`), on both of
//! its snapshotters:
//! - layers produced by containerd's walking differ (`ctr snapshots diff`) apply with ours to
//!   exactly the tree containerd holds in its snapshot;
//! - layers produced by our differ, imported with `ctr images import`, are unpacked by
//!   containerd's applier (overlay whiteouts on overlayfs) to exactly our tree.
//!
//! A private containerd runs on a temporary root and socket and is killed (by pid) at the end.
//! Needs the Debian package `containerd` (containerd + ctr): missing, the test fails.

mod diff_support;

use std::fs;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use daemon::diff::compression::MEDIA_TYPE_LAYER_GZIP;
use daemon::diff::{apply_layer, write_diff, ApplyTarget, DiffOptions};
use daemon::snapshots::fsutil;
use daemon::snapshots::mount::{mount_all, unmount_all, Mount};
use diff_support::{assert_same_tree, oci_layout, sha256};
use nix::sys::stat::{makedev, mknod, Mode, SFlag};

const NS: &str = "berth-interop";

struct Containerd {
    child: Child,
    dir: tempfile::TempDir,
    sock: PathBuf,
}

impl Containerd {
    fn start() -> Containerd {
        for bin in ["containerd", "ctr"] {
            let found = std::env::var_os("PATH")
                .map(|p| std::env::split_paths(&p).any(|d| d.join(bin).is_file()))
                .unwrap_or(false);
            assert!(
                found,
                "`{bin}` not found: install the Debian package `containerd`"
            );
        }
        let dir = tempfile::Builder::new()
            .prefix("berth-snapdiff-ctrd-")
            .tempdir_in("/tmp")
            .expect("tempdir");
        let sock = dir.path().join("c.sock");
        let cfg = dir.path().join("config.toml");
        fs::write(
            &cfg,
            format!(
                "version = 2\nroot = \"{root}\"\nstate = \"{state}\"\ndisabled_plugins = [\"io.containerd.grpc.v1.cri\"]\n\
                 [grpc]\n  address = \"{sock}\"\n[ttrpc]\n  address = \"{sock}.ttrpc\"\n",
                root = dir.path().join("root").display(),
                state = dir.path().join("state").display(),
                sock = sock.display(),
            ),
        )
        .expect("write config");
        let log = fs::File::create(dir.path().join("containerd.log")).expect("log");
        let child = Command::new("containerd")
            .arg("--config")
            .arg(&cfg)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start containerd");
        let c = Containerd { child, dir, sock };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if c.sock.exists() && c.try_ctr(&["version"]).status.success() {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "containerd did not come up: {}",
                fs::read_to_string(c.dir.path().join("containerd.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        c
    }

    fn try_ctr(&self, args: &[&str]) -> Output {
        Command::new("ctr")
            .arg("--address")
            .arg(&self.sock)
            .arg("-n")
            .arg(NS)
            .args(args)
            .output()
            .expect("run ctr")
    }

    fn ctr(&self, args: &[&str]) -> Vec<u8> {
        let out = self.try_ctr(args);
        assert!(
            out.status.success(),
            "ctr {args:?} failed: {}\ncontainerd log:\n{}",
            String::from_utf8_lossy(&out.stderr),
            fs::read_to_string(self.dir.path().join("containerd.log")).unwrap_or_default()
        );
        out.stdout
    }

    /// The mounts of snapshot `key`, parsed from `ctr snapshots mounts` (`mount -t T SRC TGT -o O`).
    fn mounts(&self, snapshotter: &str, key: &str) -> Vec<Mount> {
        let out = self.ctr(&[
            "snapshots",
            "--snapshotter",
            snapshotter,
            "mounts",
            "/target",
            key,
        ]);
        let text = String::from_utf8_lossy(&out).into_owned();
        text.lines()
            .filter(|l| l.starts_with("mount "))
            .map(|l| {
                let w: Vec<&str> = l.split_whitespace().collect();
                let mut m = Mount::default();
                let mut pos = Vec::new();
                let mut i = 1;
                while i < w.len() {
                    match w[i] {
                        "-t" => {
                            m.fs_type = w[i + 1].to_string();
                            i += 2;
                        }
                        "-o" => {
                            m.options = w[i + 1].split(',').map(str::to_string).collect();
                            i += 2;
                        }
                        a => {
                            pos.push(a.to_string());
                            i += 1;
                        }
                    }
                }
                m.source = pos[0].clone();
                m
            })
            .collect()
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

struct Mounted(PathBuf);
impl Drop for Mounted {
    fn drop(&mut self) {
        let _ = unmount_all(&self.0);
    }
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

fn write_base(root: &Path) {
    fs::create_dir_all(root.join("etc/ssl")).expect("mkdir");
    fs::write(root.join("etc/hosts"), "127.0.0.1 localhost\n").expect("write");
    fs::write(root.join("etc/ssl/cert"), "cert").expect("write");
    fs::create_dir_all(root.join("var/cache/apt")).expect("mkdir");
    fs::write(root.join("var/cache/apt/pkg"), "pkg").expect("write");
    fs::create_dir(root.join("bin")).expect("mkdir");
    fs::write(root.join("bin/busybox"), vec![0x7f; 50_000]).expect("write");
    fs::set_permissions(root.join("bin/busybox"), fs::Permissions::from_mode(0o4755))
        .expect("chmod");
    fs::hard_link(root.join("bin/busybox"), root.join("bin/ls")).expect("link");
    symlink("busybox", root.join("bin/sh")).expect("symlink");
    fs::create_dir(root.join("home")).expect("mkdir");
    std::os::unix::fs::lchown(root.join("home"), Some(1000), Some(1000)).expect("chown");
    fsutil::lsetxattr(&root.join("etc/hosts"), "user.k".as_ref(), b"v").expect("xattr");
    fs::create_dir(root.join("dev")).expect("mkdir");
    mknod(
        &root.join("dev/null"),
        SFlag::S_IFCHR,
        Mode::from_bits_truncate(0o666),
        makedev(1, 3),
    )
    .expect("mknod");
    set_mtime(&root.join("etc/hosts"), 1_600_000_000);
}

fn change_top(root: &Path) {
    fs::remove_file(root.join("etc/hosts")).expect("rm");
    fs::remove_dir_all(root.join("etc/ssl")).expect("rm");
    fs::remove_dir_all(root.join("var/cache")).expect("rm");
    fs::create_dir(root.join("var/cache")).expect("mkdir");
    fs::write(root.join("var/cache/fresh"), "fresh").expect("write");
    fs::write(root.join("bin/busybox"), "upgraded").expect("write");
    fs::create_dir_all(root.join("usr/local/bin")).expect("mkdir");
    fs::write(root.join("usr/local/bin/tool"), "tool").expect("write");
    std::os::unix::fs::lchown(root.join("usr/local/bin/tool"), Some(7), Some(8)).expect("chown");
}

/// containerd's walking differ → our applier.
fn containerd_layers_apply_with_ours(c: &Containerd, snapshotter: &str, work: &Path) {
    let snaps = |args: &[&str]| {
        let mut a = vec!["snapshots", "--snapshotter", snapshotter];
        a.extend_from_slice(args);
        c.ctr(&a)
    };
    snaps(&["prepare", "base-a"]);
    let mnt = work.join(format!("ctrd-{snapshotter}"));
    fs::create_dir_all(&mnt).expect("mkdir");
    {
        mount_all(&c.mounts(snapshotter, "base-a"), &mnt).expect("mount base-a");
        let _g = Mounted(mnt.clone());
        write_base(&mnt);
    }
    snaps(&["commit", "base", "base-a"]);
    snaps(&["prepare", "top-a", "base"]);
    let top_mounts = c.mounts(snapshotter, "top-a");
    {
        mount_all(&top_mounts, &mnt).expect("mount top-a");
        let _g = Mounted(mnt.clone());
        change_top(&mnt);
    }
    let base_layer = snaps(&["diff", "base"]);
    let top_layer = snaps(&["diff", "top-a"]);

    let ours = work.join(format!("ours-from-{snapshotter}"));
    fs::create_dir(&ours).expect("mkdir");
    fs::set_permissions(&ours, fs::Permissions::from_mode(0o755)).expect("chmod");
    for (what, layer) in [("base", &base_layer), ("top", &top_layer)] {
        apply_layer(
            layer.as_slice(),
            MEDIA_TYPE_LAYER_GZIP,
            &ApplyTarget::Dir(&ours),
            None,
        )
        .unwrap_or_else(|e| panic!("{snapshotter}: applying containerd's {what} layer: {e}"));
    }
    mount_all(&top_mounts, &mnt).expect("mount top-a");
    let _g = Mounted(mnt.clone());
    set_mtime(&ours, fs::metadata(&mnt).expect("stat").mtime_secs());
    assert_same_tree(
        &mnt,
        &ours,
        true,
        &format!("containerd {snapshotter} layers applied by berth"),
    );
}

trait MtimeSecs {
    fn mtime_secs(&self) -> i64;
}
impl MtimeSecs for fs::Metadata {
    fn mtime_secs(&self) -> i64 {
        std::os::unix::fs::MetadataExt::mtime(self)
    }
}

/// Our walking differ → containerd's importer/applier.
fn our_layers_unpack_with_containerd(c: &Containerd, snapshotter: &str, work: &Path) {
    let (empty, base, top) = (work.join("empty"), work.join("base"), work.join("top"));
    if !top.exists() {
        for d in [&empty, &base] {
            fs::create_dir(d).expect("mkdir");
        }
        write_base(&base);
        fs::create_dir(&top).expect("mkdir");
        fsutil::copy_dir(&base, &top).expect("copy");
        change_top(&top);
    }
    let mut layers = Vec::new();
    for (lower, upper) in [(&empty, &base), (&base, &top)] {
        let (blob, res) =
            write_diff(lower, upper, Vec::new(), &DiffOptions::default()).expect("diff");
        assert_eq!(sha256(&blob), res.descriptor.digest);
        layers.push((blob, res.descriptor.media_type, res.diff_id));
    }
    let layout = work.join(format!("layout-{snapshotter}"));
    let image = format!("docker.io/library/berth-interop:{snapshotter}");
    oci_layout(&layout, &layers, snapshotter, &image);
    let archive = work.join(format!("image-{snapshotter}.tar"));
    let mut b = tar::Builder::new(fs::File::create(&archive).expect("create archive"));
    b.append_dir_all(".", &layout).expect("tar layout");
    b.into_inner().expect("finish archive");
    c.ctr(&[
        "images",
        "import",
        "--snapshotter",
        snapshotter,
        archive.to_str().expect("utf-8 path"),
    ]);
    let target = work.join(format!("image-mnt-{snapshotter}"));
    fs::create_dir(&target).expect("mkdir");
    c.ctr(&[
        "images",
        "mount",
        "--snapshotter",
        snapshotter,
        &image,
        target.to_str().expect("utf-8 path"),
    ]);
    let _g = Mounted(target.clone());
    fs::set_permissions(&top, fs::metadata(&target).expect("stat").permissions()).expect("chmod");
    set_mtime(&top, fs::metadata(&target).expect("stat").mtime_secs());
    assert_same_tree(
        &top,
        &target,
        true,
        &format!("berth layers unpacked by containerd ({snapshotter})"),
    );
}

#[test]
fn layers_round_trip_between_berth_and_containerd() {
    let fss = fs::read_to_string("/proc/filesystems").expect("read /proc/filesystems");
    assert!(
        fss.contains("\toverlay\n"),
        "overlayfs missing: load the `overlay` kernel module"
    );
    let c = Containerd::start();
    let work = tempfile::Builder::new()
        .prefix("berth-snapdiff-ctrd-work-")
        .tempdir()
        .expect("tempdir");
    for snapshotter in ["native", "overlayfs"] {
        containerd_layers_apply_with_ours(&c, snapshotter, work.path());
        our_layers_unpack_with_containerd(&c, snapshotter, work.path());
    }
}
