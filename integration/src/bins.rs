//! Finding the binaries tests run: system tools (with the Debian package that provides them),
//! berth's own binaries in the cargo target directory, and the containerd v2 interop copy.
//!
//! Missing dependencies never make a test skip: [`require_bin`] panics with the `apt-get`
//! command that fixes it. The one exception the project allows is containerd v2 on a machine
//! without the interop copy: [`containerd2_dir`] says so loudly, and fails under `CI=true`.

use std::env;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

/// Extra directories searched after `$PATH` (cargo may run tests with a PATH lacking sbin).
const EXTRA_DIRS: &[&str] = &[
    "/usr/local/sbin",
    "/usr/local/bin",
    "/usr/sbin",
    "/usr/bin",
    "/sbin",
    "/bin",
];

/// Environment variable naming the directory with containerd v2.3.4's `containerd`, `ctr` and
/// Go shim (the project's `.ci/run` points it at `../shared/interop/containerd-v2.3.4`).
pub const CONTAINERD2_ENV: &str = "BERTH_CONTAINERD2_DIR";

/// Environment variable overriding where berth's binaries (berthd, berth, our shim) are found.
pub const BIN_DIR_ENV: &str = "BERTH_BIN_DIR";

/// Looks `name` up in `$PATH` and the usual system directories.
#[must_use]
pub fn find_bin(name: &str) -> Option<PathBuf> {
    let path = env::var_os("PATH").unwrap_or_default();
    env::split_paths(&path)
        .chain(EXTRA_DIRS.iter().map(PathBuf::from))
        .map(|d| d.join(name))
        .find(|p| is_executable(p))
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// Returns the path of system binary `name`, or fails the test with the install command.
///
/// # Panics
/// When the binary is missing: the message names the Debian package (`apt-get install -y pkg`).
#[must_use]
pub fn require_bin(name: &str, debian_package: &str) -> PathBuf {
    find_bin(name).unwrap_or_else(|| {
        panic!(
            "missing required binary `{name}`: install it with `apt-get install -y {debian_package}` \
             (or run ./packaging/test.sh, which installs every test dependency)"
        )
    })
}

/// The workspace root (parent of this crate's manifest directory).
#[must_use]
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map_or_else(|| PathBuf::from("."), Path::to_path_buf)
}

/// Cargo's target directory: `$CARGO_TARGET_DIR` (relative to the workspace root if relative),
/// else `<workspace>/target`.
#[must_use]
pub fn target_dir() -> PathBuf {
    match env::var_os("CARGO_TARGET_DIR") {
        Some(d) if Path::new(&d).is_absolute() => PathBuf::from(d),
        Some(d) => workspace_root().join(d),
        None => workspace_root().join("target"),
    }
}

/// Directory holding berth's built binaries: `$BERTH_BIN_DIR`, else the target dir's profile
/// directory this test binary was built in (`debug` or `release`).
#[must_use]
pub fn berth_bin_dir() -> PathBuf {
    if let Some(d) = env::var_os(BIN_DIR_ENV) {
        return PathBuf::from(d);
    }
    // The running test binary lives in <target>/<profile>/deps/: use its profile directory so
    // `cargo test --release` finds release binaries.
    if let Ok(exe) = env::current_exe() {
        if let Some(profile) = exe.parent().and_then(Path::parent) {
            if profile.join("deps").is_dir()
                && profile
                    .parent()
                    .is_some_and(|t| t.join("CACHEDIR.TAG").exists())
            {
                return profile.to_path_buf();
            }
        }
    }
    target_dir().join("debug")
}

