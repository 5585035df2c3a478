//! berthd configuration: containerd's `config.toml` (version 2 and 3 keys), loaded with
//! `imports` merged in order, checked for unknown keys (a warning naming file and line, since
//! users bring containerd configs) and for invalid values (an error naming the key).
//!
//! Plugin sections stay as TOML values keyed by plugin id
//! (`io.containerd.snapshotter.v1.overlayfs`); typed views exist for the ones the storage core
//! uses ([`Config::bolt`], [`Config::overlayfs`], [`Config::native`]) and
//! [`Config::plugin_config`] deserialises any other section (the runtime reads its own).

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Default config file.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/berth/config.toml";
/// Default root (persistent data).
pub const DEFAULT_ROOT: &str = "/var/lib/berth";
/// Default state (runtime data).
pub const DEFAULT_STATE: &str = "/run/berth";
/// Default gRPC socket.
pub const DEFAULT_ADDRESS: &str = "/run/berth/berth.sock";
/// Default gRPC message size limit (containerd's 16 MiB).
pub const DEFAULT_MAX_MSG: i64 = 16 << 20;

/// Plugin ids the storage core reads.
pub mod ids {
    /// Metadata store.
    pub const BOLT: &str = "io.containerd.metadata.v1.bolt";
    /// overlayfs snapshotter.
    pub const OVERLAYFS: &str = "io.containerd.snapshotter.v1.overlayfs";
    /// native snapshotter.
    pub const NATIVE: &str = "io.containerd.snapshotter.v1.native";
    /// GC scheduler.
    pub const GC: &str = "io.containerd.gc.v1.scheduler";
    /// The built-in (local) content store.
    pub const CONTENT: &str = "io.containerd.content.v1.content";
    /// Runtime v2 task plugin (read by the runtime subsystem).
    pub const RUNTIME_V2: &str = "io.containerd.runtime.v2.task";
    /// Restart monitor (containerd 1.x id; read by `restart/`).
    pub const RESTART: &str = "io.containerd.internal.v1.restart";
    /// Restart monitor under containerd 2.x's id.
    pub const RESTART_V2: &str = "io.containerd.monitor.container.v1.restart";
    /// cgroups task monitor (read by `monitor/`).
    pub const CGROUPS_MONITOR: &str = "io.containerd.monitor.v1.cgroups";
}

/// Errors loading the configuration.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// File unreadable.
    #[error("read config {path}: {source}")]
    Read {
        /// File.
        path: PathBuf,
        /// Cause.
        source: std::io::Error,
    },
    /// TOML syntax or a value of the wrong type (toml's message names key and line).
    #[error("config {path}: {message}")]
    Parse {
        /// File.
        path: PathBuf,
        /// toml's message.
        message: String,
    },
    /// A value outside what the key accepts.
    #[error("config {path}: invalid value for `{key}`: {reason}")]
    Invalid {
        /// File.
        path: PathBuf,
        /// Dotted key.
        key: String,
        /// Why.
        reason: String,
    },
    /// An `imports` glob that does not parse.
    #[error("config {path}: bad imports pattern {pattern:?}: {reason}")]
    Import {
        /// File.
        path: PathBuf,
        /// Pattern.
        pattern: String,
        /// Why.
        reason: String,
    },
}

/// A problem worth telling the user about that does not stop start-up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Warning {
    /// File.
    pub file: PathBuf,
    /// 1-based line.
    pub line: usize,
    /// Dotted key.
    pub key: String,
    /// What is wrong.
    pub message: String,
}

impl std::fmt::Display for Warning {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}:{}: {}: {}",
            self.file.display(),
            self.line,
            self.key,
            self.message
        )
    }
}

/// `[grpc]`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct Grpc {
    /// Unix socket path.
    pub address: String,
    /// TCP address (not served by berthd; accepted for compatibility).
    pub tcp_address: String,
    /// TLS CA for TCP.
    pub tcp_tls_ca: String,
    /// TLS cert for TCP.
    pub tcp_tls_cert: String,
    /// TLS key for TCP.
    pub tcp_tls_key: String,
    /// Socket owner uid.
    pub uid: u32,
    /// Socket owner gid.
    pub gid: u32,
    /// Largest request accepted.
    pub max_recv_message_size: i64,
    /// Largest reply sent.
    pub max_send_message_size: i64,
}

impl Default for Grpc {
    fn default() -> Self {
        Self {
            address: DEFAULT_ADDRESS.into(),
            tcp_address: String::new(),
            tcp_tls_ca: String::new(),
            tcp_tls_cert: String::new(),
            tcp_tls_key: String::new(),
            uid: 0,
            gid: 0,
            max_recv_message_size: DEFAULT_MAX_MSG,
            max_send_message_size: DEFAULT_MAX_MSG,
        }
    }
}

/// `[ttrpc]`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct Ttrpc {
    /// Socket path; empty = `<grpc.address>.ttrpc`.
    pub address: String,
    /// Owner uid.
    pub uid: u32,
    /// Owner gid.
    pub gid: u32,
}

/// `[debug]`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct Debug {
    /// Debug socket (pprof in containerd; unused by berthd).
    pub address: String,
    /// Owner uid.
    pub uid: u32,
    /// Owner gid.
    pub gid: u32,
    /// Log level: trace, debug, info, warn, error, fatal, panic.
    pub level: String,
    /// Log format: text or json.
    pub format: String,
}

/// `[metrics]`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct Metrics {
    /// Prometheus listen address.
    pub address: String,
    /// Histograms of gRPC latency.
    pub grpc_histogram: bool,
}

/// `[cgroup]`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct Cgroup {
    /// Cgroup path for the daemon.
    pub path: String,
}

/// `[proxy_plugins.<name>]`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct ProxyPlugin {
    /// `snapshot` or `content` (or the plugin types `io.containerd.snapshotter.v1`,
    /// `io.containerd.content.v1`, which containerd accepts too).
    pub r#type: String,
    /// gRPC socket of the plugin.
    pub address: String,
    /// Platform it supports.
    pub platform: String,
    /// Exported values.
    pub exports: BTreeMap<String, String>,
    /// Capabilities.
    pub capabilities: Vec<String>,
}

