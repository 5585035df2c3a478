//! The short-lived shim invocations: `start`, `delete`, `-info`, `-v`.
//!
//! `start` runs with the bundle as its working directory (containerd's `runtime/v2/binary.go`).
//! It creates the shim's ttrpc socket — always a filesystem socket, mode 0600 in a 0700
//! directory, never abstract (CVE-2020-15257) — named like containerd's Go shim names it
//! (`unix://<socket dir>/<sha256(address/namespace/group)>`), launches the long-running shim in
//! its own session with the listener as fd 3, and prints the address. When a shim for the
//! same group already listens there, it prints that address instead (pod grouping via the
//! `io.containerd.runc.v2.group` / `io.kubernetes.cri.sandbox-id` annotations).
//!
//! What `start` prints depends on the caller (see [`StartReply`]): containerd ≥ 2.3 sends
//! `BootstrapParams` on stdin and gets a `BootstrapResult` (task API v3); containerd 1.6/1.7
//! get the plain address (task API v2); `MAX_SHIM_VERSION ≥ 3` gets the JSON form.

use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::SystemTime;

use containerd_shim_protos::bootstrap_api::{BootstrapParams, BootstrapResult, LogLevel};
use containerd_shim_protos::protobuf::well_known_types::any::Any;
use containerd_shim_protos::protobuf::Message;
use containerd_shim_protos::shim::shim::DeleteResponse;
use sha2::{Digest, Sha256};

use crate::args::Flags;
use crate::options::{OptionsError, RuncOptions};

/// containerd's default state dir socket root (`defaults.DefaultStateDir + "/s"`).
pub const DEFAULT_SOCKET_DIR: &str = "/run/containerd/s";
/// Longest unix socket path (`socketPathLimit`).
const SOCKET_PATH_LIMIT: usize = 106;
/// Annotations that group containers into one shim, in priority order.
const GROUP_LABELS: [&str; 2] = [
    "io.containerd.runc.v2.group",
    "io.kubernetes.cri.sandbox-id",
];
/// The runtime name reported by `-info` and in logs.
pub const RUNTIME_NAME: &str = "io.containerd.runc.v2";

