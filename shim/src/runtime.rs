//! The OCI runtime client as the shim configures it: runc-wrapper's [`Runc`] with the shim's
//! reaper as its spawner, `--root <root>/<namespace>`, `--log <bundle>/log.json` (JSON, so the
//! last error line can be quoted back), `--systemd-cgroup` and the binary from the options
//! (containerd's `process.NewRunc`).

use std::path::Path;
use std::sync::Arc;

use runc_wrapper::{DeleteOpts, LogFormat, Runc};

use crate::options::RuncOptions;
use crate::reaper::ReaperSpawner;

/// A configured runtime client for one container.
#[derive(Debug, Clone)]
pub struct Runtime {
    pub runc: Runc,
}

impl Runtime {
    /// The client for a container in `bundle` of `namespace`.
    pub fn new(opts: &RuncOptions, namespace: &str, bundle: &Path) -> Runtime {
        let runc = Runc::builder()
            .binary(opts.binary())
            .root(opts.runc_root(namespace))
            .log(bundle.join("log.json"))
            .log_format(LogFormat::Json)
            .systemd_cgroup(opts.systemd_cgroup)
            .pdeath_signal(Some(libc::SIGKILL))
            .spawner(Arc::new(ReaperSpawner))
            .build();
        Runtime { runc }
    }

    /// A client for a bare binary (used by `-info`).
    pub fn with_binary(binary: &Path) -> Runtime {
        Runtime {
            runc: Runc::builder()
                .binary(binary)
                .spawner(Arc::new(ReaperSpawner))
                .build(),
        }
    }

    /// `delete [--force] <id>`.
    pub async fn delete(&self, id: &str, force: bool) -> runc_wrapper::Result<()> {
        self.runc.delete(id, &DeleteOpts { force }).await
    }

    /// `features` as raw JSON bytes.
    pub async fn features(&self) -> runc_wrapper::Result<Vec<u8>> {
        let f = self.runc.features().await?;
        serde_json::to_vec(&f).map_err(|source| runc_wrapper::Error::Encode {
            what: "runtime features",
            source,
        })
    }
}
