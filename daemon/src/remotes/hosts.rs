//! Registry hosts: which endpoints serve a registry name, in which order, with which
//! capabilities, TLS settings, headers and credentials — containerd's
//! `remotes/docker/config.ConfigureHosts` with `HostDirFromRoot` (ctr's `--hosts-dir`).
//!
//! For a registry `host[:port]`, the first existing directory of `<dir>/<host>_<port>_`,
//! `<dir>/<host:port>` and `<dir>/_default` is read: its `hosts.toml`, or else Docker's
//! certs.d files (`*.crt` CAs, `*.cert` client certificates with their `*.key`). A
//! hosts.toml lists `[host."<url>"]` mirrors in file order, then the root `server` (the
//! registry itself when absent); each may set `capabilities`, `ca`, `client`,
//! `skip_verify`, `header` and `override_path`. The resolver tries the hosts in order.
//!
//! Divergences from containerd 1.6: a hosts.toml that does not parse is an error naming
//! the file and line, where containerd logs it and silently falls back to certs.d files;
//! the filled-in default host of a local registry (`localhost`, `127.0.0.1`, `::1`) is
//! HTTPS when any TLS setting applies to it (a flag, `ca`/`client`/`skip_verify`, certs.d
//! files), plain HTTP otherwise, where 1.6 always speaks plain HTTP to it (2.x tries
//! HTTPS first). `dial_timeout` is containerd 2.x's key.
//!
//! This module knows nothing of HTTP; `docker.rs` uses what it returns.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Deserialize;
use toml::Spanned;

use super::auth::Credentials;
use super::tls::{self, TlsError, TlsOptions};
use crate::config::parse_go_duration;

/// A host configuration that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum HostsError {
    #[error(transparent)]
    Tls(#[from] TlsError),
    /// A hosts directory or file could not be read.
    #[error("read {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// hosts.toml is not valid TOML of the expected shape.
    #[error("{path}:{line}:{column}: invalid hosts.toml: {message}")]
    Parse {
        path: PathBuf,
        line: usize,
        column: usize,
        message: String,
    },
    /// A value in hosts.toml is not one containerd accepts.
    #[error("{path}:{line}: {message}")]
    Invalid {
        path: PathBuf,
        line: usize,
        message: String,
    },
}

/// What a host may be used for (containerd `HostCapabilities`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Capabilities {
    /// Fetch manifests and blobs by digest.
    pub pull: bool,
    /// Resolve a tag to a digest.
    pub resolve: bool,
    /// Push content and tags.
    pub push: bool,
}

impl Capabilities {
    /// Pull, resolve and push: the default when none are listed.
    pub const ALL: Capabilities = Capabilities {
        pull: true,
        resolve: true,
        push: true,
    };
    const NONE: Capabilities = Capabilities {
        pull: false,
        resolve: false,
        push: false,
    };
}

/// One endpoint serving a registry (a mirror or the server itself).
#[derive(Debug, Clone)]
pub struct RegistryHost {
    /// `host[:port]` to connect to.
    pub host: String,
    /// `http` or `https`.
    pub scheme: String,
    /// The API root path, normally `/v2` (empty with `override_path` and no path).
    pub path: String,
    pub capabilities: Capabilities,
    /// The TLS client configuration for `https`.
    pub tls: Arc<rustls::ClientConfig>,
    /// Extra headers sent with every request (one entry per value).
    pub headers: Vec<(String, String)>,
    /// Credentials answering this host's auth challenges.
    pub credentials: Option<Credentials>,
    /// TCP connect timeout (hosts.toml `dial_timeout`; 30 s, containerd's dialer
    /// default, when unset).
    pub dial_timeout: Option<std::time::Duration>,
}

impl RegistryHost {
    /// `scheme://host/path`, the base every API path is appended to.
    pub fn base_url(&self) -> String {
        format!("{}://{}{}", self.scheme, self.host, self.path)
    }

    /// Whether this host serves `registry` as a mirror (containerd `isProxy`): requests
    /// then carry `?ns=<registry>`.
    pub fn is_proxy_for(&self, registry: &str) -> bool {
        registry != self.host && !(registry == "docker.io" && self.host == "registry-1.docker.io")
    }
}

