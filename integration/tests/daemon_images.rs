//! berthd image path, driven by Debian's `ctr` 1.6.20 exactly as a user would: `images
//! import` (OCI and docker-archive; ctr implements import client-side over Content.Write,
//! Images.Create, Leases, Snapshots.Prepare/Commit and Diff.Apply), `ls`, `tag [--force]`,
//! `rm`, `export` → re-import, `check`, the unpacked snapshot's files, and GC after `rm`
//! with and without a lease holding the content.

use std::path::Path;
use std::process::Command;

use integration::daemon::TestDaemon;
use integration::image::{Expected, TestImage, LAYERS_ABSENT, LAYERS_EXPECTED};
use sha2::{Digest, Sha256};

fn daemon() -> TestDaemon {
    TestDaemon::builder()
        .namespace("k8s.io")
        .start()
        .expect("start berthd")
}

fn write_tmp(dir: &Path, name: &str, data: &[u8]) -> String {
    let p = dir.join(name);
    std::fs::write(&p, data).expect("write archive");
    p.display().to_string()
}

/// containerd's chain ids: chain(0) = diff(0), chain(n) = sha256(chain(n-1) + " " + diff(n)).
fn chain_ids(diff_ids: &[String]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for d in diff_ids {
        let next = match out.last() {
            None => d.clone(),
            Some(prev) => format!(
                "sha256:{}",
                hex::encode(Sha256::digest(format!("{prev} {d}").as_bytes()))
            ),
        };
        out.push(next);
    }
    out
}

/// Views `parent` as `key`, mounts it with the command `ctr snapshots mounts` prints, runs
/// `check` on the mounted tree, unmounts and removes the view.
fn with_mounted_view(d: &TestDaemon, key: &str, parent: &str, check: impl FnOnce(&Path)) {
    d.ctr_ok(&["snapshots", "view", key, parent]);
    let target = tempfile::tempdir().expect("mountpoint");
    let cmd = d.ctr_ok(&[
        "snapshots",
        "mounts",
        &target.path().display().to_string(),
        key,
    ]);
    let out = Command::new("sh")
        .arg("-c")
        .arg(cmd.trim())
        .output()
        .expect("run mount");
    assert!(
        out.status.success(),
        "mount `{}` failed: {}",
        cmd.trim(),
        String::from_utf8_lossy(&out.stderr)
    );
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| check(target.path())));
    let _ = Command::new("umount").arg(target.path()).status();
    d.ctr_ok(&["snapshots", "rm", key]);
    if let Err(p) = result {
        std::panic::resume_unwind(p);
    }
}

fn content_digests(d: &TestDaemon) -> Vec<String> {
    d.ctr_ok(&["content", "ls", "-q"])
        .lines()
        .map(str::to_string)
        .collect()
}

fn snapshot_keys(d: &TestDaemon) -> Vec<String> {
    d.ctr_ok(&["snapshots", "ls"])
        .lines()
        .skip(1)
        .filter_map(|l| l.split_whitespace().next().map(str::to_string))
        .collect()
}