/// What a `[proxy_plugins]` entry provides.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProxyKind {
    /// A snapshotter (`io.containerd.snapshotter.v1`).
    Snapshot,
    /// A content store (`io.containerd.content.v1`).
    Content,
}

impl ProxyKind {
    /// The containerd plugin type it registers as.
    pub fn plugin_type(self) -> &'static str {
        match self {
            ProxyKind::Snapshot => "io.containerd.snapshotter.v1",
            ProxyKind::Content => "io.containerd.content.v1",
        }
    }
}

impl ProxyPlugin {
    /// The kind named by `type` (both spellings containerd accepts); `None` if unknown.
    pub fn kind(&self) -> Option<ProxyKind> {
        match self.r#type.as_str() {
            "snapshot" | "io.containerd.snapshotter.v1" => Some(ProxyKind::Snapshot),
            "content" | "io.containerd.content.v1" => Some(ProxyKind::Content),
            _ => None,
        }
    }
}

/// The whole file.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct Config {
    /// Schema version (2 or 3; absent means containerd 1.x's version 1, migrated to 2 on load).
    pub version: i64,
    /// Persistent data directory.
    pub root: String,
    /// Runtime state directory.
    pub state: String,
    /// Temporary directory.
    pub temp: String,
    /// Plugin directory (go plugins; unused).
    pub plugin_dir: String,
    /// Plugin ids (`io.containerd.snapshotter.v1.btrfs`) not to load.
    pub disabled_plugins: Vec<String>,
    /// Plugin ids that must load, or start-up fails.
    pub required_plugins: Vec<String>,
    /// OOM score adjustment applied to berthd itself.
    pub oom_score: i32,
    /// Further config files (globs), merged in order.
    pub imports: Vec<String>,
    /// gRPC.
    pub grpc: Grpc,
    /// ttrpc.
    pub ttrpc: Ttrpc,
    /// Debug / logging.
    pub debug: Debug,
    /// Metrics.
    pub metrics: Metrics,
    /// Cgroup.
    pub cgroup: Cgroup,
    /// Timeouts by name (`io.containerd.timeout.shim.cleanup = "5s"`).
    pub timeouts: BTreeMap<String, String>,
    /// Plugin sections by id.
    pub plugins: BTreeMap<String, toml::Value>,
    /// Out-of-process plugins.
    pub proxy_plugins: BTreeMap<String, ProxyPlugin>,
    /// Stream processors (accepted, unused).
    pub stream_processors: BTreeMap<String, toml::Value>,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            version: 2,
            root: DEFAULT_ROOT.into(),
            state: DEFAULT_STATE.into(),
            temp: String::new(),
            plugin_dir: String::new(),
            disabled_plugins: vec![],
            required_plugins: vec![],
            oom_score: 0,
            imports: vec![],
            grpc: Grpc::default(),
            ttrpc: Ttrpc::default(),
            debug: Debug::default(),
            metrics: Metrics::default(),
            cgroup: Cgroup::default(),
            timeouts: BTreeMap::new(),
            plugins: BTreeMap::new(),
            proxy_plugins: BTreeMap::new(),
            stream_processors: BTreeMap::new(),
        }
    }
}

/// `[plugins."io.containerd.metadata.v1.bolt"]`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct BoltConfig {
    /// `shared` or `isolated`.
    pub content_sharing_policy: String,
}

impl Default for BoltConfig {
    fn default() -> Self {
        Self {
            content_sharing_policy: "shared".into(),
        }
    }
}

/// `[plugins."io.containerd.snapshotter.v1.overlayfs"]`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct OverlayfsConfig {
    /// Root directory (empty = `<root>/io.containerd.snapshotter.v1.overlayfs`).
    pub root_path: String,
    /// Report upper dirs in a label.
    pub upperdir_label: bool,
    /// Extra options for overlay mounts (containerd 1.7+), e.g. `["volatile"]`.
    pub mount_options: Vec<String>,
    /// Sync removal (accepted, unused).
    pub sync_remove: bool,
}

/// `[plugins."io.containerd.gc.v1.scheduler"]`, read by `metadata::scheduler` with
/// containerd's `gc/scheduler` semantics. One default differs from containerd's:
/// `deletion_threshold` is 1, so a delete is collected `schedule_delay` later (containerd's 0
/// waits for the next periodic check, up to `avg / pause_threshold` away, during which
/// unleased objects a client is still creating can be collected); set 0 for containerd's
/// timing.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct GcConfig {
    /// Largest share of time spent collecting (clamped to 0..=0.5); sets the check interval.
    pub pause_threshold: f64,
    /// Deletes that schedule a collection; 0: only when no check is pending.
    pub deletion_threshold: i64,
    /// Committed changes that schedule a collection when no check is pending; 0: never.
    pub mutation_threshold: i64,
    /// Go duration ("0s", "100ms"): from scheduling to collecting.
    pub schedule_delay: String,
    /// Go duration: the first check after start (berthd also collects once before serving).
    pub startup_delay: String,
}

impl Default for GcConfig {
    fn default() -> Self {
        Self {
            pause_threshold: 0.02,
            deletion_threshold: 1,
            mutation_threshold: 100,
            schedule_delay: "0s".into(),
            startup_delay: "100ms".into(),
        }
    }
}