/// Gives the hosts for a registry name, in the order to try them (mirrors, then server).
pub trait RegistryHosts: Send + Sync {
    fn hosts(&self, registry: &str) -> Result<Vec<RegistryHost>, HostsError>;
}

/// The options ctr's flags set (containerd `config.HostOptions`).
#[derive(Debug, Clone, Default)]
pub struct HostOptions {
    /// `--plain-http`: the default scheme is HTTP.
    pub plain_http: bool,
    /// `--user` (or `--refresh`): credentials for every host.
    pub credentials: Option<Credentials>,
    /// `--tlscacert`, `--tlscert`/`--tlskey`, `--skip-verify`: every host's base TLS.
    pub tls: TlsOptions,
    /// `--hosts-dir`: where `<host>/hosts.toml` and certs.d files live.
    pub hosts_dir: Option<PathBuf>,
}

/// Whether `host` (with optional port) is the local machine.
pub fn is_localhost(host: &str) -> bool {
    let h = if host.starts_with('[') {
        host.split_once(']')
            .map_or(host, |(h, _)| h)
            .trim_start_matches('[')
    } else {
        host.rsplit_once(':').map_or(host, |(h, _)| h)
    };
    h == "localhost" || h == "127.0.0.1" || h == "::1"
}

/// One host as configured, before TLS is loaded (containerd's `hostConfig`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostConfig {
    /// Empty for "the registry itself" (filled in from the registry name).
    pub scheme: String,
    pub host: String,
    pub path: String,
    pub capabilities: Capabilities,
    pub ca_files: Vec<PathBuf>,
    pub client_pairs: Vec<(PathBuf, Option<PathBuf>)>,
    pub skip_verify: Option<bool>,
    pub headers: Vec<(String, String)>,
    pub dial_timeout: Option<std::time::Duration>,
}

impl Default for HostConfig {
    fn default() -> Self {
        HostConfig {
            scheme: String::new(),
            host: String::new(),
            path: String::new(),
            capabilities: Capabilities::ALL,
            ca_files: Vec::new(),
            client_pairs: Vec::new(),
            skip_verify: None,
            headers: Vec::new(),
            dial_timeout: None,
        }
    }
}

impl HostConfig {
    fn has_tls_settings(&self) -> bool {
        !self.ca_files.is_empty() || !self.client_pairs.is_empty() || self.skip_verify.is_some()
    }
}

/// Hosts from ctr's flags and, with `hosts_dir`, the registry's host directory.
#[derive(Debug, Clone)]
pub struct ConfigHosts {
    pub options: HostOptions,
}

/// Candidate directories for `host` under `root`, in lookup order (containerd
/// `hostPaths`: `host_port_` first when the name has a port, then `host:port`, then
/// `_default`).
pub fn host_paths(root: &Path, host: &str) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Some(i) = host.rfind(':').filter(|&i| i > 0) {
        out.push(root.join(format!("{}_{}_", &host[..i], &host[i + 1..])));
    }
    out.push(root.join(host));
    out.push(root.join("_default"));
    out
}

/// The first existing host directory for `host` under `root`.
fn host_dir(root: &Path, host: &str) -> Result<Option<PathBuf>, HostsError> {
    for p in host_paths(root, host) {
        match std::fs::metadata(&p) {
            Ok(_) => return Ok(Some(p)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(source) => return Err(HostsError::Read { path: p, source }),
        }
    }
    Ok(None)
}

/// The hosts of one host directory: its hosts.toml, or its certs.d files.
pub fn load_host_dir(dir: &Path) -> Result<Vec<HostConfig>, HostsError> {
    let file = dir.join("hosts.toml");
    let text = match std::fs::read_to_string(&file) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(source) => return Err(HostsError::Read { path: file, source }),
    };
    if text.is_empty() {
        return load_cert_files(dir);
    }
    parse_hosts_file(&file, dir, &text)
}

