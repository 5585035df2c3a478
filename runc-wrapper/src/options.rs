//! Typed options for each runtime command, and their rendering to argv.
//!
//! Every option struct has an `args()` method returning the flags it adds, in a fixed order,
//! so the rendering is unit-testable without a runtime. Flag names are runc's (1.1), which
//! crun and youki accept too. File descriptors meant for the runtime's stdio live in
//! [`ProcessIo`]; they are not argv and are handed to the spawner separately.

use std::ffi::OsString;
use std::os::fd::OwnedFd;
use std::path::PathBuf;

/// Format of the runtime's `--log` file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogFormat {
    /// `--log-format json`: one JSON object per line (`{"level":"error","msg":...}`); this is
    /// what containerd's shim uses and what the error extraction understands best.
    #[default]
    Json,
    /// `--log-format text`: logrus text lines (`level=error msg="..."`).
    Text,
}

impl LogFormat {
    /// The value passed to `--log-format`.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            LogFormat::Json => "json",
            LogFormat::Text => "text",
        }
    }
}

/// Stdio for the runtime process (and, for `create`/`run`/`exec`/`restore` without a terminal,
/// for the container process, which inherits it).
///
/// `None` for a stream means: captured through a pipe for foreground commands, `/dev/null`
/// for detached ones (a detached container must not inherit a pipe nobody reads).
#[derive(Debug, Default)]
pub struct ProcessIo {
    /// The process's stdin.
    pub stdin: Option<OwnedFd>,
    /// The process's stdout.
    pub stdout: Option<OwnedFd>,
    /// The process's stderr.
    pub stderr: Option<OwnedFd>,
}

fn push_path(args: &mut Vec<OsString>, flag: &str, value: Option<&PathBuf>) {
    if let Some(v) = value {
        args.push(flag.into());
        args.push(v.clone().into_os_string());
    }
}

/// Like [`push_path`], made absolute against our working directory first: runc resolves some
/// paths after `chdir(bundle)` (go-runc makes pid files absolute for the same reason).
fn push_abs_path(args: &mut Vec<OsString>, flag: &str, value: Option<&PathBuf>) {
    if let Some(v) = value {
        args.push(flag.into());
        let abs = std::path::absolute(v).unwrap_or_else(|_| v.clone());
        args.push(abs.into_os_string());
    }
}

fn push_flag(args: &mut Vec<OsString>, flag: &str, on: bool) {
    if on {
        args.push(flag.into());
    }
}

/// Options for `runc create` (container created, init waiting for `start`).
#[derive(Debug, Default)]
pub struct CreateOpts {
    /// `--pid-file`: where the runtime writes the container init's pid.
    pub pid_file: Option<PathBuf>,
    /// `--console-socket`: unix socket receiving the pty master (spec `terminal: true`).
    /// See [`crate::ConsoleSocket`].
    pub console_socket: Option<PathBuf>,
    /// `--no-pivot`: use `MS_MOVE` instead of `pivot_root` (rootfs on ramfs).
    pub no_pivot: bool,
    /// `--no-new-keyring`: do not create a new session keyring.
    pub no_new_keyring: bool,
    /// Extra file descriptors passed to the container as fds 3, 4, … (`--preserve-fds N`).
    pub extra_files: Vec<OwnedFd>,
    /// Stdio for the runtime and the container process.
    pub io: ProcessIo,
}

impl CreateOpts {
    /// Flags for `create` (and the shared part of `run`), without bundle and id.
    #[must_use]
    pub fn args(&self) -> Vec<OsString> {
        let mut a = Vec::new();
        push_abs_path(&mut a, "--pid-file", self.pid_file.as_ref());
        push_abs_path(&mut a, "--console-socket", self.console_socket.as_ref());
        push_flag(&mut a, "--no-pivot", self.no_pivot);
        push_flag(&mut a, "--no-new-keyring", self.no_new_keyring);
        if !self.extra_files.is_empty() {
            a.push("--preserve-fds".into());
            a.push(self.extra_files.len().to_string().into());
        }
        a
    }
}

