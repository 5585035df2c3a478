//! Error kinds shared by every subsystem, mirroring containerd's `errdefs` package.
//!
//! Each module keeps its own `thiserror` enum with the details a user needs; each of those
//! enums says which [`Kind`] it is, and `api::to_status` turns the kind into a gRPC code in
//! exactly one place (containerd's `errdefs/grpc.go` `ToGRPC`), so clients that branch on
//! codes (ctr treats `AlreadyExists` on content writes as success) behave as with containerd.

/// The class of an error, independent of the subsystem that raised it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Bad input from the caller (`codes.InvalidArgument`).
    InvalidArgument,
    /// The object does not exist (`codes.NotFound`).
    NotFound,
    /// The object already exists (`codes.AlreadyExists`).
    AlreadyExists,
    /// The state of the system does not allow the operation (`codes.FailedPrecondition`).
    FailedPrecondition,
    /// Resource in use, e.g. an ingest ref locked by another writer (`codes.Unavailable`).
    Unavailable,
    /// Not implemented by this daemon (`codes.Unimplemented`).
    NotImplemented,
    /// An offset outside the object (`codes.OutOfRange`).
    OutOfRange,
    /// Anything else: an I/O or database failure (`codes.Unknown`, as containerd).
    Unknown,
}

/// Implemented by every module error so the API layer can map it without knowing it.
pub trait HasKind: std::fmt::Display {
    /// The errdefs class of this error.
    fn kind(&self) -> Kind;
}
