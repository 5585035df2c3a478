//! containerd's gRPC API, wire-compatible by construction: the `.proto` files under `proto/`
//! are containerd's own (Apache-2.0, see `proto/README.md`), compiled at build time by
//! `build.rs`. Module paths mirror the protobuf packages exactly, e.g.
//! `containerd.services.content.v1` is [`containerd::services::content::v1`]; the short
//! aliases below are what the other crates use.
//!
//! This crate holds no logic; the daemon and the CLI convert to their own types at the edge.
#![allow(clippy::all, clippy::pedantic, rust_2018_idioms, missing_docs)]

macro_rules! proto {
    ($pkg:literal) => {
        include!(concat!(env!("OUT_DIR"), "/", $pkg, ".rs"));
    };
}

pub mod google {
    pub mod rpc {
        proto!("google.rpc");
    }
}
pub mod containerd {
    pub mod types {
        proto!("containerd.types");
        pub mod transfer {
            proto!("containerd.types.transfer");
        }
    }
    pub mod v1 {
        pub mod types {
            proto!("containerd.v1.types");
        }
    }
    pub mod runc {
        pub mod v1 {
            proto!("containerd.runc.v1");
        }
    }
    pub mod events {
        proto!("containerd.events");
    }
    pub mod services {
        pub mod containers {
            pub mod v1 {
                proto!("containerd.services.containers.v1");
            }
        }
        pub mod content {
            pub mod v1 {
                proto!("containerd.services.content.v1");
            }
        }
        pub mod diff {
            pub mod v1 {
                proto!("containerd.services.diff.v1");
            }
        }
        pub mod events {
            pub mod v1 {
                proto!("containerd.services.events.v1");
            }
            pub mod ttrpc {
                pub mod v1 {
                    proto!("containerd.services.events.ttrpc.v1");
                }
            }
        }
        pub mod images {
            pub mod v1 {
                proto!("containerd.services.images.v1");
            }
        }
        pub mod introspection {
            pub mod v1 {
                proto!("containerd.services.introspection.v1");
            }
        }
        pub mod leases {
            pub mod v1 {
                proto!("containerd.services.leases.v1");
            }
        }
        pub mod namespaces {
            pub mod v1 {
                proto!("containerd.services.namespaces.v1");
            }
        }
        pub mod sandbox {
            pub mod v1 {
                proto!("containerd.services.sandbox.v1");
            }
        }
        pub mod snapshots {
            pub mod v1 {
                proto!("containerd.services.snapshots.v1");
            }
        }
        pub mod streaming {
            pub mod v1 {
                proto!("containerd.services.streaming.v1");
            }
        }
        pub mod tasks {
            pub mod v1 {
                proto!("containerd.services.tasks.v1");
            }
        }
        pub mod transfer {
            pub mod v1 {
                proto!("containerd.services.transfer.v1");
            }
        }
        pub mod version {
            pub mod v1 {
                proto!("containerd.services.version.v1");
            }
        }
    }
}
pub mod runtimeoptions {
    pub mod v1 {
        proto!("runtimeoptions.v1");
    }
}

pub use containerd::events;
/// `containerd.runc.v1`: runc `Options`, `CheckpointOptions`, `ProcessDetails`.
pub use containerd::runc::v1 as runc_options;
pub use containerd::services;
pub use containerd::types;
/// `containerd.v1.types`: task status and process info.
pub use containerd::v1::types as task_types;
