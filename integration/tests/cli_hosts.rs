//! `berth images pull/push --hosts-dir` with containerd's registry host configuration
//! (`<dir>/<host>/hosts.toml`, `<dir>/_default`, Docker certs.d files), ctr's TLS flags
//! and `--user` prompting, against berthd and Debian's `docker-registry` on 127.0.0.1:
//!
//! - mirror fallback: an empty mirror (404), a dead one (connection refused), then the
//!   server; the same hosts dir works with Debian's ctr 1.6.20 against containerd;
//!   errors name every host tried;
//! - `capabilities` without `resolve`: the mirror serves blobs but never resolves tags;
//! - TLS: `ca` in hosts.toml, certs.d `ca.crt`, `skip_verify`, client certificates
//!   (registry with `tls.clientcas`) from `client` and from `--tlscert/--tlskey`;
//! - `content fetch --hosts-dir` goes through a hosts.toml mirror like `images pull`;
//! - a malformed hosts.toml names file and line; `-u user` prompts on a terminal (via
//!   `script`) and fails clearly without one.

mod cli_common;

use std::fs;
use std::net::TcpStream;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use cli_common::{s, stderr, Daemon};
use integration::image::{TestImage, BUSYBOX_NAME};
use integration::registry::Registry;

/// A port nothing listens on.
fn dead_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = l.local_addr().expect("addr").port();
    drop(l);
    port
}

/// Writes `<root>/<name>/hosts.toml`.
fn hosts_toml(root: &Path, name: &str, text: &str) -> PathBuf {
    let dir = root.join(name);
    fs::create_dir_all(&dir).expect("mkdir host dir");
    let file = dir.join("hosts.toml");
    fs::write(&file, text).expect("write hosts.toml");
    file
}

/// `GET /v2/<repo>/manifests/<tag>` requests in a registry's log.
fn manifest_gets(reg: &Registry, repo_tag: &str) -> usize {
    let (repo, tag) = repo_tag.rsplit_once(':').expect("repo:tag");
    let needle = format!("/v2/{repo}/manifests/{tag}");
    reg.log_tail(10_000)
        .lines()
        .filter(|l| l.contains(&needle) && l.contains("GET"))
        .count()
}

#[test]
fn mirrors_fall_through_to_the_server_in_file_order() {
    let img = TestImage::busybox().expect("test image");
    let server = Registry::http().expect("start registry");
    let empty_mirror = Registry::http().expect("start mirror");
    let reference = server.push_image(&img, "hosts/busybox:1").expect("push");
    let dead = dead_port();
    let root = tempfile::tempdir().expect("tempdir");
    let config = format!(
        "server = \"http://{server}\"\n\n\
         [host.\"http://{mirror}\"]\n  capabilities = [\"pull\", \"resolve\"]\n\n\
         [host.\"http://127.0.0.1:{dead}\"]\n  capabilities = [\"pull\", \"resolve\"]\n",
        server = server.host(),
        mirror = empty_mirror.host(),
    );
    hosts_toml(root.path(), &server.host(), &config);

    let d = Daemon::berthd();
    let out = d.berth_ok(&["images", "pull", "--hosts-dir", s(root.path()), &reference]);
    assert!(
        out.starts_with(&format!("{reference}: resolved\n")),
        "{out}"
    );
    let ls = d.berth_ok(&["images", "ls"]);
    assert!(
        ls.lines()
            .any(|l| l.starts_with(&format!("{reference} ")) && l.contains(img.manifest_digest())),
        "{ls}"
    );
    // The mirror was asked first, with containerd's ?ns=<registry> for mirrors.
    let mirror_log = empty_mirror.log_tail(10_000);
    assert!(
        mirror_log.contains("/v2/hosts/busybox/manifests/1?ns=127.0.0.1"),
        "mirror not tried first:\n{mirror_log}"
    );
    let o = d.berth(&["run", "--rm", &reference, "hosts-1", "echo", "mirrored"]);
    assert_eq!(cli_common::stdout(&o), "mirrored\n", "{}", stderr(&o));

    // A tag nobody has: the error names every host tried, in order.
    let missing = d.berth(&[
        "images",
        "pull",
        "--hosts-dir",
        s(root.path()),
        &server.reference("hosts/none:1"),
    ]);
    assert_eq!(missing.status.code(), Some(1));
    let err = stderr(&missing);
    assert!(err.contains("not found"), "{err}");
    let at = |h: &str| {
        err.find(h)
            .unwrap_or_else(|| panic!("{h} not named:\n{err}"))
    };
    let (m, x, srv) = (
        at(&format!("{}: not found", empty_mirror.host())),
        at(&format!("127.0.0.1:{dead}: connect to")),
        at(&format!("{}: not found", server.host())),
    );
    assert!(m < x && x < srv, "hosts not in order:\n{err}");

    // Push goes to the first host with the push capability: the server, not the mirrors.
    let pushed = server.reference("hosts/pushed:1");
    let out = d.berth_ok(&[
        "images",
        "push",
        "--hosts-dir",
        s(root.path()),
        &pushed,
        &reference,
    ]);
    assert!(out.ends_with(&format!("{pushed}: pushed\n")), "{out}");
    let inspect = server.inspect("hosts/pushed:1").expect("skopeo inspect");
    assert_eq!(inspect["Digest"], img.manifest_digest());
    assert!(
        !empty_mirror.log_tail(10_000).contains("hosts/pushed"),
        "pushed to a pull-only mirror"
    );

    // The same directory, read by Debian's ctr 1.6.20 against containerd: same result.
    let c = Daemon::containerd();
    c.ctr_ok(&["images", "pull", "--hosts-dir", s(root.path()), &reference]);
    let ls = c.ctr_ok(&["images", "ls"]);
    assert!(ls.contains(img.manifest_digest()), "{ls}");
}

