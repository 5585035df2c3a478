//! containerd 2's Transfer service in berthd, driven by containerd v2.3.4's own `ctr`
//! (from `$BERTH_CONTAINERD2_DIR`) without `--local`: `images import` (OCI layout and
//! docker-archive tars) gives the same image digests as ctr's client-side `--local` import,
//! `export` round-trips, `pull --plain-http` from a local docker-registry unpacks so that
//! `ctr run --rm` works, `push --plain-http` lands the same manifest in the registry
//! (checked with skopeo), `tag` copies a record; progress is printed; bad requests get
//! containerd's codes (NotFound, Unimplemented, Unknown) with clear messages and berthd
//! keeps serving. Debian's ctr 1.6 (no Transfer service) still imports and lists.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use integration::bins;
use integration::daemon::TestDaemon;
use integration::image::TestImage;
use integration::registry::Registry;
use protos::containerd::services::transfer::v1::{
    transfer_client::TransferClient, TransferOptions, TransferRequest,
};
use tonic::Code;

/// A berthd plus containerd 2.3.4's ctr bound to it.
struct Env {
    d: TestDaemon,
    ctr2: PathBuf,
    tmp: tempfile::TempDir,
}

impl Env {
    fn start(test: &str) -> Option<Self> {
        let dir = bins::containerd2_dir(test)?;
        Some(Env {
            d: TestDaemon::start().expect("start berthd"),
            ctr2: dir.join("ctr"),
            tmp: tempfile::tempdir().expect("tmp"),
        })
    }

    fn ns(&self, suffix: &str) -> String {
        if suffix.is_empty() {
            self.d.namespace().to_string()
        } else {
            format!("{}-{suffix}", self.d.namespace())
        }
    }

    /// ctr 2.3.4 `<args>` in namespace `<ns>-<suffix>` (empty suffix: the daemon's).
    fn ctr2(&self, suffix: &str, args: &[&str]) -> Output {
        Command::new(&self.ctr2)
            .arg("--address")
            .arg(self.d.address())
            .arg("--namespace")
            .arg(self.ns(suffix))
            .args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("running {} {args:?}: {e}", self.ctr2.display()))
    }

    fn ctr2_ok(&self, suffix: &str, args: &[&str]) -> String {
        let o = self.ctr2(suffix, args);
        assert!(
            o.status.success(),
            "`ctr(2.3.4) {}` failed ({}):\nstdout: {}\nstderr: {}\nberthd log tail:\n{}",
            args.join(" "),
            o.status,
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr),
            self.d.log_tail(60)
        );
        String::from_utf8_lossy(&o.stdout).into_owned()
    }

    fn ctr2_err(&self, suffix: &str, args: &[&str]) -> String {
        let o = self.ctr2(suffix, args);
        assert!(
            !o.status.success(),
            "`ctr(2.3.4) {}` should fail:\nstdout: {}",
            args.join(" "),
            String::from_utf8_lossy(&o.stdout)
        );
        String::from_utf8_lossy(&o.stderr).into_owned()
    }

    /// `ctr images ls` as (name, target digest) pairs, sorted.
    fn images(&self, suffix: &str) -> Vec<(String, String)> {
        let out = self.ctr2_ok(suffix, &["images", "ls"]);
        let mut v: Vec<(String, String)> = out
            .lines()
            .skip(1)
            .filter_map(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                (f.len() > 2).then(|| (f[0].to_string(), f[2].to_string()))
            })
            .collect();
        v.sort();
        v
    }

    fn write(&self, name: &str, data: &[u8]) -> PathBuf {
        let p = self.tmp.path().join(name);
        std::fs::write(&p, data).expect("write archive");
        p
    }

    /// Whether snapshot `key` exists in the default snapshotter of namespace `suffix`.
    fn has_snapshot(&self, suffix: &str, key: &str) -> bool {
        self.ctr2(suffix, &["snapshots", "info", key])
            .status
            .success()
    }
}

fn p(path: &Path) -> &str {
    path.to_str().expect("utf-8 path")
}