#[test]
fn import_oci_archive_unpacks_every_layer_with_whiteouts_and_ownership() {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let img = TestImage::layers().expect("test image");
    let d = daemon();
    let tmp = tempfile::tempdir().expect("tmp");
    let tar = write_tmp(
        tmp.path(),
        "layers.oci.tar",
        &img.oci_archive().expect("archive"),
    );
    let out = d.ctr_ok(&["images", "import", &tar]);
    assert!(
        out.contains("unpacking docker.io/library/berth-layers:test"),
        "{out}"
    );

    let ls = d.ctr_ok(&["images", "ls"]);
    assert!(
        ls.contains("docker.io/library/berth-layers:test") && ls.contains(img.manifest_digest()),
        "{ls}"
    );
    let chains = chain_ids(&img.diff_ids());
    let keys = snapshot_keys(&d);
    for c in &chains {
        assert!(keys.contains(c), "snapshot {c} missing from {keys:?}");
    }
    // The unpacker records the top snapshot on the config blob, for GC.
    let info = d.ctr_ok(&["content", "ls"]);
    let config_line = info
        .lines()
        .find(|l| l.starts_with(img.config_digest()))
        .expect("config blob listed");
    assert!(
        config_line.contains(&format!(
            "containerd.io/gc.ref.snapshot.overlayfs={}",
            chains[chains.len() - 1]
        )),
        "{config_line}"
    );

    with_mounted_view(&d, "check-view", &chains[chains.len() - 1], |root| {
        for (path, want) in LAYERS_EXPECTED {
            let p = root.join(path);
            let md = std::fs::symlink_metadata(&p).unwrap_or_else(|e| panic!("{path}: {e}"));
            match want {
                Expected::Dir => assert!(md.is_dir(), "{path} should be a directory"),
                Expected::File(content, mode, uid) => {
                    assert_eq!(
                        std::fs::read_to_string(&p).expect("read"),
                        *content,
                        "{path}"
                    );
                    assert_eq!(md.permissions().mode() & 0o7777, *mode, "{path} mode");
                    assert_eq!(md.uid(), *uid, "{path} owner");
                }
                Expected::Symlink(target) => {
                    assert_eq!(
                        std::fs::read_link(&p).expect("readlink").to_string_lossy(),
                        *target,
                        "{path}"
                    );
                }
            }
        }
        for path in LAYERS_ABSENT {
            assert!(
                std::fs::symlink_metadata(root.join(path)).is_err(),
                "{path} must not exist after unpack"
            );
        }
        assert!(root.join("bin/busybox").is_file(), "base layer present");
    });
    let check = d.ctr_ok(&["images", "check"]);
    assert!(
        check.contains("complete (5/5)") && check.contains("true"),
        "{check}"
    );
}

#[test]
fn import_docker_archive_is_usable() {
    let img = TestImage::busybox().expect("test image");
    let d = daemon();
    let tmp = tempfile::tempdir().expect("tmp");
    let tar = write_tmp(
        tmp.path(),
        "busybox.docker.tar",
        &img.docker_archive().expect("archive"),
    );
    d.ctr_ok(&["images", "import", &tar]);
    let ls = d.ctr_ok(&["images", "ls", "-q"]);
    assert!(
        ls.lines().any(|l| l == "docker.io/library/busybox:test"),
        "{ls}"
    );
    let chains = chain_ids(&img.diff_ids());
    assert!(snapshot_keys(&d).contains(&chains[0]));
    with_mounted_view(&d, "v", &chains[0], |root| {
        assert!(root.join("bin/busybox").is_file());
        assert!(std::fs::read_to_string(root.join("etc/passwd"))
            .expect("passwd")
            .contains("root:"));
    });
}

#[test]
fn tag_requires_force_to_replace_and_rm_removes_only_the_tag() {
    let img = TestImage::busybox().expect("test image");
    let d = daemon();
    let tmp = tempfile::tempdir().expect("tmp");
    let tar = write_tmp(
        tmp.path(),
        "busybox.oci.tar",
        &img.oci_archive().expect("archive"),
    );
    d.ctr_ok(&["images", "import", &tar]);
    d.ctr_ok(&[
        "images",
        "tag",
        "docker.io/library/busybox:test",
        "example.com/bb:1",
    ]);
    let again = d.ctr(&[
        "images",
        "tag",
        "docker.io/library/busybox:test",
        "example.com/bb:1",
    ]);
    assert!(!again.status.success(), "re-tag without --force must fail");
    assert!(
        String::from_utf8_lossy(&again.stderr).contains("already exists"),
        "{}",
        String::from_utf8_lossy(&again.stderr)
    );
    d.ctr_ok(&[
        "images",
        "tag",
        "--force",
        "docker.io/library/busybox:test",
        "example.com/bb:1",
    ]);
    let ls = d.ctr_ok(&["images", "ls"]);
    let line = ls
        .lines()
        .find(|l| l.starts_with("example.com/bb:1"))
        .expect("tag listed");
    assert!(line.contains(img.manifest_digest()), "{line}");
    // Images.Update with field paths (`labels.<k>`), as `ctr images label` sends it.
    d.ctr_ok(&["images", "label", "example.com/bb:1", "team=storage"]);
    let ls = d.ctr_ok(&["images", "ls"]);
    let line = ls
        .lines()
        .find(|l| l.starts_with("example.com/bb:1"))
        .expect("tag listed");
    assert!(line.contains("team=storage"), "{line}");
    d.ctr_ok(&["images", "rm", "example.com/bb:1"]);
    let ls = d.ctr_ok(&["images", "ls", "-q"]);
    assert_eq!(
        ls.lines().collect::<Vec<_>>(),
        ["docker.io/library/busybox:test"]
    );
    let missing = d.ctr(&["images", "rm", "example.com/bb:1"]);
    assert!(
        String::from_utf8_lossy(&missing.stderr).contains("not found"),
        "{}",
        String::from_utf8_lossy(&missing.stderr)
    );
}