/// A mirror that answers every request with `status` and records the request heads
/// (request line and headers), to check what berth sends to a failing mirror.
fn recording_mirror(status: &'static str) -> (u16, std::sync::Arc<std::sync::Mutex<Vec<String>>>) {
    use std::io::{Read as _, Write as _};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let record = seen.clone();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { continue };
            let mut head = Vec::new();
            let mut buf = [0u8; 1024];
            while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                match conn.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => head.extend_from_slice(&buf[..n]),
                }
            }
            if let Ok(mut v) = record.lock() {
                v.push(String::from_utf8_lossy(&head).into_owned());
            }
            let _ = write!(
                conn,
                "HTTP/1.1 {status}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            );
        }
    });
    (port, seen)
}

#[test]
fn failing_mirrors_get_headers_and_paths_from_hosts_toml() {
    let img = TestImage::busybox().expect("test image");
    let server = Registry::http().expect("start registry");
    let reference = server.push_image(&img, "hosts/hdr:1").expect("push");
    let (broken, broken_seen) = recording_mirror("503 Service Unavailable");
    let (custom, custom_seen) = recording_mirror("404 Not Found");
    let root = tempfile::tempdir().expect("tempdir");
    hosts_toml(
        root.path(),
        &server.host(),
        &format!(
            "server = \"http://{server}\"\n\
             [host.\"http://127.0.0.1:{broken}\"]\n  capabilities = [\"pull\", \"resolve\"]\n\
             \x20 header = {{ x-berth-test = \"one\", x-berth-list = [\"a\", \"b\"] }}\n\
             [host.\"http://127.0.0.1:{custom}/custom/api\"]\n  capabilities = [\"pull\", \"resolve\"]\n\
             \x20 override_path = true\n",
            server = server.host()
        ),
    );
    let d = Daemon::berthd();
    d.berth_ok(&["images", "pull", "--hosts-dir", s(root.path()), &reference]);

    // The 5xx mirror was asked for the tag, with the configured headers, then for blobs
    // (each falling through to the server).
    let seen = broken_seen.lock().expect("lock").clone();
    let first = seen.first().expect("503 mirror never asked");
    assert!(
        first.starts_with(&format!(
            "GET /v2/hosts/hdr/manifests/1?ns=127.0.0.1%3A{} HTTP/1.1",
            server.port()
        )),
        "{first}"
    );
    let lower = first.to_ascii_lowercase();
    assert!(lower.contains("x-berth-test: one\r\n"), "{first}");
    assert!(
        lower.contains("x-berth-list: a\r\n") && lower.contains("x-berth-list: b\r\n"),
        "{first}"
    );
    assert!(
        seen.iter()
            .any(|r| r.starts_with("GET /v2/hosts/hdr/blobs/sha256:")),
        "blobs not tried on the mirror first: {seen:?}"
    );
    // override_path: the URL's path is the API root, no /v2 added.
    let seen = custom_seen.lock().expect("lock").clone();
    assert!(
        seen.iter()
            .any(|r| r.starts_with("GET /custom/api/hosts/hdr/manifests/1?ns=")),
        "{seen:?}"
    );
}