/// Options for `runc run` (create + start in one call).
#[derive(Debug, Default)]
pub struct RunOpts {
    /// Everything `create` takes.
    pub create: CreateOpts,
    /// `--detach`: return once the container is started instead of waiting for it.
    pub detach: bool,
    /// `--keep`: keep the container's state after it exits (foreground only).
    pub keep: bool,
    /// `--no-subreaper`: runc does not become a subreaper for the container.
    pub no_subreaper: bool,
}

impl RunOpts {
    /// Flags for `run`, without bundle and id.
    #[must_use]
    pub fn args(&self) -> Vec<OsString> {
        let mut a = self.create.args();
        push_flag(&mut a, "--detach", self.detach);
        push_flag(&mut a, "--keep", self.keep);
        push_flag(&mut a, "--no-subreaper", self.no_subreaper);
        a
    }
}

/// Options for `runc exec --process <file>` (the process spec is a separate argument).
#[derive(Debug, Default)]
pub struct ExecOpts {
    /// `--detach`: return once the process is started.
    pub detach: bool,
    /// `--pid-file`: where the runtime writes the new process's pid.
    pub pid_file: Option<PathBuf>,
    /// `--console-socket`: receives the pty master when the process spec has `terminal: true`.
    pub console_socket: Option<PathBuf>,
    /// Extra file descriptors passed as fds 3, 4, … (`--preserve-fds N`).
    pub extra_files: Vec<OwnedFd>,
    /// Stdio for the runtime and the new process.
    pub io: ProcessIo,
}

impl ExecOpts {
    /// Flags for `exec`, without `--process`, and id.
    #[must_use]
    pub fn args(&self) -> Vec<OsString> {
        let mut a = Vec::new();
        push_abs_path(&mut a, "--pid-file", self.pid_file.as_ref());
        push_abs_path(&mut a, "--console-socket", self.console_socket.as_ref());
        push_flag(&mut a, "--detach", self.detach);
        if !self.extra_files.is_empty() {
            a.push("--preserve-fds".into());
            a.push(self.extra_files.len().to_string().into());
        }
        a
    }
}

/// Options for `runc kill <id> <signal>`.
#[derive(Debug, Default, Clone, Copy)]
pub struct KillOpts {
    /// `--all`: signal every process in the container's cgroup, not just init.
    pub all: bool,
}

impl KillOpts {
    /// Flags for `kill`, without id and signal.
    #[must_use]
    pub fn args(&self) -> Vec<OsString> {
        let mut a = Vec::new();
        push_flag(&mut a, "--all", self.all);
        a
    }
}

/// Options for `runc delete`.
#[derive(Debug, Default, Clone, Copy)]
pub struct DeleteOpts {
    /// `--force`: kill a running container (SIGKILL) before deleting it.
    pub force: bool,
}

impl DeleteOpts {
    /// Flags for `delete`, without id.
    #[must_use]
    pub fn args(&self) -> Vec<OsString> {
        let mut a = Vec::new();
        push_flag(&mut a, "--force", self.force);
        a
    }
}

/// `--manage-cgroups-mode` for checkpoint/restore.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CgroupsMode {
    /// `soft`
    Soft,
    /// `full`
    Full,
    /// `strict`
    Strict,
    /// `ignore` (runc ≥ 1.1)
    Ignore,
}

impl CgroupsMode {
    /// The flag value.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            CgroupsMode::Soft => "soft",
            CgroupsMode::Full => "full",
            CgroupsMode::Strict => "strict",
            CgroupsMode::Ignore => "ignore",
        }
    }
}

/// Options shared by `checkpoint` and `restore` (CRIU settings).
#[derive(Debug, Default, Clone)]
pub struct CriuOpts {
    /// `--image-path`: directory of the CRIU image.
    pub image_path: Option<PathBuf>,
    /// `--work-path`: directory for CRIU logs and work files.
    pub work_path: Option<PathBuf>,
    /// `--tcp-established`: allow open TCP connections.
    pub tcp_established: bool,
    /// `--ext-unix-sk`: allow external unix sockets.
    pub ext_unix_sk: bool,
    /// `--shell-job`: allow shell jobs (a controlling terminal).
    pub shell_job: bool,
    /// `--file-locks`: handle file locks.
    pub file_locks: bool,
    /// `--lazy-pages`: use userfaultfd to lazily restore memory.
    pub lazy_pages: bool,
    /// `--auto-dedup`: deduplicate memory pages in the parent image.
    pub auto_dedup: bool,
    /// `--manage-cgroups-mode`.
    pub cgroups_mode: Option<CgroupsMode>,
    /// `--empty-ns <ns>` (repeatable): namespaces to create empty, e.g. `network`.
    pub empty_ns: Vec<String>,
    /// `--page-server <address:port>`: send memory pages to a criu page server.
    pub page_server: Option<String>,
}

