//! Finding and invoking shim binaries (containerd `runtime/v2/binary.go`,
//! `runtime/v2/shim/util.go`, v2.x `core/runtime/v2/shim.go` `parseStartResponse`).
//!
//! `<shim> -namespace <ns> -address <grpc> -publish-binary <berthd> -id <id> [-debug] start`
//! runs in the bundle directory with `TTRPC_ADDRESS`, `GRPC_ADDRESS`, `NAMESPACE` and
//! `MAX_SHIM_VERSION` set, forks the long-lived shim (in its own session) and prints how to
//! reach it: a plain address (containerd 1.x shims), JSON `{"version","address","protocol"}`
//! (1.7/2.0 shims) or a protobuf `BootstrapResult` (2.3 shims). `<shim> … -bundle <b> delete`
//! cleans up after a shim that is gone and prints a protobuf `DeleteResponse`.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use containerd_shim_protos::protobuf::Message as _;
use serde::{Deserialize, Serialize};
use tokio::io::AsyncReadExt;

use super::bundle::Bundle;
use super::{Error, Exit, Result};

/// The highest task API version berthd speaks (`containerd.task.v3.Task`).
pub const MAX_TASK_API: i32 = 3;

/// `io.containerd.<name>.<version>` → `containerd-shim-<name>-<version>`; `None` for a name
/// that does not have at least two dot-separated parts (containerd `shim.BinaryName`).
pub fn binary_name(runtime: &str) -> Option<String> {
    let parts: Vec<&str> = runtime.split('.').collect();
    if parts.len() < 2 || parts[0].is_empty() {
        return None;
    }
    Some(format!(
        "containerd-shim-{}-{}",
        parts[parts.len() - 2],
        parts[parts.len() - 1]
    ))
}

/// Resolve a runtime name or absolute path to a shim binary, as containerd's
/// `ShimManager.resolveRuntimePath`: an absolute path must exist; otherwise the binary next
/// to the name's directory part, then `PATH`, then the directory of berthd's own executable.
pub fn resolve(runtime: &str, path_env: Option<&str>) -> Result<PathBuf> {
    if runtime.is_empty() {
        return Err(Error::InvalidRuntimeName {
            runtime: runtime.into(),
        });
    }
    let as_path = Path::new(runtime);
    if as_path.is_absolute() {
        std::fs::metadata(as_path).map_err(|source| Error::InvalidShimPath {
            path: as_path.into(),
            source,
        })?;
        return Ok(as_path.into());
    }
    let name = binary_name(runtime).ok_or_else(|| Error::InvalidRuntimeName {
        runtime: runtime.into(),
    })?;
    // containerd's BinaryPath: the name joined to the runtime's directory part (for a
    // plain name that is the working directory).
    if let Some(dir) = as_path.parent().filter(|d| !d.as_os_str().is_empty()) {
        let candidate = dir.join(&name);
        if candidate.is_file() {
            return std::path::absolute(&candidate)
                .map_err(|e| Error::io("resolve shim path", &candidate, e));
        }
    }
    let path_env = path_env
        .map(str::to_string)
        .or_else(|| std::env::var("PATH").ok())
        .unwrap_or_default();
    for dir in std::env::split_paths(&path_env) {
        let candidate = dir.join(&name);
        if is_executable(&candidate) {
            return Ok(candidate);
        }
    }
    if let Some(dir) = std::env::current_exe()
        .ok()
        .as_deref()
        .and_then(Path::parent)
    {
        let candidate = dir.join(&name);
        if is_executable(&candidate) {
            return Ok(candidate);
        }
    }
    Err(Error::ShimNotInstalled {
        runtime: runtime.into(),
        binary: name,
    })
}

/// Find a plain binary name (or absolute path) on `PATH`, as `exec.LookPath`.
pub fn resolve_plain(name: &str, path_env: Option<&str>) -> Option<PathBuf> {
    if Path::new(name).is_absolute() {
        return is_executable(Path::new(name)).then(|| PathBuf::from(name));
    }
    let path_env = path_env
        .map(str::to_string)
        .or_else(|| std::env::var("PATH").ok())
        .unwrap_or_default();
    std::env::split_paths(&path_env)
        .map(|d| d.join(name))
        .find(|p| is_executable(p))
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// How to reach a started shim (containerd's `BootstrapResult`), saved as `bootstrap.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BootstrapParams {
    /// Task API version: 2 (`containerd.task.v2.Task`) or 3 (`containerd.task.v3.Task`).
    pub version: i32,
    /// Socket address, `unix:///run/...`.
    pub address: String,
    /// Only `ttrpc` is supported.
    pub protocol: String,
}

