//! Typed async client for the runc CLI and runc-compatible runtimes (crun, youki).
//!
//! What lives where:
//! - [`Runc`] / [`RuncBuilder`] (this file): global options (binary, `--root`, `--log`,
//!   `--log-format`, `--systemd-cgroup`, `--rootless`, timeout) and one async method per
//!   runtime command: create, start, run, exec, kill, delete, state, list, ps, pause, resume,
//!   update, stats (`events --stats`), checkpoint, restore, features, version.
//! - [`options`]: typed per-command options rendering argv (unit-tested).
//! - [`spawn`]: the [`Spawner`] seam — who starts and reaps the runtime process. The shim,
//!   a subreaper with its own `waitpid(-1)` loop, plugs in its reaper; everyone else uses
//!   [`TokioSpawner`].
//! - `runner` (private): one call = build argv, spawn, feed stdin, collect
//!   stdout/stderr, enforce the timeout (SIGKILL + [`Error::Timeout`]), and on failure extract
//!   runc's last error message from its JSON log.
//! - [`types`]: JSON the runtime prints (state, list, events stats, version).
//! - [`console`]: the console socket receiving a pty master over `SCM_RIGHTS`.
//!
//! Nothing here keeps state between calls except the configuration; a [`Runc`] is cheap to
//! clone and safe to share across tasks.

pub mod console;
pub mod error;
pub mod options;
mod runner;
pub mod spawn;
mod tempdir;
pub mod types;

use std::ffi::{OsStr, OsString};
use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::ExitStatus;
use std::sync::Arc;
use std::time::Duration;

pub use console::ConsoleSocket;
pub use error::{Error, Result};
pub use options::{
    CgroupsMode, CheckpointOpts, CreateOpts, CriuOpts, DeleteOpts, ExecOpts, KillOpts, LogFormat,
    ProcessIo, RestoreOpts, RunOpts,
};
pub use spawn::{ExitFuture, Spawned, Spawner, TokioSpawner};
pub use types::{Container, ContainerStatus, Event, Stats, Version};

use runner::Call;
use tempdir::PrivateDir;

/// The default binary name, looked up in `PATH`.
pub const DEFAULT_BINARY: &str = "runc";

/// The default per-call timeout. Long enough for a slow `create` on a loaded machine, short
/// enough that a wedged runtime does not hang a shim forever. Foreground `run`/`exec` and
/// `restore` wait for the container process and therefore default to no timeout unless one is
/// set explicitly with [`Runc::with_timeout`].
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);

/// What a finished runtime process produced.
#[derive(Debug, Clone)]
pub struct Output {
    /// Raw exit status: [`ExitStatus::code`] for an exit code, `signal()` (from
    /// `std::os::unix::process::ExitStatusExt`) for a terminating signal.
    pub status: ExitStatus,
    /// Captured stdout (empty when stdout was not a pipe).
    pub stdout: Vec<u8>,
    /// Captured stderr (empty when stderr was not a pipe).
    pub stderr: Vec<u8>,
}

#[derive(Debug, Clone)]
struct Config {
    binary: PathBuf,
    root: Option<PathBuf>,
    log: Option<PathBuf>,
    log_format: LogFormat,
    debug: bool,
    systemd_cgroup: bool,
    rootless: Option<bool>,
    criu: Option<PathBuf>,
    timeout: Option<Duration>,
    /// Explicit timeout for waiting calls (run/exec in the foreground, restore).
    timeout_explicit: bool,
    pdeath_signal: Option<i32>,
    setpgid: bool,
}

/// Builder for [`Runc`]. Every option is optional; defaults match `runc` with no global flags
/// plus a [`DEFAULT_TIMEOUT`].
#[derive(Debug, Clone)]
pub struct RuncBuilder {
    config: Config,
    spawner: Arc<dyn Spawner>,
}

impl Default for RuncBuilder {
    fn default() -> Self {
        RuncBuilder {
            config: Config {
                binary: PathBuf::from(DEFAULT_BINARY),
                root: None,
                log: None,
                log_format: LogFormat::Json,
                debug: false,
                systemd_cgroup: false,
                rootless: None,
                criu: None,
                timeout: Some(DEFAULT_TIMEOUT),
                timeout_explicit: false,
                pdeath_signal: None,
                setpgid: false,
            },
            spawner: Arc::new(TokioSpawner),
        }
    }
}

