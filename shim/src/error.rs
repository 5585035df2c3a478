//! The task service's error type and its one conversion to ttrpc status codes.
//!
//! Codes follow containerd's `errdefs.ToGRPC` so that containerd (and `ctr`) branch on them
//! the same way as with the Go shim: a missing container or exec is `NotFound`, a duplicate id
//! `AlreadyExists`, an operation in the wrong state `FailedPrecondition`, malformed input
//! `InvalidArgument`, and a failing OCI runtime `Unknown` carrying the runtime's message.

use ttrpc::Code;

/// Everything a task-service call can fail with.
#[derive(Debug, thiserror::Error)]
pub enum TaskError {
    #[error("{0}: not found")]
    NotFound(String),
    #[error("{0}: already exists")]
    AlreadyExists(String),
    #[error("{0}: failed precondition")]
    FailedPrecondition(String),
    #[error("{0}: invalid argument")]
    InvalidArgument(String),
    #[error("{0}: not implemented")]
    NotImplemented(String),
    /// The OCI runtime failed; `what` says which operation on which container.
    #[error("{what}: {source}")]
    Runtime {
        what: String,
        #[source]
        source: runc_wrapper::Error,
    },
    #[error(transparent)]
    Io(#[from] crate::io::IoError),
    #[error(transparent)]
    Mount(#[from] crate::mount::MountError),
    #[error(transparent)]
    Options(#[from] crate::options::OptionsError),
    #[error("{0}")]
    Other(String),
}

impl TaskError {
    /// The runtime error for `what`, classifying runc's "does not exist" as `NotFound`.
    pub fn runtime(what: impl Into<String>, source: runc_wrapper::Error) -> TaskError {
        TaskError::Runtime {
            what: what.into(),
            source,
        }
    }

    fn code(&self) -> Code {
        match self {
            TaskError::NotFound(_) => Code::NOT_FOUND,
            TaskError::AlreadyExists(_) => Code::ALREADY_EXISTS,
            TaskError::FailedPrecondition(_) => Code::FAILED_PRECONDITION,
            TaskError::InvalidArgument(_) | TaskError::Options(_) => Code::INVALID_ARGUMENT,
            TaskError::NotImplemented(_) => Code::UNIMPLEMENTED,
            TaskError::Io(e) if e.is_invalid_argument() => Code::INVALID_ARGUMENT,
            TaskError::Runtime { source, .. } if source.to_string().contains("does not exist") => {
                Code::NOT_FOUND
            }
            _ => Code::UNKNOWN,
        }
    }
}

impl From<TaskError> for ttrpc::Error {
    fn from(e: TaskError) -> ttrpc::Error {
        let code = e.code();
        // The errdefs suffix is in our Display for the typed variants; containerd's client
        // re-derives the kind from the code, so the text only has to read well.
        ttrpc::Error::RpcStatus(ttrpc::get_status(code, e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(e: TaskError) -> (Code, String) {
        match ttrpc::Error::from(e) {
            ttrpc::Error::RpcStatus(s) => (s.code(), s.message),
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn codes_match_errdefs() {
        assert_eq!(
            status(TaskError::NotFound("container t1".into())).0,
            Code::NOT_FOUND
        );
        assert_eq!(
            status(TaskError::AlreadyExists("exec e1".into())).0,
            Code::ALREADY_EXISTS
        );
        assert_eq!(
            status(TaskError::FailedPrecondition("x".into())).0,
            Code::FAILED_PRECONDITION
        );
        let (code, msg) = status(TaskError::InvalidArgument("bad exec spec for e1".into()));
        assert_eq!(code, Code::INVALID_ARGUMENT);
        assert!(msg.contains("e1"));
    }
}