/// Parse what `<shim> start` printed (containerd v2 `parseStartResponse`, made unambiguous:
/// JSON if it looks like JSON, a plain address if it looks like one, else protobuf).
pub fn parse_start_reply(out: &[u8]) -> std::result::Result<BootstrapParams, String> {
    let trimmed = out.trim_ascii();
    if trimmed.is_empty() {
        return Err("empty reply".into());
    }
    let params = if trimmed.first() == Some(&b'{') {
        #[derive(Deserialize)]
        struct Json {
            version: i32,
            address: String,
            #[serde(default)]
            protocol: String,
        }
        let j: Json =
            serde_json::from_slice(trimmed).map_err(|e| format!("bad JSON bootstrap: {e}"))?;
        if j.version < 2 {
            BootstrapParams {
                version: 2,
                address: String::from_utf8_lossy(trimmed).into(),
                protocol: "ttrpc".into(),
            }
        } else {
            BootstrapParams {
                version: j.version,
                address: j.address,
                protocol: j.protocol,
            }
        }
    } else if trimmed.starts_with(b"unix://")
        || trimmed.starts_with(b"/")
        || trimmed.starts_with(b"vsock://")
    {
        BootstrapParams {
            version: 2,
            address: String::from_utf8_lossy(trimmed).into(),
            protocol: "ttrpc".into(),
        }
    } else {
        // 2.3 shims write a protobuf BootstrapResult (untrimmed: it is binary).
        let r = containerd_shim_protos::bootstrap_api::BootstrapResult::parse_from_bytes(out)
            .map_err(|e| format!("neither an address, JSON nor a BootstrapResult: {e}"))?;
        if r.address.is_empty() {
            return Err(format!(
                "BootstrapResult without address: {:?}",
                String::from_utf8_lossy(out)
            ));
        }
        BootstrapParams {
            version: r.version.max(2),
            address: r.address,
            protocol: r.protocol,
        }
    };
    if params.version > MAX_TASK_API {
        return Err(format!(
            "unsupported shim version {} (berthd speaks up to {MAX_TASK_API})",
            params.version
        ));
    }
    let protocol = if params.protocol.is_empty() {
        "ttrpc".to_string()
    } else {
        params.protocol.to_lowercase()
    };
    if protocol != "ttrpc" {
        return Err(format!(
            "unsupported shim protocol {protocol:?}: berthd speaks ttrpc"
        ));
    }
    Ok(BootstrapParams { protocol, ..params })
}

/// The fixed parameters of every shim invocation.
#[derive(Debug, Clone)]
pub struct ShimCommand {
    /// The shim binary.
    pub binary: PathBuf,
    /// berthd's gRPC socket (`-address`, `GRPC_ADDRESS`).
    pub grpc_address: String,
    /// berthd's ttrpc socket for shim events (`TTRPC_ADDRESS`).
    pub ttrpc_address: String,
    /// What shims exec to publish events (`-publish-binary`): berthd itself.
    pub publish_binary: PathBuf,
    /// Pass `-debug`.
    pub debug: bool,
}

impl ShimCommand {
    fn command(
        &self,
        bundle: &Bundle,
        action: &str,
        with_bundle_flag: bool,
    ) -> tokio::process::Command {
        let mut cmd = tokio::process::Command::new(&self.binary);
        cmd.arg("-namespace").arg(&bundle.namespace);
        cmd.arg("-address").arg(&self.grpc_address);
        cmd.arg("-publish-binary").arg(&self.publish_binary);
        cmd.arg("-id").arg(&bundle.id);
        if with_bundle_flag {
            cmd.arg("-bundle").arg(&bundle.path);
        }
        if self.debug {
            cmd.arg("-debug");
        }
        cmd.arg(action);
        cmd.current_dir(&bundle.path);
        cmd.env("GOMAXPROCS", "2");
        // containerd 2.x sends 2 here too: it bounds the bootstrap *format* (JSON v2), the
        // task API version comes back in the reply.
        cmd.env("MAX_SHIM_VERSION", "2");
        cmd.env("TTRPC_ADDRESS", &self.ttrpc_address);
        cmd.env("GRPC_ADDRESS", &self.grpc_address);
        cmd.env("NAMESPACE", &bundle.namespace);
        // Not in berthd's process group: a signal to berthd's group (systemd KillMode, ^C)
        // must not reach shims.
        cmd.process_group(0);
        cmd.kill_on_drop(true);
        cmd
    }