impl RuncBuilder {
    /// The runtime binary: a path, or a name looked up in `PATH` (`runc`, `crun`, `youki`).
    #[must_use]
    pub fn binary(mut self, binary: impl Into<PathBuf>) -> Self {
        self.config.binary = binary.into();
        self
    }

    /// `--root`: the runtime's state directory (runc default `/run/runc`).
    #[must_use]
    pub fn root(mut self, root: impl Into<PathBuf>) -> Self {
        self.config.root = Some(root.into());
        self
    }

    /// `--log`: a log file shared by every call (containerd's shim uses `<bundle>/log.json`).
    /// Errors are extracted from the part written during the failing call. Without it, each
    /// call gets its own temporary JSON log, removed afterwards.
    #[must_use]
    pub fn log(mut self, log: impl Into<PathBuf>) -> Self {
        self.config.log = Some(log.into());
        self
    }

    /// `--log-format` for the file set with [`RuncBuilder::log`] (default JSON).
    #[must_use]
    pub fn log_format(mut self, format: LogFormat) -> Self {
        self.config.log_format = format;
        self
    }

    /// `--debug`.
    #[must_use]
    pub fn debug(mut self, on: bool) -> Self {
        self.config.debug = on;
        self
    }

    /// `--systemd-cgroup`: manage cgroups through systemd (cgroupsPath `slice:prefix:name`).
    #[must_use]
    pub fn systemd_cgroup(mut self, on: bool) -> Self {
        self.config.systemd_cgroup = on;
        self
    }

    /// `--rootless true|false`; `None` (default) leaves runc's auto-detection.
    #[must_use]
    pub fn rootless(mut self, rootless: Option<bool>) -> Self {
        self.config.rootless = rootless;
        self
    }

    /// `--criu`: path of the criu binary for checkpoint/restore.
    #[must_use]
    pub fn criu(mut self, criu: impl Into<PathBuf>) -> Self {
        self.config.criu = Some(criu.into());
        self
    }

    /// Per-call timeout (`None`: wait forever). Applies to every call, including foreground
    /// `run`/`exec`; see [`DEFAULT_TIMEOUT`] for the default behaviour.
    #[must_use]
    pub fn timeout(mut self, timeout: Option<Duration>) -> Self {
        self.config.timeout = timeout;
        self.config.timeout_explicit = true;
        self
    }

    /// Signal the runtime process receives when the thread that started it dies
    /// (`PR_SET_PDEATHSIG`; containerd's shim uses `SIGKILL`). Note it is tied to the
    /// *thread*, so only use it from a runtime whose threads live as long as the process.
    #[must_use]
    pub fn pdeath_signal(mut self, signal: Option<i32>) -> Self {
        self.config.pdeath_signal = signal;
        self
    }

    /// Start the runtime in its own process group; a timeout then kills the whole group
    /// (the runtime and anything it forked) instead of only the runtime's pid.
    #[must_use]
    pub fn setpgid(mut self, on: bool) -> Self {
        self.config.setpgid = on;
        self
    }

    /// Who starts and reaps runtime processes (default [`TokioSpawner`]).
    #[must_use]
    pub fn spawner(mut self, spawner: Arc<dyn Spawner>) -> Self {
        self.spawner = spawner;
        self
    }

    /// Finishes the builder.
    #[must_use]
    pub fn build(self) -> Runc {
        Runc {
            config: Arc::new(self.config),
            spawner: self.spawner,
        }
    }
}

/// A client for one runtime binary with one set of global options.
///
/// Each method runs the runtime once. Calls may run concurrently (they share nothing but the
/// configuration and, if set, the `--log` file). Dropping a call's future does not kill the
/// runtime process: it runs to completion and the [`Spawner`] still reaps it; use the
/// timeout to bound a call.
#[derive(Debug, Clone)]
pub struct Runc {
    config: Arc<Config>,
    spawner: Arc<dyn Spawner>,
}

impl Default for Runc {
    fn default() -> Self {
        RuncBuilder::default().build()
    }
}

/// Which timeout a call uses.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Waits {
    /// The call returns once the runtime has done its job: the configured timeout applies.
    Bounded,
    /// The call waits for the container process (foreground run/exec): only an explicitly
    /// configured timeout applies.
    ForContainer,
}

impl Runc {
    /// A builder with default options.
    #[must_use]
    pub fn builder() -> RuncBuilder {
        RuncBuilder::default()
    }