/// Path of berth binary `name` from cargo package `package`.
///
/// # Panics
/// When the binary is missing, or (under `CI=true` / `BERTH_STRICT_BINS=1`; otherwise a
/// warning) older than the sources it is built from: the message says which `cargo build` to
/// run. `cargo test` builds other packages' binaries only when they have integration tests,
/// so `packaging/test.sh` runs `cargo build --workspace --bins` first.
#[must_use]
pub fn berth_bin(name: &str, package: &str) -> PathBuf {
    let path = berth_bin_dir().join(name);
    assert!(
        is_executable(&path),
        "berth binary `{}` not found: build it with `cargo build -p {package} --bin {name}` \
         (or `cargo build --workspace --bins`; set {BIN_DIR_ENV} to use binaries from elsewhere)",
        path.display()
    );
    if env::var_os(BIN_DIR_ENV).is_none() {
        if let (Some(bin_time), Some((src, src_time))) = (mtime(&path), newest_dep(&path)) {
            if bin_time < src_time {
                let msg = format!(
                    "berth binary `{}` is older than its source {}: run `cargo build -p {package} --bin {name}`",
                    path.display(),
                    src.display()
                );
                // Strict under CI (the binary was just built, so this is a real problem); a
                // warning otherwise, because in a shared working tree sources change while a
                // long test run is in progress. The warning shows with a failing test's output.
                assert!(!strict_bins(), "{msg}");
                eprintln!("WARNING: {msg}");
            }
        }
    }
    path
}

/// `CI=true` or `BERTH_STRICT_BINS=1`: stale berth binaries fail the test.
fn strict_bins() -> bool {
    env::var("CI").as_deref() == Ok("true") || env::var("BERTH_STRICT_BINS").as_deref() == Ok("1")
}

fn mtime(p: &Path) -> Option<SystemTime> {
    fs::metadata(p).and_then(|m| m.modified()).ok()
}

/// The newest of the source files cargo recorded for `bin` in its dep-info file (`<bin>.d`,
/// "target: dep dep …" with spaces escaped), so only files that binary is built from count.
fn newest_dep(bin: &Path) -> Option<(PathBuf, SystemTime)> {
    let mut d = bin.as_os_str().to_owned();
    d.push(".d");
    let text = fs::read_to_string(PathBuf::from(d)).ok()?;
    let (_, deps) = text.lines().next()?.split_once(": ")?;
    let mut newest: Option<(PathBuf, SystemTime)> = None;
    for dep in deps
        .replace("\\ ", "\0")
        .split(' ')
        .filter(|s| !s.is_empty())
    {
        let p = PathBuf::from(dep.replace('\0', " "));
        if let Some(t) = mtime(&p) {
            if newest.as_ref().is_none_or(|(_, n)| t > *n) {
                newest = Some((p, t));
            }
        }
    }
    newest
}

/// berthd, the daemon binary.
#[must_use]
pub fn berthd_bin() -> PathBuf {
    berth_bin("berthd", "daemon")
}

/// Our shim binary (`containerd-shim-runc-v2` from the `shim` package).
#[must_use]
pub fn our_shim_bin() -> PathBuf {
    berth_bin("containerd-shim-runc-v2", "shim")
}

/// A directory containing exactly one file, `containerd-shim-runc-v2`, a symlink to a shim.
/// Put it first in a containerd's PATH to make it run that shim for `io.containerd.runc.v2`.
/// The directory is removed on drop.
#[derive(Debug)]
pub struct ShimDir {
    dir: tempfile::TempDir,
    shim: PathBuf,
}

impl ShimDir {
    /// A shim dir pointing at `shim` (any binary implementing the runc v2 shim).
    ///
    /// # Panics
    /// When the temp dir or symlink cannot be created (disk full, /tmp not writable).
    #[must_use]
    pub fn new(shim: &Path) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("berth-shimdir-")
            .tempdir()
            .expect("creating a temp dir for the shim PATH entry");
        std::os::unix::fs::symlink(shim, dir.path().join("containerd-shim-runc-v2"))
            .expect("symlinking the shim into its PATH dir");
        Self {
            dir,
            shim: shim.to_path_buf(),
        }
    }

    /// The directory to put first in PATH.
    #[must_use]
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// The shim binary it points at.
    #[must_use]
    pub fn shim(&self) -> &Path {
        &self.shim
    }
}

