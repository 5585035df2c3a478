//! `containerd.services.introspection.v1.Introspection`: which plugins berthd has and their
//! status (ok / skip / error with the reason, as `ctr plugins ls` renders), and the server's
//! persistent UUID (`<root>/io.containerd.grpc.v1.introspection/uuid`).

use crate::filters::{Adaptor, Filter};
use protos::containerd::services::introspection::v1::{
    introspection_server::Introspection, Plugin, PluginInfoRequest, PluginInfoResponse,
    PluginsRequest, PluginsResponse, ServerResponse,
};
use protos::containerd::types::Platform;
use std::collections::HashMap;
use std::path::Path;
use tonic::{Request, Response, Status};

/// containerd's `ErrSkipPlugin` text: ctr shows "skip" when an init error contains it.
pub const SKIP_PLUGIN: &str = "skip plugin";

/// One plugin as reported.
#[derive(Debug, Clone, Default)]
pub struct PluginInfo {
    /// e.g. `io.containerd.snapshotter.v1`.
    pub r#type: String,
    /// e.g. `overlayfs`.
    pub id: String,
    /// `type.*` or `type.id` of what it needs.
    pub requires: Vec<String>,
    /// Exported values (`root`).
    pub exports: HashMap<String, String>,
    /// Capabilities.
    pub capabilities: Vec<String>,
    /// Whether it reports the host platform.
    pub platform: bool,
    /// Why it did not load (contains [`SKIP_PLUGIN`] for a skip).
    pub init_err: Option<String>,
}

impl PluginInfo {
    /// A loaded plugin.
    pub fn ok(r#type: &str, id: &str, requires: &[&str]) -> Self {
        Self {
            r#type: r#type.into(),
            id: id.into(),
            requires: requires.iter().map(|s| (*s).to_string()).collect(),
            ..Default::default()
        }
    }

    /// With an export.
    pub fn export(mut self, k: &str, v: impl Into<String>) -> Self {
        self.exports.insert(k.into(), v.into());
        self
    }

    /// Fails init with `err`.
    pub fn failed(mut self, err: impl Into<String>) -> Self {
        self.init_err = Some(err.into());
        self
    }

    /// Whether the plugin loaded.
    pub fn is_ok(&self) -> bool {
        self.init_err.is_none()
    }
}

impl Adaptor for PluginInfo {
    fn field(&self, path: &[String]) -> Option<String> {
        match path.first().map(String::as_str)? {
            "type" => Some(self.r#type.clone()),
            "id" => Some(self.id.clone()),
            "status" => Some(match &self.init_err {
                None => "ok".into(),
                Some(e) if e.contains(SKIP_PLUGIN) => "skip".into(),
                Some(_) => "error".into(),
            }),
            "capabilities" => self.capabilities.first().cloned(),
            _ => None,
        }
    }
}

fn host_platform() -> Platform {
    let arch = match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    };
    Platform {
        os: "linux".into(),
        architecture: arch.into(),
        variant: String::new(),
        os_version: String::new(),
    }
}

fn to_proto(p: &PluginInfo) -> Plugin {
    Plugin {
        r#type: p.r#type.clone(),
        id: p.id.clone(),
        requires: p.requires.clone(),
        platforms: if p.platform {
            vec![host_platform()]
        } else {
            vec![]
        },
        exports: p.exports.clone(),
        capabilities: p.capabilities.clone(),
        init_err: p.init_err.as_ref().map(|m| protos::google::rpc::Status {
            code: tonic::Code::Unknown as i32,
            message: m.clone(),
            details: vec![],
        }),
    }
}

/// Reads or creates the server UUID under `dir`.
pub fn load_uuid(dir: &Path) -> std::io::Result<String> {
    let p = dir.join("uuid");
    match std::fs::read_to_string(&p) {
        Ok(s) if uuid::Uuid::parse_str(s.trim()).is_ok() => Ok(s.trim().to_string()),
        _ => {
            std::fs::create_dir_all(dir)?;
            let u = uuid::Uuid::new_v4().to_string();
            let tmp = dir.join("uuid.tmp");
            std::fs::write(&tmp, &u)?;
            std::fs::rename(&tmp, &p)?;
            Ok(u)
        }
    }
}

/// The introspection service.
#[derive(Debug)]
pub struct Service {
    plugins: Vec<PluginInfo>,
    uuid: String,
}

impl Service {
    /// Serves `plugins` and `uuid`.
    pub fn new(plugins: Vec<PluginInfo>, uuid: String) -> Self {
        Self { plugins, uuid }
    }
}

fn pidns() -> u64 {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self/ns/pid")
        .map(|m| m.ino())
        .unwrap_or(0)
}

#[tonic::async_trait]
impl Introspection for Service {
    async fn plugins(
        &self,
        req: Request<PluginsRequest>,
    ) -> Result<Response<PluginsResponse>, Status> {
        let f: Filter = super::filter(&req.into_inner().filters)?;
        Ok(Response::new(PluginsResponse {
            plugins: self
                .plugins
                .iter()
                .filter(|p| f.matches(*p))
                .map(to_proto)
                .collect(),
        }))
    }

    async fn server(&self, _: Request<()>) -> Result<Response<ServerResponse>, Status> {
        Ok(Response::new(ServerResponse {
            uuid: self.uuid.clone(),
            pid: u64::from(std::process::id()),
            pidns: pidns(),
            deprecations: vec![],
        }))
    }

    async fn plugin_info(
        &self,
        req: Request<PluginInfoRequest>,
    ) -> Result<Response<PluginInfoResponse>, Status> {
        let r = req.into_inner();
        let p = self
            .plugins
            .iter()
            .find(|p| p.r#type == r.r#type && p.id == r.id)
            .ok_or_else(|| Status::not_found(format!("plugin {}.{}: not found", r.r#type, r.id)))?;
        Ok(Response::new(PluginInfoResponse {
            plugin: Some(to_proto(p)),
            extra: None,
        }))
    }
}