/// Parses a Go duration as Go's `time.ParseDuration` for non-negative values (`1h2m3s`,
/// `100ms`, `1.5s`, `0`). Shared by every config reader (config.toml, hosts.toml).
pub fn parse_go_duration(s: &str) -> Option<std::time::Duration> {
    let s = s.trim();
    if s == "0" {
        return Some(std::time::Duration::ZERO);
    }
    let mut total = 0f64;
    let mut rest = s;
    if rest.is_empty() {
        return None;
    }
    while !rest.is_empty() {
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        if num_len == 0 {
            return None;
        }
        let n: f64 = rest[..num_len].parse().ok()?;
        rest = &rest[num_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let mult = match &rest[..unit_len] {
            "ns" => 1e-9,
            "us" | "\u{b5}s" | "\u{3bc}s" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return None,
        };
        rest = &rest[unit_len..];
        total += n * mult;
    }
    std::time::Duration::try_from_secs_f64(total).ok()
}

/// `[plugins."io.containerd.snapshotter.v1.native"]`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct NativeConfig {
    /// Root directory (empty = `<root>/io.containerd.snapshotter.v1.native`).
    pub root_path: String,
}

// Known keys per table, for unknown-key warnings. `*` accepts any key below.
const TOP: &[&str] = &[
    "version",
    "root",
    "state",
    "temp",
    "plugin_dir",
    "disabled_plugins",
    "required_plugins",
    "oom_score",
    "imports",
    "grpc",
    "ttrpc",
    "debug",
    "metrics",
    "cgroup",
    "timeouts",
    "plugins",
    "proxy_plugins",
    "stream_processors",
];
const GRPC: &[&str] = &[
    "address",
    "tcp_address",
    "tcp_tls_ca",
    "tcp_tls_cert",
    "tcp_tls_key",
    "uid",
    "gid",
    "max_recv_message_size",
    "max_send_message_size",
];
const TTRPC: &[&str] = &["address", "uid", "gid"];
const DEBUG: &[&str] = &["address", "uid", "gid", "level", "format"];
const METRICS: &[&str] = &["address", "grpc_histogram"];
const CGROUP: &[&str] = &["path"];
const PROXY: &[&str] = &["type", "address", "platform", "exports", "capabilities"];
const BOLT: &[&str] = &["content_sharing_policy"];
const OVERLAYFS: &[&str] = &[
    "root_path",
    "upperdir_label",
    "mount_options",
    "sync_remove",
];
const NATIVE: &[&str] = &["root_path"];
const RESTART: &[&str] = &["interval"];
const CGROUPS_MONITOR: &[&str] = &["no_prometheus"];
const GC: &[&str] = &[
    "pause_threshold",
    "deletion_threshold",
    "mutation_threshold",
    "schedule_delay",
    "startup_delay",
];

/// Plugin ids whose sections berthd reads or knows to be harmless. Anything else warns.
const KNOWN_PLUGINS: &[&str] = &[
    ids::BOLT,
    ids::OVERLAYFS,
    ids::NATIVE,
    ids::GC,
    ids::RUNTIME_V2,
    "io.containerd.runtime.v1.linux",
    "linux",
    "io.containerd.grpc.v1.cri",
    "io.containerd.cri.v1.runtime",
    "io.containerd.cri.v1.images",
    "io.containerd.snapshotter.v1.btrfs",
    "io.containerd.snapshotter.v1.zfs",
    "io.containerd.snapshotter.v1.devmapper",
    "io.containerd.snapshotter.v1.aufs",
    ids::CGROUPS_MONITOR,
    "io.containerd.service.v1.tasks-service",
    "io.containerd.internal.v1.opt",
    ids::RESTART,
    "io.containerd.internal.v1.tracing",
    "io.containerd.tracing.processor.v1.otlp",
    ids::RESTART_V2,
];

/// The full URI (`io.containerd.<type>.<version>.<id>`) of a plugin berthd knows by its short
/// id (`linux`, `bolt`, `overlayfs`, `scheduler`, `cri`, ...). Version 1 configs (containerd
/// 1.x, no `version` key) name plugin sections, `disabled_plugins` and `required_plugins` by
/// short id: containerd's `Config.Decode` looks plugins up by `p.ID` when the version is 1.
pub fn full_plugin_id(short: &str) -> Option<&'static str> {
    if short.split('.').count() >= 4 {
        return None;
    }
    KNOWN_PLUGINS
        .iter()
        .copied()
        .find(|uri| uri.splitn(5, '.').nth(4) == Some(short))
}

/// The version a config file declares: containerd's `GetVersion` (absent or 0 means 1).
fn declared_version(table: &toml::Table) -> i64 {
    match table.get("version").and_then(toml::Value::as_integer) {
        None | Some(0) => 1,
        Some(v) => v,
    }
}

/// Rewrites a version 1 config (short plugin ids) into berthd's version 2 form, as
/// containerd 2.x's config migration does. Short ids in a version 2/3 config (which containerd
/// rejects with "invalid plugin key URI") are accepted the same way; `parse_file` has already
/// warned about them with their line.
/// Applied per file before merging, so a later file's section replaces an earlier one
/// whichever spelling each used. The version itself is settled on the merged table.
fn migrate_short_ids(table: &mut toml::Table) {
    if let Some(toml::Value::Table(plugins)) = table.get_mut("plugins") {
        let short: Vec<String> = plugins
            .keys()
            .filter(|k| full_plugin_id(k).is_some())
            .cloned()
            .collect();
        for k in short {
            let (Some(full), Some(v)) = (full_plugin_id(&k), plugins.remove(&k)) else {
                continue;
            };
            // An explicit full-URI section wins over its short alias.
            plugins.entry(full.to_string()).or_insert(v);
        }
    }
    for list in ["disabled_plugins", "required_plugins"] {
        if let Some(toml::Value::Array(a)) = table.get_mut(list) {
            for v in a.iter_mut() {
                if let Some(full) = v.as_str().and_then(full_plugin_id) {
                    *v = toml::Value::String(full.to_string());
                }
            }
        }
    }
}

/// A version 1 config (no `version` key) has been migrated by [`migrate_short_ids`]; from
/// here on it is read as version 2.
fn settle_version(table: &mut toml::Table) {
    if declared_version(table) == 1 {
        table.insert("version".into(), toml::Value::Integer(2));
    }
}