/// A [`ShimDir`] with our Rust shim (target/<profile>/containerd-shim-runc-v2).
#[must_use]
pub fn our_shim_dir() -> ShimDir {
    ShimDir::new(&our_shim_bin())
}

/// A [`ShimDir`] with Debian's Go shim (`/usr/bin/containerd-shim-runc-v2`, package containerd),
/// which speaks task API v2 to containerd 1.6.
#[must_use]
pub fn debian_go_shim_dir() -> ShimDir {
    ShimDir::new(&require_bin("containerd-shim-runc-v2", "containerd"))
}

/// The containerd v2.3.4 directory from `$BERTH_CONTAINERD2_DIR`, checked to hold
/// `containerd`, `ctr` and `containerd-shim-runc-v2`.
///
/// Returns `None` when the variable is unset, after printing loudly to stderr that the calling
/// test (`what`) did NOT run and why. Tests must `return` on `None`.
///
/// # Panics
/// When the variable is unset and `CI=true` (CI must run every test), or when it is set but the
/// directory lacks one of the binaries.
#[must_use]
pub fn containerd2_dir(what: &str) -> Option<PathBuf> {
    let Some(dir) = env::var_os(CONTAINERD2_ENV).filter(|d| !d.is_empty()) else {
        let msg = format!(
            "\n*** NOT RUN: {what}: {CONTAINERD2_ENV} is not set, so containerd v2.3.4 is not available.\n\
             *** Point it at a directory with containerd v2.3.4's `containerd`, `ctr` and \
             `containerd-shim-runc-v2` (./packaging/test.sh sets it to ../shared/interop/containerd-v2.3.4 when present).\n"
        );
        assert!(
            env::var("CI").as_deref() != Ok("true"),
            "{msg}*** CI=true: refusing to skip."
        );
        eprintln!("{msg}");
        return None;
    };
    let dir = PathBuf::from(dir);
    for b in ["containerd", "ctr", "containerd-shim-runc-v2"] {
        assert!(
            is_executable(&dir.join(b)),
            "{CONTAINERD2_ENV}={} has no executable `{b}`: it must hold containerd v2.3.4's binaries",
            dir.display()
        );
    }
    Some(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_sh_and_fails_loudly_for_missing() {
        assert!(require_bin("sh", "dash").is_absolute());
        let r = std::panic::catch_unwind(|| require_bin("no-such-binary-berth", "berth-pkg"));
        let msg = r
            .expect_err("must panic")
            .downcast::<String>()
            .map(|b| *b)
            .unwrap_or_default();
        assert!(msg.contains("apt-get install -y berth-pkg"), "{msg}");
    }

    #[test]
    fn dep_info_finds_the_newest_source_including_escaped_spaces() {
        let d = tempfile::tempdir().expect("tmp");
        let bin = d.path().join("bin");
        let a = d.path().join("a.rs");
        let b = d.path().join("with space.rs");
        fs::write(&a, "").expect("a");
        std::thread::sleep(std::time::Duration::from_millis(20));
        fs::write(&b, "").expect("b");
        fs::write(
            d.path().join("bin.d"),
            format!(
                "{}: {} {}\n",
                bin.display(),
                a.display(),
                b.display().to_string().replace(' ', "\\ ")
            ),
        )
        .expect("d");
        let (newest, _) = newest_dep(&bin).expect("deps");
        assert_eq!(newest, b);
    }

    #[test]
    fn shim_dir_holds_only_the_shim() {
        let d = ShimDir::new(Path::new("/bin/true"));
        let names: Vec<_> = fs::read_dir(d.path())
            .expect("read")
            .map(|e| e.expect("entry").file_name())
            .collect();
        assert_eq!(
            names,
            vec![std::ffi::OsString::from("containerd-shim-runc-v2")]
        );
        assert_eq!(
            fs::canonicalize(d.path().join("containerd-shim-runc-v2")).expect("resolve"),
            fs::canonicalize("/bin/true").expect("true")
        );
    }
}