#[test]
fn default_dir_serves_any_registry_and_host_port_dir_wins() {
    let img = TestImage::busybox().expect("test image");
    let server = Registry::http().expect("start registry");
    let reference = server.push_image(&img, "hosts/default:1").expect("push");
    let root = tempfile::tempdir().expect("tempdir");
    // _default: a dead mirror, then the registry itself (no `server`: plain HTTP for a
    // local registry without TLS settings, as berth's default host).
    hosts_toml(
        root.path(),
        "_default",
        &format!(
            "[host.\"http://127.0.0.1:{}\"]\n  capabilities = [\"pull\", \"resolve\"]\n",
            dead_port()
        ),
    );
    let d = Daemon::berthd();
    d.berth_ok(&["images", "pull", "--hosts-dir", s(root.path()), &reference]);

    // containerd's `host_port_` directory is found before `_default`: here it sends the
    // registry to a dead server only, so the pull fails naming it.
    let dead = dead_port();
    hosts_toml(
        root.path(),
        &format!("127.0.0.1_{}_", server.port()),
        &format!("server = \"http://127.0.0.1:{dead}\"\n"),
    );
    d.berth_ok(&["images", "rm", &reference]);
    let o = d.berth(&["images", "pull", "--hosts-dir", s(root.path()), &reference]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains(&format!("connect to 127.0.0.1:{dead}")),
        "{}",
        stderr(&o)
    );
}

#[test]
fn a_mirror_without_resolve_serves_blobs_but_never_tags() {
    let busybox = TestImage::busybox().expect("busybox image");
    let other = TestImage::layers().expect("layers image");
    let server = Registry::http().expect("start registry");
    let mirror = Registry::http().expect("start mirror");
    let reference = server.push_image(&busybox, "hosts/caps:1").expect("push");
    // The mirror has another image under the same name: resolving there would pull it.
    mirror
        .push_image(&other, "hosts/caps:1")
        .expect("push mirror");
    assert_ne!(busybox.manifest_digest(), other.manifest_digest());
    let root = tempfile::tempdir().expect("tempdir");
    let write = |caps: &str| {
        hosts_toml(
            root.path(),
            &server.host(),
            &format!(
                "server = \"http://{}\"\n[host.\"http://{}\"]\n  capabilities = {caps}\n",
                server.host(),
                mirror.host()
            ),
        )
    };
    write("[\"pull\"]");
    let d = Daemon::berthd();
    d.berth_ok(&["images", "pull", "--hosts-dir", s(root.path()), &reference]);
    let ls = d.berth_ok(&["images", "ls"]);
    assert!(
        ls.lines()
            .any(|l| l.starts_with(&format!("{reference} "))
                && l.contains(busybox.manifest_digest())),
        "{ls}"
    );
    assert_eq!(
        manifest_gets(&mirror, "hosts/caps:1"),
        0,
        "the pull-only mirror was asked to resolve:\n{}",
        mirror.log_tail(40)
    );
    // Control: with `resolve` the mirror answers the tag with its own image.
    write("[\"pull\", \"resolve\"]");
    d.berth_ok(&["images", "rm", &reference]);
    d.berth_ok(&["images", "pull", "--hosts-dir", s(root.path()), &reference]);
    let ls = d.berth_ok(&["images", "ls"]);
    assert!(
        ls.lines().any(
            |l| l.starts_with(&format!("{reference} ")) && l.contains(other.manifest_digest())
        ),
        "{ls}"
    );
    assert!(manifest_gets(&mirror, "hosts/caps:1") > 0);
}