/// Errors from the short-lived actions.
#[derive(Debug, thiserror::Error)]
pub enum ManagerError {
    #[error("shim namespace cannot be empty (pass -namespace)")]
    NoNamespace,
    #[error("shim id cannot be empty (pass -id)")]
    NoId,
    #[error("reading {what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("reading the OCI spec {path}: {source}")]
    Spec {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("parsing the OCI spec {path}: {source}")]
    SpecParse {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("decoding start input from containerd: {0}")]
    Input(String),
    #[error(transparent)]
    Options(#[from] OptionsError),
    #[error("{path:?}: unix socket path too long (> {SOCKET_PATH_LIMIT})")]
    SocketTooLong { path: String },
    #[error("create new shim socket {path}: {source}")]
    Socket {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("launching the shim daemon {exe}: {source}")]
    Spawn {
        exe: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("failed to join cgroup {cgroup}: {source}")]
    ShimCgroup {
        cgroup: String,
        #[source]
        source: std::io::Error,
    },
    #[error("failed to adjust OOM score for shim: {0}")]
    OomScore(#[source] std::io::Error),
    #[error("failed to look up the path of {0:?} in PATH")]
    BinaryNotFound(String),
    #[error("runtime: {0}")]
    Runtime(String),
}

fn io_err(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> ManagerError {
    let what = what.into();
    move |source| ManagerError::Io { what, source }
}

/// Go's `filepath.Join`: drop empty elements, join with `/`, then `Clean`.
pub fn go_join(parts: &[&str]) -> String {
    let joined = parts
        .iter()
        .filter(|p| !p.is_empty())
        .copied()
        .collect::<Vec<_>>()
        .join("/");
    go_clean(&joined)
}

/// Go's `path.Clean` for `/`-separated paths.
pub fn go_clean(p: &str) -> String {
    if p.is_empty() {
        return ".".into();
    }
    let rooted = p.starts_with('/');
    let mut out: Vec<&str> = Vec::new();
    for seg in p.split('/') {
        match seg {
            "" | "." => {}
            ".." => {
                if out.last().is_some_and(|l| *l != "..") {
                    out.pop();
                } else if !rooted {
                    out.push("..");
                }
            }
            s => out.push(s),
        }
    }
    let body = out.join("/");
    match (rooted, body.is_empty()) {
        (true, _) => format!("/{body}"),
        (false, true) => ".".into(),
        (false, false) => body,
    }
}

/// containerd's `SocketAddress`: `unix://<dir>/<hex sha256(join(address, ns, id))>`.
pub fn socket_address(
    socket_dir: &str,
    grpc_address: &str,
    namespace: &str,
    group: &str,
) -> String {
    let digest = Sha256::digest(go_join(&[grpc_address, namespace, group]).as_bytes());
    format!(
        "unix://{}/{}",
        socket_dir.trim_end_matches('/'),
        hex::encode(digest)
    )
}

/// Filesystem path of a `unix://` address (anything else is refused: no abstract sockets).
pub fn socket_path(address: &str) -> Option<&str> {
    address.strip_prefix("unix://")
}

/// What containerd expects `start` to print.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartReply {
    /// containerd 1.x / 2.0–2.2 without bootstrap params: the bare address (task API v2).
    Plain,
    /// `MAX_SHIM_VERSION ≥ 3`: `{"version":3,"address":…,"protocol":"ttrpc"}`.
    Json,
    /// containerd ≥ 2.3 (sent `BootstrapParams`): a marshalled `BootstrapResult`, version 3.
    Bootstrap,
}

/// Everything `start` learned from flags, environment and stdin.
#[derive(Debug, Clone)]
pub struct StartInput {
    pub reply: StartReply,
    pub ttrpc_address: String,
    pub grpc_address: String,
    pub socket_dir: String,
    pub debug: bool,
    pub options: RuncOptions,
}

/// Interprets stdin: `BootstrapParams` (containerd ≥ 2.3) or a bare options `Any` (older).
pub fn parse_start_input(
    flags: &Flags,
    stdin: &[u8],
    env: impl Fn(&str) -> Option<String>,
) -> Result<StartInput, ManagerError> {
    let mut input = StartInput {
        reply: StartReply::Plain,
        ttrpc_address: env("TTRPC_ADDRESS").unwrap_or_default(),
        grpc_address: if flags.address.is_empty() {
            env("GRPC_ADDRESS").unwrap_or_default()
        } else {
            flags.address.clone()
        },
        socket_dir: DEFAULT_SOCKET_DIR.to_string(),
        debug: flags.debug,
        options: RuncOptions::default(),
    };
    if env("MAX_SHIM_VERSION")
        .and_then(|v| v.trim().parse::<u32>().ok())
        .unwrap_or(0)
        >= 3
    {
        input.reply = StartReply::Json;
    }
    if stdin.is_empty() {
        return Ok(input);
    }
    if let Ok(p) = BootstrapParams::parse_from_bytes(stdin) {
        // An options `Any` also parses as BootstrapParams (field 1 is a string in both); only
        // a message naming this very shim is the real thing.
        if p.instance_id == flags.id && p.namespace == flags.namespace {
            input.reply = StartReply::Bootstrap;
            if !p.containerd_ttrpc_address.is_empty() {
                input.ttrpc_address = p.containerd_ttrpc_address.clone();
            }
            if !p.containerd_grpc_address.is_empty() {
                input.grpc_address = p.containerd_grpc_address.clone();
            }
            if let Some(dir) = p.socket_dir.as_deref().filter(|d| !d.is_empty()) {
                input.socket_dir = dir.to_string();
            }
            let level = p.log_level.value();
            input.debug |= level <= LogLevel::LOG_LEVEL_DEBUG as i32;
            for ext in &p.extensions {
                if let Some(any) = ext.value.as_ref() {
                    if let Ok(o) = RuncOptions::from_any(Some(any)) {
                        input.options = o;
                    }
                }
            }
            return Ok(input);
        }
    }
    let any = Any::parse_from_bytes(stdin)
        .map_err(|e| ManagerError::Input(format!("runtime options on stdin: {e}")))?;
    input.options = RuncOptions::from_any(Some(&any))?;
    Ok(input)
}

#[derive(serde::Deserialize, Default)]
struct SpecAnnotations {
    #[serde(default)]
    annotations: std::collections::HashMap<String, String>,
}

/// The shim group of a bundle: the first grouping annotation present, else the id.
pub fn group_of(bundle: &Path, id: &str) -> Result<String, ManagerError> {
    let path = bundle.join("config.json");
    let data = std::fs::read(&path).map_err(|source| ManagerError::Spec {
        path: path.clone(),
        source,
    })?;
    let spec: SpecAnnotations =
        serde_json::from_slice(&data).map_err(|source| ManagerError::SpecParse { path, source })?;
    Ok(GROUP_LABELS
        .iter()
        .find_map(|l| spec.annotations.get(*l).cloned())
        .unwrap_or_else(|| id.to_string()))
}

/// Writes `name` atomically (temp file + rename), like containerd's `WriteAddress`.
pub fn write_atomic(dir: &Path, name: &str, data: &[u8]) -> Result<(), ManagerError> {
    let tmp = dir.join(format!(".{name}"));
    let dst = dir.join(name);
    std::fs::write(&tmp, data)
        .and_then(|()| std::fs::rename(&tmp, &dst))
        .map_err(io_err(format!("writing {}", dst.display())))
}

/// Creates the listening socket, or finds a live shim already serving the address.
pub enum Listen {
    New(UnixListener),
    Existing,
}

/// containerd's `NewSocket` + the `EADDRINUSE` handling of the runc manager's `Start`.
pub fn listen(address: &str) -> Result<Listen, ManagerError> {
    let path = socket_path(address).ok_or_else(|| ManagerError::Socket {
        path: address.to_string(),
        source: std::io::Error::other("only unix:// filesystem sockets are supported"),
    })?;
    if path.len() > SOCKET_PATH_LIMIT {
        return Err(ManagerError::SocketTooLong {
            path: path.to_string(),
        });
    }
    let sock_err = |source| ManagerError::Socket {
        path: path.to_string(),
        source,
    };
    if let Some(dir) = Path::new(path).parent() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(sock_err)?;
        // A pre-existing directory must not be open to others either.
        let mode = std::fs::metadata(dir)
            .map_err(sock_err)?
            .permissions()
            .mode();
        if mode & 0o077 != 0 {
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(mode & 0o700))
                .map_err(sock_err)?;
        }
    }
    let l = match UnixListener::bind(path) {
        Ok(l) => l,
        Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => {
            if UnixStream::connect(path).is_ok() {
                return Ok(Listen::Existing);
            }
            std::fs::remove_file(path).map_err(sock_err)?;
            UnixListener::bind(path).map_err(sock_err)?
        }
        Err(e) => return Err(sock_err(e)),
    };
    if let Err(e) = std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)) {
        let _ = std::fs::remove_file(path);
        return Err(sock_err(e));
    }
    Ok(Listen::New(l))
}