/// Warnings for short plugin ids in one file: a deprecation notice for version 1 files (as
/// containerd 1.6 logs), and for version 2/3 files each short key with its full URI.
fn check_short_ids(
    src: &str,
    file: &Path,
    de: &toml::de::DeTable<'_>,
    table: &toml::Table,
    out: &mut Vec<Warning>,
) {
    let version = declared_version(table);
    let uses_short = |id: &str| full_plugin_id(id).is_some();
    let mut any_short = false;
    for (k, v) in de {
        match (k.get_ref().as_ref(), v.get_ref()) {
            ("plugins", toml::de::DeValue::Table(p)) => {
                for (pk, _) in p {
                    let id = pk.get_ref().as_ref();
                    if !uses_short(id) {
                        continue;
                    }
                    any_short = true;
                    if version >= 2 {
                        out.push(Warning {
                            file: file.to_path_buf(),
                            line: line_of(src, pk.span().start),
                            key: format!("plugins.{id:?}"),
                            message: format!(
                                "short plugin id in a version {version} config (containerd rejects it): read as plugins.{:?}; write that instead",
                                full_plugin_id(id).unwrap_or_default()
                            ),
                        });
                    }
                }
            }
            ("disabled_plugins" | "required_plugins", toml::de::DeValue::Array(a)) => {
                for item in a {
                    if let toml::de::DeValue::String(s) = item.get_ref() {
                        if uses_short(s) {
                            any_short = true;
                            if version >= 2 {
                                out.push(Warning {
                                    file: file.to_path_buf(),
                                    line: line_of(src, item.span().start),
                                    key: k.get_ref().to_string(),
                                    message: format!(
                                        "short plugin id {s:?} in a version {version} config (containerd rejects it): read as {:?}",
                                        full_plugin_id(s).unwrap_or_default()
                                    ),
                                });
                            }
                        }
                    }
                }
            }
            _ => {}
        }
    }
    if version == 1 && (any_short || table.contains_key("plugins")) {
        out.push(Warning {
            file: file.to_path_buf(),
            line: 1,
            key: "version".into(),
            message: "config version 1 (no `version` key) is deprecated, as in containerd 1.6: plugin sections are read by short id; add `version = 2` and use full plugin URIs (`berthd config default`)".into(),
        });
    }
}

fn line_of(src: &str, offset: usize) -> usize {
    src[..offset.min(src.len())]
        .bytes()
        .filter(|b| *b == b'\n')
        .count()
        + 1
}

fn check_keys(
    src: &str,
    file: &Path,
    table: &toml::de::DeTable<'_>,
    prefix: &str,
    known: &[&str],
    out: &mut Vec<Warning>,
) {
    for (k, v) in table {
        let name = k.get_ref().as_ref();
        let path = if prefix.is_empty() {
            name.to_string()
        } else {
            format!("{prefix}.{name}")
        };
        if !known.contains(&name) {
            out.push(Warning {
                file: file.to_path_buf(),
                line: line_of(src, k.span().start),
                key: path,
                message: "unknown key, ignored (typo?)".into(),
            });
            continue;
        }
        let toml::de::DeValue::Table(sub) = v.get_ref() else {
            continue;
        };
        match path.as_str() {
            "grpc" => check_keys(src, file, sub, &path, GRPC, out),
            "ttrpc" => check_keys(src, file, sub, &path, TTRPC, out),
            "debug" => check_keys(src, file, sub, &path, DEBUG, out),
            "metrics" => check_keys(src, file, sub, &path, METRICS, out),
            "cgroup" => check_keys(src, file, sub, &path, CGROUP, out),
            "proxy_plugins" => {
                for (pk, pv) in sub {
                    if let toml::de::DeValue::Table(p) = pv.get_ref() {
                        check_keys(
                            src,
                            file,
                            p,
                            &format!("proxy_plugins.{}", pk.get_ref().as_ref()),
                            PROXY,
                            out,
                        );
                    }
                }
            }
            "plugins" => {
                for (pk, pv) in sub {
                    let id = pk.get_ref().as_ref();
                    let ppath = format!("plugins.{id:?}");
                    let id = full_plugin_id(id).unwrap_or(id);
                    let keys = match id {
                        ids::BOLT => Some(BOLT),
                        ids::OVERLAYFS => Some(OVERLAYFS),
                        ids::NATIVE => Some(NATIVE),
                        ids::GC => Some(GC),
                        ids::RESTART | ids::RESTART_V2 => Some(RESTART),
                        ids::CGROUPS_MONITOR => Some(CGROUPS_MONITOR),
                        _ => None,
                    };
                    match (keys, pv.get_ref()) {
                        (Some(keys), toml::de::DeValue::Table(p)) => {
                            check_keys(src, file, p, &ppath, keys, out);
                        }
                        _ if KNOWN_PLUGINS.contains(&id) => {}
                        _ => out.push(Warning {
                            file: file.to_path_buf(),
                            line: line_of(src, pk.span().start),
                            key: ppath,
                            message: "no such plugin in berthd, section ignored".into(),
                        }),
                    }
                }
            }
            _ => {}
        }
    }
}

/// Deep-merges `src` into `dst` as containerd's `mergeConfig`: later files win per key,
/// plugin sections are replaced whole, plugin lists are unioned.
fn merge(dst: &mut toml::Table, src: toml::Table) {
    for (k, v) in src {
        match (k.as_str(), dst.get_mut(&k), v) {
            ("plugins" | "proxy_plugins", Some(toml::Value::Table(d)), toml::Value::Table(s)) => {
                for (pk, pv) in s {
                    d.insert(pk, pv);
                }
            }
            (
                "disabled_plugins" | "required_plugins",
                Some(toml::Value::Array(d)),
                toml::Value::Array(s),
            ) => {
                for x in s {
                    if !d.contains(&x) {
                        d.push(x);
                    }
                }
            }
            (_, Some(toml::Value::Table(d)), toml::Value::Table(s)) => merge(d, s),
            (_, _, v) => {
                dst.insert(k, v);
            }
        }
    }
}