#[test]
fn ctr2_import_of_oci_and_docker_archives_matches_local_import_and_unpacks() {
    let Some(env) = Env::start("ctr2_import_of_oci_and_docker_archives") else {
        return;
    };
    let img = TestImage::busybox().expect("test image");
    let oci = env.write("oci.tar", &img.oci_archive().expect("oci archive"));
    let docker = env.write("docker.tar", &img.docker_archive().expect("docker archive"));
    for (i, archive) in [&oci, &docker].into_iter().enumerate() {
        let (ts, local) = (format!("ts{i}"), format!("local{i}"));
        let out = env.ctr2_ok(&ts, &["images", "import", p(archive)]);
        // The progress stream carries the saved image (ctr prints each named event).
        assert!(
            out.contains("saved") && out.contains("busybox:test"),
            "no progress output:\n{out}"
        );
        env.ctr2_ok(&local, &["images", "import", "--local", p(archive)]);
        let (a, b) = (env.images(&ts), env.images(&local));
        assert_eq!(a, b, "transfer import and --local import differ");
        // The OCI layout keeps the image's manifest; a docker archive gets a synthesised
        // Docker schema 2 manifest (same digest as --local, checked above).
        assert!(
            a.iter()
                .any(|(n, d)| n == &img.name && (i == 1 || d == img.manifest_digest())),
            "{a:?} lacks {} {}",
            img.name,
            img.manifest_digest()
        );
        // Unpacked daemon-side into the default snapshotter: the chain's snapshot exists.
        let chain = img.diff_ids()[0].clone();
        assert!(
            env.has_snapshot(&ts, &chain),
            "import did not unpack {chain}:\n{}",
            env.ctr2_ok(&ts, &["snapshots", "ls"])
        );
        let check = env.ctr2_ok(&ts, &["images", "check"]);
        assert!(check.contains("complete"), "{check}");
    }
    // A compressed archive (`docker save | gzip`) is sniffed and decompressed, as containerd.
    let gz = {
        use std::io::Write as _;
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        e.write_all(&std::fs::read(&oci).expect("read archive"))
            .expect("gzip");
        env.write("oci.tar.gz", &e.finish().expect("gzip"))
    };
    env.ctr2_ok("gz", &["images", "import", p(&gz)]);
    assert_eq!(env.images("gz"), env.images("ts0"));
    // --no-unpack leaves the snapshotter alone; --base-name/--digests name as containerd's
    // ImageStore does (ctr passes `!--skip-digest-for-named` as SkipNamedDigest, so the
    // digest name of a named manifest needs that flag).
    env.ctr2_ok(
        "nounpack",
        &[
            "images",
            "import",
            "--no-unpack",
            "--digests",
            "--skip-digest-for-named",
            "--base-name",
            "docker.io/library/busybox",
            p(&docker),
        ],
    );
    assert!(!env.has_snapshot("nounpack", &img.diff_ids()[0]));
    let names: Vec<String> = env.images("nounpack").into_iter().map(|(n, _)| n).collect();
    // The named manifest, `<base>@<manifest digest>`, and (no annotation on the index)
    // `<base>@<index digest>`.
    let manifest = env
        .images("ts1")
        .into_iter()
        .find(|(n, _)| n == &img.name)
        .map(|(_, d)| d)
        .expect("docker archive image");
    let at = |d: &str| format!("docker.io/library/busybox@{d}");
    assert!(
        names.contains(&img.name) && names.contains(&at(&manifest)) && names.len() == 3,
        "{names:?}"
    );
}

