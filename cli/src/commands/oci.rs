//! `berth oci spec`: the default runtime spec containerd generates for a container
//! (`oci.GenerateSpec` with no options), printed as ctr prints it — a starting point for
//! `run --config`.

use clap::Subcommand;

use crate::Globals;

#[derive(Debug, Subcommand)]
pub enum Cmd {
    /// See the output of the default OCI spec.
    Spec,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {}

pub fn run(cmd: &Cmd, g: &Globals) -> Result<(), Error> {
    let Cmd::Spec = cmd;
    println!(
        "{}",
        crate::gojson::render(&crate::spec::bare_default_spec(&g.namespace), "")
    );
    Ok(())
}
