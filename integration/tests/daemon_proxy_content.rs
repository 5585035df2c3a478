//! berthd with its content store in another process: `[proxy_plugins.remote] type =
//! "content"` pointing at a private containerd 1.6 (Debian's), and the built-in store
//! disabled (`disabled_plugins = ["io.containerd.content.v1.content"]`, which containerd needs
//! too). Debian's `ctr` drives berthd; the same `ctr` against the private containerd checks
//! that the bytes really live there, in the namespace of the request:
//! `plugins ls` (same row as containerd's for a proxy), `images import` (unpack reads the
//! layers through the proxy; the snapshot mounts and holds the files), `i ls`, `content
//! ls/get/label/rm`, an interrupted ingest resumed, GC deleting through the proxy after
//! `content rm` and `i rm`, and the errors for an unreachable proxy and for a proxy configured
//! without disabling the built-in store.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use integration::containerd::Containerd;
use integration::daemon::TestDaemon;
use integration::image::TestImage;
use sha2::{Digest, Sha256};

const NS: &str = "x";

fn digest(data: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(data)))
}

fn berthd_with_proxy(address: &Path, disable_local: bool) -> TestDaemon {
    let disabled = if disable_local {
        "disabled_plugins = [\"io.containerd.content.v1.content\"]\n"
    } else {
        ""
    };
    TestDaemon::builder()
        .namespace(NS)
        .config(&format!(
            "version = 2\nroot = \"{{root}}\"\nstate = \"{{state}}\"\n{disabled}\n\
             [grpc]\n  address = \"{{address}}\"\n\n\
             [debug]\n  level = \"debug\"\n\n\
             [proxy_plugins]\n  [proxy_plugins.remote]\n    type = \"content\"\n    address = \"{}\"\n",
            address.display()
        ))
        .start()
        .expect("start berthd with a content proxy")
}

/// `content ls -q` of the remote containerd in namespace `x`.
fn remote_digests(remote: &Containerd) -> Vec<String> {
    remote
        .ctr_ok(&["content", "ls", "-q"])
        .lines()
        .map(str::to_string)
        .collect()
}

fn plugin_row(ls: &str, ty: &str, id: &str) -> Option<Vec<String>> {
    ls.lines()
        .map(|l| l.split_whitespace().map(str::to_string).collect::<Vec<_>>())
        .find(|f| f.len() >= 2 && f[0] == ty && f[1] == id)
}

fn local_blobs(d: &TestDaemon) -> usize {
    std::fs::read_dir(
        d.root()
            .join("io.containerd.content.v1.content/blobs/sha256"),
    )
    .map(Iterator::count)
    .unwrap_or(0)
}