#[test]
fn ctr2_export_round_trips_and_debian_ctr_reads_it() {
    let Some(env) = Env::start("ctr2_export_round_trips") else {
        return;
    };
    let img = TestImage::layers().expect("test image");
    let oci = env.write("in.tar", &img.oci_archive().expect("oci archive"));
    env.ctr2_ok("a", &["images", "import", p(&oci)]);
    let out = env.tmp.path().join("out.tar");
    let progress = env.ctr2_ok("a", &["images", "export", p(&out), &img.name]);
    let _ = progress;
    let mut names: Vec<String> = tar::Archive::new(std::fs::File::open(&out).expect("export"))
        .entries()
        .expect("tar")
        .map(|e| {
            e.expect("entry")
                .path()
                .expect("path")
                .display()
                .to_string()
        })
        .collect();
    names.sort();
    for want in ["oci-layout", "index.json", "manifest.json"] {
        assert!(names.iter().any(|n| n == want), "{want} missing: {names:?}");
    }
    for b in img.blobs() {
        let path = format!("blobs/sha256/{}", b.hex());
        assert!(names.contains(&path), "{path} missing: {names:?}");
    }
    env.ctr2_ok("b", &["images", "import", p(&out)]);
    assert_eq!(env.images("a"), env.images("b"));
    // containerd 1.6's client-side importer reads the archive too.
    env.d.ctr_ok(&["images", "import", p(&out)]);
    let ls = env.d.ctr_ok(&["images", "ls"]);
    assert!(ls.contains(img.manifest_digest()), "{ls}");
    // Export of an image that does not exist: containerd's NotFound message.
    let err = env.ctr2_err(
        "a",
        &[
            "images",
            "export",
            p(&env.tmp.path().join("x.tar")),
            "nope:1",
        ],
    );
    assert!(err.contains("\"nope:1\": not found"), "{err}");
}

#[test]
fn ctr2_pull_unpacks_runs_and_push_lands_in_registry() {
    let Some(env) = Env::start("ctr2_pull_unpacks_runs_and_push") else {
        return;
    };
    let img = TestImage::busybox().expect("test image");
    let reg = Registry::http().expect("start docker-registry");
    let reference = reg
        .push_image(&img, "library/busybox:test")
        .expect("push with skopeo");

    let out = env.ctr2_ok("", &["images", "pull", "--plain-http", &reference]);
    assert!(
        out.contains("saved") && out.contains("complete"),
        "no progress output:\n{out}"
    );
    let imgs = env.images("");
    assert!(
        imgs.contains(&(reference.clone(), img.manifest_digest().to_string())),
        "{imgs:?}"
    );
    assert!(
        env.has_snapshot("", &img.diff_ids()[0]),
        "pull did not unpack"
    );
    // Pulling again finds everything present.
    let again = env.ctr2_ok("", &["images", "pull", "--plain-http", &reference]);
    assert!(again.contains("saved"), "{again}");
    let run = env.ctr2_ok(
        "",
        &["run", "--rm", &reference, "tr1", "echo", "hello-transfer"],
    );
    assert_eq!(run.trim(), "hello-transfer");

    // Tag, then push the tag: the registry serves the same manifest.
    let pushed = reg.reference("library/pushed:1");
    let tagged = env.ctr2_ok("", &["images", "tag", &reference, &pushed]);
    assert_eq!(tagged.trim(), pushed);
    let out = env.ctr2_ok("", &["images", "push", "--plain-http", &pushed]);
    assert!(
        out.contains("pushed content") || out.contains("complete"),
        "{out}"
    );
    let inspect = reg.inspect("library/pushed:1").expect("skopeo inspect");
    assert_eq!(
        inspect["Digest"].as_str(),
        Some(img.manifest_digest()),
        "{inspect}"
    );
    // And another namespace pulls it back through the transfer service.
    env.ctr2_ok("back", &["images", "pull", "--plain-http", &pushed]);
    assert!(env
        .images("back")
        .contains(&(pushed.clone(), img.manifest_digest().to_string())));

    // A missing tag is NotFound; a registry that is down fails clearly; berthd serves on.
    let err = env.ctr2_err(
        "",
        &[
            "images",
            "pull",
            "--plain-http",
            &reg.reference("library/missing:1"),
        ],
    );
    assert!(err.contains("not found"), "{err}");
    let err = env.ctr2_err(
        "",
        &["images", "pull", "--plain-http", "127.0.0.1:1/library/x:1"],
    );
    assert!(
        err.contains("failed to resolve image") && err.contains("127.0.0.1:1"),
        "{err}"
    );
    let err = env.ctr2_err(
        "",
        &[
            "images",
            "push",
            "--plain-http",
            "127.0.0.1:1/library/x:1",
            &reference,
        ],
    );
    assert!(err.contains("127.0.0.1:1"), "{err}");
    env.ctr2_ok("", &["images", "ls"]);
    let err = env.ctr2_err("", &["images", "tag", "nope:1", "other:2"]);
    assert!(err.contains("not found"), "{err}");
}