/// Removes the socket file of an address (ignoring "already gone").
pub fn remove_socket(address: &str) {
    if let Some(p) = socket_path(address) {
        let _ = std::fs::remove_file(p);
    }
}

/// `start`: returns the bytes to print on stdout.
pub fn start(flags: &Flags) -> Result<Vec<u8>, ManagerError> {
    if flags.namespace.is_empty() {
        return Err(ManagerError::NoNamespace);
    }
    if flags.id.is_empty() {
        return Err(ManagerError::NoId);
    }
    let mut stdin = Vec::new();
    std::io::stdin()
        .take(10 << 20)
        .read_to_end(&mut stdin)
        .map_err(io_err("stdin"))?;
    let input = parse_start_input(flags, &stdin, |k| std::env::var(k).ok())?;
    let cwd = std::env::current_dir().map_err(io_err("the working directory"))?;
    let group = group_of(&cwd, &flags.id)?;
    let address = socket_address(
        &input.socket_dir,
        &input.grpc_address,
        &flags.namespace,
        &group,
    );

    let listener = match listen(&address)? {
        Listen::Existing => {
            write_atomic(&cwd, "address", address.as_bytes())?;
            return Ok(reply(input.reply, &address));
        }
        Listen::New(l) => l,
    };
    let cleanup = |e: ManagerError| {
        remove_socket(&address);
        e
    };
    write_atomic(&cwd, "address", address.as_bytes()).map_err(cleanup)?;

    let exe = std::env::current_exe()
        .map_err(io_err("the shim's own path"))
        .map_err(cleanup)?;
    let mut cmd = Command::new(&exe);
    cmd.args([
        "-namespace",
        &flags.namespace,
        "-id",
        &flags.id,
        "-address",
        &input.grpc_address,
    ]);
    if !flags.publish_binary.is_empty() {
        cmd.args(["-publish-binary", &flags.publish_binary]);
    }
    if input.debug {
        cmd.arg("-debug");
    }
    cmd.current_dir(&cwd)
        .env("TTRPC_ADDRESS", &input.ttrpc_address)
        .env("GRPC_ADDRESS", &input.grpc_address)
        .env("NAMESPACE", &flags.namespace)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    pass_listener_as_fd3(&mut cmd, listener.as_raw_fd());
    let child = cmd.spawn().map_err(|source| {
        cleanup(ManagerError::Spawn {
            exe: exe.clone(),
            source,
        })
    })?;
    drop(listener);
    let pid = child.id();
    let fail = |e: ManagerError| {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid as i32),
            nix::sys::signal::Signal::SIGKILL,
        );
        remove_socket(&address);
        e
    };
    if !input.options.shim_cgroup.is_empty() {
        crate::cgroup::join_cgroup(&input.options.shim_cgroup, pid as i32)
            .map_err(|e| ManagerError::ShimCgroup {
                cgroup: input.options.shim_cgroup.clone(),
                source: std::io::Error::other(e.to_string()),
            })
            .map_err(fail)?;
    }
    adjust_oom_score(pid).map_err(fail)?;
    write_atomic(&cwd, "shim.pid", pid.to_string().as_bytes()).map_err(fail)?;
    Ok(reply(input.reply, &address))
}

