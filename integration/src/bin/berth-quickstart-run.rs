//! Runs one container from an OCI image layout with bare runc, through the `runc-wrapper`
//! crate, without berthd: the quickstart's first path before berthd could run containers, kept
//! as a minimal reference ("image + runc, nothing else") for debugging and comparisons.
//!
//! Usage: `berth-quickstart-run <oci-layout-dir> [command...]` (default command prints a
//! greeting). Unpacks the image into a temporary bundle, writes an OCI runtime spec, runs it
//! in the foreground with `runc run`, prints its output, and removes the bundle.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use oci_spec::runtime::{Spec, SpecBuilder};

const DEFAULT_CMD: &str =
    "echo \"Hello from a berth container! hostname=$(hostname) pid=$$ user=$(id -un)\"; echo \"kernel: $(uname -sr)\"";

fn spec(args: Vec<String>) -> Result<Spec, String> {
    let base = Spec::default();
    let mut process = base.process().clone().unwrap_or_default();
    process.set_args(Some(args));
    process.set_terminal(Some(false));
    let mut root = base.root().clone().unwrap_or_default();
    root.set_path(PathBuf::from("rootfs"));
    root.set_readonly(Some(false));
    SpecBuilder::default()
        .version(base.version().clone())
        .process(process)
        .root(root)
        .hostname("berth-quickstart")
        .mounts(base.mounts().clone().unwrap_or_default())
        .linux(base.linux().clone().unwrap_or_default())
        .build()
        .map_err(|e| format!("building the runtime spec: {e}"))
}

async fn run(layout: &Path, args: Vec<String>) -> Result<i32, String> {
    let work = tempfile::Builder::new()
        .prefix("berth-quickstart-")
        .tempdir()
        .map_err(|e| format!("creating a temp dir: {e}"))?;
    let bundle = work.path().join("bundle");
    integration::image::unpack_oci_layout(layout, &bundle.join("rootfs"))
        .map_err(|e| format!("unpacking {}: {e}", layout.display()))?;
    let spec = spec(args)?;
    spec.save(bundle.join("config.json"))
        .map_err(|e| format!("writing config.json: {e}"))?;
    let runc = runc_wrapper::Runc::builder()
        .root(work.path().join("runc-root"))
        .build();
    let id = format!("quickstart-{}", std::process::id());
    let out = runc
        .run(&id, &bundle, runc_wrapper::RunOpts::default())
        .await
        .map_err(|e| format!("runc run: {e}"))?;
    print!("{}", String::from_utf8_lossy(&out.stdout));
    eprint!("{}", String::from_utf8_lossy(&out.stderr));
    Ok(out.status.code().unwrap_or(128))
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let mut argv = std::env::args().skip(1);
    let Some(layout) = argv.next() else {
        eprintln!("usage: berth-quickstart-run <oci-layout-dir> [command...]");
        return ExitCode::from(2);
    };
    let mut args: Vec<String> = argv.collect();
    if args.is_empty() {
        args = vec!["sh".into(), "-c".into(), DEFAULT_CMD.into()];
    }
    match run(Path::new(&layout), args).await {
        Ok(code) => ExitCode::from(u8::try_from(code).unwrap_or(1)),
        Err(e) => {
            eprintln!("berth-quickstart-run: {e}");
            ExitCode::FAILURE
        }
    }
}