impl CriuOpts {
    /// The shared CRIU flags.
    #[must_use]
    pub fn args(&self) -> Vec<OsString> {
        let mut a = Vec::new();
        push_abs_path(&mut a, "--image-path", self.image_path.as_ref());
        push_abs_path(&mut a, "--work-path", self.work_path.as_ref());
        push_flag(&mut a, "--tcp-established", self.tcp_established);
        push_flag(&mut a, "--ext-unix-sk", self.ext_unix_sk);
        push_flag(&mut a, "--shell-job", self.shell_job);
        push_flag(&mut a, "--file-locks", self.file_locks);
        push_flag(&mut a, "--lazy-pages", self.lazy_pages);
        push_flag(&mut a, "--auto-dedup", self.auto_dedup);
        if let Some(m) = self.cgroups_mode {
            a.push("--manage-cgroups-mode".into());
            a.push(m.as_str().into());
        }
        for ns in &self.empty_ns {
            a.push("--empty-ns".into());
            a.push(ns.into());
        }
        if let Some(ps) = &self.page_server {
            a.push("--page-server".into());
            a.push(ps.into());
        }
        a
    }
}

/// Options for `runc checkpoint`.
#[derive(Debug, Default, Clone)]
pub struct CheckpointOpts {
    /// Shared CRIU settings.
    pub criu: CriuOpts,
    /// `--parent-path`: previous (pre-dump) image, relative to the image path.
    pub parent_path: Option<PathBuf>,
    /// `--leave-running`: keep the container running after the checkpoint.
    pub leave_running: bool,
    /// `--pre-dump`: only dump memory (iterative migration).
    pub pre_dump: bool,
}

impl CheckpointOpts {
    /// Flags for `checkpoint`, without id.
    #[must_use]
    pub fn args(&self) -> Vec<OsString> {
        let mut a = self.criu.args();
        push_path(&mut a, "--parent-path", self.parent_path.as_ref());
        push_flag(&mut a, "--leave-running", self.leave_running);
        push_flag(&mut a, "--pre-dump", self.pre_dump);
        a
    }
}

/// Options for `runc restore`.
#[derive(Debug, Default)]
pub struct RestoreOpts {
    /// Shared CRIU settings.
    pub criu: CriuOpts,
    /// `--bundle`: the bundle to restore into.
    pub bundle: Option<PathBuf>,
    /// `--detach`.
    pub detach: bool,
    /// `--pid-file`.
    pub pid_file: Option<PathBuf>,
    /// `--console-socket`.
    pub console_socket: Option<PathBuf>,
    /// `--no-subreaper`.
    pub no_subreaper: bool,
    /// `--no-pivot`.
    pub no_pivot: bool,
    /// Stdio for the runtime and the restored process.
    pub io: ProcessIo,
}