fn parse_file(path: &Path, src: &str, warnings: &mut Vec<Warning>) -> Result<toml::Table, Error> {
    let de = toml::de::DeTable::parse(src).map_err(|e| Error::Parse {
        path: path.to_path_buf(),
        message: e.to_string(),
    })?;
    check_keys(src, path, de.get_ref(), "", TOP, warnings);
    let table = toml::from_str::<toml::Table>(src).map_err(|e| Error::Parse {
        path: path.to_path_buf(),
        message: e.to_string(),
    })?;
    check_short_ids(src, path, de.get_ref(), &table, warnings);
    Ok(table)
}

fn load_into(
    path: &Path,
    acc: &mut toml::Table,
    seen: &mut Vec<PathBuf>,
    warnings: &mut Vec<Warning>,
) -> Result<(), Error> {
    let canon = path.canonicalize().unwrap_or_else(|_| path.to_path_buf());
    if seen.contains(&canon) {
        return Ok(());
    }
    seen.push(canon);
    let src = std::fs::read_to_string(path).map_err(|source| Error::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let mut table = parse_file(path, &src, warnings)?;
    migrate_short_ids(&mut table);
    let imports: Vec<String> = match table.remove("imports") {
        Some(toml::Value::Array(a)) => a
            .into_iter()
            .filter_map(|v| v.as_str().map(str::to_string))
            .collect(),
        Some(_) => {
            return Err(Error::Invalid {
                path: path.to_path_buf(),
                key: "imports".into(),
                reason: "must be an array of strings".into(),
            })
        }
        None => vec![],
    };
    merge(acc, table);
    let base = path.parent().unwrap_or(Path::new("/"));
    for pat in &imports {
        let full = if Path::new(pat).is_absolute() {
            pat.clone()
        } else {
            base.join(pat).to_string_lossy().into_owned()
        };
        let mut files: Vec<PathBuf> = glob::glob(&full)
            .map_err(|e| Error::Import {
                path: path.to_path_buf(),
                pattern: pat.clone(),
                reason: e.to_string(),
            })?
            .filter_map(Result::ok)
            .collect();
        files.sort();
        for f in files {
            load_into(&f, acc, seen, warnings)?;
        }
    }
    let list = acc
        .entry("imports")
        .or_insert_with(|| toml::Value::Array(vec![]));
    if let toml::Value::Array(a) = list {
        for i in imports {
            a.push(toml::Value::String(i));
        }
    }
    Ok(())
}

impl Config {
    /// Loads `path` and its imports. A missing file is an error unless `missing_ok` (the
    /// default path), which yields the defaults.
    pub fn load(path: &Path, missing_ok: bool) -> Result<(Self, Vec<Warning>), Error> {
        if missing_ok && !path.exists() {
            return Ok((Self::default(), vec![]));
        }
        let mut acc = toml::Table::new();
        let mut warnings = Vec::new();
        load_into(path, &mut acc, &mut vec![], &mut warnings)?;
        settle_version(&mut acc);
        let cfg: Config = toml::Value::Table(acc)
            .try_into()
            .map_err(|e: toml::de::Error| Error::Parse {
                path: path.to_path_buf(),
                message: e.to_string(),
            })?;
        cfg.validate(path)?;
        Ok((cfg, warnings))
    }

    /// Parses a config from a string (no imports), for tests and `config default`.
    pub fn parse(src: &str, name: &Path) -> Result<(Self, Vec<Warning>), Error> {
        let mut warnings = Vec::new();
        let mut table = parse_file(name, src, &mut warnings)?;
        migrate_short_ids(&mut table);
        settle_version(&mut table);
        let cfg: Config = toml::Value::Table(table)
            .try_into()
            .map_err(|e: toml::de::Error| Error::Parse {
                path: name.to_path_buf(),
                message: e.to_string(),
            })?;
        cfg.validate(name)?;
        Ok((cfg, warnings))
    }

    fn validate(&self, path: &Path) -> Result<(), Error> {
        let bad = |key: &str, reason: String| Error::Invalid {
            path: path.to_path_buf(),
            key: key.into(),
            reason,
        };
        if !matches!(self.version, 2 | 3) {
            return Err(bad(
                "version",
                format!("{} is not supported: use version = 2 or 3", self.version),
            ));
        }
        if self.root.is_empty() || !Path::new(&self.root).is_absolute() {
            return Err(bad(
                "root",
                format!("{:?} must be an absolute path", self.root),
            ));
        }
        if self.state.is_empty() || !Path::new(&self.state).is_absolute() {
            return Err(bad(
                "state",
                format!("{:?} must be an absolute path", self.state),
            ));
        }
        if self.root == self.state {
            return Err(bad(
                "state",
                "root and state must be different paths".into(),
            ));
        }
        if self.grpc.address.is_empty() {
            return Err(bad("grpc.address", "must not be empty".into()));
        }
        if !(-1000..=1000).contains(&self.oom_score) {
            return Err(bad(
                "oom_score",
                format!("{} is outside -1000..=1000", self.oom_score),
            ));
        }
        for (k, v) in [
            (
                "grpc.max_recv_message_size",
                self.grpc.max_recv_message_size,
            ),
            (
                "grpc.max_send_message_size",
                self.grpc.max_send_message_size,
            ),
        ] {
            if v <= 0 || v > i64::from(u32::MAX) {
                return Err(bad(k, format!("{v} must be between 1 and {}", u32::MAX)));
            }
        }
        if !self.debug.level.is_empty() && parse_level(&self.debug.level).is_none() {
            return Err(bad(
                "debug.level",
                format!(
                    "{:?}: want trace, debug, info, warn, error, fatal or panic",
                    self.debug.level
                ),
            ));
        }
        if !matches!(self.debug.format.as_str(), "" | "text" | "json") {
            return Err(bad(
                "debug.format",
                format!("{:?}: want \"text\" or \"json\"", self.debug.format),
            ));
        }
        let bolt = self
            .plugin_config::<BoltConfig>(ids::BOLT)
            .map_err(|r| bad(&format!("plugins.{:?}", ids::BOLT), r))?;
        if !matches!(bolt.content_sharing_policy.as_str(), "shared" | "isolated") {
            return Err(bad(
                &format!("plugins.{:?}.content_sharing_policy", ids::BOLT),
                format!(
                    "{:?}: want \"shared\" or \"isolated\"",
                    bolt.content_sharing_policy
                ),
            ));
        }
        self.plugin_config::<OverlayfsConfig>(ids::OVERLAYFS)
            .map_err(|r| bad(&format!("plugins.{:?}", ids::OVERLAYFS), r))?;
        let gc = self
            .plugin_config::<GcConfig>(ids::GC)
            .map_err(|r| bad(&format!("plugins.{:?}", ids::GC), r))?;
        for (k, v) in &self.timeouts {
            if parse_go_duration(v).is_none() {
                return Err(bad(
                    &format!("timeouts.{k:?}"),
                    format!("{v:?} is not a duration like \"5s\" or \"500ms\""),
                ));
            }
        }
        for (k, v) in [
            ("schedule_delay", &gc.schedule_delay),
            ("startup_delay", &gc.startup_delay),
        ] {
            if parse_go_duration(v).is_none() {
                return Err(bad(
                    &format!("plugins.{:?}.{k}", ids::GC),
                    format!("{v:?} is not a duration like \"100ms\" or \"1s\""),
                ));
            }
        }
        self.plugin_config::<NativeConfig>(ids::NATIVE)
            .map_err(|r| bad(&format!("plugins.{:?}", ids::NATIVE), r))?;
        // containerd fails to start on a restart interval that is not a Go duration.
        for id in [ids::RESTART, ids::RESTART_V2] {
            if let Some(v) = self.plugins.get(id).and_then(|p| p.get("interval")) {
                if !v
                    .as_str()
                    .is_some_and(|s| s.trim().is_empty() || parse_go_duration(s).is_some())
                {
                    return Err(bad(
                        &format!("plugins.{id:?}.interval"),
                        format!("{v} is not a duration like \"10s\" or \"500ms\""),
                    ));
                }
            }
        }
        for (name, p) in &self.proxy_plugins {
            if p.kind().is_none() {
                return Err(bad(
                    &format!("proxy_plugins.{name}.type"),
                    format!(
                        "{:?}: want \"snapshot\" or \"content\" (or \"io.containerd.snapshotter.v1\", \"io.containerd.content.v1\")",
                        p.r#type
                    ),
                ));
            }
            if p.address.is_empty() {
                return Err(bad(
                    &format!("proxy_plugins.{name}.address"),
                    "must not be empty".into(),
                ));
            }
        }
        Ok(())
    }

    /// Deserialises the section of plugin `id` (defaults when absent); the error is the
    /// deserializer's message.
    pub fn plugin_config<T: DeserializeOwned + Default>(&self, id: &str) -> Result<T, String> {
        match self.plugins.get(id) {
            None => Ok(T::default()),
            Some(v) => v
                .clone()
                .try_into()
                .map_err(|e: toml::de::Error| e.to_string()),
        }
    }

    /// A `[timeouts]` entry (containerd's `io.containerd.timeout.*` keys), else `default`.
    /// Values were checked at load.
    pub fn timeout(&self, key: &str, default: std::time::Duration) -> std::time::Duration {
        self.timeouts
            .get(key)
            .and_then(|v| parse_go_duration(v))
            .unwrap_or(default)
    }

    /// The metadata plugin's section.
    pub fn bolt(&self) -> BoltConfig {
        self.plugin_config(ids::BOLT).unwrap_or_default()
    }

    /// The overlayfs snapshotter's section.
    pub fn overlayfs(&self) -> OverlayfsConfig {
        self.plugin_config(ids::OVERLAYFS).unwrap_or_default()
    }

    /// The GC scheduler's section.
    pub fn gc(&self) -> GcConfig {
        self.plugin_config(ids::GC).unwrap_or_default()
    }

    /// The native snapshotter's section.
    pub fn native(&self) -> NativeConfig {
        self.plugin_config(ids::NATIVE).unwrap_or_default()
    }

    /// The ttrpc socket: `[ttrpc] address`, else `<grpc.address>.ttrpc`.
    pub fn ttrpc_address(&self) -> String {
        if self.ttrpc.address.is_empty() {
            format!("{}.ttrpc", self.grpc.address)
        } else {
            self.ttrpc.address.clone()
        }
    }

    /// The effective configuration as TOML (`berthd config dump`).
    pub fn dump(&self) -> String {
        toml::to_string_pretty(self).unwrap_or_else(|e| format!("# cannot render config: {e}\n"))
    }
}

/// Parses a log level name as containerd (logrus) spells them.
pub fn parse_level(s: &str) -> Option<slog::Level> {
    Some(match s.to_ascii_lowercase().as_str() {
        "trace" => slog::Level::Trace,
        "debug" => slog::Level::Debug,
        "info" => slog::Level::Info,
        "warn" | "warning" => slog::Level::Warning,
        "error" => slog::Level::Error,
        "fatal" | "panic" => slog::Level::Critical,
        _ => return None,
    })
}

/// The complete, commented default configuration (`berthd config default`).
pub fn default_toml() -> String {
    format!(
        r#"# berthd configuration. Same keys as containerd's config.toml (version 2; version 3 keys
# are accepted too). Unknown keys are reported with their line at start-up and ignored.
version = 2

# Persistent data: content blobs, metadata database, snapshots.
root = "{root}"
# Runtime state: sockets, shim bundles. Cleared on reboot.
state = "{state}"
# Temporary files (empty = system default).
temp = ""
# Go plugin directory (containerd only; unused by berthd).
plugin_dir = ""
# Plugin ids not to load, e.g. ["io.containerd.snapshotter.v1.btrfs"].
disabled_plugins = []
# Plugin ids that must load, or start-up fails.
required_plugins = []
# OOM score adjustment for berthd itself (-1000..1000).
oom_score = 0
# Further config files (globs, relative to this file), merged in order.
imports = []

[grpc]
  # Unix socket of the containerd API (mode 0660, owned by uid:gid).
  address = "{address}"
  # TCP listening is not supported by berthd; these are accepted and ignored.
  tcp_address = ""
  tcp_tls_ca = ""
  tcp_tls_cert = ""
  tcp_tls_key = ""
  uid = 0
  gid = 0
  max_recv_message_size = {max}
  max_send_message_size = {max}

[ttrpc]
  # Shims forward events here; empty = "<grpc.address>.ttrpc".
  address = ""
  uid = 0
  gid = 0

[debug]
  address = ""
  uid = 0
  gid = 0
  # trace, debug, info, warn, error, fatal, panic (empty = info).
  level = ""
  # text or json (empty = text).
  format = ""

[metrics]
  address = ""
  grpc_histogram = false

[cgroup]
  path = ""

# containerd's named timeouts (Go durations): shim.cleanup bounds `<shim> delete`,
# shim.load reconnecting to a shim at start-up, shim.shutdown the Shutdown call,
# metrics.shimstats one shim's Stats during a /v1/metrics scrape.
[timeouts]
  "io.containerd.timeout.metrics.shimstats" = "2s"
  "io.containerd.timeout.shim.cleanup" = "5s"
  "io.containerd.timeout.shim.load" = "5s"
  "io.containerd.timeout.shim.shutdown" = "3s"
  "io.containerd.timeout.task.state" = "2s"

[plugins]
  [plugins."{bolt}"]
    # "shared": a blob in one namespace is adopted by another that writes it again;
    # "isolated": every namespace must write its own copy.
    content_sharing_policy = "shared"

  [plugins."{gc}"]
    pause_threshold = 0.02
    # containerd's default is 0 (deletes wait for the next periodic check).
    deletion_threshold = 1
    mutation_threshold = 100
    schedule_delay = "0s"
    startup_delay = "100ms"

  [plugins."{overlayfs}"]
    # Empty = "<root>/{overlayfs}".
    root_path = ""
    upperdir_label = false

  [plugins."{native}"]
    # Empty = "<root>/{native}".
    root_path = ""

  # Restart monitor: keeps the task of a container labelled containerd.io/restart.status in
  # that status (restart.policy, restart.loguri, restart.count as containerd 2.x).
  [plugins."{restart}"]
    interval = "10s"

  # cgroups task monitor: per-task container_* metrics on [metrics] address (and OOM events
  # of runtime v1 tasks); no_prometheus = true exports none.
  [plugins."io.containerd.monitor.v1.cgroups"]
    no_prometheus = false

  # Runtime v2 (shims). Named runtimes for `ctr run --runtime <name>`, e.g.:
  #   [plugins."io.containerd.runtime.v2.task".runtimes.youki]
  #     runtime_type = "io.containerd.runc.v2"
  #     [plugins."io.containerd.runtime.v2.task".runtimes.youki.options]
  #       BinaryName = "/usr/local/bin/youki"
  [plugins."io.containerd.runtime.v2.task"]
    platforms = ["linux/amd64"]
    sched_core = false

  # Legacy runtime v1 (`io.containerd.runtime.v1.linux`, `[plugins.linux]` in version 1
  # configs): Debian's containerd-shim v1 binary.
  [plugins."io.containerd.runtime.v1.linux"]
    # Shim binary name or path.
    shim = "containerd-shim"
    # OCI runtime binary name or path.
    runtime = "runc"
    # runc --root (empty = runc's default).
    runtime_root = ""
    # Tasks inside the daemon without a shim: not supported by berthd (no live restore).
    no_shim = false
    # Shim logs in berthd's log.
    shim_debug = false

# Plugins in other processes, over containerd's gRPC API on a Unix socket:
#   [proxy_plugins.mysnap]
#     type = "snapshot"        # or "io.containerd.snapshotter.v1"
#     address = "/run/mysnap.sock"
#   [proxy_plugins.remote]
#     type = "content"         # or "io.containerd.content.v1"; berthd then needs
#     address = "/run/cs.sock" # disabled_plugins = ["io.containerd.content.v1.content"]
[proxy_plugins]
"#,
        root = DEFAULT_ROOT,
        state = DEFAULT_STATE,
        address = DEFAULT_ADDRESS,
        max = DEFAULT_MAX_MSG,
        bolt = ids::BOLT,
        gc = ids::GC,
        overlayfs = ids::OVERLAYFS,
        native = ids::NATIVE,
        restart = ids::RESTART,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_text_parses_without_warnings_to_defaults() {
        let (cfg, w) = Config::parse(&default_toml(), Path::new("default.toml")).unwrap();
        assert!(w.is_empty(), "{w:?}");
        assert_eq!(cfg.root, DEFAULT_ROOT);
        assert_eq!(cfg.grpc, Grpc::default());
        assert_eq!(cfg.bolt().content_sharing_policy, "shared");
    }

    #[test]
    fn typo_warns_with_line() {
        let src = "version = 2\nroot = \"/x\"\n[grpc]\n  adress = \"/tmp/s\"\n[plugins.\"io.containerd.metadata.v1.bolt\"]\n  content_sharing = \"x\"\n";
        let (_, w) = Config::parse(src, Path::new("c.toml")).unwrap();
        assert_eq!(w.len(), 2, "{w:?}");
        assert_eq!((w[0].line, w[0].key.as_str()), (4, "grpc.adress"));
        assert_eq!(w[1].line, 6);
        assert!(w[1].to_string().starts_with("c.toml:6:"));
    }

    #[test]
    fn version_1_short_plugin_ids_are_migrated() {
        // The seeds' containerd 1.x config: no `version`, `[plugins.linux]`, `[plugins.bolt]`.
        let src = "root = \"/r\"\nstate = \"/s\"\ndisabled_plugins = [\"btrfs\"]\n[plugins.linux]\n  shim = \"containerd-shim\"\n  shim_debug = true\n[plugins.bolt]\n  content_sharing_policy = \"isolated\"\n";
        let (cfg, w) = Config::parse(src, Path::new("c.toml")).unwrap();
        assert_eq!(cfg.version, 2);
        assert_eq!(cfg.bolt().content_sharing_policy, "isolated");
        assert!(cfg.plugins.contains_key("io.containerd.runtime.v1.linux"));
        assert!(!cfg.plugins.contains_key("linux"));
        assert_eq!(cfg.disabled_plugins, ["io.containerd.snapshotter.v1.btrfs"]);
        assert_eq!(w.len(), 1, "{w:?}");
        assert_eq!(w[0].key, "version");
        assert!(w[0].message.contains("deprecated"), "{w:?}");
    }

    #[test]
    fn short_plugin_id_in_version_2_warns_with_line_and_is_read() {
        let src = "version = 2\n[plugins.bolt]\n  content_sharing_policy = \"isolated\"\n[plugins.nosuch]\n  x = 1\n";
        let (cfg, w) = Config::parse(src, Path::new("c.toml")).unwrap();
        assert_eq!(cfg.bolt().content_sharing_policy, "isolated");
        assert_eq!(w.len(), 2, "{w:?}");
        let short = w
            .iter()
            .find(|w| w.key == "plugins.\"bolt\"")
            .expect("bolt warning");
        assert_eq!(short.line, 2);
        assert!(
            short.message.contains("io.containerd.metadata.v1.bolt"),
            "{short:?}"
        );
        let unknown = w
            .iter()
            .find(|w| w.key == "plugins.\"nosuch\"")
            .expect("unknown warning");
        assert!(unknown.message.contains("no such plugin"), "{unknown:?}");
    }

    #[test]
    fn short_plugin_id_keys_are_checked_like_full_ones() {
        let src = "version = 2\n[plugins.bolt]\n  content_sharing = \"isolated\"\n";
        let (_, w) = Config::parse(src, Path::new("c.toml")).unwrap();
        assert!(
            w.iter()
                .any(|w| w.key == "plugins.\"bolt\".content_sharing" && w.line == 3),
            "{w:?}"
        );
    }

    #[test]
    fn timeouts_are_read_as_go_durations_with_defaults() {
        let src = "version = 2\n[timeouts]\n  \"io.containerd.timeout.shim.shutdown\" = \"1.5s\"\n";
        let (cfg, _) = Config::parse(src, Path::new("c.toml")).unwrap();
        let d = std::time::Duration::from_secs(9);
        assert_eq!(
            cfg.timeout("io.containerd.timeout.shim.shutdown", d),
            std::time::Duration::from_millis(1500)
        );
        assert_eq!(cfg.timeout("io.containerd.timeout.shim.load", d), d);
    }

    #[test]
    fn full_plugin_id_maps_known_short_ids_only() {
        assert_eq!(
            full_plugin_id("linux"),
            Some("io.containerd.runtime.v1.linux")
        );
        assert_eq!(full_plugin_id("scheduler"), Some(ids::GC));
        assert_eq!(full_plugin_id("cri"), Some("io.containerd.grpc.v1.cri"));
        assert_eq!(full_plugin_id("nosuch"), None);
        assert_eq!(full_plugin_id(ids::BOLT), None);
    }

    #[test]
    fn invalid_values_name_the_key() {
        let cases = [
            ("oom_score = 5000", "oom_score"),
            ("[grpc]\nuid = \"root\"", "uid"),
            (
                "[plugins.\"io.containerd.metadata.v1.bolt\"]\ncontent_sharing_policy = \"x\"",
                "content_sharing_policy",
            ),
            ("[debug]\nlevel = \"loud\"", "debug.level"),
            ("version = 4", "version"),
            (
                "[timeouts]\n\"io.containerd.timeout.shim.load\" = \"5\"",
                "io.containerd.timeout.shim.load",
            ),
        ];
        for (src, key) in cases {
            let e = Config::parse(src, Path::new("c.toml"))
                .unwrap_err()
                .to_string();
            assert!(e.contains(key), "{src:?}: {e}");
        }
    }

    #[test]
    fn imports_merge_in_order() {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::create_dir(tmp.path().join("conf.d")).unwrap();
        std::fs::write(
            tmp.path().join("conf.d/10-a.toml"),
            "oom_score = -10\ndisabled_plugins = [\"a\"]\n",
        )
        .unwrap();
        std::fs::write(
            tmp.path().join("conf.d/20-b.toml"),
            "oom_score = -20\ndisabled_plugins = [\"b\"]\n",
        )
        .unwrap();
        std::fs::write(
            tmp.path().join("main.toml"),
            "version = 2\nimports = [\"conf.d/*.toml\"]\ndisabled_plugins = [\"m\"]\n",
        )
        .unwrap();
        let (cfg, w) = Config::load(&tmp.path().join("main.toml"), false).unwrap();
        assert!(w.is_empty(), "{w:?}");
        assert_eq!(cfg.oom_score, -20);
        assert_eq!(cfg.disabled_plugins, ["m", "a", "b"]);
        assert_eq!(cfg.imports, ["conf.d/*.toml"]);
    }

    #[test]
    fn go_durations() {
        use std::time::Duration;
        assert_eq!(parse_go_duration("0s"), Some(Duration::ZERO));
        assert_eq!(parse_go_duration("100ms"), Some(Duration::from_millis(100)));
        assert_eq!(parse_go_duration("1m30s"), Some(Duration::from_secs(90)));
        assert_eq!(parse_go_duration("1.5s"), Some(Duration::from_millis(1500)));
        for bad in ["", "5", "1x", "ms", "-1s"] {
            assert_eq!(parse_go_duration(bad), None, "{bad}");
        }
        let e = Config::parse(
            "[plugins.\"io.containerd.gc.v1.scheduler\"]\nschedule_delay = \"soon\"\n",
            Path::new("c.toml"),
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("schedule_delay"), "{e}");
    }

    #[test]
    fn missing_default_file_is_defaults() {
        let (cfg, _) = Config::load(Path::new("/nonexistent/berth.toml"), true).unwrap();
        assert_eq!(cfg, Config::default());
        assert!(Config::load(Path::new("/nonexistent/berth.toml"), false).is_err());
    }
}