    /// Run `<shim> start` and parse its reply. `opts` (runtime options, encoded `Any`) go on
    /// stdin only for `*-v1` shims, which read them there; newer shims get them with
    /// `Create` (and 2.3 shims would misparse them as bootstrap parameters).
    pub async fn start(
        &self,
        bundle: &Bundle,
        opts: Option<&[u8]>,
        timeout: Duration,
    ) -> Result<BootstrapParams> {
        let mut cmd = self.command(bundle, "start", false);
        let v1 = self
            .binary
            .file_name()
            .is_some_and(|n| n.to_string_lossy().contains("shim-runc-v1"));
        let stdin = if v1 { opts } else { None };
        cmd.stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        });
        let (status, out) = run(cmd, stdin, timeout)
            .await
            .map_err(|status| self.start_error(bundle, status, String::new()))?;
        if !status.0 {
            return Err(self.start_error(
                bundle,
                status.1,
                String::from_utf8_lossy(&out).trim().to_string(),
            ));
        }
        parse_start_reply(&out).map_err(|reason| Error::BadStartReply {
            id: bundle.id.clone(),
            binary: self.binary.clone(),
            reason,
        })
    }

    fn start_error(&self, bundle: &Bundle, status: String, output: String) -> Error {
        Error::ShimStart {
            id: bundle.id.clone(),
            binary: self.binary.clone(),
            status,
            output,
        }
    }

    /// Run `<shim> -bundle <b> delete` for a shim that is gone: the shim kills and deletes
    /// the container with the OCI runtime, unmounts the rootfs and reports the exit.
    pub async fn delete(&self, bundle: &Bundle, timeout: Duration) -> Result<Exit> {
        let mut cmd = self.command(bundle, "delete", true);
        cmd.stdin(Stdio::null());
        let err = |reason: String| Error::ShimDelete {
            id: bundle.id.clone(),
            binary: self.binary.clone(),
            reason,
        };
        let child_out = run_split(cmd, timeout).await.map_err(err)?;
        let (ok, status, stdout, stderr) = child_out;
        if !ok {
            return Err(err(format!(
                "{status}: {}",
                String::from_utf8_lossy(&stderr).trim()
            )));
        }
        if !stderr.is_empty() {
            log::warn!(
                "shim delete {}/{}: cleanup warnings: {}",
                bundle.namespace,
                bundle.id,
                String::from_utf8_lossy(&stderr).trim()
            );
        }
        let resp = containerd_shim_protos::api::DeleteResponse::parse_from_bytes(&stdout)
            .map_err(|e| err(format!("bad DeleteResponse: {e}")))?;
        Ok(Exit {
            pid: resp.pid,
            status: resp.exit_status,
            timestamp: resp.exited_at.as_ref().map(|t| prost_types::Timestamp {
                seconds: t.seconds,
                nanos: t.nanos,
            }),
        })
    }
}

/// Spawn, feed stdin, collect combined stdout+stderr, bounded by `timeout`.
/// Returns ((success, status text), output) or the spawn/timeout error text.
async fn run(
    mut cmd: tokio::process::Command,
    stdin: Option<&[u8]>,
    timeout: Duration,
) -> std::result::Result<((bool, String), Vec<u8>), String> {
    // One pipe for both streams, as Go's CombinedOutput.
    let (reader, writer) = std::io::pipe().map_err(|e| format!("pipe: {e}"))?;
    let writer2 = writer.try_clone().map_err(|e| format!("pipe: {e}"))?;
    cmd.stdout(writer).stderr(writer2);
    let mut child = cmd.spawn().map_err(|e| format!("spawn: {e}"))?;
    // Drop our copies of the write end (they live in `cmd`).
    drop(cmd);
    if let (Some(data), Some(mut input)) = (stdin, child.stdin.take()) {
        use tokio::io::AsyncWriteExt;
        let _ = input.write_all(data).await;
    }
    let reader = tokio::net::unix::pipe::Receiver::from_owned_fd(reader.into())
        .map_err(|e| format!("pipe: {e}"))?;
    // Collect incrementally: a shim whose long-lived child keeps the pipe open never sends
    // EOF, so after the start helper exits we take what arrived within a short grace period.
    let buf = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let sink = buf.clone();
    let reading = tokio::spawn(async move {
        let mut reader = reader;
        let mut chunk = [0u8; 4096];
        loop {
            match reader.read(&mut chunk).await {
                Ok(0) | Err(_) => break,
                Ok(n) => sink
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .extend_from_slice(&chunk[..n]),
            }
        }
    });
    let waited = tokio::time::timeout(timeout, child.wait()).await;
    let status = match waited {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            reading.abort();
            return Err(format!("wait: {e}"));
        }
        Err(_) => {
            reading.abort();
            let _ = child.kill().await;
            return Err(format!("did not finish within {timeout:?} (killed)"));
        }
    };
    let mut reading = reading;
    if tokio::time::timeout(Duration::from_millis(500), &mut reading)
        .await
        .is_err()
    {
        reading.abort();
    }
    let out = std::mem::take(
        &mut *buf
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner),
    );
    Ok(((status.success(), status.to_string()), out))
}