impl RestoreOpts {
    /// Flags for `restore`, without id.
    #[must_use]
    pub fn args(&self) -> Vec<OsString> {
        let mut a = self.criu.args();
        push_abs_path(&mut a, "--bundle", self.bundle.as_ref());
        push_flag(&mut a, "--detach", self.detach);
        push_abs_path(&mut a, "--pid-file", self.pid_file.as_ref());
        push_abs_path(&mut a, "--console-socket", self.console_socket.as_ref());
        push_flag(&mut a, "--no-subreaper", self.no_subreaper);
        push_flag(&mut a, "--no-pivot", self.no_pivot);
        a
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strs(a: &[OsString]) -> Vec<&str> {
        a.iter().map(|s| s.to_str().unwrap()).collect()
    }

    #[test]
    fn default_options_render_no_flags() {
        assert!(CreateOpts::default().args().is_empty());
        assert!(RunOpts::default().args().is_empty());
        assert!(ExecOpts::default().args().is_empty());
        assert!(KillOpts::default().args().is_empty());
        assert!(DeleteOpts::default().args().is_empty());
        assert!(CheckpointOpts::default().args().is_empty());
        assert!(RestoreOpts::default().args().is_empty());
    }

    #[test]
    fn create_renders_every_flag_in_order() {
        let devnull = std::fs::File::open("/dev/null").unwrap();
        let o = CreateOpts {
            pid_file: Some("/run/x/init.pid".into()),
            console_socket: Some("/tmp/pty/pty.sock".into()),
            no_pivot: true,
            no_new_keyring: true,
            extra_files: vec![devnull.into()],
            io: ProcessIo::default(),
        };
        assert_eq!(
            strs(&o.args()),
            [
                "--pid-file",
                "/run/x/init.pid",
                "--console-socket",
                "/tmp/pty/pty.sock",
                "--no-pivot",
                "--no-new-keyring",
                "--preserve-fds",
                "1"
            ]
        );
    }

    #[test]
    fn run_adds_detach_keep_no_subreaper_and_makes_pid_file_absolute() {
        let o = RunOpts {
            create: CreateOpts {
                pid_file: Some("p".into()),
                ..CreateOpts::default()
            },
            detach: true,
            keep: true,
            no_subreaper: true,
        };
        let cwd = std::env::current_dir().unwrap().join("p");
        assert_eq!(
            strs(&o.args()),
            [
                "--pid-file",
                cwd.to_str().unwrap(),
                "--detach",
                "--keep",
                "--no-subreaper"
            ]
        );
    }

    #[test]
    fn exec_renders_detach_pidfile_console() {
        let o = ExecOpts {
            detach: true,
            pid_file: Some("/x/exec.pid".into()),
            console_socket: Some("/s".into()),
            ..ExecOpts::default()
        };
        assert_eq!(
            strs(&o.args()),
            [
                "--pid-file",
                "/x/exec.pid",
                "--console-socket",
                "/s",
                "--detach"
            ]
        );
    }

    #[test]
    fn kill_and_delete_flags() {
        assert_eq!(strs(&KillOpts { all: true }.args()), ["--all"]);
        assert_eq!(strs(&DeleteOpts { force: true }.args()), ["--force"]);
    }

    #[test]
    fn checkpoint_renders_criu_and_own_flags() {
        let o = CheckpointOpts {
            criu: CriuOpts {
                image_path: Some("/img".into()),
                work_path: Some("/work".into()),
                tcp_established: true,
                ext_unix_sk: true,
                shell_job: true,
                file_locks: true,
                lazy_pages: false,
                auto_dedup: true,
                cgroups_mode: Some(CgroupsMode::Soft),
                empty_ns: vec!["network".into(), "uts".into()],
                page_server: Some("10.0.0.1:27".into()),
            },
            parent_path: Some("../pre".into()),
            leave_running: true,
            pre_dump: true,
        };
        assert_eq!(
            strs(&o.args()),
            [
                "--image-path",
                "/img",
                "--work-path",
                "/work",
                "--tcp-established",
                "--ext-unix-sk",
                "--shell-job",
                "--file-locks",
                "--auto-dedup",
                "--manage-cgroups-mode",
                "soft",
                "--empty-ns",
                "network",
                "--empty-ns",
                "uts",
                "--page-server",
                "10.0.0.1:27",
                "--parent-path",
                "../pre",
                "--leave-running",
                "--pre-dump"
            ]
        );
    }

    #[test]
    fn restore_renders_bundle_detach_and_pivot() {
        let o = RestoreOpts {
            criu: CriuOpts {
                image_path: Some("/img".into()),
                lazy_pages: true,
                ..CriuOpts::default()
            },
            bundle: Some("/b".into()),
            detach: true,
            pid_file: Some("/p".into()),
            console_socket: Some("/c".into()),
            no_subreaper: true,
            no_pivot: true,
            io: ProcessIo::default(),
        };
        assert_eq!(
            strs(&o.args()),
            [
                "--image-path",
                "/img",
                "--lazy-pages",
                "--bundle",
                "/b",
                "--detach",
                "--pid-file",
                "/p",
                "--console-socket",
                "/c",
                "--no-subreaper",
                "--no-pivot"
            ]
        );
    }
}