#[test]
fn tls_from_hosts_toml_ca_certs_d_and_skip_verify() {
    let img = TestImage::busybox().expect("test image");
    let reg = Registry::https().expect("start TLS registry");
    let reference = reg.push_image(&img, "hosts/tls:1").expect("push");
    let ca = reg.ca_pem().expect("CA").to_path_buf();
    let d = Daemon::berthd();
    let pull = |root: &Path| d.berth(&["images", "pull", "--hosts-dir", s(root), &reference]);

    // `ca` names the test CA (relative to the host directory here).
    let root = tempfile::tempdir().expect("tempdir");
    let host_dir = root.path().join(reg.host());
    fs::create_dir_all(&host_dir).expect("mkdir");
    fs::copy(&ca, host_dir.join("registry-ca.pem")).expect("copy CA");
    hosts_toml(
        root.path(),
        &reg.host(),
        &format!(
            "server = \"https://{}\"\nca = \"registry-ca.pem\"\n",
            reg.host()
        ),
    );
    let o = pull(root.path());
    assert!(o.status.success(), "{}", stderr(&o));
    d.berth_ok(&["images", "rm", &reference]);

    // Without it the system CAs do not know the registry's certificate.
    hosts_toml(
        root.path(),
        &reg.host(),
        &format!("server = \"https://{}\"\n", reg.host()),
    );
    let o = pull(root.path());
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("TLS connection to"), "{}", stderr(&o));

    // skip_verify = true instead.
    hosts_toml(
        root.path(),
        &reg.host(),
        &format!("server = \"https://{}\"\nskip_verify = true\n", reg.host()),
    );
    let o = pull(root.path());
    assert!(o.status.success(), "{}", stderr(&o));
    d.berth_ok(&["images", "rm", &reference]);

    // Docker's certs.d layout: only `ca.crt` in the host directory (no hosts.toml); a CA
    // makes the local registry HTTPS.
    let certs = tempfile::tempdir().expect("tempdir");
    let dir = certs.path().join(reg.host());
    fs::create_dir_all(&dir).expect("mkdir");
    fs::copy(&ca, dir.join("ca.crt")).expect("copy CA");
    let o = pull(certs.path());
    assert!(o.status.success(), "{}", stderr(&o));
    let o = d.berth(&["run", "--rm", &reference, "hosts-tls", "echo", "certs.d"]);
    assert_eq!(cli_common::stdout(&o), "certs.d\n", "{}", stderr(&o));
}

#[test]
fn malformed_hosts_toml_names_file_and_line() {
    let root = tempfile::tempdir().expect("tempdir");
    let file = hosts_toml(
        root.path(),
        "127.0.0.1:5999",
        "server = \"http://127.0.0.1:5999\"\n\n[host.\"http://127.0.0.1:1\"\n  capabilities = [\"pull\"]\n",
    );
    let d = Daemon::berthd();
    let o = d.berth(&[
        "images",
        "pull",
        "--hosts-dir",
        s(root.path()),
        "127.0.0.1:5999/x/y:1",
    ]);
    assert_eq!(o.status.code(), Some(1));
    let err = stderr(&o);
    assert!(err.contains(&format!("{}:3:", file.display())), "{err}");

    let file = hosts_toml(
        root.path(),
        "127.0.0.1:5999",
        "server = \"http://127.0.0.1:5999\"\ncapabilities = [\"pull\", \"teleport\"]\n",
    );
    let o = d.berth(&[
        "images",
        "pull",
        "--hosts-dir",
        s(root.path()),
        "127.0.0.1:5999/x/y:1",
    ]);
    assert_eq!(o.status.code(), Some(1));
    let err = stderr(&o);
    assert!(
        err.contains(&format!(
            "{}:2: unknown capability \"teleport\"",
            file.display()
        )),
        "{err}"
    );
}

/// docker-registry over TLS requiring a client certificate signed by the test CA
/// (`http.tls.clientcas`), started here because the shared harness has no such mode.
struct ClientCertRegistry {
    _dir: tempfile::TempDir,
    port: u16,
    child: Child,
    ca: PathBuf,
    client_cert: PathBuf,
    client_key: PathBuf,
    /// A client certificate from another CA, which the registry does not accept.
    wrong_cert: PathBuf,
    wrong_key: PathBuf,
    log: PathBuf,
}

