//! The harness removes the sockets of its own daemons' shims, also of shims a test SIGKILLed
//! (a Go shim removes its socket only on a clean shutdown, and the daemon then deletes the
//! bundle whose `address` file named it), and leaves every other socket in
//! `/run/containerd/s` alone. Real containerd 1.6.20 / v2.3.4 with their Go shims, and berthd
//! with our shim across a `kill -9` and restart.

use std::fs;
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use integration::bins;
use integration::containerd::{Builder, Containerd};
use integration::daemon::TestDaemon;
use integration::image::TestImage;
use integration::procs;
use integration::tasks;
use sha2::{Digest as _, Sha256};

const SOCKET_DIR: &str = "/run/containerd/s";

/// A dead socket in `/run/containerd/s` that belongs to nobody the harness started; removed
/// by the test itself on drop.
struct Decoy(PathBuf);

impl Decoy {
    fn new(tag: &str) -> Decoy {
        fs::create_dir_all(SOCKET_DIR).expect("socket dir");
        let p =
            Path::new(SOCKET_DIR).join(format!("berth-harness-decoy-{tag}-{}", std::process::id()));
        let _ = fs::remove_file(&p);
        drop(UnixListener::bind(&p).expect("bind decoy socket"));
        assert!(p.exists(), "a closed listener leaves its socket file");
        Decoy(p)
    }
}

impl Drop for Decoy {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.0);
    }
}

/// The shim socket a bundle records: `address` (1.6, berthd) or `bootstrap.json` (2.x).
fn address_socket(bundle: &Path) -> PathBuf {
    let a = match fs::read_to_string(bundle.join("address")) {
        Ok(a) => a,
        Err(_) => {
            let text = fs::read_to_string(bundle.join("bootstrap.json")).unwrap_or_else(|e| {
                panic!(
                    "{} has neither address nor bootstrap.json ({e}): {:?}",
                    bundle.display(),
                    fs::read_dir(bundle)
                        .map(|rd| rd.flatten().map(|e| e.file_name()).collect::<Vec<_>>())
                )
            });
            let v: serde_json::Value = serde_json::from_str(&text).expect("bootstrap.json");
            v["address"]
                .as_str()
                .expect("bootstrap.json address")
                .to_string()
        }
    };
    PathBuf::from(a.trim().trim_start_matches("unix://"))
}

/// `/run/containerd/s/sha256(<daemon socket>/<ns>/<id>)`, containerd's `SocketAddress`.
fn hashed(daemon: &Path, ns: &str, id: &str) -> PathBuf {
    let path = daemon.join(ns).join(id);
    Path::new(SOCKET_DIR).join(hex::encode(Sha256::digest(
        path.as_os_str().as_encoded_bytes(),
    )))
}

/// The shim serving task `id` in `ns`.
fn shim_pid(ns: &str, id: &str) -> i32 {
    let found = tasks::shim_pids(ns, id);
    assert_eq!(found.len(), 1, "one shim for {id}: {found:?}");
    found[0]
}

