//! Shared fixtures for the runc-wrapper tests: a busybox bundle in a tempdir, a private
//! `--root` state directory per test, and cleanup (`delete --force`) on drop, even on panic.

#![allow(dead_code)]

use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::process::Command;

use runc_wrapper::Runc;
use serde_json::{json, Value};

pub const RUNC: &str = "/usr/sbin/runc";
pub const BUSYBOX: &str = "/bin/busybox";
pub const YOUKI: &str = "/work/shared/interop/youki-0.7.0/youki";

/// Panics with the Debian package to install when a required binary is missing.
pub fn require(path: &str, package: &str) {
    assert!(
        Path::new(path).exists(),
        "{path} is missing: install Debian package {package} (apt-get install -y {package})"
    );
}

/// A private environment: state root, bundle(s), and every container id created here.
pub struct Env {
    pub dir: tempfile::TempDir,
    pub binary: PathBuf,
    pub runc: Runc,
    prefix: String,
    ids: std::sync::Mutex<Vec<String>>,
}

impl Env {
    /// A runc environment named after the test (ids are `<name>-<n>-<pid>`).
    pub fn new(name: &str) -> Env {
        require(RUNC, "runc");
        Env::with_binary(name, Path::new(RUNC))
    }

    pub fn with_binary(name: &str, binary: &Path) -> Env {
        require(BUSYBOX, "busybox-static");
        let dir = tempfile::Builder::new()
            .prefix("rw-test-")
            .tempdir()
            .expect("tempdir");
        let root = dir.path().join("state");
        let runc = Runc::builder()
            .binary(binary)
            .root(&root)
            .timeout(Some(std::time::Duration::from_secs(30)))
            .build();
        Env {
            binary: binary.to_path_buf(),
            runc,
            prefix: format!("{name}-{}", std::process::id()),
            ids: std::sync::Mutex::new(Vec::new()),
            dir,
        }
    }

    pub fn root(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    /// A fresh container id, deleted (forcibly) when the env drops.
    pub fn id(&self, tag: &str) -> String {
        let id = format!("{}-{tag}", self.prefix);
        self.ids.lock().unwrap().push(id.clone());
        id
    }

    /// A busybox bundle at `<dir>/<name>` whose process runs `args`.
    pub fn bundle(&self, name: &str, args: &[&str]) -> PathBuf {
        self.bundle_with(name, args, |_| {})
    }

    /// Like [`Env::bundle`], letting the test edit the spec JSON before it is written.
    pub fn bundle_with(&self, name: &str, args: &[&str], edit: impl FnOnce(&mut Value)) -> PathBuf {
        let bundle = self.dir.path().join(name);
        make_rootfs(&bundle.join("rootfs"));
        let out = Command::new(RUNC)
            .args(["spec", "--bundle"])
            .arg(&bundle)
            .output()
            .expect("runc spec");
        assert!(out.status.success(), "runc spec failed: {out:?}");
        let path = bundle.join("config.json");
        let mut spec: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        spec["process"]["args"] = json!(args);
        spec["process"]["terminal"] = json!(false);
        spec["root"]["readonly"] = json!(false);
        spec["hostname"] = json!("rw");
        spec["linux"]["cgroupsPath"] = json!(format!("/berth-rw-test/{}-{name}", self.prefix));
        edit(&mut spec);
        std::fs::write(&path, serde_json::to_vec_pretty(&spec).unwrap()).unwrap();
        bundle
    }

    /// The bundle's process spec with other args (for exec).
    pub fn process(bundle: &Path, args: &[&str]) -> oci_spec::runtime::Process {
        let spec: Value =
            serde_json::from_slice(&std::fs::read(bundle.join("config.json")).unwrap()).unwrap();
        let mut p = spec["process"].clone();
        p["args"] = json!(args);
        p["terminal"] = json!(false);
        serde_json::from_value(p).expect("process spec")
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        for id in self.ids.lock().map(|v| v.clone()).unwrap_or_default() {
            // Synchronous on purpose: drop may run during a panic, outside any runtime.
            let _ = Command::new(&self.binary)
                .arg("--root")
                .arg(self.root())
                .args(["delete", "--force", &id])
                .output();
        }
    }
}

/// rootfs with busybox, its applets as symlinks, /etc/passwd, /etc/group, /tmp.
pub fn make_rootfs(rootfs: &Path) {
    let bin = rootfs.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    std::fs::copy(BUSYBOX, bin.join("busybox")).unwrap();
    let list = Command::new(BUSYBOX).arg("--list").output().unwrap();
    for applet in String::from_utf8_lossy(&list.stdout).lines() {
        let applet = applet.trim();
        if !applet.is_empty() && applet != "busybox" {
            let _ = symlink("busybox", bin.join(applet));
        }
    }
    for d in ["etc", "tmp", "proc", "sys", "dev", "root"] {
        std::fs::create_dir_all(rootfs.join(d)).unwrap();
    }
    std::fs::write(
        rootfs.join("etc/passwd"),
        "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n",
    )
    .unwrap();
    std::fs::write(rootfs.join("etc/group"), "root:x:0:\nnobody:x:65534:\n").unwrap();
}

/// Polls `f` until it returns true or `secs` elapse.
pub async fn wait_until(secs: u64, mut f: impl FnMut() -> bool) -> bool {
    let end = std::time::Instant::now() + std::time::Duration::from_secs(secs);
    while std::time::Instant::now() < end {
        if f() {
            return true;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    f()
}
