//! The one error type of the crate.
//!
//! A failed runtime call must tell the operator *what* ran and *why* it failed, so
//! [`Error::CommandFailed`] carries the full command line, the exit status and the last
//! error message runc logged (from its JSON log, or from stderr) — never just "exit status 1".

use std::io;
use std::path::PathBuf;
use std::process::ExitStatus;
use std::time::Duration;

#[cfg(test)]
use std::os::unix::process::ExitStatusExt;

/// Result alias used throughout the crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong talking to an OCI runtime binary.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The runtime binary could not be started at all (missing, not executable, fork failed).
    #[error("cannot start `{command}`: {source} (is the runtime binary installed? for runc: install Debian package runc)")]
    Spawn {
        /// The command line that was attempted.
        command: String,
        /// The OS error from fork/exec.
        #[source]
        source: io::Error,
    },

    /// The runtime ran and exited unsuccessfully (non-zero exit code or killed by a signal).
    #[error("`{command}` failed ({status}): {message}")]
    CommandFailed {
        /// The command line that ran.
        command: String,
        /// The raw exit status (exit code or terminating signal).
        status: ExitStatus,
        /// The last error message the runtime logged (JSON log file, else stderr), or a
        /// placeholder saying that it printed nothing.
        message: String,
        /// Everything the runtime wrote to stderr during the call (may be empty).
        stderr: String,
    },

    /// The runtime did not finish within the configured timeout; it was sent SIGKILL.
    #[error("`{command}` did not finish within {timeout:?}; the process (pid {pid}) was killed")]
    Timeout {
        /// The command line that hung.
        command: String,
        /// The pid that was killed.
        pid: u32,
        /// The timeout that expired.
        timeout: Duration,
    },

    /// Waiting for the runtime or moving its stdio failed.
    #[error("i/o error while running `{command}`: {source}")]
    Io {
        /// The command line that was running.
        command: String,
        /// The underlying error.
        #[source]
        source: io::Error,
    },

    /// The runtime printed output we could not decode.
    #[error("cannot decode the output of `{command}` as {what}: {source}; output was: {output}")]
    Decode {
        /// The command line that ran.
        command: String,
        /// What we expected (e.g. "container state JSON").
        what: &'static str,
        /// The raw output (truncated to a readable length).
        output: String,
        /// The JSON error.
        #[source]
        source: serde_json::Error,
    },

    /// The runtime printed text in a shape we do not understand (e.g. `version`).
    #[error("unexpected output from `{command}`: {reason}; output was: {output}")]
    UnexpectedOutput {
        /// The command line that ran.
        command: String,
        /// What was wrong.
        reason: String,
        /// The raw output.
        output: String,
    },

    /// Encoding a request (process spec, resources) to JSON failed.
    #[error("cannot encode {what} as JSON: {source}")]
    Encode {
        /// What we tried to encode.
        what: &'static str,
        /// The JSON error.
        #[source]
        source: serde_json::Error,
    },

    /// A private temporary file or directory (process spec, log file, console socket) could
    /// not be created or written.
    #[error("cannot prepare {what} at {path}: {source}")]
    TempFile {
        /// What the file is for.
        what: &'static str,
        /// Where.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },

    /// The console socket failed: bind, accept, or the runtime sent no file descriptor.
    #[error("console socket {path}: {reason}")]
    ConsoleSocket {
        /// Socket path.
        path: PathBuf,
        /// What went wrong.
        reason: String,
    },

    /// An argument was rejected before anything ran.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
}

impl Error {
    /// The exit status of the runtime, when it ran and failed.
    #[must_use]
    pub fn exit_status(&self) -> Option<ExitStatus> {
        match self {
            Error::CommandFailed { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// The runtime's own error message, when it ran and failed.
    #[must_use]
    pub fn runtime_message(&self) -> Option<&str> {
        match self {
            Error::CommandFailed { message, .. } => Some(message),
            _ => None,
        }
    }

    /// The runtime said the container does not exist (`... does not exist`); containerd's
    /// runc shim maps this to `ErrNotFound` ("no such container", `checkKillError`).
    #[must_use]
    pub fn is_container_not_found(&self) -> bool {
        self.runtime_message()
            .is_some_and(|m| m.contains("does not exist"))
    }

    /// The runtime said the process is already gone (`container not running`,
    /// `no such process`, `process already finished`); containerd's runc shim maps this to
    /// `ErrNotFound` ("process already finished", `checkKillError`).
    #[must_use]
    pub fn is_process_gone(&self) -> bool {
        self.runtime_message().is_some_and(|m| {
            m.contains("process already finished")
                || m.contains("container not running")
                || m.to_ascii_lowercase().contains("no such process")
        })
    }

    /// True for [`Error::Timeout`].
    #[must_use]
    pub fn is_timeout(&self) -> bool {
        matches!(self, Error::Timeout { .. })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn failed(message: &str) -> Error {
        Error::CommandFailed {
            command: "runc kill c 9".into(),
            status: ExitStatus::from_raw(1 << 8),
            message: message.into(),
            stderr: String::new(),
        }
    }

    #[test]
    fn classifies_runtime_messages_like_containerd() {
        assert!(failed("container not running").is_process_gone());
        assert!(failed("kill: No such process").is_process_gone());
        assert!(!failed("container not running").is_container_not_found());
        assert!(failed("container \"x\" does not exist").is_container_not_found());
        assert!(!failed("permission denied").is_process_gone());
        let t = Error::Timeout {
            command: "runc state c".into(),
            pid: 1,
            timeout: Duration::from_secs(1),
        };
        assert!(t.is_timeout() && !t.is_process_gone() && t.exit_status().is_none());
        assert_eq!(failed("m").exit_status().and_then(|s| s.code()), Some(1));
    }
}