/// Docker's certs.d layout: `*.crt` are CAs, `*.cert` client certificates with the
/// same-named `*.key` (or the key inside the `.cert`). One host: the registry itself.
pub fn load_cert_files(dir: &Path) -> Result<Vec<HostConfig>, HostsError> {
    let read_err = |source| HostsError::Read {
        path: dir.to_path_buf(),
        source,
    };
    let mut names: Vec<(String, bool)> = Vec::new();
    match std::fs::read_dir(dir) {
        Ok(entries) => {
            for e in entries {
                let e = e.map_err(read_err)?;
                let is_dir = e.file_type().map_err(read_err)?.is_dir();
                names.push((e.file_name().to_string_lossy().into_owned(), is_dir));
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(read_err(e)),
    }
    names.sort();
    let mut host = HostConfig::default();
    for (name, is_dir) in names {
        if is_dir {
            continue;
        }
        if name.ends_with(".crt") {
            host.ca_files.push(dir.join(&name));
        }
        if let Some(stem) = name.strip_suffix(".cert") {
            let key = dir.join(format!("{stem}.key"));
            let key = match std::fs::metadata(&key) {
                Ok(_) => Some(key),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
                Err(source) => return Err(HostsError::Read { path: key, source }),
            };
            host.client_pairs.push((dir.join(&name), key));
        }
    }
    Ok(vec![host])
}

/// hosts.toml's keys (containerd's `hostFileConfig`), with positions for messages.
/// Unknown keys are ignored, as containerd's decoder ignores them.
#[derive(Debug, Deserialize, Default)]
struct HostFileConfig {
    capabilities: Option<Spanned<toml::Value>>,
    ca: Option<Spanned<toml::Value>>,
    client: Option<Spanned<toml::Value>>,
    skip_verify: Option<bool>,
    header: Option<Spanned<toml::Value>>,
    #[serde(default)]
    override_path: bool,
    /// containerd 2.x's per-host connect timeout (a Go duration, e.g. "5s").
    dial_timeout: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
struct HostsFile {
    server: Option<Spanned<String>>,
    capabilities: Option<Spanned<toml::Value>>,
    ca: Option<Spanned<toml::Value>>,
    client: Option<Spanned<toml::Value>>,
    skip_verify: Option<bool>,
    header: Option<Spanned<toml::Value>>,
    #[serde(default)]
    override_path: bool,
    dial_timeout: Option<Spanned<String>>,
    host: Option<HashMap<String, Spanned<HostFileConfig>>>,
}

/// 1-based line and column of byte `offset` in `text`.
fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
    (line, column)
}

/// Parses hosts.toml `text` (read from `file` in `dir`): the `[host."…"]` entries in
/// file order, then the root server (empty host when `server` is absent).
pub fn parse_hosts_file(
    file: &Path,
    dir: &Path,
    text: &str,
) -> Result<Vec<HostConfig>, HostsError> {
    let parsed: HostsFile = toml::from_str(text).map_err(|e| {
        let (line, column) = e.span().map_or((0, 0), |s| line_col(text, s.start));
        HostsError::Parse {
            path: file.to_path_buf(),
            line,
            column,
            message: e.message().to_string(),
        }
    })?;
    let ctx = ParseCtx { file, dir, text };
    let mut entries: Vec<(usize, String, HostFileConfig)> = parsed
        .host
        .unwrap_or_default()
        .into_iter()
        .map(|(url, cfg)| {
            let start = cfg.span().start;
            (start, url, cfg.into_inner())
        })
        .collect();
    entries.sort_by_key(|(start, _, _)| *start);
    let mut hosts = Vec::with_capacity(entries.len() + 1);
    for (start, url, cfg) in entries {
        hosts.push(ctx.host_config(Some((&url, start)), &cfg)?);
    }
    let root = HostFileConfig {
        capabilities: parsed.capabilities,
        ca: parsed.ca,
        client: parsed.client,
        skip_verify: parsed.skip_verify,
        header: parsed.header,
        override_path: parsed.override_path,
        dial_timeout: parsed.dial_timeout,
    };
    let server = parsed.server.map(|s| {
        let start = s.span().start;
        (s.into_inner(), start)
    });
    hosts.push(ctx.host_config(server.as_ref().map(|(s, p)| (s.as_str(), *p)), &root)?);
    Ok(hosts)
}

struct ParseCtx<'a> {
    file: &'a Path,
    dir: &'a Path,
    text: &'a str,
}

impl ParseCtx<'_> {
    fn invalid(&self, offset: usize, message: String) -> HostsError {
        HostsError::Invalid {
            path: self.file.to_path_buf(),
            line: line_col(self.text, offset).0,
            message,
        }
    }

    fn abs(&self, p: &str) -> PathBuf {
        let p = Path::new(p);
        if p.is_absolute() {
            p.to_path_buf()
        } else {
            self.dir.join(p)
        }
    }

    /// A list of strings from a string or an array of strings.
    fn strings(&self, key: &str, v: &Spanned<toml::Value>) -> Result<Vec<String>, HostsError> {
        let at = v.span().start;
        match v.get_ref() {
            toml::Value::String(s) => Ok(vec![s.clone()]),
            toml::Value::Array(items) => items
                .iter()
                .map(|i| match i {
                    toml::Value::String(s) => Ok(s.clone()),
                    other => {
                        Err(self.invalid(at, format!("{key}: unable to cast {other} to string")))
                    }
                })
                .collect(),
            other => {
                Err(self.invalid(at, format!("invalid type {} for {key:?}", other.type_str())))
            }
        }
    }

    /// containerd `parseHostConfig`.
    fn host_config(
        &self,
        server: Option<(&str, usize)>,
        cfg: &HostFileConfig,
    ) -> Result<HostConfig, HostsError> {
        let mut out = HostConfig::default();
        if let Some((server, at)) = server.filter(|(s, _)| !s.is_empty()) {
            let (scheme, host, path) = split_server_url(server)
                .ok_or_else(|| self.invalid(at, format!("unable to parse server {server:?}")))?;
            out.scheme = scheme;
            out.host = host;
            out.path = if !path.is_empty() {
                let clean = clean_path(&path);
                if !clean.ends_with("/v2") && !cfg.override_path {
                    format!("{}/v2", clean.trim_end_matches('/'))
                } else {
                    clean
                }
            } else if !cfg.override_path {
                "/v2".to_string()
            } else {
                String::new()
            };
        }
        out.skip_verify = cfg.skip_verify;
        if let Some(t) = &cfg.dial_timeout {
            out.dial_timeout = Some(parse_go_duration(t.get_ref()).ok_or_else(|| {
                self.invalid(
                    t.span().start,
                    format!(
                        "invalid dial_timeout {:?}: want a duration like \"5s\"",
                        t.get_ref()
                    ),
                )
            })?);
        }
        if let Some(caps) = &cfg.capabilities {
            let list = self.strings("capabilities", caps)?;
            if !list.is_empty() {
                out.capabilities = Capabilities::NONE;
                for c in list {
                    match c.to_ascii_lowercase().as_str() {
                        "pull" => out.capabilities.pull = true,
                        "resolve" => out.capabilities.resolve = true,
                        "push" => out.capabilities.push = true,
                        _ => {
                            return Err(self.invalid(
                                caps.span().start,
                                format!("unknown capability {c:?} (want pull, resolve, push)"),
                            ))
                        }
                    }
                }
            }
        }
        if let Some(ca) = &cfg.ca {
            out.ca_files = self
                .strings("ca", ca)?
                .iter()
                .map(|p| self.abs(p))
                .collect();
        }
        if let Some(client) = &cfg.client {
            out.client_pairs = self.client_pairs(client)?;
        }
        if let Some(header) = &cfg.header {
            let toml::Value::Table(table) = header.get_ref() else {
                return Err(self.invalid(header.span().start, "header must be a table".into()));
            };
            let mut keys: Vec<&String> = table.keys().collect();
            keys.sort();
            for key in keys {
                let v = Spanned::new(header.span(), table[key].clone());
                for value in self.strings(&format!("header {key}"), &v)? {
                    out.headers.push((key.clone(), value));
                }
            }
        }
        Ok(out)
    }

    /// `client`: a file (cert and key), a list of such files, or a list of
    /// `[cert, key]` pairs.
    fn client_pairs(
        &self,
        client: &Spanned<toml::Value>,
    ) -> Result<Vec<(PathBuf, Option<PathBuf>)>, HostsError> {
        let at = client.span().start;
        match client.get_ref() {
            toml::Value::String(s) => Ok(vec![(self.abs(s), None)]),
            toml::Value::Array(items) => {
                let mut out = Vec::new();
                for item in items {
                    match item {
                        toml::Value::String(s) => out.push((self.abs(s), None)),
                        toml::Value::Array(pair) => match pair.as_slice() {
                            [toml::Value::String(c), toml::Value::String(k)] => {
                                out.push((self.abs(c), Some(self.abs(k))));
                            }
                            _ => {
                                return Err(self.invalid(
                                    at,
                                    format!("invalid pair {item} for \"client\": want [cert, key]"),
                                ))
                            }
                        },
                        other => {
                            return Err(self.invalid(
                                at,
                                format!("invalid type {} for \"client\"", other.type_str()),
                            ))
                        }
                    }
                }
                Ok(out)
            }
            other => Err(self.invalid(
                at,
                format!("invalid type {} for \"client\"", other.type_str()),
            )),
        }
    }
}