    /// The runtime binary in use.
    #[must_use]
    pub fn binary(&self) -> &Path {
        &self.config.binary
    }

    /// The `--root` state directory, if set.
    #[must_use]
    pub fn root(&self) -> Option<&Path> {
        self.config.root.as_deref()
    }

    /// A builder starting from this client's options and spawner, e.g. to derive a client
    /// with a per-container `--log` file.
    #[must_use]
    pub fn to_builder(&self) -> RuncBuilder {
        RuncBuilder {
            config: (*self.config).clone(),
            spawner: Arc::clone(&self.spawner),
        }
    }

    /// A copy of this client with another per-call timeout (`None`: no timeout).
    #[must_use]
    pub fn with_timeout(&self, timeout: Option<Duration>) -> Runc {
        let mut config = (*self.config).clone();
        config.timeout = timeout;
        config.timeout_explicit = true;
        Runc {
            config: Arc::new(config),
            spawner: Arc::clone(&self.spawner),
        }
    }

    /// Global flags, in runc's order, for a call logging to `log`.
    fn global_args(&self, log: Option<(&Path, LogFormat)>) -> Vec<OsString> {
        let c = &self.config;
        let mut a: Vec<OsString> = Vec::new();
        if let Some(root) = &c.root {
            a.push("--root".into());
            a.push(root.clone().into_os_string());
        }
        if let Some((path, format)) = log {
            a.push("--log".into());
            a.push(path.as_os_str().to_owned());
            a.push("--log-format".into());
            a.push(format.as_str().into());
        }
        if c.debug {
            a.push("--debug".into());
        }
        if c.systemd_cgroup {
            a.push("--systemd-cgroup".into());
        }
        if let Some(r) = c.rootless {
            // One argv element: runtimes with a boolean `--rootless` flag would take a
            // separate "false" for a positional argument.
            a.push(
                if r {
                    "--rootless=true"
                } else {
                    "--rootless=false"
                }
                .into(),
            );
        }
        if let Some(criu) = &c.criu {
            a.push("--criu".into());
            a.push(criu.clone().into_os_string());
        }
        a
    }

    fn timeout_for(&self, waits: Waits) -> Option<Duration> {
        match waits {
            Waits::Bounded => self.config.timeout,
            Waits::ForContainer if self.config.timeout_explicit => self.config.timeout,
            Waits::ForContainer => None,
        }
    }

    /// Runs one call and returns its output; a non-zero exit is an [`Error::CommandFailed`]
    /// unless `lenient` (foreground run/exec, where the exit code is the container's).
    async fn call(&self, call: Call, waits: Waits, lenient: bool) -> Result<Output> {
        runner::run(self, call, waits, lenient).await
    }

    /// Runs a call with null stdin, piped stdout/stderr, and fails on non-zero exit.
    async fn simple(&self, args: Vec<OsString>) -> Result<Output> {
        self.call(Call::new(args), Waits::Bounded, false).await
    }

    async fn simple_json<T: serde::de::DeserializeOwned>(
        &self,
        args: Vec<OsString>,
        what: &'static str,
    ) -> Result<T> {
        let out = self.simple(args.clone()).await?;
        serde_json::from_slice(&out.stdout).map_err(|source| Error::Decode {
            command: self.command_line(&args),
            what,
            output: truncate(&out.stdout),
            source,
        })
    }

    /// `binary [global flags] args` for messages (log flags of per-call logs omitted).
    fn command_line(&self, args: &[OsString]) -> String {
        let mut parts = vec![self
            .config
            .binary
            .as_os_str()
            .to_string_lossy()
            .into_owned()];
        parts.extend(
            self.global_args(
                self.config
                    .log
                    .as_deref()
                    .map(|p| (p, self.config.log_format)),
            )
            .iter()
            .chain(args)
            .map(|a| a.to_string_lossy().into_owned()),
        );
        parts.join(" ")
    }

    /// `create [opts] --bundle <bundle> <id>`: creates the container; its init waits for
    /// [`Runc::start`]. Without `opts.io`, the runtime and container get `/dev/null` stdio.
    ///
    /// # Errors
    /// [`Error::CommandFailed`] with runc's message (e.g. missing bundle, duplicate id).
    pub async fn create(&self, id: &str, bundle: &Path, opts: CreateOpts) -> Result<()> {
        check_id(id)?;
        let mut args = vec![os("create")];
        args.extend(opts.args());
        args.extend([os("--bundle"), bundle.as_os_str().to_owned(), os(id)]);
        let call = Call::new(args)
            .detached_io(opts.io)
            .extra_files(opts.extra_files);
        self.call(call, Waits::Bounded, false).await.map(drop)
    }

