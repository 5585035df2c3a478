// Build metadata shared by berthd, berth and the shim (`cli/build.rs` and `shim/build.rs`
// include this file): the git revision of the tree being built (`BERTH_REVISION`, reported
// by `Version` and `-v` as containerd's revision) and the compiler's version
// (`BERTH_RUSTC_VERSION`; ctr prints its Go version the same way).

use std::process::Command;

fn output(cmd: &str, args: &[&str]) -> Option<String> {
    let out = Command::new(cmd).args(args).output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
        .filter(|s| !s.is_empty())
}

fn main() {
    let revision = output("git", &["rev-parse", "--short=12", "HEAD"]).unwrap_or_default();
    println!("cargo:rustc-env=BERTH_REVISION={revision}");
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".to_string());
    let version = output(&rustc, &["--version"]).unwrap_or_default();
    println!("cargo:rustc-env=BERTH_RUSTC_VERSION={version}");
    // Re-run when the checked-out commit moves (not on every source edit).
    println!("cargo:rerun-if-changed=../.git/HEAD");
    println!("cargo:rerun-if-changed=../.git/refs/heads");
}
