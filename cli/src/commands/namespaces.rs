//! `berth namespaces create/ls/label/rm`.

use clap::Subcommand;
use protos::services::namespaces::v1::{
    CreateNamespaceRequest, DeleteNamespaceRequest, ListNamespacesRequest, Namespace,
    UpdateNamespaceRequest,
};

use crate::tabwriter::TabWriter;
use crate::util::{format_labels, labels_from_args};
use crate::{client, Globals};

#[derive(Debug, Subcommand)]
pub enum Cmd {
    /// Create a new namespace: <name> [<key>=<value>...].
    #[command(alias = "c")]
    Create { name: String, labels: Vec<String> },
    /// List namespaces.
    #[command(alias = "ls")]
    List {
        /// Print only the namespace name.
        #[arg(short, long)]
        quiet: bool,
    },
    /// Remove one or more namespaces (they must be empty).
    #[command(alias = "rm")]
    Remove {
        /// Delete the namespace's cgroup (accepted for ctr compatibility).
        #[arg(short, long)]
        cgroup: bool,
        #[arg(required = true)]
        names: Vec<String>,
    },
    /// Set and clear labels for a namespace: <name> [<key>=<value>...]; empty value clears.
    Label { name: String, labels: Vec<String> },
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Connect(#[from] client::Error),
    #[error("{}", .0.message())]
    Rpc(#[from] tonic::Status),
    #[error("unable to delete {name}: {}", .status.message())]
    Delete { name: String, status: tonic::Status },
}

pub async fn run(cmd: Cmd, g: &Globals) -> Result<(), Error> {
    let client = g.connect().await?;
    let mut svc = client.namespaces();
    match cmd {
        Cmd::Create { name, labels } => {
            svc.create(CreateNamespaceRequest {
                namespace: Some(Namespace {
                    name,
                    labels: labels_from_args(&labels),
                }),
            })
            .await?;
        }
        Cmd::List { quiet } => {
            let mut list = svc
                .list(ListNamespacesRequest::default())
                .await?
                .into_inner()
                .namespaces;
            list.sort_by(|a, b| a.name.cmp(&b.name));
            if quiet {
                for ns in &list {
                    println!("{}", ns.name);
                }
                return Ok(());
            }
            let mut tw = TabWriter::new(1, 1);
            tw.line("NAME\tLABELS\t");
            for ns in &list {
                tw.line(&format!("{}\t{}\t", ns.name, format_labels(&ns.labels)));
            }
            print!("{}", tw.finish());
        }
        Cmd::Remove { cgroup: _, names } => {
            // Like ctr: not-found is not an error, the first failure is reported at the end.
            let mut first_err = None;
            for name in names {
                match svc
                    .delete(DeleteNamespaceRequest { name: name.clone() })
                    .await
                {
                    Ok(_) => println!("{name}"),
                    Err(s) if s.code() == tonic::Code::NotFound => println!("{name}"),
                    Err(status) => {
                        eprintln!("berth: unable to delete {name}: {}", status.message());
                        first_err.get_or_insert(Error::Delete { name, status });
                    }
                }
            }
            if let Some(e) = first_err {
                return Err(e);
            }
        }
        Cmd::Label { name, labels } => {
            // containerd's remote SetLabel: one update per key with mask `labels.<key>`.
            for (k, v) in labels_from_args(&labels) {
                svc.update(UpdateNamespaceRequest {
                    namespace: Some(Namespace {
                        name: name.clone(),
                        labels: [(k.clone(), v)].into_iter().collect(),
                    }),
                    update_mask: Some(prost_types::FieldMask {
                        paths: vec![format!("labels.{k}")],
                    }),
                })
                .await?;
            }
        }
    }
    Ok(())
}