    /// `start <id>`: runs the user process of a created container.
    ///
    /// # Errors
    /// [`Error::CommandFailed`] when the container is not in the created state.
    pub async fn start(&self, id: &str) -> Result<()> {
        check_id(id)?;
        self.simple(vec![os("start"), os(id)]).await.map(drop)
    }

    /// `run [opts] --bundle <bundle> <id>`.
    ///
    /// Foreground (`detach: false`): waits for the container and returns its exit status in
    /// [`Output::status`] — a non-zero exit code of the container is *not* an error; only a
    /// runtime failure (an error in runc's log) is. Output is captured unless `opts.create.io`
    /// supplies fds. Foreground runs have no timeout unless one was set explicitly.
    /// Detached: like `create` + `start`, returns once the container runs.
    ///
    /// # Errors
    /// [`Error::CommandFailed`] when the runtime fails to create or start the container.
    pub async fn run(&self, id: &str, bundle: &Path, opts: RunOpts) -> Result<Output> {
        check_id(id)?;
        let mut args = vec![os("run")];
        args.extend(opts.args());
        args.extend([os("--bundle"), bundle.as_os_str().to_owned(), os(id)]);
        let RunOpts { create, detach, .. } = opts;
        let call = Call::new(args).extra_files(create.extra_files);
        if detach {
            self.call(call.detached_io(create.io), Waits::Bounded, false)
                .await
        } else {
            self.call(call.foreground_io(create.io), Waits::ForContainer, true)
                .await
        }
    }

    /// `exec --process <spec.json> [opts] <id>`: runs an extra process in the container.
    ///
    /// The process spec is written to a private temporary file. Foreground: waits and returns
    /// the process's exit status and captured output (non-zero exit is not an error; no
    /// timeout unless set explicitly). Detached (`--detach`, typically with `--pid-file`):
    /// returns once the process is started.
    ///
    /// # Errors
    /// [`Error::CommandFailed`] when the runtime fails (container not running, bad spec...).
    pub async fn exec(
        &self,
        id: &str,
        process: &oci_spec::runtime::Process,
        opts: ExecOpts,
    ) -> Result<Output> {
        check_id(id)?;
        let json = serde_json::to_vec(process).map_err(|source| Error::Encode {
            what: "the exec process spec",
            source,
        })?;
        let dir = PrivateDir::new("exec")?;
        let spec = dir.path().join("process.json");
        write_private(&spec, &json, "the exec process spec")?;
        let mut args = vec![os("exec"), os("--process"), spec.clone().into_os_string()];
        args.extend(opts.args());
        args.push(os(id));
        let call = Call::new(args).extra_files(opts.extra_files);
        let result = if opts.detach {
            self.call(call.detached_io(opts.io), Waits::Bounded, false)
                .await
        } else {
            self.call(call.foreground_io(opts.io), Waits::ForContainer, true)
                .await
        };
        drop(dir);
        result
    }

    /// `kill [--all] <id> <signal>`.
    ///
    /// # Errors
    /// [`Error::CommandFailed`] e.g. when the container does not exist or is stopped.
    pub async fn kill(&self, id: &str, signal: i32, opts: &KillOpts) -> Result<()> {
        check_id(id)?;
        let mut args = vec![os("kill")];
        args.extend(opts.args());
        args.extend([os(id), os(&signal.to_string())]);
        self.simple(args).await.map(drop)
    }

    /// `delete [--force] <id>`.
    ///
    /// # Errors
    /// [`Error::CommandFailed`] e.g. when the container is running and `force` is false.
    pub async fn delete(&self, id: &str, opts: &DeleteOpts) -> Result<()> {
        check_id(id)?;
        let mut args = vec![os("delete")];
        args.extend(opts.args());
        args.push(os(id));
        self.simple(args).await.map(drop)
    }

    /// `state <id>`.
    ///
    /// # Errors
    /// [`Error::CommandFailed`] when the container does not exist, [`Error::Decode`] on
    /// unexpected JSON.
    pub async fn state(&self, id: &str) -> Result<Container> {
        check_id(id)?;
        self.simple_json(vec![os("state"), os(id)], "container state JSON")
            .await
    }

