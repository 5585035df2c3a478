//! `berth plugins ls`: the daemon's plugins via the introspection service.

use std::collections::BTreeSet;

use clap::Subcommand;
use protos::services::introspection::v1::PluginsRequest;

use crate::tabwriter::TabWriter;
use crate::{client, Globals};

#[derive(Debug, Subcommand)]
pub enum Cmd {
    /// Lists daemon plugins.
    #[command(alias = "ls")]
    List {
        /// Print only the plugin ids.
        #[arg(short, long)]
        quiet: bool,
        /// Print detailed information about each plugin.
        #[arg(short, long)]
        detailed: bool,
        /// Filters (containerd filter syntax, e.g. type==io.containerd.snapshotter.v1).
        filters: Vec<String>,
    },
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Connect(#[from] client::Error),
    #[error("{}", .0.message())]
    Rpc(#[from] tonic::Status),
}

fn pretty_platforms(ps: &[protos::types::Platform]) -> String {
    let set: BTreeSet<String> = ps
        .iter()
        .map(|p| {
            let mut s = format!("{}/{}", p.os, p.architecture);
            if !p.variant.is_empty() {
                s.push('/');
                s.push_str(&p.variant);
            }
            s
        })
        .collect();
    set.into_iter().collect::<Vec<_>>().join(",")
}

/// gRPC code names as Go's `codes.Code.String()` prints them.
pub fn code_name(code: i32) -> String {
    format!("{:?}", tonic::Code::from_i32(code))
}

pub async fn run(cmd: Cmd, g: &Globals) -> Result<(), Error> {
    let Cmd::List {
        quiet,
        detailed,
        filters,
    } = cmd;
    let client = g.connect().await?;
    let resp = client
        .introspection()
        .plugins(PluginsRequest { filters })
        .await?
        .into_inner();
    if quiet {
        for p in &resp.plugins {
            println!("{}", p.id);
        }
        return Ok(());
    }
    let mut w = TabWriter::new(4, 4);
    if detailed {
        for (i, p) in resp.plugins.iter().enumerate() {
            if i > 0 {
                w.line("\t\t\t");
            }
            w.line(&format!("Type:\t {}", p.r#type));
            w.line(&format!("ID:\t {}", p.id));
            if !p.requires.is_empty() {
                w.line("Requires:\t");
                for r in &p.requires {
                    w.line(&format!("\t {r}"));
                }
            }
            if !p.platforms.is_empty() {
                w.line(&format!("Platforms:\t {}", pretty_platforms(&p.platforms)));
            }
            if !p.exports.is_empty() {
                w.line("Exports:\t");
                let mut exports: Vec<_> = p.exports.iter().collect();
                exports.sort();
                for (k, v) in exports {
                    w.line(&format!("\t {k} \t {v}"));
                }
            }
            if !p.capabilities.is_empty() {
                w.line(&format!("Capabilities:\t {}", p.capabilities.join(",")));
            }
            if let Some(e) = &p.init_err {
                w.line("Error:\t");
                w.line(&format!("\t Code:\t {}", code_name(e.code)));
                w.line(&format!("\t Message:\t {}", e.message));
            }
        }
        print!("{}", w.finish());
        return Ok(());
    }
    w.line("TYPE\tID\tPLATFORMS\tSTATUS\t");
    for p in &resp.plugins {
        let status = match &p.init_err {
            None => "ok",
            // containerd's plugin.ErrSkipPlugin text.
            Some(e) if e.message.contains("skip plugin") => "skip",
            Some(_) => "error",
        };
        let platforms = if p.platforms.is_empty() {
            "-".to_string()
        } else {
            pretty_platforms(&p.platforms)
        };
        w.line(&format!("{}\t{}\t{platforms}\t{status}\t", p.r#type, p.id));
    }
    print!("{}", w.finish());
    Ok(())
}