fn wait_until(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let t0 = Instant::now();
    while !f() {
        assert!(
            t0.elapsed() < timeout,
            "timed out after {timeout:?}: {what}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn ingest(
    d: &TestDaemon,
    r#ref: &str,
    data: &[u8],
    size: usize,
    dgst: &str,
) -> std::process::Output {
    // A file, not a pipe: resuming, ctr seeks its input past what the store already has.
    let f = tempfile::NamedTempFile::new().expect("tmp file");
    std::fs::write(f.path(), data).expect("write input");
    d.ctr_command()
        .args([
            "content",
            "ingest",
            "--expected-size",
            &size.to_string(),
            "--expected-digest",
            dgst,
            r#ref,
        ])
        .stdin(Stdio::from(
            std::fs::File::open(f.path()).expect("open input"),
        ))
        .output()
        .expect("run ctr content ingest")
}

#[test]
fn content_lives_in_a_private_containerd_behind_the_proxy() {
    let remote = Containerd::v1()
        .namespace(NS)
        .start()
        .expect("start containerd 1.6");
    let d = berthd_with_proxy(&remote.address(), true);

    // `ctr plugins ls`: the proxy is a content plugin, ok, as in containerd (compared with a
    // second containerd configured with the same proxy); the built-in store is not listed.
    let ls = d.ctr_ok(&["plugins", "ls"]);
    let row =
        plugin_row(&ls, "io.containerd.content.v1", "remote").unwrap_or_else(|| panic!("{ls}"));
    assert_eq!(row.last().map(String::as_str), Some("ok"), "{ls}");
    assert!(
        plugin_row(&ls, "io.containerd.content.v1", "content").is_none(),
        "{ls}"
    );
    let reference = Containerd::v1()
        .extra_config(&format!(
            "[proxy_plugins]\n  [proxy_plugins.remote]\n    type = \"content\"\n    address = \"{}\"\n",
            remote.address().display()
        ))
        .start()
        .expect("start a containerd with the same proxy");
    let ref_ls = reference.ctr_ok(&["plugins", "ls"]);
    assert_eq!(
        plugin_row(&ref_ls, "io.containerd.content.v1", "remote"),
        Some(row.clone()),
        "berthd's row matches containerd's:\n{ref_ls}"
    );
    drop(reference);

    // Import: every blob lands in the remote's namespace x, none on berthd's disk.
    let img = TestImage::busybox().expect("test image");
    let tmp = tempfile::tempdir().expect("tmp");
    let tar = tmp.path().join("busybox.oci.tar");
    std::fs::write(&tar, img.oci_archive().expect("archive")).expect("write archive");
    let out = d.ctr_ok(&["images", "import", &tar.display().to_string()]);
    assert!(
        out.contains("unpacking docker.io/library/busybox:test"),
        "{out}"
    );
    let on_remote = remote_digests(&remote);
    for b in img.blobs() {
        assert!(
            on_remote.contains(&b.digest),
            "{} not on the proxy: {on_remote:?}",
            b.digest
        );
    }
    assert_eq!(local_blobs(&d), 0, "no blob on berthd's disk");
    let remote_ls = remote.ctr_ok(&["content", "ls"]);
    assert!(
        remote_ls.contains("berth.io/content.owner=berthd")
            && remote_ls.contains("containerd.io/gc.root="),
        "{remote_ls}"
    );
    let ils = d.ctr_ok(&["images", "ls"]);
    assert!(
        ils.contains("docker.io/library/busybox:test") && ils.contains(img.manifest_digest()),
        "{ils}"
    );
    assert!(d.ctr_ok(&["images", "check"]).contains("complete"));

    // Unpacked through the proxy: the top snapshot mounts and holds busybox.
    let chain = {
        let mut prev: Option<String> = None;
        for id in img.diff_ids() {
            prev = Some(match prev {
                None => id.clone(),
                Some(p) => digest(format!("{p} {id}").as_bytes()),
            });
        }
        prev.expect("one layer at least")
    };
    d.ctr_ok(&["snapshots", "view", "check-view", &chain]);
    let target = tempfile::tempdir().expect("mountpoint");
    let cmd = d.ctr_ok(&[
        "snapshots",
        "mounts",
        &target.path().display().to_string(),
        "check-view",
    ]);
    let o = Command::new("sh")
        .arg("-c")
        .arg(cmd.trim())
        .output()
        .expect("mount");
    assert!(
        o.status.success(),
        "{cmd}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    let has_busybox = target.path().join("bin/busybox").is_file();
    let _ = Command::new("umount").arg(target.path()).status();
    d.ctr_ok(&["snapshots", "rm", "check-view"]);
    assert!(has_busybox, "bin/busybox in the unpacked snapshot");

    // content get / label: bytes from the proxy; labels stay in berthd's metadata.
    let config = img.config_digest().to_string();
    let got = d.ctr(&["content", "get", &config]).stdout;
    assert_eq!(digest(&got), config, "content get returns the config blob");
    d.ctr_ok(&["content", "label", &config, "team=storage"]);
    assert!(d.ctr_ok(&["content", "ls"]).contains("team=storage"));
    assert!(!remote.ctr_ok(&["content", "ls"]).contains("team=storage"));

    // An interrupted ingest stays on the proxy and resumes at its offset.
    let data: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    let dgst = digest(&data);
    let o = ingest(&d, "resume-me", &data[..100_000], data.len(), &dgst);
    assert!(!o.status.success(), "a short ingest must not commit");
    let active = d.ctr_ok(&["content", "active"]);
    assert!(
        active
            .lines()
            .any(|l| l.starts_with("resume-me") && l.contains("100kB")),
        "{active}"
    );
    let remote_active = remote.ctr_ok(&["content", "active"]);
    assert!(
        remote_active.contains("x/resume-me"),
        "ingest held by the proxy:\n{remote_active}"
    );
    let mut second = vec![0u8; 100_000];
    second.extend_from_slice(&data[100_000..]);
    let o = ingest(&d, "resume-me", &second, data.len(), &dgst);
    assert!(
        o.status.success(),
        "resume: {}\n{}",
        String::from_utf8_lossy(&o.stderr),
        d.log_tail(20)
    );
    let got = d.ctr(&["content", "get", &dgst]);
    assert_eq!(
        (got.stdout.len(), digest(&got.stdout)),
        (data.len(), dgst.clone()),
        "resumed bytes kept; ctr stderr: {}\n{}",
        String::from_utf8_lossy(&got.stderr),
        d.log_tail(10)
    );
    assert!(remote_digests(&remote).contains(&dgst));

    // content rm: the background GC deletes it through the proxy.
    d.ctr_ok(&["content", "rm", &dgst]);
    wait_until(
        "GC deletes the blob on the proxy",
        Duration::from_secs(10),
        || !remote_digests(&remote).contains(&dgst),
    );

    // i rm --sync: everything the image held goes from the proxy.
    d.ctr_ok(&["images", "rm", "--sync", "docker.io/library/busybox:test"]);
    let left = remote_digests(&remote);
    for b in img.blobs() {
        assert!(
            !left.contains(&b.digest),
            "{} still on the proxy after i rm: {left:?}",
            b.digest
        );
    }
    assert!(d.ctr_ok(&["content", "ls", "-q"]).trim().is_empty());
    assert_eq!(local_blobs(&d), 0);
}

#[test]
fn unreachable_proxy_is_reported_with_plugin_and_address() {
    let tmp = tempfile::tempdir().expect("tmp");
    let nowhere = tmp.path().join("no-such-content.sock");
    let d = berthd_with_proxy(&nowhere, true);
    // As containerd (whose dial is lazy): listed ok; the first use fails.
    let ls = d.ctr_ok(&["plugins", "ls"]);
    assert!(
        plugin_row(&ls, "io.containerd.content.v1", "remote").is_some(),
        "{ls}"
    );
    let data = b"hello proxy".to_vec();
    let o = ingest(&d, "r1", &data, data.len(), &digest(&data));
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("content proxy plugin remote at")
            && err.contains(&nowhere.display().to_string()),
        "{err}"
    );
    // berthd keeps serving.
    d.ctr_ok(&["version"]);
}

#[test]
fn proxy_with_the_builtin_store_enabled_refuses_to_start() {
    let tmp = tempfile::tempdir().expect("tmp");
    let sock = tmp.path().join("cs.sock");
    let template = format!(
        "version = 2\nroot = \"{{root}}\"\nstate = \"{{state}}\"\n\n[grpc]\n  address = \"{{address}}\"\n\n\
         [proxy_plugins]\n  [proxy_plugins.remote]\n    type = \"io.containerd.content.v1\"\n    address = \"{}\"\n",
        sock.display()
    );
    let err = TestDaemon::builder()
        .config(&template)
        .start()
        .expect_err("two content stores must not start")
        .to_string();
    assert!(
        err.contains("io.containerd.content.v1.remote")
            && err.contains("disabled_plugins = [\"io.containerd.content.v1.content\"]"),
        "{err}"
    );
}