#[test]
fn ctr2_pull_from_tls_registry_with_auth_uses_hosts_dir_and_credentials_stream() {
    let Some(env) = Env::start("ctr2_pull_from_tls_registry_with_auth") else {
        return;
    };
    let img = TestImage::busybox().expect("test image");
    let reg = Registry::https_with_auth().expect("start docker-registry (TLS, auth)");
    let reference = reg
        .push_image(&img, "library/private:1")
        .expect("push with skopeo");
    // containerd's certs.d layout: <hosts-dir>/<host:port>/ca.crt, read by berthd.
    let hosts = env.tmp.path().join("certs.d");
    let dir = hosts.join(reg.host());
    std::fs::create_dir_all(&dir).expect("hosts dir");
    std::fs::copy(reg.ca_pem().expect("ca"), dir.join("ca.crt")).expect("ca.crt");
    let (user, pass) = reg.credentials().expect("credentials");
    let creds = format!("{user}:{pass}");
    // Without credentials the registry refuses, and berthd says so.
    let err = env.ctr2_err(
        "",
        &["images", "pull", "--hosts-dir", p(&hosts), &reference],
    );
    assert!(
        err.contains("401") || err.contains("denied") || err.contains("unauthorized"),
        "{err}"
    );
    // ctr answers berthd's AuthRequest on the credentials stream with --user.
    env.ctr2_ok(
        "",
        &[
            "images",
            "pull",
            "--hosts-dir",
            p(&hosts),
            "--user",
            &creds,
            &reference,
        ],
    );
    assert!(env
        .images("")
        .contains(&(reference.clone(), img.manifest_digest().to_string())));
    // Push back under another tag, with the same hosts dir and credentials.
    let other = reg.reference("library/private:2");
    env.ctr2_ok("", &["images", "tag", &reference, &other]);
    env.ctr2_ok(
        "",
        &[
            "images",
            "push",
            "--hosts-dir",
            p(&hosts),
            "--user",
            &creds,
            &other,
        ],
    );
    let inspect = reg.inspect("library/private:2").expect("skopeo inspect");
    assert_eq!(inspect["Digest"].as_str(), Some(img.manifest_digest()));
}

/// Writes `data` as a blob of the OCI layout at `dir`; returns its descriptor JSON.
fn put_blob(dir: &Path, media_type: &str, data: &[u8]) -> serde_json::Value {
    use sha2::Digest as _;
    let hex = hex::encode(sha2::Sha256::digest(data));
    std::fs::write(dir.join("blobs/sha256").join(&hex), data).expect("write blob");
    serde_json::json!({"mediaType": media_type, "digest": format!("sha256:{hex}"), "size": data.len()})
}