#[test]
fn export_then_reimport_gives_the_same_digests() {
    let img = TestImage::layers().expect("test image");
    let d = daemon();
    let tmp = tempfile::tempdir().expect("tmp");
    let tar = write_tmp(
        tmp.path(),
        "layers.oci.tar",
        &img.oci_archive().expect("archive"),
    );
    d.ctr_ok(&["images", "import", &tar]);
    let exported = tmp.path().join("exported.tar");
    d.ctr_ok(&[
        "images",
        "export",
        &exported.display().to_string(),
        "docker.io/library/berth-layers:test",
    ]);
    let before = d.ctr_ok(&["images", "ls"]);
    let blobs_before = content_digests(&d);
    d.ctr_ok(&[
        "images",
        "rm",
        "--sync",
        "docker.io/library/berth-layers:test",
    ]);
    assert!(
        content_digests(&d).is_empty(),
        "rm --sync collects everything"
    );
    d.ctr_ok(&["images", "import", &exported.display().to_string()]);
    let after = d.ctr_ok(&["images", "ls"]);
    let row = |s: &str| {
        s.lines()
            .find(|l| l.starts_with("docker.io/library/berth-layers:test"))
            .map(|l| {
                l.split_whitespace()
                    .take(3)
                    .map(str::to_string)
                    .collect::<Vec<String>>()
            })
    };
    assert_eq!(
        row(&before),
        row(&after),
        "name, media type and manifest digest survive the round trip"
    );
    let mut blobs_after = content_digests(&d);
    blobs_after.sort();
    let mut want: Vec<String> = img.blobs().iter().map(|b| b.digest.clone()).collect();
    want.sort();
    for w in &want {
        assert!(blobs_after.contains(w), "{w} missing after re-import");
        assert!(blobs_before.contains(w));
    }
}

#[tokio::test(flavor = "current_thread")]
async fn gc_after_rm_removes_unreferenced_content_and_snapshots_but_keeps_leased() {
    let img = TestImage::busybox().expect("test image");
    let d = daemon();
    let tmp = tempfile::tempdir().expect("tmp");
    let tar = write_tmp(
        tmp.path(),
        "busybox.oci.tar",
        &img.oci_archive().expect("archive"),
    );
    d.ctr_ok(&["images", "import", &tar]);
    let layer = img.layer_digests()[0].clone();
    let chain = chain_ids(&img.diff_ids())[0].clone();
    let blob_path = d
        .root()
        .join("io.containerd.content.v1.content/blobs/sha256")
        .join(layer.trim_start_matches("sha256:"));
    assert!(blob_path.is_file());

    // A lease holding the layer blob keeps it through `i rm --sync`.
    d.ctr_ok(&["leases", "create", "--id", "hold"]);
    assert!(d.ctr_ok(&["leases", "ls"]).contains("hold"));
    common::add_lease_resource(&d, "hold", "content", &layer).await;
    common::add_lease_resource(&d, "hold", "snapshots/overlayfs", "not-yet-created").await;
    assert_eq!(
        common::lease_resources(&d, "hold").await,
        [
            ("content".to_string(), layer.clone()),
            (
                "snapshots/overlayfs".to_string(),
                "not-yet-created".to_string()
            )
        ]
    );
    common::delete_lease_resource(&d, "hold", "snapshots/overlayfs", "not-yet-created").await;
    assert_eq!(common::lease_resources(&d, "hold").await.len(), 1);
    d.ctr_ok(&["images", "rm", "--sync", "docker.io/library/busybox:test"]);
    assert_eq!(
        content_digests(&d),
        std::slice::from_ref(&layer),
        "only the leased blob stays"
    );
    assert!(blob_path.is_file());
    assert!(
        !snapshot_keys(&d).contains(&chain),
        "unpacked snapshot collected"
    );
    let overlay_dirs = std::fs::read_dir(
        d.root()
            .join("io.containerd.snapshotter.v1.overlayfs/snapshots"),
    )
    .expect("snapshots dir")
    .count();
    assert_eq!(overlay_dirs, 0, "backend snapshot directories removed");

    d.ctr_ok(&["leases", "rm", "--sync", "hold"]);
    assert!(content_digests(&d).is_empty());
    assert!(
        !blob_path.exists(),
        "blob removed from disk once no lease holds it"
    );
}

