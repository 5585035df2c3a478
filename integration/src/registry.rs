//! A local OCI registry: Debian's `docker-registry` (distribution 2.8) on a free 127.0.0.1
//! port, in plain HTTP, TLS (CA and server certificate generated at test time with `rcgen`)
//! and htpasswd basic-auth modes (auth can be combined with TLS or not).
//!
//! Images are pushed and pulled with `skopeo` ([`Registry::push_image`], [`Registry::pull`]),
//! which knows the registry protocol independently of our code, so pull tests compare
//! berth's behaviour against a reference client. Everything lives in one temp dir removed on
//! drop; the registry process is killed on drop (also on panic, with its log printed).

use std::fs;
use std::io::Write as _;
use std::net::{TcpListener, TcpStream};
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use crate::bins::require_bin;
use crate::image::TestImage;
use crate::subreaper;

/// Default basic-auth user of [`Builder::auth`].
pub const DEFAULT_USER: &str = "berth";
/// Default basic-auth password of [`Builder::auth`].
pub const DEFAULT_PASSWORD: &str = "berth-test-password";

/// Errors from starting a registry or moving images to and from it.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("setting up {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("generating test certificates: {0}")]
    Cert(#[from] rcgen::Error),
    #[error("spawning {bin}: {source}")]
    Spawn {
        bin: PathBuf,
        source: std::io::Error,
    },
    #[error("`{cmd}` failed ({status}): {stderr}")]
    Command {
        cmd: String,
        status: String,
        stderr: String,
    },
    #[error("docker-registry did not listen on {addr} within {secs}s (exited: {exited}); log {log}:\n{tail}")]
    NotReady {
        addr: String,
        secs: u64,
        exited: bool,
        log: PathBuf,
        tail: String,
    },
    #[error("writing the test image layout: {0}")]
    Image(#[from] crate::image::ImageError),
    #[error("parsing skopeo output: {0}")]
    Json(#[from] serde_json::Error),
    #[error("subreaper: {0}")]
    Subreaper(#[from] subreaper::SubreaperError),
}

/// How to start a registry.
#[derive(Debug, Default, Clone)]
pub struct Builder {
    tls: bool,
    auth: Option<(String, String)>,
}

impl Builder {
    /// Serve HTTPS with a server certificate for `127.0.0.1`/`localhost` signed by a fresh CA.
    #[must_use]
    pub fn tls(mut self) -> Self {
        self.tls = true;
        self
    }

    /// Require basic auth for `user`/`password` (bcrypt htpasswd file).
    #[must_use]
    pub fn auth_as(mut self, user: &str, password: &str) -> Self {
        self.auth = Some((user.to_string(), password.to_string()));
        self
    }

    /// Require basic auth for [`DEFAULT_USER`]/[`DEFAULT_PASSWORD`].
    #[must_use]
    pub fn auth(self) -> Self {
        self.auth_as(DEFAULT_USER, DEFAULT_PASSWORD)
    }

    /// Starts the registry and waits until it accepts connections.
    ///
    /// # Errors
    /// Setup failures, or the registry not listening within 20 s (with its log).
    ///
    /// # Panics
    /// When `docker-registry` (or `htpasswd` for auth) is missing, naming the package.
    pub fn start(self) -> Result<Registry, RegistryError> {
        let bin = require_bin("docker-registry", "docker-registry");
        subreaper::ensure()?;
        let dir = tempfile::Builder::new()
            .prefix("berth-registry-")
            .tempdir()
            .map_err(|source| RegistryError::Io {
                path: std::env::temp_dir(),
                source,
            })?;
        let tls = if self.tls {
            Some(TlsFiles::generate(dir.path())?)
        } else {
            None
        };
        let htpasswd = match &self.auth {
            Some((user, pass)) => Some(write_htpasswd(dir.path(), user, pass)?),
            None => None,
        };
        // A free port can be taken between probing and binding by a parallel test: retry.
        let config = dir.path().join("config.yml");
        let log = dir.path().join("registry.log");
        let mut last = None;
        for _ in 0..5 {
            let port = free_port(dir.path())?;
            write_config(&config, dir.path(), port, tls.as_ref(), htpasswd.as_deref())?;
            match spawn_and_wait(&bin, &config, &log, port) {
                Ok(child) => {
                    return Ok(Registry {
                        dir,
                        log,
                        port,
                        tls,
                        auth: self.auth,
                        child: Some(child),
                    })
                }
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| RegistryError::Command {
            cmd: "docker-registry".into(),
            status: "not started".into(),
            stderr: String::new(),
        }))
    }
}

/// CA and server certificate files for a TLS registry.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    /// CA certificate (PEM) clients must trust.
    pub ca_pem: PathBuf,
    /// Directory with `ca.crt` (the CA), the layout skopeo's `--cert-dir` and containerd's
    /// `hosts.toml` `ca` expect.
    pub cert_dir: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
}

impl TlsFiles {
    fn generate(dir: &Path) -> Result<Self, RegistryError> {
        use rcgen::{
            BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, KeyUsagePurpose, SanType,
        };
        let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "berth test CA");
        ca_params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let ca_key = KeyPair::generate()?;
        let ca_cert = ca_params.self_signed(&ca_key)?;
        let issuer = rcgen::Issuer::new(ca_params, ca_key);

        let mut srv = CertificateParams::new(vec!["localhost".to_string()])?;
        srv.subject_alt_names
            .push(SanType::IpAddress(std::net::IpAddr::V4(
                std::net::Ipv4Addr::LOCALHOST,
            )));
        srv.distinguished_name.push(DnType::CommonName, "127.0.0.1");
        let srv_key = KeyPair::generate()?;
        let srv_cert = srv.signed_by(&srv_key, &issuer)?;

        let files = Self {
            ca_pem: dir.join("ca.pem"),
            cert_dir: dir.join("certs.d"),
            server_cert: dir.join("server.crt"),
            server_key: dir.join("server.key"),
        };
        let write = |p: &Path, data: &str| {
            fs::write(p, data).map_err(|source| RegistryError::Io {
                path: p.to_path_buf(),
                source,
            })
        };
        fs::create_dir_all(&files.cert_dir).map_err(|source| RegistryError::Io {
            path: files.cert_dir.clone(),
            source,
        })?;
        write(&files.ca_pem, &ca_cert.pem())?;
        write(&files.cert_dir.join("ca.crt"), &ca_cert.pem())?;
        write(&files.server_cert, &srv_cert.pem())?;
        write(&files.server_key, &srv_key.serialize_pem())?;
        Ok(files)
    }
}

fn write_htpasswd(dir: &Path, user: &str, pass: &str) -> Result<PathBuf, RegistryError> {
    let htpasswd = require_bin("htpasswd", "apache2-utils");
    let out = Command::new(&htpasswd)
        .args(["-Bbn", user, pass])
        .output()
        .map_err(|source| RegistryError::Spawn {
            bin: htpasswd,
            source,
        })?;
    if !out.status.success() {
        return Err(RegistryError::Command {
            cmd: format!("htpasswd -Bbn {user} ***"),
            status: out.status.to_string(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        });
    }
    let path = dir.join("htpasswd");
    fs::write(&path, &out.stdout).map_err(|source| RegistryError::Io {
        path: path.clone(),
        source,
    })?;
    Ok(path)
}

fn write_config(
    config: &Path,
    dir: &Path,
    port: u16,
    tls: Option<&TlsFiles>,
    htpasswd: Option<&Path>,
) -> Result<(), RegistryError> {
    use std::fmt::Write as _;
    let mut y = format!(
        "version: 0.1\n\
         log:\n  level: info\n\
         storage:\n  filesystem:\n    rootdirectory: {data}\n  delete:\n    enabled: true\n\
         \x20 maintenance:\n    uploadpurging:\n      enabled: false\n\
         http:\n  addr: 127.0.0.1:{port}\n  secret: berth-test-secret-{port}\n",
        data = dir.join("data").display(),
    );
    if let Some(t) = tls {
        let _ = write!(
            y,
            "  tls:\n    certificate: {}\n    key: {}\n",
            t.server_cert.display(),
            t.server_key.display()
        );
    }
    if let Some(h) = htpasswd {
        let _ = write!(
            y,
            "auth:\n  htpasswd:\n    realm: berth-test\n    path: {}\n",
            h.display()
        );
    }
    fs::write(config, y).map_err(|source| RegistryError::Io {
        path: config.to_path_buf(),
        source,
    })
}

/// Starts `docker-registry serve <config>` and waits until it accepts TCP connections; the
/// child is killed if it does not.
fn spawn_and_wait(
    bin: &Path,
    config: &Path,
    log_path: &Path,
    port: u16,
) -> Result<Child, RegistryError> {
    let io_err = |source| RegistryError::Io {
        path: log_path.to_path_buf(),
        source,
    };
    let log = fs::File::create(log_path).map_err(io_err)?;
    let log2 = log.try_clone().map_err(io_err)?;
    let mut child = subreaper::spawn_registered(
        Command::new(bin)
            .arg("serve")
            .arg(config)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log2)
            .process_group(0),
    )
    .map_err(|source| RegistryError::Spawn {
        bin: bin.to_path_buf(),
        source,
    })?;
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let exited = matches!(child.try_wait(), Ok(Some(_)));
        if !exited && TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return Ok(child);
        }
        if exited || Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            subreaper::unregister(child.id());
            return Err(RegistryError::NotReady {
                addr: format!("127.0.0.1:{port}"),
                secs: 20,
                exited,
                log: log_path.to_path_buf(),
                tail: tail(log_path, 30),
            });
        }
        thread::sleep(Duration::from_millis(25));
    }
}