/// `scheme://host[:port][/path]` (a missing scheme is `https`, as containerd does for
/// values not starting with "http").
fn split_server_url(server: &str) -> Option<(String, String, String)> {
    let with_scheme = if server.starts_with("http") {
        server.to_string()
    } else {
        format!("https://{server}")
    };
    let (scheme, rest) = with_scheme.split_once("://")?;
    if scheme != "http" && scheme != "https" {
        return None;
    }
    let (host, path) = match rest.find(['/', '?', '#']) {
        Some(i) => (&rest[..i], rest[i..].split(['?', '#']).next().unwrap_or("")),
        None => (rest, ""),
    };
    if host.is_empty() || host.ends_with(':') || host.contains(char::is_whitespace) {
        return None;
    }
    Some((scheme.to_string(), host.to_string(), path.to_string()))
}

/// Go's `path.Clean` for absolute URL paths: no empty, `.` or `..` segments.
fn clean_path(path: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for seg in path.split('/') {
        match seg {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            s => parts.push(s),
        }
    }
    format!("/{}", parts.join("/"))
}

impl ConfigHosts {
    /// The configured hosts for `registry`, before TLS is loaded (for tests and tools).
    pub fn host_configs(&self, registry: &str) -> Result<Vec<HostConfig>, HostsError> {
        let opts = &self.options;
        let mut hosts = match &opts.hosts_dir {
            Some(root) => match host_dir(root, registry)? {
                Some(dir) => {
                    log::debug!("loading host directory {}", dir.display());
                    load_host_dir(&dir)?
                }
                None => vec![HostConfig::default()],
            },
            None => vec![HostConfig::default()],
        };
        if let Some(last) = hosts.last_mut().filter(|h| h.host.is_empty()) {
            if registry == "docker.io" {
                last.scheme = "https".into();
                last.host = "registry-1.docker.io".into();
            } else {
                last.host = registry.to_string();
                // A local registry is plain HTTP unless a TLS setting applies to it.
                let tls_set = opts.tls.is_set() || last.has_tls_settings();
                let plain = opts.plain_http || (is_localhost(registry) && !tls_set);
                last.scheme = if plain { "http" } else { "https" }.into();
            }
            last.path = "/v2".into();
            last.capabilities = Capabilities::ALL;
        }
        Ok(hosts)
    }
}