fn sigkill(pid: i32) {
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGKILL,
    )
    .expect("SIGKILL shim");
    let deadline = Instant::now() + Duration::from_secs(10);
    while procs::is_alive(pid) {
        assert!(Instant::now() < deadline, "shim {pid} survived SIGKILL");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn wait_gone(p: &Path, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while p.exists() {
        assert!(
            Instant::now() < deadline,
            "{what} {} still there",
            p.display()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn busybox_archive(work: &Path) -> (String, PathBuf) {
    let img = TestImage::busybox().expect("busybox test image");
    let archive = work.join("busybox.oci.tar");
    img.write_oci_archive(&archive)
        .expect("write image archive");
    (img.name.clone(), archive)
}

/// A Go shim is SIGKILLed under a running task; containerd notices, deletes the bundle (and
/// with it the `address` file), and the socket stays. The harness's cleanup removes it, and
/// the debug socket of a `-debug` shim, but not the decoy.
fn killed_go_shim_socket_is_removed(builder: Builder, tag: &str, debug_socket: bool) {
    let work = tempfile::tempdir().expect("tmp");
    let (image, archive) = busybox_archive(work.path());
    let mut c: Containerd = builder.start().expect("containerd starts");
    c.import(&archive);
    c.ctr_ok(&["run", "-d", &image, "k1", "sleep", "1000"]);
    let bundle = c.bundle_dir("k1");
    let sock = address_socket(&bundle);
    assert_eq!(
        sock,
        hashed(&c.address(), c.namespace(), "k1"),
        "the socket is sha256(<address>/<ns>/<id>), the formula cleanup derives debug sockets with"
    );
    assert!(
        c.leftover_shim_sockets().contains(&sock),
        "the harness knows the shim's socket: {:?}",
        c.leftover_shim_sockets()
    );
    let debug = hashed(&c.address(), c.namespace(), "k1/debug");
    assert_eq!(
        debug.exists(),
        debug_socket,
        "debug socket {} (containerd 2.x runs its shim with -debug)",
        debug.display()
    );
    let decoy = Decoy::new(tag);

    sigkill(shim_pid(c.namespace(), "k1"));
    let _ = c.ctr(&["t", "rm", "-f", "k1"]);
    wait_gone(&bundle, "bundle of the killed shim");
    assert!(
        sock.exists(),
        "precondition: the killed Go shim left its socket {}",
        sock.display()
    );
    assert_eq!(
        debug.exists(),
        debug_socket,
        "precondition: and its debug socket"
    );

    let problems = c.stop();
    assert!(problems.is_empty(), "cleanup problems: {problems:?}");
    assert!(!sock.exists(), "socket {} left behind", sock.display());
    assert!(
        !debug.exists(),
        "debug socket {} left behind",
        debug.display()
    );
    assert!(
        decoy.0.exists(),
        "cleanup removed a socket that is not ours"
    );
}

#[test]
fn containerd_1_6_cleanup_removes_socket_of_sigkilled_go_shim_only() {
    killed_go_shim_socket_is_removed(Containerd::v1(), "v1", false);
}

#[test]
fn containerd_2_3_cleanup_removes_sockets_of_sigkilled_go_shim_only() {
    let test = "containerd_2_3_cleanup_removes_sockets_of_sigkilled_go_shim_only";
    let Some(builder) = Containerd::v2(test) else {
        return;
    };
    killed_go_shim_socket_is_removed(builder, "v2", true);
}

/// berthd is killed, a (Debian Go) shim dies while it is down, the restarted berthd deletes
/// that task's bundle: the socket the harness saw before the `kill -9` is still removed on
/// stop, the other task's socket goes with its shim, the decoy stays.
#[test]
fn berthd_cleanup_removes_socket_of_shim_killed_while_berthd_was_down() {
    let work = tempfile::tempdir().expect("tmp");
    let (image, archive) = busybox_archive(work.path());
    let mut d = TestDaemon::builder()
        .shim_dir(bins::debian_go_shim_dir())
        .start()
        .expect("berthd starts");
    d.ctr_ok(&["images", "import", &archive.to_string_lossy()]);
    d.ctr_ok(&["run", "-d", &image, "doomed", "sleep", "1000"]);
    d.ctr_ok(&["run", "-d", &image, "alive", "sleep", "1000"]);
    let doomed = d.bundle_dir("doomed");
    let doomed_sock = address_socket(&doomed);
    let alive_sock = address_socket(&d.bundle_dir("alive"));
    let decoy = Decoy::new("berthd");

    d.kill9();
    sigkill(shim_pid(d.namespace(), "doomed"));
    d.restart().expect("berthd restarts");
    wait_gone(&doomed, "bundle of the killed shim");
    assert!(
        doomed_sock.exists(),
        "precondition: the killed shim left its socket {}",
        doomed_sock.display()
    );
    let left = d.leftover_shim_sockets();
    assert!(
        left.contains(&doomed_sock) && left.contains(&alive_sock),
        "leftover_shim_sockets lists both: {left:?}"
    );

    let problems = d.stop();
    assert!(problems.is_empty(), "cleanup problems: {problems:?}");
    for s in [&doomed_sock, &alive_sock] {
        assert!(!s.exists(), "socket {} left behind", s.display());
    }
    assert!(
        decoy.0.exists(),
        "cleanup removed a socket that is not ours"
    );
}