fn tail(path: &Path, lines: usize) -> String {
    let text = fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

fn free_port(dir: &Path) -> Result<u16, RegistryError> {
    let l = TcpListener::bind("127.0.0.1:0").map_err(|source| RegistryError::Io {
        path: dir.to_path_buf(),
        source,
    })?;
    l.local_addr()
        .map(|a| a.port())
        .map_err(|source| RegistryError::Io {
            path: dir.to_path_buf(),
            source,
        })
}

/// A running registry; killed and deleted on drop.
#[derive(Debug)]
pub struct Registry {
    dir: tempfile::TempDir,
    log: PathBuf,
    port: u16,
    tls: Option<TlsFiles>,
    auth: Option<(String, String)>,
    child: Option<Child>,
}

impl Registry {
    /// Builder (plain HTTP, no auth unless configured).
    #[must_use]
    pub fn builder() -> Builder {
        Builder::default()
    }

    /// Plain HTTP, no auth.
    ///
    /// # Errors
    /// See [`Builder::start`].
    pub fn http() -> Result<Self, RegistryError> {
        Builder::default().start()
    }

    /// HTTPS with a test CA, no auth.
    ///
    /// # Errors
    /// See [`Builder::start`].
    pub fn https() -> Result<Self, RegistryError> {
        Builder::default().tls().start()
    }

    /// HTTPS with a test CA and basic auth ([`DEFAULT_USER`]/[`DEFAULT_PASSWORD`]).
    ///
    /// # Errors
    /// See [`Builder::start`].
    pub fn https_with_auth() -> Result<Self, RegistryError> {
        Builder::default().tls().auth().start()
    }

    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
            subreaper::unregister(c.id());
        }
    }

    /// `127.0.0.1:<port>`: the registry host as used in image references.
    #[must_use]
    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// The port it listens on.
    #[must_use]
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `http://…` or `https://…` base URL.
    #[must_use]
    pub fn url(&self) -> String {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        format!("{scheme}://{}", self.host())
    }

    /// TLS material (CA to trust) when serving HTTPS.
    #[must_use]
    pub fn tls(&self) -> Option<&TlsFiles> {
        self.tls.as_ref()
    }

    /// Path of the CA certificate PEM, when serving HTTPS.
    #[must_use]
    pub fn ca_pem(&self) -> Option<&Path> {
        self.tls.as_ref().map(|t| t.ca_pem.as_path())
    }

    /// Basic-auth credentials, when required.
    #[must_use]
    pub fn credentials(&self) -> Option<(&str, &str)> {
        self.auth.as_ref().map(|(u, p)| (u.as_str(), p.as_str()))
    }

    /// The registry's storage directory (blobs and repositories as the registry writes them).
    #[must_use]
    pub fn storage_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// `127.0.0.1:<port>/<repo_tag>`, e.g. `reference("library/busybox:test")`.
    #[must_use]
    pub fn reference(&self, repo_tag: &str) -> String {
        format!("{}/{repo_tag}", self.host())
    }

    /// Last `lines` lines of the registry's log (it logs every request).
    #[must_use]
    pub fn log_tail(&self, lines: usize) -> String {
        tail(&self.log, lines)
    }

    /// skopeo transport flags for this registry (`prefix` is `src` or `dest`), with the
    /// given credentials (`None`: send none).
    fn skopeo_flags(&self, prefix: &str, creds: Option<(&str, &str)>) -> Vec<String> {
        let mut v = Vec::new();
        match &self.tls {
            None => v.push(format!("--{prefix}-tls-verify=false")),
            Some(t) => {
                v.push(format!("--{prefix}-tls-verify=true"));
                v.push(format!("--{prefix}-cert-dir={}", t.cert_dir.display()));
            }
        }
        match creds {
            Some((u, p)) => v.push(format!("--{prefix}-creds={u}:{p}")),
            None => v.push(format!("--{prefix}-no-creds")),
        }
        v
    }

    fn skopeo(args: &[String]) -> Result<Output, RegistryError> {
        let skopeo = require_bin("skopeo", "skopeo");
        // --insecure-policy: no dependency on /etc/containers/policy.json.
        Command::new(&skopeo)
            .arg("--insecure-policy")
            .args(args)
            .stdin(Stdio::null())
            .output()
            .map_err(|source| RegistryError::Spawn {
                bin: skopeo,
                source,
            })
    }

    fn skopeo_ok(&self, args: &[String]) -> Result<Output, RegistryError> {
        let o = Self::skopeo(args)?;
        if o.status.success() {
            Ok(o)
        } else {
            Err(RegistryError::Command {
                cmd: format!("skopeo {}", redact(args).join(" ")),
                status: o.status.to_string(),
                stderr: format!(
                    "{}\nregistry log tail:\n{}",
                    String::from_utf8_lossy(&o.stderr).trim(),
                    self.log_tail(15)
                ),
            })
        }
    }

    /// Pushes an OCI layout (`layout_dir`, tag `layout_tag`) as `repo_tag` with the
    /// registry's credentials. Returns the full reference.
    ///
    /// # Errors
    /// skopeo failures, with its stderr and the registry's log tail.
    pub fn push_layout(
        &self,
        layout_dir: &Path,
        layout_tag: &str,
        repo_tag: &str,
    ) -> Result<String, RegistryError> {
        self.push_layout_as(layout_dir, layout_tag, repo_tag, self.credentials())
    }

    /// Like [`Registry::push_layout`] with explicit credentials (`None`: anonymous), to test
    /// auth failures.
    ///
    /// # Errors
    /// skopeo failures, with its stderr and the registry's log tail.
    pub fn push_layout_as(
        &self,
        layout_dir: &Path,
        layout_tag: &str,
        repo_tag: &str,
        creds: Option<(&str, &str)>,
    ) -> Result<String, RegistryError> {
        let reference = self.reference(repo_tag);
        let mut args = vec!["copy".to_string()];
        args.extend(self.skopeo_flags("dest", creds));
        args.push(format!("oci:{}:{layout_tag}", layout_dir.display()));
        args.push(format!("docker://{reference}"));
        self.skopeo_ok(&args)?;
        Ok(reference)
    }

    /// Pushes a test image as `repo_tag` (e.g. `library/busybox:test`). Returns the reference.
    ///
    /// # Errors
    /// Writing the layout or skopeo failures.
    pub fn push_image(&self, img: &TestImage, repo_tag: &str) -> Result<String, RegistryError> {
        self.push_image_as(img, repo_tag, self.credentials())
    }

    /// Like [`Registry::push_image`] with explicit credentials (`None`: anonymous).
    ///
    /// # Errors
    /// Writing the layout or skopeo failures.
    pub fn push_image_as(
        &self,
        img: &TestImage,
        repo_tag: &str,
        creds: Option<(&str, &str)>,
    ) -> Result<String, RegistryError> {
        let tmp = tempfile::tempdir().map_err(|source| RegistryError::Io {
            path: std::env::temp_dir(),
            source,
        })?;
        img.write_oci_layout(tmp.path())?;
        self.push_layout_as(tmp.path(), img.tag(), repo_tag, creds)
    }

    /// Pulls `repo_tag` into an OCI layout at `dest` (tag `tag`), with the registry's
    /// credentials; the reference client for checking what a registry serves.
    ///
    /// # Errors
    /// skopeo failures.
    pub fn pull(&self, repo_tag: &str, dest: &Path, tag: &str) -> Result<(), RegistryError> {
        let mut args = vec!["copy".to_string()];
        args.extend(self.skopeo_flags("src", self.credentials()));
        args.push(format!("docker://{}", self.reference(repo_tag)));
        args.push(format!("oci:{}:{tag}", dest.display()));
        self.skopeo_ok(&args).map(|_| ())
    }

    /// `skopeo inspect` of `repo_tag` (manifest digest in `Digest`, `Layers`, …).
    ///
    /// # Errors
    /// skopeo failures or unparsable output.
    pub fn inspect(&self, repo_tag: &str) -> Result<serde_json::Value, RegistryError> {
        let mut args = vec!["inspect".to_string()];
        let creds = self.credentials();
        match &self.tls {
            None => args.push("--tls-verify=false".into()),
            Some(t) => args.push(format!("--cert-dir={}", t.cert_dir.display())),
        }
        match creds {
            Some((u, p)) => args.push(format!("--creds={u}:{p}")),
            None => args.push("--no-creds".into()),
        }
        args.push(format!("docker://{}", self.reference(repo_tag)));
        let o = self.skopeo_ok(&args)?;
        Ok(serde_json::from_slice(&o.stdout)?)
    }
}

fn redact(args: &[String]) -> Vec<String> {
    args.iter()
        .map(|a| match a.split_once("-creds=") {
            Some((k, v)) => format!("{k}-creds={}:***", v.split(':').next().unwrap_or("")),
            None => a.clone(),
        })
        .collect()
}

impl Drop for Registry {
    fn drop(&mut self) {
        if thread::panicking() {
            let _ = writeln!(
                std::io::stderr(),
                "--- docker-registry log tail ({}) ---\n{}\n--- end ---",
                self.log.display(),
                self.log_tail(40)
            );
        }
        self.kill();
    }
}