impl ClientCertRegistry {
    fn start() -> Self {
        use rcgen::{
            BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
            KeyUsagePurpose, SanType,
        };
        let bin = integration::require_bin("docker-registry", "docker-registry");
        integration::subreaper::ensure().expect("subreaper");
        let dir = tempfile::tempdir().expect("tempdir");
        let p = |n: &str| dir.path().join(n);

        let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("ca params");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "berth client-cert test CA");
        ca_params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let ca_key = KeyPair::generate().expect("key");
        let ca_cert = ca_params.self_signed(&ca_key).expect("self-sign");
        let issuer = rcgen::Issuer::new(ca_params, ca_key);

        let mut srv = CertificateParams::new(vec!["localhost".to_string()]).expect("params");
        srv.subject_alt_names
            .push(SanType::IpAddress(std::net::Ipv4Addr::LOCALHOST.into()));
        let srv_key = KeyPair::generate().expect("key");
        let srv_cert = srv.signed_by(&srv_key, &issuer).expect("sign server");

        let mut cli = CertificateParams::new(Vec::<String>::new()).expect("params");
        cli.distinguished_name
            .push(DnType::CommonName, "berth test client");
        cli.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let cli_key = KeyPair::generate().expect("key");
        let cli_cert = cli.signed_by(&cli_key, &issuer).expect("sign client");

        let mut other_params = CertificateParams::new(Vec::<String>::new()).expect("params");
        other_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        other_params
            .distinguished_name
            .push(DnType::CommonName, "berth unrelated CA");
        let other_key = KeyPair::generate().expect("key");
        let other_issuer = rcgen::Issuer::new(other_params, other_key);
        let mut wrong = CertificateParams::new(Vec::<String>::new()).expect("params");
        wrong
            .distinguished_name
            .push(DnType::CommonName, "berth wrong client");
        wrong.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let wrong_key = KeyPair::generate().expect("key");
        let wrong_cert = wrong
            .signed_by(&wrong_key, &other_issuer)
            .expect("sign wrong client");
        fs::write(p("wrong.cert"), wrong_cert.pem()).expect("write");
        fs::write(p("wrong.key"), wrong_key.serialize_pem()).expect("write");

        fs::write(p("ca.pem"), ca_cert.pem()).expect("write");
        fs::write(p("server.crt"), srv_cert.pem()).expect("write");
        fs::write(p("server.key"), srv_key.serialize_pem()).expect("write");
        fs::write(p("client.cert"), cli_cert.pem()).expect("write");
        fs::write(p("client.key"), cli_key.serialize_pem()).expect("write");

        let port = dead_port();
        let config = p("config.yml");
        fs::write(
            &config,
            format!(
                "version: 0.1\nlog:\n  level: info\n\
                 storage:\n  filesystem:\n    rootdirectory: {data}\n\
                 http:\n  addr: 127.0.0.1:{port}\n  secret: berth-client-cert-{port}\n\
                 \x20 tls:\n    certificate: {crt}\n    key: {key}\n    clientcas:\n      - {ca}\n",
                data = p("data").display(),
                crt = p("server.crt").display(),
                key = p("server.key").display(),
                ca = p("ca.pem").display(),
            ),
        )
        .expect("write config");
        let log = p("registry.log");
        let out = fs::File::create(&log).expect("log");
        let err = out.try_clone().expect("log");
        let mut child = integration::subreaper::spawn_registered(
            Command::new(&bin)
                .arg("serve")
                .arg(&config)
                .stdin(Stdio::null())
                .stdout(out)
                .stderr(err)
                .process_group(0),
        )
        .expect("spawn docker-registry");
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            if Instant::now() > deadline || matches!(child.try_wait(), Ok(Some(_))) {
                let _ = child.kill();
                panic!(
                    "docker-registry with clientcas did not start:\n{}",
                    fs::read_to_string(&log).unwrap_or_default()
                );
            }
            std::thread::sleep(Duration::from_millis(25));
        }
        ClientCertRegistry {
            ca: p("ca.pem"),
            client_cert: p("client.cert"),
            client_key: p("client.key"),
            wrong_cert: p("wrong.cert"),
            wrong_key: p("wrong.key"),
            log,
            port,
            child,
            _dir: dir,
        }
    }

    fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }
}

impl Drop for ClientCertRegistry {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "--- client-cert registry log ---\n{}",
                fs::read_to_string(&self.log).unwrap_or_default()
            );
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        integration::subreaper::unregister(self.child.id());
    }
}