    /// `list --format json`: every container under the root.
    ///
    /// # Errors
    /// [`Error::CommandFailed`], [`Error::Decode`].
    pub async fn list(&self) -> Result<Vec<Container>> {
        let args = vec![os("list"), os("--format"), os("json")];
        let out = self.simple(args.clone()).await?;
        match serde_json::from_slice::<Option<Vec<Container>>>(&out.stdout) {
            Ok(v) => Ok(v.unwrap_or_default()),
            // youki 0.7 ignores `--format json` and prints its table.
            Err(source) => types::parse_list_table(&String::from_utf8_lossy(&out.stdout))
                .ok_or_else(|| Error::Decode {
                    command: self.command_line(&args),
                    what: "container list JSON",
                    output: truncate(&out.stdout),
                    source,
                }),
        }
    }

    /// `ps --format json <id>`: pids of the processes in the container's cgroup.
    ///
    /// # Errors
    /// [`Error::CommandFailed`], [`Error::Decode`].
    pub async fn ps(&self, id: &str) -> Result<Vec<i32>> {
        check_id(id)?;
        let v: Option<Vec<i32>> = self
            .simple_json(
                vec![os("ps"), os("--format"), os("json"), os(id)],
                "ps pid list JSON",
            )
            .await?;
        Ok(v.unwrap_or_default())
    }

    /// `pause <id>`: freezes every process in the container.
    ///
    /// # Errors
    /// [`Error::CommandFailed`].
    pub async fn pause(&self, id: &str) -> Result<()> {
        check_id(id)?;
        self.simple(vec![os("pause"), os(id)]).await.map(drop)
    }

    /// `resume <id>`: thaws a paused container.
    ///
    /// # Errors
    /// [`Error::CommandFailed`].
    pub async fn resume(&self, id: &str) -> Result<()> {
        check_id(id)?;
        self.simple(vec![os("resume"), os(id)]).await.map(drop)
    }

    /// `update --resources - <id>` with `resources` as JSON on stdin.
    ///
    /// # Errors
    /// [`Error::Encode`], [`Error::CommandFailed`].
    pub async fn update(
        &self,
        id: &str,
        resources: &oci_spec::runtime::LinuxResources,
    ) -> Result<()> {
        check_id(id)?;
        let json = serde_json::to_vec(resources).map_err(|source| Error::Encode {
            what: "the resources for update",
            source,
        })?;
        let args = vec![os("update"), os("--resources"), os("-"), os(id)];
        self.call(Call::new(args).stdin_bytes(json), Waits::Bounded, false)
            .await
            .map(drop)
    }

    /// `update --resources <file> <id>` with a resources JSON file prepared by the caller.
    ///
    /// # Errors
    /// [`Error::CommandFailed`].
    pub async fn update_from_file(&self, id: &str, resources_json: &Path) -> Result<()> {
        check_id(id)?;
        self.simple(vec![
            os("update"),
            os("--resources"),
            resources_json.as_os_str().to_owned(),
            os(id),
        ])
        .await
        .map(drop)
    }

    /// `events --stats <id>`: one statistics snapshot (runc `types.Stats`).
    ///
    /// # Errors
    /// [`Error::CommandFailed`], [`Error::Decode`], [`Error::UnexpectedOutput`] when the event
    /// carries no data.
    pub async fn stats(&self, id: &str) -> Result<Stats> {
        check_id(id)?;
        let args = vec![os("events"), os("--stats"), os(id)];
        let ev: Event = self
            .simple_json(args.clone(), "events --stats JSON")
            .await?;
        ev.data.ok_or_else(|| Error::UnexpectedOutput {
            command: self.command_line(&args),
            reason: format!("event of type {:?} has no data", ev.kind),
            output: String::new(),
        })
    }

    /// `checkpoint [opts] <id>` (needs criu).
    ///
    /// # Errors
    /// [`Error::CommandFailed`] with criu's/runc's message.
    pub async fn checkpoint(&self, id: &str, opts: &CheckpointOpts) -> Result<()> {
        check_id(id)?;
        let mut args = vec![os("checkpoint")];
        args.extend(opts.args());
        args.push(os(id));
        self.call(Call::new(args), Waits::ForContainer, false)
            .await
            .map(drop)
    }