/// The busybox layout plus a foreign (linux/s390x) manifest with its own config and layer,
/// under one index: returns (layout dir, index, foreign manifest, foreign layer) digests.
fn multi_platform_layout(img: &TestImage, dir: &Path) -> (String, String, String) {
    use std::io::Write as _;
    img.write_oci_layout(dir).expect("layout");
    let mut t = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_ustar();
    h.set_size(6);
    h.set_mode(0o644);
    h.set_cksum();
    t.append_data(&mut h, "s390x", &b"s390x\n"[..])
        .expect("tar");
    let layer_tar = t.into_inner().expect("tar");
    let diff_id = integration::image::sha256_digest(&layer_tar);
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(&layer_tar).expect("gzip");
    let layer = put_blob(
        dir,
        "application/vnd.oci.image.layer.v1.tar+gzip",
        &gz.finish().expect("gzip"),
    );
    let config = put_blob(
        dir,
        "application/vnd.oci.image.config.v1+json",
        serde_json::json!({"architecture": "s390x", "os": "linux",
            "rootfs": {"type": "layers", "diff_ids": [diff_id]}, "config": {}})
        .to_string()
        .as_bytes(),
    );
    let foreign = put_blob(
        dir,
        "application/vnd.oci.image.manifest.v1+json",
        serde_json::json!({"schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": config, "layers": [layer]})
        .to_string()
        .as_bytes(),
    );
    let host_manifest = std::fs::read(
        dir.join("blobs/sha256")
            .join(img.manifest_digest().trim_start_matches("sha256:")),
    )
    .expect("host manifest");
    let mut host = serde_json::json!({"mediaType": "application/vnd.oci.image.manifest.v1+json",
        "digest": img.manifest_digest(), "size": host_manifest.len()});
    host["platform"] =
        serde_json::json!({"architecture": integration::image::oci_arch(), "os": "linux"});
    let mut f = foreign.clone();
    f["platform"] = serde_json::json!({"architecture": "s390x", "os": "linux"});
    let index = put_blob(
        dir,
        "application/vnd.oci.image.index.v1+json",
        serde_json::json!({"schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "manifests": [host, f]})
        .to_string()
        .as_bytes(),
    );
    let mut top = index.clone();
    top["annotations"] = serde_json::json!({"org.opencontainers.image.ref.name": "test"});
    std::fs::write(
        dir.join("index.json"),
        serde_json::json!({"schemaVersion": 2, "manifests": [top]}).to_string(),
    )
    .expect("index.json");
    let s = |v: &serde_json::Value| v["digest"].as_str().expect("digest").to_string();
    (s(&index), s(&foreign), s(&layer))
}

#[test]
fn ctr2_multi_platform_pull_keeps_foreign_metadata_only_and_export_filters_platforms() {
    let Some(env) = Env::start("ctr2_multi_platform_pull") else {
        return;
    };
    let img = TestImage::busybox().expect("test image");
    let layout = env.tmp.path().join("multi");
    let (index, foreign, foreign_layer) = multi_platform_layout(&img, &layout);
    let reg = Registry::http().expect("start docker-registry");
    let reference = reg.reference("library/multi:1");
    let o = Command::new(bins::require_bin("skopeo", "skopeo"))
        .args(["copy", "--all", "--dest-tls-verify=false"])
        .arg(format!("oci:{}:test", layout.display()))
        .arg(format!("docker://{reference}"))
        .output()
        .expect("skopeo");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));

    // Default pull: the host's manifest with layers (unpacked), the foreign manifest and
    // config as metadata (containerd's default without --skip-metadata), not its layer.
    env.ctr2_ok("", &["images", "pull", "--plain-http", &reference]);
    assert!(env.images("").contains(&(reference.clone(), index.clone())));
    let content = env.ctr2_ok("", &["content", "ls", "-q"]);
    assert!(content.contains(&foreign), "{content}");
    assert!(!content.contains(&foreign_layer), "{content}");
    assert!(content.contains(&img.layer_digests()[0]), "{content}");
    assert!(env.has_snapshot("", &img.diff_ids()[0]));
    // --skip-metadata: nothing of the foreign platform.
    env.ctr2_ok(
        "skip",
        &[
            "images",
            "pull",
            "--plain-http",
            "--skip-metadata",
            &reference,
        ],
    );
    let content = env.ctr2_ok("skip", &["content", "ls", "-q"]);
    assert!(!content.contains(&foreign), "{content}");

    // Export for the host platform: the index, the host's manifest and blobs only.
    let out = env.tmp.path().join("multi-out.tar");
    env.ctr2_ok("", &["images", "export", p(&out), &reference]);
    let names: Vec<String> = tar::Archive::new(std::fs::File::open(&out).expect("export"))
        .entries()
        .expect("tar")
        .map(|e| {
            e.expect("entry")
                .path()
                .expect("path")
                .display()
                .to_string()
        })
        .collect();
    let has =
        |d: &str| names.contains(&format!("blobs/sha256/{}", d.trim_start_matches("sha256:")));
    assert!(
        has(&index) && has(img.manifest_digest()) && has(&img.layer_digests()[0]),
        "{names:?}"
    );
    assert!(!has(&foreign), "{names:?}");
    // And the export imports elsewhere under the same target.
    env.ctr2_ok("re", &["images", "import", p(&out)]);
    assert!(env
        .images("re")
        .contains(&(reference.clone(), index.clone())));
}

