//! `berth images …`: ls, import, export, tag, rm, check, unpack, label (ctr's `images`).

use std::collections::BTreeSet;
use std::io::Read;

use clap::Subcommand;
use protos::services::images::v1::{
    CreateImageRequest, DeleteImageRequest, GetImageRequest, Image, ListImagesRequest,
    UpdateImageRequest,
};

use crate::image::{self, import, store, unpack, Descriptor, Platform, PlatformMatcher};
use crate::tabwriter::TabWriter;
use crate::util::{human_bytes, labels_from_args};
use crate::{client, Globals};

/// The `--snapshotter` flag as ctr defines it.
#[derive(Debug, clap::Args)]
pub struct SnapshotterFlag {
    /// Snapshotter name.
    #[arg(long, env = "CONTAINERD_SNAPSHOTTER", default_value = "overlayfs")]
    pub snapshotter: String,
}

#[derive(Debug, Subcommand)]
pub enum Cmd {
    /// List images known to the daemon.
    #[command(alias = "ls")]
    List {
        /// Print only the image refs.
        #[arg(short, long)]
        quiet: bool,
        /// Filters (containerd filter syntax).
        filters: Vec<String>,
    },
    /// Import images from a tar stream (OCI layout or docker archive; `-` for stdin).
    Import {
        /// Base image name for added images; only images with this prefix are imported.
        #[arg(long)]
        base_name: Option<String>,
        /// Whether to create digest images.
        #[arg(long)]
        digests: bool,
        /// Image name to keep the index as; by default the index is discarded.
        #[arg(long)]
        index_name: Option<String>,
        /// Import content for all platforms.
        #[arg(long)]
        all_platforms: bool,
        /// Import content for a specific platform (os/arch[/variant]).
        #[arg(long)]
        platform: Option<String>,
        /// Skip unpacking the images.
        #[arg(long)]
        no_unpack: bool,
        #[command(flatten)]
        snapshotter: SnapshotterFlag,
        input: String,
    },
    /// Pull an image from a registry (Docker Registry HTTP API v2, HTTPS or plain HTTP).
    Pull {
        #[command(flatten)]
        registry: crate::image::distribution::RegistryFlags,
        /// Pull content for a specific platform.
        #[arg(long)]
        platform: Option<String>,
        /// Pull content for all platforms.
        #[arg(long)]
        all_platforms: bool,
        #[command(flatten)]
        snapshotter: SnapshotterFlag,
        reference: String,
    },
    /// Push an image to a registry: <remote> [<local>] (local defaults to remote).
    Push {
        #[command(flatten)]
        registry: crate::image::distribution::RegistryFlags,
        /// Push content for a specific platform only (default: all present).
        #[arg(long)]
        platform: Option<String>,
        remote: String,
        local: Option<String>,
    },
    /// Export images to an OCI layout tar (`-` for stdout).
    Export {
        /// Do not add a Docker-compatible manifest.json to the archive.
        #[arg(long)]
        skip_manifest_json: bool,
        /// Accepted for ctr compatibility (there are no non-distributable blobs here).
        #[arg(long)]
        skip_non_distributable: bool,
        /// Export content for a specific platform.
        #[arg(long)]
        platform: Option<String>,
        /// Export content for all platforms.
        #[arg(long)]
        all_platforms: bool,
        output: String,
        #[arg(required = true)]
        images: Vec<String>,
    },
    /// Tag an image: <source_ref> <target_ref> [<target_ref>...].
    Tag {
        /// Force target_ref to be created, regardless if it already exists.
        #[arg(long)]
        force: bool,
        source: String,
        #[arg(required = true)]
        targets: Vec<String>,
    },
    /// Remove one or more images by reference.
    #[command(aliases = ["del", "remove", "rm"])]
    Delete {
        /// Synchronously remove the image and all associated resources.
        #[arg(long)]
        sync: bool,
        #[arg(required = true)]
        refs: Vec<String>,
    },
    /// Check that all content of images is available locally.
    Check {
        /// Print only the ready image refs.
        #[arg(short, long)]
        quiet: bool,
        #[command(flatten)]
        snapshotter: SnapshotterFlag,
        filters: Vec<String>,
    },
    /// Unpack an image into the snapshotter.
    Unpack {
        #[command(flatten)]
        snapshotter: SnapshotterFlag,
        /// Unpack the image for a specific platform.
        #[arg(long)]
        platform: Option<String>,
        image: String,
    },
    /// Mount an image's rootfs on a target path (read-only unless --rw); prints the chain ID.
    Mount {
        #[command(flatten)]
        snapshotter: SnapshotterFlag,
        /// Enable write support on the mount.
        #[arg(long)]
        rw: bool,
        /// Mount the image for a specific platform.
        #[arg(long)]
        platform: Option<String>,
        image: String,
        target: String,
    },
    /// Unmount an image's rootfs from a target path.
    Unmount {
        #[command(flatten)]
        snapshotter: SnapshotterFlag,
        /// Remove the snapshot after a successful unmount.
        #[arg(long)]
        rm: bool,
        target: String,
    },
    /// Set and clear labels for an image: <ref> [<key>=<value>...].
    Label { image: String, labels: Vec<String> },
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Connect(#[from] client::Error),
    #[error("{}", .0.message())]
    Rpc(#[from] tonic::Status),
    #[error(transparent)]
    Import(#[from] import::Error),
    #[error(transparent)]
    Export(#[from] crate::image::export::Error),
    #[error(transparent)]
    Registry(#[from] crate::image::distribution::Error),
    #[error(transparent)]
    Unpack(#[from] unpack::Error),
    #[error(transparent)]
    Image(#[from] image::Error),
    #[error("open {path}: {source}")]
    Open {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("invalid platform {0:?}: expected os/arch[/variant], e.g. linux/amd64")]
    Platform(String),
    #[error("failed to list images: {}", .0.message())]
    List(tonic::Status),
    #[error("unable to delete {name}: {}", .status.message())]
    Delete { name: String, status: tonic::Status },
    #[error("unable to check {0}")]
    Check(String),
    #[error(transparent)]
    Mount(#[from] crate::rootfs::Error),
    #[error("error deleting lease: {}", .0.message())]
    Lease(tonic::Status),
    #[error("error removing snapshot: {}", .0.message())]
    RemoveSnapshot(tonic::Status),
}

/// Parses `--platform os/arch[/variant]`.
pub fn parse_platform(s: &str) -> Result<Platform, Error> {
    let parts: Vec<&str> = s.split('/').collect();
    let (os, arch, variant) = match parts.as_slice() {
        [os, arch] => (*os, *arch, ""),
        [os, arch, v] => (*os, *arch, *v),
        [arch] if !arch.is_empty() => ("linux", *arch, ""),
        _ => return Err(Error::Platform(s.to_string())),
    };
    if os.is_empty() || arch.is_empty() {
        return Err(Error::Platform(s.to_string()));
    }
    Ok(Platform {
        os: os.to_string(),
        architecture: arch.to_string(),
        variant: variant.to_string(),
        ..Platform::default()
    })
}

fn matcher(all: bool, platform: Option<&str>) -> Result<PlatformMatcher, Error> {
    Ok(if all {
        PlatformMatcher::All
    } else if let Some(p) = platform {
        PlatformMatcher::Only(parse_platform(p)?)
    } else {
        PlatformMatcher::Only(Platform::host())
    })
}

/// `Images.Get`, with containerd's not-found message.
pub async fn get(client: &client::Client, name: &str) -> Result<Image, tonic::Status> {
    client
        .images()
        .get(GetImageRequest {
            name: name.to_string(),
        })
        .await?
        .into_inner()
        .image
        .ok_or_else(|| tonic::Status::not_found(format!("image {name:?}: not found")))
}

pub fn target_of(img: &Image) -> Descriptor {
    img.target
        .as_ref()
        .map(Descriptor::from_proto)
        .unwrap_or_default()
}

pub async fn run(cmd: Cmd, g: &Globals) -> Result<(), Error> {
    let client = g.connect().await?;
    match cmd {
        Cmd::List { quiet, filters } => list(&client, quiet, filters).await,
        Cmd::Import {
            base_name,
            digests,
            index_name,
            all_platforms,
            platform,
            no_unpack,
            snapshotter,
            input,
        } => {
            let opts = import::Options {
                base_name,
                digests,
                index_name,
                platform: matcher(all_platforms, platform.as_deref())?,
            };
            import_cmd(&client, &opts, &input, no_unpack, &snapshotter.snapshotter).await
        }
        Cmd::Pull {
            registry,
            platform,
            all_platforms,
            snapshotter,
            reference,
        } => {
            let opts = crate::image::distribution::Options::new(
                registry,
                matcher(all_platforms, platform.as_deref())?,
            );
            pull_cmd(&client, &reference, &opts, &snapshotter.snapshotter).await
        }
        Cmd::Push {
            registry,
            platform,
            remote,
            local,
        } => {
            let reference = crate::image::distribution::parse_reference(&remote)?;
            let img = get(&client, local.as_deref().unwrap_or(&remote)).await?;
            let opts = crate::image::distribution::Options::new(
                registry,
                matcher(platform.is_none(), platform.as_deref())?,
            );
            crate::image::distribution::push(&client, &reference, &target_of(&img), &opts).await?;
            Ok(())
        }
        Cmd::Export {
            skip_manifest_json,
            skip_non_distributable: _,
            platform,
            all_platforms,
            output,
            images,
        } => {
            let platform = matcher(all_platforms, platform.as_deref())?;
            let mut targets = Vec::new();
            for name in images {
                let img = get(&client, &name).await?;
                targets.push((name, target_of(&img)));
            }
            if output == "-" {
                image::export::export(
                    &client,
                    &targets,
                    &platform,
                    !skip_manifest_json,
                    std::io::stdout().lock(),
                )
                .await?;
            } else {
                let file = std::fs::File::create(&output).map_err(|source| Error::Open {
                    path: output.clone(),
                    source,
                })?;
                image::export::export(
                    &client,
                    &targets,
                    &platform,
                    !skip_manifest_json,
                    std::io::BufWriter::new(file),
                )
                .await?;
            }
            Ok(())
        }
        Cmd::Tag {
            force,
            source,
            targets,
        } => {
            let mut img = get(&client, &source).await?;
            for t in targets {
                img.name.clone_from(&t);
                img.created_at = None;
                img.updated_at = None;
                let create = CreateImageRequest {
                    image: Some(img.clone()),
                    ..Default::default()
                };
                match client.images().create(create.clone()).await {
                    Ok(_) => {}
                    Err(s) if s.code() == tonic::Code::AlreadyExists && force => {
                        client
                            .images()
                            .delete(DeleteImageRequest {
                                name: t.clone(),
                                ..Default::default()
                            })
                            .await?;
                        client.images().create(create).await?;
                    }
                    Err(s) => return Err(s.into()),
                }
                println!("{t}");
            }
            Ok(())
        }
        Cmd::Delete { sync, refs } => {
            let mut first_err = None;
            let n = refs.len();
            for (i, name) in refs.into_iter().enumerate() {
                let req = DeleteImageRequest {
                    name: name.clone(),
                    sync: sync && i + 1 == n,
                    ..Default::default()
                };
                match client.images().delete(req).await {
                    Ok(_) => println!("{name}"),
                    Err(s) if s.code() == tonic::Code::NotFound => {
                        eprintln!("berth: {name}: image not found");
                    }
                    Err(status) => {
                        eprintln!("berth: unable to delete {name}: {}", status.message());
                        first_err.get_or_insert(Error::Delete { name, status });
                    }
                }
            }
            first_err.map_or(Ok(()), Err)
        }
        Cmd::Check {
            quiet,
            snapshotter,
            filters,
        } => check(&client, quiet, &snapshotter.snapshotter, filters).await,
        Cmd::Unpack {
            snapshotter,
            platform,
            image,
        } => {
            let img = get(&client, &image).await?;
            let target = target_of(&img);
            let platform = matcher(false, platform.as_deref())?;
            let lease = store::TempLease::create(&client).await?;
            let leased = client.with_lease(&lease.id)?;
            print!("unpacking {} ({})...", img.name, target.digest);
            let result =
                unpack::unpack(&leased, &target, &platform, &snapshotter.snapshotter).await;
            lease.release(&client).await;
            result?;
            println!("done");
            Ok(())
        }
        Cmd::Mount {
            snapshotter,
            rw,
            platform,
            image,
            target,
        } => {
            mount(
                &client,
                snapshotter.snapshotter,
                rw,
                platform.as_deref(),
                &image,
                target,
            )
            .await
        }
        Cmd::Unmount {
            snapshotter,
            rm,
            target,
        } => unmount(&client, snapshotter.snapshotter, rm, target).await,
        Cmd::Label { image, labels } => {
            let labels = labels_from_args(&labels);
            let paths = labels.keys().map(|k| format!("labels.{k}")).collect();
            let updated = client
                .images()
                .update(UpdateImageRequest {
                    image: Some(Image {
                        name: image,
                        labels,
                        ..Default::default()
                    }),
                    update_mask: Some(prost_types::FieldMask { paths }),
                    ..Default::default()
                })
                .await?
                .into_inner()
                .image
                .unwrap_or_default();
            println!("{}", crate::util::format_labels(&updated.labels));
            Ok(())
        }
    }
}

/// `images import`: the archive into the content store under a temporary lease, image
/// records created, then each image unpacked (ctr prints `unpacking <name> (<digest>)...done`).
async fn import_cmd(
    client: &client::Client,
    opts: &import::Options,
    input: &str,
    no_unpack: bool,
    snapshotter: &str,
) -> Result<(), Error> {
    let reader: Box<dyn Read + Send> = if input == "-" {
        Box::new(std::io::stdin())
    } else {
        Box::new(std::fs::File::open(input).map_err(|source| Error::Open {
            path: input.to_string(),
            source,
        })?)
    };
    let lease = store::TempLease::create(client).await?;
    let leased = client.with_lease(&lease.id)?;
    let result = async {
        let images = import::import(&leased, reader, opts).await?;
        if !no_unpack {
            let unpack_platform = match &opts.platform {
                PlatformMatcher::All => PlatformMatcher::Only(Platform::host()),
                p => p.clone(),
            };
            for img in &images {
                let target = target_of(img);
                print!("unpacking {} ({})...", img.name, target.digest);
                use std::io::Write as _;
                let _ = std::io::stdout().flush();
                unpack::unpack(&leased, &target, &unpack_platform, snapshotter).await?;
                println!("done");
            }
        }
        Ok::<(), Error>(())
    }
    .await;
    lease.release(client).await;
    result
}

/// `images pull`: fetch under a temporary lease, create the image, unpack it.
async fn pull_cmd(
    client: &client::Client,
    reference: &str,
    opts: &crate::image::distribution::Options,
    snapshotter: &str,
) -> Result<(), Error> {
    let reference = crate::image::distribution::parse_reference(reference)?;
    let lease = store::TempLease::create(client).await?;
    let leased = client.with_lease(&lease.id)?;
    let result = async {
        let img = crate::image::distribution::pull(&leased, &reference, opts).await?;
        let unpack_platform = match &opts.platform {
            PlatformMatcher::All => PlatformMatcher::Only(Platform::host()),
            p => p.clone(),
        };
        let target = target_of(&img);
        println!(
            "unpacking {} {}...",
            unpack_platform.describe(),
            target.digest
        );
        unpack::unpack(&leased, &target, &unpack_platform, snapshotter).await?;
        println!("done");
        Ok::<(), Error>(())
    }
    .await;
    lease.release(client).await;
    result
}

/// `images mount`: unpack, then a view (or, with `--rw`, an active snapshot) keyed by the
/// target path under a lease named after it, mounted there; prints the chain ID and target.
async fn mount(
    client: &client::Client,
    sn: String,
    rw: bool,
    platform: Option<&str>,
    image: &str,
    target: String,
) -> Result<(), Error> {
    let labels = [(
        format!("containerd.io/gc.ref.snapshot.{sn}"),
        target.clone(),
    )]
    .into_iter()
    .collect();
    let lease = store::TempLease::named(client, &target, labels).await?;
    let leased = client.with_lease(&lease.id)?;
    let img = get(&leased, image).await?;
    let t = target_of(&img);
    let platform = matcher(false, platform)?;
    let chain = unpack::unpack(&leased, &t, &platform, &sn).await?;
    println!("{chain}");
    let created = if rw {
        leased
            .snapshots()
            .prepare(protos::services::snapshots::v1::PrepareSnapshotRequest {
                snapshotter: sn.clone(),
                key: target.clone(),
                parent: chain,
                labels: std::collections::HashMap::new(),
            })
            .await
            .map(|r| r.into_inner().mounts)
    } else {
        leased
            .snapshots()
            .view(protos::services::snapshots::v1::ViewSnapshotRequest {
                snapshotter: sn.clone(),
                key: target.clone(),
                parent: chain,
                labels: std::collections::HashMap::new(),
            })
            .await
            .map(|r| r.into_inner().mounts)
    };
    // An existing snapshot for this target (mounted before) is reused, as ctr does.
    let mounts = match created {
        Ok(m) => m,
        Err(s) if s.code() == tonic::Code::AlreadyExists => {
            leased
                .snapshots()
                .mounts(protos::services::snapshots::v1::MountsRequest {
                    snapshotter: sn.clone(),
                    key: target.clone(),
                })
                .await?
                .into_inner()
                .mounts
        }
        Err(s) => return Err(s.into()),
    };
    if let Err(e) = crate::rootfs::mount_all(&mounts, std::path::Path::new(&target), !rw) {
        let _ = leased
            .snapshots()
            .remove(protos::services::snapshots::v1::RemoveSnapshotRequest {
                snapshotter: sn,
                key: target.clone(),
            })
            .await;
        return Err(e.into());
    }
    println!("{target}");
    Ok(())
}

/// `images unmount`: unmounts the target; `--rm` drops its lease and snapshot.
async fn unmount(
    client: &client::Client,
    sn: String,
    rm: bool,
    target: String,
) -> Result<(), Error> {
    crate::rootfs::unmount_all(std::path::Path::new(&target))?;
    if rm {
        match client
            .leases()
            .delete(protos::services::leases::v1::DeleteRequest {
                id: target.clone(),
                sync: false,
            })
            .await
        {
            Ok(_) => {}
            Err(s) if s.code() == tonic::Code::NotFound => {}
            Err(s) => return Err(Error::Lease(s)),
        }
        match client
            .snapshots()
            .remove(protos::services::snapshots::v1::RemoveSnapshotRequest {
                snapshotter: sn,
                key: target.clone(),
            })
            .await
        {
            Ok(_) => {}
            Err(s) if s.code() == tonic::Code::NotFound => {}
            Err(s) => return Err(Error::RemoveSnapshot(s)),
        }
    }
    println!("{target}");
    Ok(())
}

async fn list(client: &client::Client, quiet: bool, filters: Vec<String>) -> Result<(), Error> {
    let images = client
        .images()
        .list(ListImagesRequest { filters })
        .await
        .map_err(Error::List)?
        .into_inner()
        .images;
    if quiet {
        for i in &images {
            println!("{}", i.name);
        }
        return Ok(());
    }
    let host = PlatformMatcher::Only(Platform::host());
    let mut tw = TabWriter::new(1, 1);
    tw.line("REF\tTYPE\tDIGEST\tSIZE\tPLATFORMS\tLABELS\t");
    for img in &images {
        let target = target_of(img);
        let size = image::size(client, &target, &host).await;
        let platforms = match image::platforms(client, &target).await {
            Ok(ps) if !ps.is_empty() => {
                let set: BTreeSet<String> = ps.iter().map(Platform::format).collect();
                set.into_iter().collect::<Vec<_>>().join(",")
            }
            _ => "-".to_string(),
        };
        let labels = if img.labels.is_empty() {
            "-".to_string()
        } else {
            crate::util::format_labels(&img.labels)
        };
        tw.line(&format!(
            "{}\t{}\t{}\t{}\t{platforms}\t{labels}\t",
            img.name,
            target.media_type,
            target.digest,
            human_bytes(size)
        ));
    }
    print!("{}", tw.finish());
    Ok(())
}

async fn check(
    client: &client::Client,
    quiet: bool,
    snapshotter: &str,
    filters: Vec<String>,
) -> Result<(), Error> {
    let images = client
        .images()
        .list(ListImagesRequest { filters })
        .await
        .map_err(Error::List)?
        .into_inner()
        .images;
    let host = PlatformMatcher::Only(Platform::host());
    let mut tw = TabWriter::new(1, 1);
    if !quiet {
        tw.line("REF\tTYPE\tDIGEST\tSTATUS\tSIZE\tUNPACKED\t");
    }
    let mut failed = None;
    for img in &images {
        let target = target_of(img);
        let (status, size, complete) = match image::resolve_manifest(client, &target, &host).await {
            Ok((_, manifest)) => {
                let mut required = vec![manifest.config.clone()];
                required.extend(manifest.layers.iter().cloned());
                let mut present: Vec<&Descriptor> = Vec::new();
                for d in &required {
                    if store::info(client, &d.digest).await.is_ok() {
                        present.push(d);
                    }
                }
                let req_size: i64 = required.iter().map(|d| d.size).sum();
                let pres_size: i64 = present.iter().map(|d| d.size).sum();
                let complete = present.len() == required.len();
                let status = format!(
                    "{} ({}/{})",
                    if complete { "complete" } else { "incomplete" },
                    present.len(),
                    required.len()
                );
                (
                    status,
                    format!("{}/{}", human_bytes(pres_size), human_bytes(req_size)),
                    complete,
                )
            }
            Err(image::Error::Store(store::Error::Read { status, .. }))
                if status.code() == tonic::Code::NotFound =>
            {
                (
                    "unavailable (0/?)".to_string(),
                    "0.0 B/?".to_string(),
                    false,
                )
            }
            Err(e) => {
                eprintln!("berth: unable to check {}: {e}", img.name);
                failed.get_or_insert(Error::Check(img.name.clone()));
                ("error".to_string(), "-".to_string(), false)
            }
        };
        let unpacked = match unpack::top_chain_id(client, &target, &host).await {
            Ok(chain) if !chain.is_empty() => unpack::snapshot_exists(client, snapshotter, &chain)
                .await
                .unwrap_or(false),
            _ => false,
        };
        if quiet {
            if complete {
                println!("{}", img.name);
            }
        } else {
            tw.line(&format!(
                "{}\t{}\t{}\t{status}\t{size}\t{unpacked}",
                img.name, target.media_type, target.digest
            ));
        }
    }
    if !quiet {
        print!("{}", tw.finish());
    }
    failed.map_or(Ok(()), Err)
}