fn reply(kind: StartReply, address: &str) -> Vec<u8> {
    match kind {
        StartReply::Plain => address.as_bytes().to_vec(),
        StartReply::Json => {
            serde_json::json!({"version": 3, "address": address, "protocol": "ttrpc"})
                .to_string()
                .into_bytes()
        }
        StartReply::Bootstrap => {
            let mut r = BootstrapResult::new();
            r.version = 3;
            r.address = address.to_string();
            r.protocol = "ttrpc".into();
            r.write_to_bytes().unwrap_or_default()
        }
    }
}

/// Makes the child see the listener as fd 3 and start its own session.
#[allow(unsafe_code)]
fn pass_listener_as_fd3(cmd: &mut Command, fd: i32) {
    // SAFETY: the closure runs in the forked child before exec and only calls the
    // async-signal-safe setsid(2), dup2(2) and fcntl(2); it touches no Rust-managed memory.
    unsafe {
        cmd.pre_exec(move || {
            if libc::setsid() < 0 {
                return Err(std::io::Error::last_os_error());
            }
            if fd == 3 {
                // dup2(3, 3) would keep FD_CLOEXEC; clear it instead.
                if libc::fcntl(3, libc::F_SETFD, 0) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
            } else if libc::dup2(fd, 3) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

/// containerd's `AdjustOOMScore`: the shim gets the daemon's (our parent's) score + 1, at
/// most 1000, so the OOM killer takes the shim before the daemon but after its containers.
pub fn adjust_oom_score(pid: u32) -> Result<(), ManagerError> {
    let parent = nix::unistd::getppid();
    let cur = std::fs::read_to_string(format!("/proc/{parent}/oom_score_adj"))
        .map_err(ManagerError::OomScore)?;
    let score: i32 = cur.trim().parse().map_err(|e| {
        ManagerError::OomScore(std::io::Error::other(format!("parsing {cur:?}: {e}")))
    })?;
    let shim = (score + 1).min(1000);
    std::fs::write(format!("/proc/{pid}/oom_score_adj"), shim.to_string())
        .map_err(ManagerError::OomScore)
}

/// `delete`: clean up a container whose shim is gone; returns the marshalled
/// `DeleteResponse` (pid from `init.pid`, status 137, now), like the Go manager's `Stop`.
pub async fn delete(flags: &Flags) -> Result<Vec<u8>, ManagerError> {
    if flags.namespace.is_empty() {
        return Err(ManagerError::NoNamespace);
    }
    let cwd = std::env::current_dir().map_err(io_err("the working directory"))?;
    let bundle = if flags.bundle.is_empty() {
        cwd.parent().map(|p| p.join(&flags.id)).unwrap_or(cwd)
    } else {
        PathBuf::from(&flags.bundle)
    };
    let opts = RuncOptions::read(&bundle)?;
    let runtime = crate::runtime::Runtime::new(&opts, &flags.namespace, &bundle);
    if let Err(e) = runtime.delete(&flags.id, true).await {
        log::warn!("failed to remove runc container {}: {e}", flags.id);
    }
    if let Err(e) = crate::mount::unmount_all(&bundle.join("rootfs")) {
        log::warn!("failed to cleanup rootfs mount: {e}");
    }
    // The dead shim could not remove its socket; do it unless a live (grouped) shim still
    // answers on it.
    if let Ok(address) = std::fs::read_to_string(bundle.join("address")) {
        if let Some(path) = socket_path(address.trim()) {
            if UnixStream::connect(path).is_err() {
                let _ = std::fs::remove_file(path);
            }
        }
    }
    let pid = std::fs::read_to_string(bundle.join("init.pid"))
        .ok()
        .and_then(|s| s.trim().parse::<u32>().ok())
        .unwrap_or(0);
    let mut resp = DeleteResponse::new();
    resp.pid = pid;
    resp.exit_status = 128 + libc::SIGKILL as u32;
    resp.exited_at = Some(crate::service::timestamp(SystemTime::now())).into();
    Ok(resp.write_to_bytes().unwrap_or_default())
}

/// `-v`: the version text containerd's shims print.
pub fn version_text() -> String {
    let exe = std::env::args()
        .next()
        .unwrap_or_else(|| "containerd-shim-runc-v2".into());
    let base = Path::new(&exe)
        .file_name()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or(exe);
    format!(
        "{base}:\n  Version:  {}\n  Revision: {}\n  Rust version: {}\n\n",
        env!("CARGO_PKG_VERSION"),
        match env!("BERTH_REVISION") {
            "" => "unknown",
            r => r,
        },
        env!("BERTH_RUSTC_VERSION")
    )
}

/// `-info`: runtime info for containerd's RuntimeInfo API (options echoed back, `runc
/// features` as the features `Any`).
pub async fn info() -> Result<Vec<u8>, ManagerError> {
    use containerd_shim_protos::types::introspection::{RuntimeInfo, RuntimeVersion};
    let mut stdin = Vec::new();
    std::io::stdin()
        .take(10 << 20)
        .read_to_end(&mut stdin)
        .map_err(io_err("stdin"))?;
    let mut info = RuntimeInfo::new();
    info.name = RUNTIME_NAME.into();
    let mut v = RuntimeVersion::new();
    v.version = env!("CARGO_PKG_VERSION").into();
    v.revision = "berth".into();
    info.version = Some(v).into();
    let mut opts = RuncOptions::default();
    if !stdin.is_empty() {
        let any = Any::parse_from_bytes(&stdin)
            .map_err(|e| ManagerError::Input(format!("runtime options on stdin: {e}")))?;
        opts = RuncOptions::from_any(Some(&any))?;
        info.options = Some(any).into();
    }
    let binary = opts.binary().to_string();
    let abs = lookup_path(&binary).ok_or_else(|| ManagerError::BinaryNotFound(binary.clone()))?;
    let runtime = crate::runtime::Runtime::with_binary(&abs);
    match runtime.features().await {
        Ok(json) => {
            let mut any = Any::new();
            any.type_url =
                "github.com/opencontainers/runtime-spec/specs-go/features/Features".into();
            any.value = json;
            info.features = Some(any).into();
        }
        // youki has no `features` command; the Go shim logs and goes on too.
        Err(e) => log::debug!("{binary} features: {e}"),
    }
    Ok(info.write_to_bytes().unwrap_or_default())
}

/// `exec.LookPath`: a name with a slash is used as is, otherwise searched in `PATH`.
pub fn lookup_path(name: &str) -> Option<PathBuf> {
    use std::os::unix::fs::MetadataExt;
    let is_exec = |p: &Path| {
        p.metadata()
            .is_ok_and(|m| m.is_file() && m.mode() & 0o111 != 0)
    };
    if name.contains('/') {
        let p = PathBuf::from(name);
        return is_exec(&p).then_some(p);
    }
    std::env::var_os("PATH")?
        .to_string_lossy()
        .split(':')
        .map(|d| Path::new(if d.is_empty() { "." } else { d }).join(name))
        .find(|p| is_exec(p))
}

/// Writes the bytes `start`/`delete`/`-info` produce to stdout.
pub fn print(data: &[u8]) -> std::io::Result<()> {
    let mut out = std::io::stdout().lock();
    out.write_all(data)?;
    out.flush()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clean_matches_go() {
        assert_eq!(go_clean("/run//containerd/./x/../y"), "/run/containerd/y");
        assert_eq!(go_join(&["", "default", "t1"]), "default/t1");
        assert_eq!(
            go_join(&["/run/containerd/containerd.sock", "default", "t1"]),
            "/run/containerd/containerd.sock/default/t1"
        );
        assert_eq!(go_clean("../a/.."), "..");
    }

    #[test]
    fn socket_address_is_containerds() {
        // sha256("/run/containerd/containerd.sock/default/t1")
        let a = socket_address(
            "/run/containerd/s",
            "/run/containerd/containerd.sock",
            "default",
            "t1",
        );
        let expected = hex::encode(Sha256::digest(
            b"/run/containerd/containerd.sock/default/t1",
        ));
        assert_eq!(a, format!("unix:///run/containerd/s/{expected}"));
        assert!(socket_path(&a).is_some_and(|p| p.len() < SOCKET_PATH_LIMIT));
    }

    fn flags() -> Flags {
        Flags {
            namespace: "default".into(),
            id: "t1".into(),
            address: "/run/containerd/containerd.sock".into(),
            ..Default::default()
        }
    }

    #[test]
    fn start_input_plain_for_containerd_1x() {
        let i = parse_start_input(&flags(), b"", |k| {
            (k == "TTRPC_ADDRESS").then(|| "/t".to_string())
        })
        .expect("parse");
        assert_eq!(i.reply, StartReply::Plain);
        assert_eq!(i.ttrpc_address, "/t");
        assert_eq!(reply(i.reply, "unix:///x"), b"unix:///x");
        let j = parse_start_input(&flags(), b"", |k| {
            (k == "MAX_SHIM_VERSION").then(|| "3".to_string())
        })
        .expect("parse");
        assert_eq!(j.reply, StartReply::Json);
        let v: serde_json::Value =
            serde_json::from_slice(&reply(j.reply, "unix:///x")).expect("json");
        assert_eq!(v["version"], 3);
        assert_eq!(v["protocol"], "ttrpc");
    }

    #[test]
    fn start_input_bootstrap_params_for_containerd_23() {
        let mut p = BootstrapParams::new();
        p.instance_id = "t1".into();
        p.namespace = "default".into();
        p.containerd_ttrpc_address = "/run/c.sock.ttrpc".into();
        p.socket_dir = Some("/run/c/s".into());
        p.log_level = LogLevel::LOG_LEVEL_DEBUG.into();
        let i = parse_start_input(&flags(), &p.write_to_bytes().expect("encode"), |_| None)
            .expect("parse");
        assert_eq!(i.reply, StartReply::Bootstrap);
        assert_eq!(i.ttrpc_address, "/run/c.sock.ttrpc");
        assert_eq!(i.socket_dir, "/run/c/s");
        assert!(i.debug);
        let r = BootstrapResult::parse_from_bytes(&reply(i.reply, "unix:///x")).expect("decode");
        assert_eq!(
            (r.version, r.address.as_str(), r.protocol.as_str()),
            (3, "unix:///x", "ttrpc")
        );
    }

    #[test]
    fn start_input_options_any_for_older_containerd() {
        let mut o = containerd_shim_protos::shim::oci::Options::new();
        o.binary_name = "youki".into();
        let any = crate::options::pack_any("containerd.runc.v1.Options", &o);
        let i = parse_start_input(&flags(), &any.write_to_bytes().expect("encode"), |_| None)
            .expect("parse");
        assert_eq!(i.reply, StartReply::Plain);
        assert_eq!(i.options.binary(), "youki");
    }

    #[test]
    fn grouping_annotation_wins() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(
            dir.path().join("config.json"),
            br#"{"annotations":{"io.kubernetes.cri.sandbox-id":"pod1"}}"#,
        )
        .expect("write");
        assert_eq!(group_of(dir.path(), "c1").expect("group"), "pod1");
        std::fs::write(dir.path().join("config.json"), br"{}").expect("write");
        assert_eq!(group_of(dir.path(), "c1").expect("group"), "c1");
        std::fs::write(dir.path().join("config.json"), b"{not json").expect("write");
        let e = group_of(dir.path(), "c1").expect_err("malformed");
        assert!(e.to_string().contains("config.json"), "{e}");
    }

    #[test]
    fn socket_is_filesystem_0600_in_0700_dir_and_reused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let sdir = dir.path().join("s");
        let addr = format!("unix://{}/abc", sdir.display());
        let Listen::New(l) = listen(&addr).expect("listen") else {
            panic!("expected a new socket")
        };
        let mode = |p: &Path| std::fs::metadata(p).expect("stat").permissions().mode() & 0o777;
        assert_eq!(mode(&sdir.join("abc")), 0o600);
        assert_eq!(mode(&sdir), 0o700);
        assert!(matches!(
            listen(&addr).expect("listen again"),
            Listen::Existing
        ));
        drop(l);
        // A stale socket file (nobody listening) is replaced.
        assert!(matches!(
            listen(&addr).expect("listen stale"),
            Listen::New(_)
        ));
        assert!(listen("/not/unix").is_err());
    }
}