mod common {
    use integration::daemon::TestDaemon;
    use protos::containerd::services::leases::v1::{
        leases_client::LeasesClient, AddResourceRequest, DeleteResourceRequest,
        ListResourcesRequest, Resource,
    };
    use tonic::transport::Channel;

    async fn client(d: &TestDaemon) -> LeasesClient<Channel> {
        let path = d.address();
        let channel = tonic::transport::Endpoint::try_from("http://[::]:50051")
            .expect("endpoint")
            .connect_with_connector(tower::service_fn(move |_| {
                let path = path.clone();
                async move {
                    Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(
                        tokio::net::UnixStream::connect(path).await?,
                    ))
                }
            }))
            .await
            .expect("connect to berthd");
        LeasesClient::new(channel)
    }

    fn request<T>(d: &TestDaemon, msg: T) -> tonic::Request<T> {
        let mut req = tonic::Request::new(msg);
        req.metadata_mut().insert(
            "containerd-namespace",
            d.namespace().parse().expect("ascii"),
        );
        req
    }

    /// `Leases.AddResource` (ctr has no command for it).
    pub async fn add_lease_resource(d: &TestDaemon, lease: &str, kind: &str, id: &str) {
        let msg = AddResourceRequest {
            id: lease.into(),
            resource: Some(Resource {
                id: id.into(),
                r#type: kind.into(),
            }),
        };
        client(d)
            .await
            .add_resource(request(d, msg))
            .await
            .expect("AddResource");
    }

    /// `Leases.DeleteResource`.
    pub async fn delete_lease_resource(d: &TestDaemon, lease: &str, kind: &str, id: &str) {
        let msg = DeleteResourceRequest {
            id: lease.into(),
            resource: Some(Resource {
                id: id.into(),
                r#type: kind.into(),
            }),
        };
        client(d)
            .await
            .delete_resource(request(d, msg))
            .await
            .expect("DeleteResource");
    }

    /// `Leases.ListResources` as (type, id).
    pub async fn lease_resources(d: &TestDaemon, lease: &str) -> Vec<(String, String)> {
        let msg = ListResourcesRequest { id: lease.into() };
        let resp = client(d)
            .await
            .list_resources(request(d, msg))
            .await
            .expect("ListResources");
        resp.into_inner()
            .resources
            .into_iter()
            .map(|r| (r.r#type, r.id))
            .collect()
    }
}

#[test]
fn containerd_2_ctr_imports_with_local_mode() {
    let Some(dir) = integration::bins::containerd2_dir("containerd_2_ctr_imports_with_local_mode")
    else {
        return;
    };
    let img = TestImage::busybox().expect("test image");
    let d = daemon();
    let tmp = tempfile::tempdir().expect("tmp");
    let tar = write_tmp(
        tmp.path(),
        "busybox.oci.tar",
        &img.oci_archive().expect("archive"),
    );
    let ctr2 = |args: &[&str]| {
        let o = Command::new(dir.join("ctr"))
            .arg("--address")
            .arg(d.address())
            .args(["--namespace", d.namespace()])
            .args(args)
            .output()
            .expect("containerd 2 ctr");
        assert!(
            o.status.success(),
            "ctr2 {args:?}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8_lossy(&o.stdout).into_owned()
    };
    // `--local`: ctr 2.x drives Content/Images/Snapshots/Diff itself, as 1.6 does; the
    // Transfer service (its default) is not served by berthd.
    ctr2(&["images", "import", "--local", &tar]);
    assert!(ctr2(&["images", "ls"]).contains(img.manifest_digest()));
    assert!(ctr2(&["snapshots", "ls"]).contains(&img.diff_ids()[0]));
    assert!(ctr2(&["version"]).contains("berth"));
}