impl RegistryHosts for ConfigHosts {
    fn hosts(&self, registry: &str) -> Result<Vec<RegistryHost>, HostsError> {
        let opts = &self.options;
        let base_tls = tls::client_config(&opts.tls)?;
        self.host_configs(registry)?
            .into_iter()
            .map(|h| {
                let tls = if h.has_tls_settings() {
                    let mut t = opts.tls.clone();
                    if let Some(skip) = h.skip_verify {
                        t.skip_verify = skip;
                    }
                    t.ca_files.extend(h.ca_files.iter().cloned());
                    t.client_pairs.extend(h.client_pairs.iter().cloned());
                    tls::client_config(&t)?
                } else {
                    base_tls.clone()
                };
                Ok(RegistryHost {
                    host: h.host,
                    scheme: h.scheme,
                    path: h.path,
                    capabilities: h.capabilities,
                    tls,
                    headers: h.headers,
                    credentials: opts.credentials.clone(),
                    dial_timeout: h.dial_timeout,
                })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Vec<HostConfig>, HostsError> {
        parse_hosts_file(Path::new("/etc/h/hosts.toml"), Path::new("/etc/h"), text)
    }

    #[test]
    fn hosts_keep_file_order_then_server() {
        let hosts = parse(
            r#"
server = "https://registry.example.com"

[host."http://zz-mirror:5000"]
  capabilities = ["pull", "resolve"]

[host."https://aa-mirror/sub"]
  capabilities = ["pull"]
  ca = "mirror-ca.pem"
  skip_verify = true
  header = { x-custom = "1", x-multi = ["a", "b"] }
"#,
        )
        .unwrap();
        let names: Vec<(&str, &str, &str)> = hosts
            .iter()
            .map(|h| (h.scheme.as_str(), h.host.as_str(), h.path.as_str()))
            .collect();
        assert_eq!(
            names,
            [
                ("http", "zz-mirror:5000", "/v2"),
                ("https", "aa-mirror", "/sub/v2"),
                ("https", "registry.example.com", "/v2"),
            ]
        );
        assert_eq!(
            hosts[0].capabilities,
            Capabilities {
                pull: true,
                resolve: true,
                push: false
            }
        );
        assert!(!hosts[1].capabilities.resolve && hosts[1].capabilities.pull);
        assert_eq!(hosts[1].ca_files, [PathBuf::from("/etc/h/mirror-ca.pem")]);
        assert_eq!(hosts[1].skip_verify, Some(true));
        assert_eq!(
            hosts[1].headers,
            [
                ("x-custom".to_string(), "1".to_string()),
                ("x-multi".to_string(), "a".to_string()),
                ("x-multi".to_string(), "b".to_string()),
            ]
        );
        assert_eq!(hosts[2].capabilities, Capabilities::ALL);
    }

    #[test]
    fn ca_client_and_override_path_forms() {
        let hosts = parse(
            r#"
ca = ["/abs/a.pem", "rel/b.pem"]
client = [["c.cert", "c.key"], "both.pem"]

[host."mirror.example/custom/api"]
  override_path = true
  client = "/x/both.pem"
"#,
        )
        .unwrap();
        assert_eq!(hosts[0].scheme, "https");
        assert_eq!(hosts[0].path, "/custom/api");
        assert_eq!(
            hosts[0].client_pairs,
            [(PathBuf::from("/x/both.pem"), None)]
        );
        let root = &hosts[1];
        assert!(root.host.is_empty(), "no server: the registry itself");
        assert_eq!(
            root.ca_files,
            [
                PathBuf::from("/abs/a.pem"),
                PathBuf::from("/etc/h/rel/b.pem")
            ]
        );
        assert_eq!(
            root.client_pairs,
            [
                (
                    PathBuf::from("/etc/h/c.cert"),
                    Some(PathBuf::from("/etc/h/c.key"))
                ),
                (PathBuf::from("/etc/h/both.pem"), None),
            ]
        );
    }

    #[test]
    fn dial_timeout_takes_go_durations() {
        let hosts =
            parse("dial_timeout = \"1m30s\"\n[host.\"https://m\"]\n  dial_timeout = \"250ms\"\n")
                .unwrap();
        assert_eq!(
            hosts[0].dial_timeout,
            Some(std::time::Duration::from_millis(250))
        );
        assert_eq!(
            hosts[1].dial_timeout,
            Some(std::time::Duration::from_secs(90))
        );
        let err = parse("[host.\"https://m\"]\n  dial_timeout = \"soon\"\n").unwrap_err();
        assert!(
            err.to_string()
                .contains("hosts.toml:2: invalid dial_timeout"),
            "{err}"
        );
        assert_eq!(
            parse_go_duration("1.5s"),
            Some(std::time::Duration::from_millis(1500))
        );
        assert_eq!(parse_go_duration("5"), None);
    }

    #[test]
    fn malformed_files_name_file_and_line() {
        let err = parse("server = \"https://r\"\n\n[host.\"https://m\"\n").unwrap_err();
        let msg = err.to_string();
        assert!(msg.starts_with("/etc/h/hosts.toml:3:"), "{msg}");
        let err = parse(
            "server = \"https://r\"\n[host.\"https://m\"]\n  capabilities = [\"pull\", \"fly\"]\n",
        )
        .unwrap_err();
        let msg = err.to_string();
        assert!(msg.starts_with("/etc/h/hosts.toml:3:"), "{msg}");
        assert!(msg.contains("unknown capability \"fly\""), "{msg}");
        let err = parse("ca = 5\n").unwrap_err().to_string();
        assert!(
            err.contains("hosts.toml:1: invalid type integer for \"ca\""),
            "{err}"
        );
        let err = parse("server = \"ftp://x\"\n").unwrap_err().to_string();
        assert!(err.contains("unable to parse server"), "{err}");
    }

    #[test]
    fn host_directories_are_looked_up_like_containerd() {
        let root = Path::new("/certs");
        assert_eq!(
            host_paths(root, "127.0.0.1:5000"),
            [
                PathBuf::from("/certs/127.0.0.1_5000_"),
                PathBuf::from("/certs/127.0.0.1:5000"),
                PathBuf::from("/certs/_default"),
            ]
        );
        assert_eq!(
            host_paths(root, "docker.io"),
            [
                PathBuf::from("/certs/docker.io"),
                PathBuf::from("/certs/_default")
            ]
        );
    }

    #[test]
    fn default_host_is_filled_in_from_the_registry_name() {
        let dir = tempfile::tempdir().unwrap();
        let opts = |hosts_dir: Option<PathBuf>| ConfigHosts {
            options: HostOptions {
                hosts_dir,
                ..HostOptions::default()
            },
        };
        // No directory: the registry itself; localhost without TLS settings is HTTP.
        let h = opts(None).host_configs("127.0.0.1:5000").unwrap();
        assert_eq!(
            (h.len(), h[0].scheme.as_str(), h[0].host.as_str()),
            (1, "http", "127.0.0.1:5000")
        );
        let h = opts(None).host_configs("docker.io").unwrap();
        assert_eq!(h[0].host, "registry-1.docker.io");
        assert_eq!(h[0].scheme, "https");

        // certs.d files in _default: CA and client pair; a CA makes localhost HTTPS.
        let d = dir.path().join("_default");
        std::fs::create_dir(&d).unwrap();
        for f in ["ca.crt", "client.cert", "client.key", "other.cert"] {
            std::fs::write(d.join(f), "x").unwrap();
        }
        let h = opts(Some(dir.path().into()))
            .host_configs("127.0.0.1:5000")
            .unwrap();
        assert_eq!(h.len(), 1);
        assert_eq!(h[0].scheme, "https");
        assert_eq!(h[0].ca_files, [d.join("ca.crt")]);
        assert_eq!(
            h[0].client_pairs,
            [
                (d.join("client.cert"), Some(d.join("client.key"))),
                (d.join("other.cert"), None)
            ]
        );

        // A host's own directory wins over _default; capabilities of the filled-in
        // server are all three, as containerd sets them.
        let own = dir.path().join("127.0.0.1_5000_");
        std::fs::create_dir(&own).unwrap();
        std::fs::write(
            own.join("hosts.toml"),
            "capabilities = [\"pull\"]\n[host.\"http://127.0.0.1:1\"]\n",
        )
        .unwrap();
        let h = opts(Some(dir.path().into()))
            .host_configs("127.0.0.1:5000")
            .unwrap();
        assert_eq!(h.len(), 2);
        assert_eq!(h[0].host, "127.0.0.1:1");
        assert_eq!(h[1].host, "127.0.0.1:5000");
        assert_eq!(h[1].scheme, "http");
        assert_eq!(h[1].capabilities, Capabilities::ALL);
    }

    #[test]
    fn mirrors_get_the_namespace_query() {
        let tls = tls::client_config(&TlsOptions::default()).unwrap();
        let host = |h: &str| RegistryHost {
            host: h.into(),
            scheme: "https".into(),
            path: "/v2".into(),
            capabilities: Capabilities::ALL,
            tls: tls.clone(),
            headers: Vec::new(),
            credentials: None,
            dial_timeout: None,
        };
        assert!(!host("registry-1.docker.io").is_proxy_for("docker.io"));
        assert!(!host("r:5000").is_proxy_for("r:5000"));
        assert!(host("mirror:5000").is_proxy_for("docker.io"));
    }
}
