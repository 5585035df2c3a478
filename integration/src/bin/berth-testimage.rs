//! Writes the harness's deterministic test images to a directory, for shell scripts
//! (quickstart, benchmarks) that cannot call the Rust harness.
//!
//! Usage: `berth-testimage <out-dir>`. Writes, for each image (`busybox`, `layers`):
//! `<name>/` (OCI image layout, tag `test`), `<name>.oci.tar` (importable with
//! `ctr images import` / `berth images import`), `<name>.docker.tar` (docker-archive),
//! and `digests.json` with the names and digests of both.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use integration::image::{ImageError, TestImage};

fn write_all(out: &Path) -> Result<serde_json::Value, ImageError> {
    std::fs::create_dir_all(out).map_err(|source| ImageError::Write {
        path: out.to_path_buf(),
        source,
    })?;
    let mut summary = serde_json::Map::new();
    for (label, img) in [
        ("busybox", TestImage::busybox()?),
        ("layers", TestImage::layers()?),
    ] {
        img.write_oci_layout(&out.join(label))?;
        img.write_oci_archive(&out.join(format!("{label}.oci.tar")))?;
        img.write_docker_archive(&out.join(format!("{label}.docker.tar")))?;
        summary.insert(label.to_string(), img.digests_json());
    }
    let summary = serde_json::Value::Object(summary);
    let path = out.join("digests.json");
    let text = serde_json::to_string_pretty(&summary).map_err(|source| ImageError::Json {
        what: "digests.json",
        source,
    })?;
    std::fs::write(&path, text + "\n").map_err(|source| ImageError::Write { path, source })?;
    Ok(summary)
}

fn main() -> ExitCode {
    let mut args = std::env::args_os().skip(1);
    let (Some(out), None) = (args.next(), args.next()) else {
        eprintln!("usage: berth-testimage <out-dir>\n\nwrites busybox/ and layers/ (OCI layouts), *.oci.tar, *.docker.tar and digests.json");
        return ExitCode::from(2);
    };
    if out.to_string_lossy().starts_with('-') {
        let help = out == "-h" || out == "--help";
        eprintln!("usage: berth-testimage <out-dir>\n\nwrites busybox/ and layers/ (OCI layouts), *.oci.tar, *.docker.tar and digests.json");
        if !help {
            eprintln!("berth-testimage: unknown option {out:?} (use ./{} for a directory named like that)", out.to_string_lossy());
        }
        return ExitCode::from(if help { 0 } else { 2 });
    }
    let out = PathBuf::from(out);
    match write_all(&out) {
        Ok(summary) => {
            println!(
                "{}",
                serde_json::to_string_pretty(&summary).unwrap_or_default()
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("berth-testimage: {e}");
            ExitCode::FAILURE
        }
    }
}