#[test]
fn client_certificates_from_flags_and_hosts_toml() {
    let reg = ClientCertRegistry::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let (img, oci, _) = cli_common::busybox_archives(dir.path());
    let d = Daemon::berthd();
    d.berth_ok(&["images", "import", s(&oci)]);
    let remote = format!("{}/hosts/client-cert:1", reg.host());

    // No client certificate: the registry refuses the handshake.
    let o = d.berth(&[
        "images",
        "push",
        "--tlscacert",
        s(&reg.ca),
        &remote,
        BUSYBOX_NAME,
    ]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains(&reg.host()), "{}", stderr(&o));
    // --tlscert without --tlskey is refused as ctr refuses it.
    let o = d.berth(&[
        "images",
        "push",
        "--tlscert",
        s(&reg.client_cert),
        &remote,
        BUSYBOX_NAME,
    ]);
    assert!(
        stderr(&o).contains("--tlscert and --tlskey must be set together"),
        "{}",
        stderr(&o)
    );
    // ctr's flags: push with the client certificate.
    let out = d.berth_ok(&[
        "images",
        "push",
        "--tlscacert",
        s(&reg.ca),
        "--tlscert",
        s(&reg.client_cert),
        "--tlskey",
        s(&reg.client_key),
        &remote,
        BUSYBOX_NAME,
    ]);
    assert!(out.ends_with(&format!("{remote}: pushed\n")), "{out}");

    // A certificate from a CA the registry does not name: refused.
    let o = d.berth(&[
        "images",
        "pull",
        "--tlscacert",
        s(&reg.ca),
        "--tlscert",
        s(&reg.wrong_cert),
        "--tlskey",
        s(&reg.wrong_key),
        &remote,
    ]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));

    // hosts.toml `client` with two pairs, the unrelated one first: as Go's TLS client,
    // berth presents the pair issued by a CA the server names.
    let root = tempfile::tempdir().expect("tempdir");
    hosts_toml(
        root.path(),
        &reg.host(),
        &format!(
            "server = \"https://{}\"\nca = \"{}\"\nclient = [[\"{}\", \"{}\"], [\"{}\", \"{}\"]]\n",
            reg.host(),
            reg.ca.display(),
            reg.wrong_cert.display(),
            reg.wrong_key.display(),
            reg.client_cert.display(),
            reg.client_key.display()
        ),
    );
    d.berth_ok(&["images", "pull", "--hosts-dir", s(root.path()), &remote]);
    let ls = d.berth_ok(&["images", "ls"]);
    assert!(
        ls.lines()
            .any(|l| l.starts_with(&format!("{remote} ")) && l.contains(img.manifest_digest())),
        "{ls}"
    );
    // certs.d: ca.crt + a-wrong.cert/.key (listed first) + client.cert/client.key.
    let certs = tempfile::tempdir().expect("tempdir");
    let hd = certs.path().join(reg.host());
    fs::create_dir_all(&hd).expect("mkdir");
    fs::copy(&reg.ca, hd.join("ca.crt")).expect("copy");
    fs::copy(&reg.wrong_cert, hd.join("a-wrong.cert")).expect("copy");
    fs::copy(&reg.wrong_key, hd.join("a-wrong.key")).expect("copy");
    fs::copy(&reg.client_cert, hd.join("client.cert")).expect("copy");
    fs::copy(&reg.client_key, hd.join("client.key")).expect("copy");
    d.berth_ok(&["images", "rm", &remote]);
    d.berth_ok(&["images", "pull", "--hosts-dir", s(certs.path()), &remote]);
}

