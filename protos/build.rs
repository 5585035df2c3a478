//! Compiles containerd's API `.proto` files (vendored under `proto/`, unmodified) with the
//! pure-Rust `protox` compiler, so no system `protoc` is needed, then generates prost
//! messages and tonic clients + servers from the descriptor set.

const ROOT: &str = "proto/github.com/containerd/containerd/api";

const FILES: &[&str] = &[
    "types/descriptor.proto",
    "types/event.proto",
    "types/fieldpath.proto",
    "types/introspection.proto",
    "types/metrics.proto",
    "types/mount.proto",
    "types/platform.proto",
    "types/sandbox.proto",
    "types/task/task.proto",
    "types/runc/options/oci.proto",
    "types/runtimeoptions/v1/api.proto",
    "types/transfer/imagestore.proto",
    "types/transfer/importexport.proto",
    "types/transfer/progress.proto",
    "types/transfer/registry.proto",
    "types/transfer/streaming.proto",
    "services/containers/v1/containers.proto",
    "services/content/v1/content.proto",
    "services/diff/v1/diff.proto",
    "services/events/v1/events.proto",
    "services/images/v1/images.proto",
    "services/introspection/v1/introspection.proto",
    "services/leases/v1/leases.proto",
    "services/namespaces/v1/namespace.proto",
    "services/sandbox/v1/sandbox.proto",
    "services/snapshots/v1/snapshots.proto",
    "services/streaming/v1/streaming.proto",
    "services/tasks/v1/tasks.proto",
    "services/transfer/v1/transfer.proto",
    "services/ttrpc/events/v1/events.proto",
    "services/version/v1/version.proto",
    "events/container.proto",
    "events/content.proto",
    "events/image.proto",
    "events/namespace.proto",
    "events/sandbox.proto",
    "events/snapshot.proto",
    "events/task.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let files: Vec<String> = FILES.iter().map(|f| format!("{ROOT}/{f}")).collect();
    println!("cargo:rerun-if-changed=proto");
    let fds = protox::compile(&files, ["proto"])?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_well_known_types(false)
        .compile_fds(fds)?;
    Ok(())
}