/// Spawn, collect stdout and stderr separately, bounded by `timeout`.
async fn run_split(
    mut cmd: tokio::process::Command,
    timeout: Duration,
) -> std::result::Result<(bool, String, Vec<u8>, Vec<u8>), String> {
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    let child = cmd.spawn().map_err(|e| format!("spawn: {e}"))?;
    let out = tokio::time::timeout(timeout, child.wait_with_output())
        .await
        .map_err(|_| format!("did not finish within {timeout:?} (killed)"))?
        .map_err(|e| format!("wait: {e}"))?;
    Ok((
        out.status.success(),
        out.status.to_string(),
        out.stdout,
        out.stderr,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_resolve_like_containerd() {
        assert_eq!(
            binary_name("io.containerd.runc.v2").as_deref(),
            Some("containerd-shim-runc-v2")
        );
        assert_eq!(
            binary_name("io.containerd.runc.v1").as_deref(),
            Some("containerd-shim-runc-v1")
        );
        assert_eq!(
            binary_name("io.containerd.kata.v2").as_deref(),
            Some("containerd-shim-kata-v2")
        );
        assert_eq!(
            binary_name("foo.bar").as_deref(),
            Some("containerd-shim-foo-bar")
        );
        assert_eq!(binary_name("runc"), None);
        assert_eq!(binary_name(".x"), None);
    }

    #[test]
    fn resolve_uses_path_and_reports_missing_binary() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let shim = tmp.path().join("containerd-shim-test-v9");
        std::fs::write(&shim, "#!/bin/sh\n").expect("write");
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&shim, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        let path = tmp.path().to_string_lossy().to_string();
        assert_eq!(
            resolve("io.containerd.test.v9", Some(&path)).expect("found"),
            shim
        );
        assert_eq!(
            resolve(shim.to_str().expect("utf8"), None).expect("abs"),
            shim
        );
        let err = resolve("io.containerd.nope.v1", Some(&path)).expect_err("missing");
        assert!(err.to_string().contains("containerd-shim-nope-v1"), "{err}");
        assert!(matches!(
            resolve("/no/such/shim", None),
            Err(Error::InvalidShimPath { .. })
        ));
        assert!(matches!(
            resolve("runc", None),
            Err(Error::InvalidRuntimeName { .. })
        ));
    }

    #[test]
    fn start_replies_of_every_shim_generation_parse() {
        let p = parse_start_reply(b"unix:///run/containerd/s/abc\n").expect("text");
        assert_eq!(
            (p.version, p.address.as_str()),
            (2, "unix:///run/containerd/s/abc")
        );
        let p = parse_start_reply(br#"{"version":3,"address":"unix:///x","protocol":"ttrpc"}"#)
            .expect("json");
        assert_eq!((p.version, p.address.as_str()), (3, "unix:///x"));
        let mut r = containerd_shim_protos::bootstrap_api::BootstrapResult::new();
        r.version = 3;
        r.address = "unix:///run/containerd/s/def".into();
        r.protocol = "ttrpc".into();
        let bytes = r.write_to_bytes().expect("encode");
        let p = parse_start_reply(&bytes).expect("proto");
        assert_eq!(
            (p.version, p.address.as_str()),
            (3, "unix:///run/containerd/s/def")
        );
        assert!(
            parse_start_reply(br#"{"version":4,"address":"unix:///x","protocol":"ttrpc"}"#)
                .is_err()
        );
        assert!(parse_start_reply(br#"{"version":2,"address":"x","protocol":"grpc"}"#).is_err());
        assert!(parse_start_reply(b"").is_err());
    }
}