#[test]
fn user_without_password_prompts_on_a_terminal() {
    let img = TestImage::busybox().expect("test image");
    let reg = Registry::builder().auth().start().expect("auth registry");
    let reference = reg.push_image(&img, "hosts/private:1").expect("push");
    let (user, password) = reg.credentials().expect("credentials");
    let d = Daemon::berthd();

    // stdin is /dev/null: a clear error, no prompt.
    let o = d.berth(&["images", "pull", "--plain-http", "-u", user, &reference]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("stdin is not a terminal"),
        "{}",
        stderr(&o)
    );

    // On a terminal (util-linux `script` gives berth a pty): "Password: ", no echo.
    let script = integration::require_bin("script", "bsdutils");
    let cmd = d.berth_command();
    let mut line = vec![cmd.get_program().to_string_lossy().into_owned()];
    line.extend(cmd.get_args().map(|a| a.to_string_lossy().into_owned()));
    line.extend(["images", "pull", "--plain-http", "-u", user, &reference].map(str::to_string));
    let mut child = Command::new(script)
        .args(["-qec", &line.join(" "), "/dev/null"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn script");
    // Type the password once the prompt shows (echo is off by then).
    let mut stdout = child.stdout.take().expect("stdout");
    let shown = std::sync::Arc::new(std::sync::Mutex::new(Vec::<u8>::new()));
    let sink = shown.clone();
    let reader = std::thread::spawn(move || {
        use std::io::Read as _;
        let mut buf = [0u8; 256];
        while let Ok(n) = stdout.read(&mut buf) {
            if n == 0 {
                break;
            }
            sink.lock().expect("lock").extend_from_slice(&buf[..n]);
        }
    });
    let deadline = Instant::now() + Duration::from_secs(60);
    while !String::from_utf8_lossy(&shown.lock().expect("lock")).contains("Password: ") {
        assert!(
            Instant::now() < deadline,
            "no password prompt within 60 s: {:?}",
            String::from_utf8_lossy(&shown.lock().expect("lock"))
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    {
        use std::io::Write as _;
        let mut stdin = child.stdin.take().expect("stdin");
        writeln!(stdin, "{password}").expect("type password");
        std::thread::sleep(Duration::from_millis(300));
    }
    let o = child.wait_with_output().expect("script");
    reader.join().expect("reader");
    let out = String::from_utf8_lossy(&shown.lock().expect("lock")).into_owned();
    assert!(o.status.success(), "{out}\n{}", stderr(&o));
    assert!(out.starts_with("Password: "), "{out}");
    assert!(!out.contains(password), "password echoed:\n{out}");
    assert!(out.contains(&format!("{reference}: resolved")), "{out}");
}

#[test]
fn content_fetch_reads_hosts_dir() {
    // The reference names a registry nobody listens on; only its hosts.toml mirror has the
    // image, so the fetch works only if `content fetch` honours --hosts-dir.
    let img = TestImage::busybox().expect("test image");
    let mirror = Registry::http().expect("start registry");
    mirror.push_image(&img, "hosts/fetch:1").expect("push");
    let dead = format!("127.0.0.1:{}", dead_port());
    let reference = format!("{dead}/hosts/fetch:1");
    let root = tempfile::tempdir().expect("tempdir");
    hosts_toml(
        root.path(),
        &dead,
        &format!(
            "server = \"http://{dead}\"\n\n\
             [host.\"http://{m}\"]\n  capabilities = [\"pull\", \"resolve\"]\n",
            m = mirror.host()
        ),
    );

    let d = Daemon::berthd();
    let without = d.berth(&["content", "fetch", &reference]);
    assert_ne!(without.status.code(), Some(0), "fetched without the mirror");
    let out = d.berth_ok(&[
        "content",
        "fetch",
        "--hosts-dir",
        s(root.path()),
        &reference,
    ]);
    // The content is held only by the fetch's temporary lease (as with ctr), so the
    // proof is what the mirror served: manifest, config and layer, asked for with
    // containerd's ?ns=<registry>.
    let ns = format!("?ns={}", dead.replace(':', "%3A"));
    let log = mirror.log_tail(10_000);
    let served = |path: &str| {
        log.lines()
            .any(|l| l.contains(&format!("GET {path}{ns} ")) && l.contains("\" 200 "))
    };
    assert!(
        served("/v2/hosts/fetch/manifests/1"),
        "manifest not fetched via the mirror:\n{log}"
    );
    let blobs = log
        .lines()
        .filter(|l| {
            l.contains("GET /v2/hosts/fetch/blobs/") && l.contains(&ns) && l.contains("\" 200 ")
        })
        .count();
    assert!(
        blobs >= 2,
        "config and layer not fetched via the mirror ({blobs}):\n{log}\n{out}"
    );
    // Fetch stores content only; no image record.
    assert!(!d.berth_ok(&["images", "ls"]).contains("hosts/fetch"));
}