fn transfer_req(
    ns: &str,
    src: prost_types::Any,
    dst: prost_types::Any,
    progress: &str,
) -> tonic::Request<TransferRequest> {
    let mut r = tonic::Request::new(TransferRequest {
        source: Some(src),
        destination: Some(dst),
        options: Some(TransferOptions {
            progress_stream: progress.to_string(),
        }),
    });
    r.metadata_mut()
        .insert("containerd-namespace", ns.parse().expect("ascii"));
    r
}

fn any(url: &str, value: Vec<u8>) -> prost_types::Any {
    prost_types::Any {
        type_url: url.to_string(),
        value,
    }
}

#[test]
fn bad_transfer_requests_get_containerd_codes_and_berthd_keeps_serving() {
    let d = TestDaemon::start().expect("start berthd");
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        let path = d.address();
        let ch = tonic::transport::Endpoint::try_from("http://[::]:50051")
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
            .expect("connect");
        let mut c = TransferClient::new(ch);
        let ns = d.namespace();
        let store = any("containerd.types.transfer.ImageStore", Vec::new());
        let registry = any("containerd.types.transfer.OCIRegistry", Vec::new());
        // A type no one knows: Unknown, as containerd's typeurl lookup.
        let s = c
            .transfer(transfer_req(
                ns,
                any("example.com/Nope", Vec::new()),
                store.clone(),
                "",
            ))
            .await
            .expect_err("unknown type");
        assert_eq!(s.code(), Code::Unknown, "{s:?}");
        assert!(s.message().contains("example.com/Nope"), "{s:?}");
        // Registry to registry: no operation, Unimplemented with both type URLs.
        let s = c
            .transfer(transfer_req(ns, registry.clone(), registry.clone(), ""))
            .await
            .expect_err("registry to registry");
        assert_eq!(s.code(), Code::Unimplemented, "{s:?}");
        assert!(
            s.message().contains(
                "method Transfer not implemented for containerd.types.transfer.OCIRegistry"
            ),
            "{s:?}"
        );
        // A stream that was never opened: NotFound.
        let import = any(
            "containerd.types.transfer.ImageImportStream",
            [&[0x0a, 4][..], b"nope"].concat(),
        );
        let s = c
            .transfer(transfer_req(ns, import, store.clone(), ""))
            .await
            .expect_err("missing stream");
        assert_eq!(s.code(), Code::NotFound, "{s:?}");
        assert!(s.message().contains("\"nope\""), "{s:?}");
        let s = c
            .transfer(transfer_req(
                ns,
                store.clone(),
                store.clone(),
                "no-such-progress",
            ))
            .await
            .expect_err("missing progress stream");
        assert_eq!(s.code(), Code::NotFound, "{s:?}");
        // Tag of an image that does not exist.
        let s = c
            .transfer(transfer_req(ns, store.clone(), store, ""))
            .await
            .expect_err("missing image");
        assert_eq!(s.code(), Code::NotFound, "{s:?}");
    });
    // Still serving, and the services are listed (Debian's ctr 1.6 talks to it as before).
    let plugins = d.ctr_ok(&["plugins", "ls"]);
    for (t, id) in [
        ("io.containerd.transfer.v1", "local"),
        ("io.containerd.streaming.v1", "manager"),
        ("io.containerd.grpc.v1", "transfer"),
        ("io.containerd.grpc.v1", "streaming"),
    ] {
        assert!(
            plugins.lines().any(|l| l.starts_with(t)
                && l.split_whitespace().nth(1) == Some(id)
                && l.contains("ok")),
            "{t} {id} missing:\n{plugins}"
        );
    }
    let img = TestImage::busybox().expect("test image");
    let tmp = tempfile::tempdir().expect("tmp");
    let tar = tmp.path().join("i.tar");
    std::fs::write(&tar, img.oci_archive().expect("archive")).expect("write");
    d.ctr_ok(&["images", "import", p(&tar)]);
    assert!(d.ctr_ok(&["images", "ls"]).contains(img.manifest_digest()));
}