    /// `restore [opts] <id>` (needs criu). Detached returns once restored; foreground waits
    /// for the restored container and returns its exit status like [`Runc::run`].
    ///
    /// # Errors
    /// [`Error::CommandFailed`].
    pub async fn restore(&self, id: &str, opts: RestoreOpts) -> Result<Output> {
        check_id(id)?;
        let mut args = vec![os("restore")];
        args.extend(opts.args());
        args.push(os(id));
        let call = Call::new(args);
        if opts.detach {
            self.call(call.detached_io(opts.io), Waits::ForContainer, false)
                .await
        } else {
            self.call(call.foreground_io(opts.io), Waits::ForContainer, true)
                .await
        }
    }

    /// `features`: what the runtime supports (OCI runtime-spec `features` document).
    ///
    /// # Errors
    /// [`Error::CommandFailed`] (runc < 1.1 has no `features`), [`Error::Decode`].
    pub async fn features(&self) -> Result<oci_spec::runtime::Features> {
        self.simple_json(vec![os("features")], "features JSON")
            .await
    }

    /// `--version`, parsed.
    ///
    /// # Errors
    /// [`Error::Spawn`] when the binary is missing, [`Error::UnexpectedOutput`].
    pub async fn version(&self) -> Result<Version> {
        let args = vec![os("--version")];
        let out = self.simple(args.clone()).await?;
        let text = String::from_utf8_lossy(&out.stdout);
        Version::parse(&text).map_err(|reason| Error::UnexpectedOutput {
            command: self.command_line(&args),
            reason,
            output: text.into_owned(),
        })
    }
}

fn os(s: &str) -> OsString {
    OsStr::new(s).to_owned()
}

/// Container ids become argv elements and state directory names: reject what the runtime
/// would misread as a flag or a path before anything runs.
fn check_id(id: &str) -> Result<()> {
    if id.is_empty() || id.starts_with('-') || id.contains('/') || id == "." || id == ".." {
        return Err(Error::InvalidArgument(format!(
            "container id {id:?} must be non-empty, must not start with '-' and must not contain '/'"
        )));
    }
    Ok(())
}

fn write_private(path: &Path, data: &[u8], what: &'static str) -> Result<()> {
    let err = |source| Error::TempFile {
        what,
        path: path.to_path_buf(),
        source,
    };
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(err)?;
    f.write_all(data).map_err(err)
}

fn truncate(bytes: &[u8]) -> String {
    const MAX: usize = 2048;
    let s = String::from_utf8_lossy(bytes);
    if s.len() <= MAX {
        s.into_owned()
    } else {
        let mut end = MAX;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        format!("{}… ({} bytes)", &s[..end], bytes.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn global_args_render_in_order() {
        let r = Runc::builder()
            .binary("/usr/sbin/runc")
            .root("/run/berth/runc")
            .debug(true)
            .systemd_cgroup(true)
            .rootless(Some(false))
            .criu("/usr/sbin/criu")
            .build();
        let a = r.global_args(Some((Path::new("/b/log.json"), LogFormat::Json)));
        let a: Vec<_> = a.iter().map(|s| s.to_str().unwrap()).collect();
        assert_eq!(
            a,
            [
                "--root",
                "/run/berth/runc",
                "--log",
                "/b/log.json",
                "--log-format",
                "json",
                "--debug",
                "--systemd-cgroup",
                "--rootless=false",
                "--criu",
                "/usr/sbin/criu"
            ]
        );
        assert!(Runc::default().global_args(None).is_empty());
    }

    #[test]
    fn command_line_names_binary_and_args() {
        let r = Runc::builder().binary("youki").root("/r").build();
        assert_eq!(
            r.command_line(&[os("state"), os("c1")]),
            "youki --root /r state c1"
        );
    }

    #[test]
    fn bad_ids_are_rejected() {
        for id in ["", "-rf", "a/b", "..", "."] {
            assert!(
                matches!(check_id(id), Err(Error::InvalidArgument(_))),
                "{id}"
            );
        }
        check_id("berth-1_a.b").unwrap();
    }

    #[test]
    fn timeouts_per_kind() {
        let r = Runc::default();
        assert_eq!(r.timeout_for(Waits::Bounded), Some(DEFAULT_TIMEOUT));
        assert_eq!(r.timeout_for(Waits::ForContainer), None);
        let r = r.with_timeout(Some(Duration::from_secs(3)));
        assert_eq!(
            r.timeout_for(Waits::ForContainer),
            Some(Duration::from_secs(3))
        );
    }
}
