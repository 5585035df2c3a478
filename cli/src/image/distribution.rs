//! `images pull`, `images push` and `content fetch`: walk an image tree between berthd's
//! content store (over gRPC) and a registry, through the shared registry client
//! `berthd::remotes` (containerd's `remotes.FetchHandler` / `remotes.PushContent` over
//! `core/remotes/docker`).
//!
//! Pull: resolve the reference to a manifest (or index), walk it for the wanted platforms,
//! stream every missing blob into Content.Write with its expected digest (the store
//! verifies it on commit, the fetcher as it streams), label blobs with
//! `containerd.io/distribution.source.<host>` and parents with their GC references, and
//! create the image record.
//!
//! Push: children before parents; a blob the registry lacks (`HEAD` 404) is uploaded
//! streamed from the content store; manifests are put by digest, the root by tag.
//!
//! Credentials are ctr's: `--user user[:password]` (prompted for on the terminal when the
//! password is missing), the same for every host. ctr (1.6 and 2.x alike) reads no
//! Docker `config.json` and no credential helpers, so neither does berth. ctr's
//! `--refresh`, `--http-dump` and `--http-trace` are not implemented.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use berthd::remotes::{self, Content, HostOptions, Resolver, TlsOptions};
use futures::StreamExt;
use hyper::body::Bytes;

use super::store::{self, Commit, Piece};
use super::{Descriptor, PlatformMatcher, JSON_LIMIT};
use crate::client::Client;

pub use berthd::remotes::Reference;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Remote(#[from] remotes::Error),
    #[error(transparent)]
    Reference(#[from] remotes::reference::ReferenceError),
    #[error(transparent)]
    Store(#[from] store::Error),
    #[error(transparent)]
    Image(#[from] super::Error),
    #[error("{}", .0.message())]
    Rpc(#[from] tonic::Status),
    #[error("flags --tlscert and --tlskey must be set together")]
    CertKeyPair,
    #[error(
        "--user {0:?} has no password and stdin is not a terminal to prompt for one: \
         pass --user {0}:<password>"
    )]
    NoTerminal(String),
    #[error("failed to read the password from the terminal: {0}")]
    Prompt(#[source] std::io::Error),
}

/// Parses and normalises a reference for pull, push or fetch.
pub fn parse_reference(s: &str) -> Result<Reference, Error> {
    Ok(Reference::parse(s)?)
}

/// ctr's registry flags (`commands.RegistryFlags`) for `images pull` and `images push`.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct RegistryFlags {
    /// Skip SSL certificate validation.
    #[arg(short = 'k', long)]
    pub skip_verify: bool,
    /// Allow connections using plain HTTP (localhost registries without TLS settings
    /// always use it).
    #[arg(long)]
    pub plain_http: bool,
    /// user[:password] Registry user and password (prompted for on the terminal when
    /// omitted).
    #[arg(short, long)]
    pub user: Option<String>,
    /// Custom hosts configuration directory (`<dir>/<host>/hosts.toml`, or Docker's
    /// certs.d files; `<dir>/_default` for any host).
    #[arg(long)]
    pub hosts_dir: Option<PathBuf>,
    /// Path to TLS root CA (replaces the system CAs).
    #[arg(long)]
    pub tlscacert: Option<PathBuf>,
    /// Path to TLS client certificate.
    #[arg(long)]
    pub tlscert: Option<PathBuf>,
    /// Path to TLS client key.
    #[arg(long)]
    pub tlskey: Option<PathBuf>,
}

/// Pull, push and fetch options.
pub struct Options {
    pub plain_http: bool,
    pub user: Option<String>,
    pub platform: PlatformMatcher,
    /// `--tlscacert`: the CA certificates (PEM) to trust instead of the system's.
    pub tls_ca: Option<PathBuf>,
    /// `--skip-verify`: do not verify the registry's certificate.
    pub skip_verify: bool,
    /// `--tlscert` / `--tlskey`: client certificate.
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    /// `--hosts-dir`.
    pub hosts_dir: Option<PathBuf>,
}

impl Options {
    pub fn new(flags: RegistryFlags, platform: PlatformMatcher) -> Self {
        Options {
            plain_http: flags.plain_http,
            user: flags.user,
            platform,
            tls_ca: flags.tlscacert,
            skip_verify: flags.skip_verify,
            tls_cert: flags.tlscert,
            tls_key: flags.tlskey,
            hosts_dir: flags.hosts_dir,
        }
    }
}

/// Reads a line from the terminal on stdin with echo off (ctr's `passwordPrompt`).
fn prompt_password(user: &str) -> Result<String, Error> {
    use std::io::{BufRead, IsTerminal, Write};
    let stdin = std::io::stdin();
    if !stdin.is_terminal() {
        return Err(Error::NoTerminal(user.to_string()));
    }
    // Echo goes off before the prompt shows, so nothing typed after it is echoed.
    let saved = nix::sys::termios::tcgetattr(&stdin).map_err(|e| Error::Prompt(e.into()))?;
    let mut quiet = saved.clone();
    quiet
        .local_flags
        .remove(nix::sys::termios::LocalFlags::ECHO);
    nix::sys::termios::tcsetattr(&stdin, nix::sys::termios::SetArg::TCSANOW, &quiet)
        .map_err(|e| Error::Prompt(e.into()))?;
    print!("Password: ");
    let _ = std::io::stdout().flush();
    let mut line = String::new();
    let read = stdin.lock().read_line(&mut line);
    let _ = nix::sys::termios::tcsetattr(&stdin, nix::sys::termios::SetArg::TCSANOW, &saved);
    println!();
    read.map_err(Error::Prompt)?;
    Ok(line.trim_end_matches(['\n', '\r']).to_string())
}

/// `--user`: `user:password` splits at the first colon; a bare user is prompted for a
/// password (ctr's `GetResolver`). The same credentials go to every host.
fn credentials(user: Option<&str>) -> Result<Option<remotes::Credentials>, Error> {
    let Some(user) = user.filter(|u| !u.is_empty()) else {
        return Ok(None);
    };
    let (username, secret) = match user.find(':').filter(|&i| i > 0) {
        Some(i) => (user[..i].to_string(), user[i + 1..].to_string()),
        None => (user.to_string(), String::new()),
    };
    let secret = if secret.is_empty() {
        prompt_password(&username)?
    } else {
        secret
    };
    Ok(Some(remotes::Credentials { username, secret }))
}

/// The registry client for `opts`.
fn resolver_for(opts: &Options) -> Result<Resolver, Error> {
    let client_pairs = match (&opts.tls_cert, &opts.tls_key) {
        (None, None) => Vec::new(),
        (Some(cert), Some(key)) => vec![(cert.clone(), Some(key.clone()))],
        _ => return Err(Error::CertKeyPair),
    };
    let options = HostOptions {
        plain_http: opts.plain_http,
        credentials: credentials(opts.user.as_deref())?,
        tls: TlsOptions {
            ca_files: opts.tls_ca.iter().cloned().collect(),
            no_system_roots: opts.tls_ca.is_some(),
            client_pairs,
            skip_verify: opts.skip_verify,
        },
        hosts_dir: opts.hosts_dir.clone(),
    };
    Ok(Resolver::new(Arc::new(remotes::ConfigHosts { options })))
}

fn remote(d: &Descriptor) -> remotes::Descriptor {
    remotes::Descriptor {
        media_type: d.media_type.clone(),
        digest: d.digest.clone(),
        size: d.size,
    }
}

/// Pulls `reference`; returns the image record (not yet unpacked).
pub async fn pull(
    client: &Client,
    reference: &Reference,
    opts: &Options,
) -> Result<protos::services::images::v1::Image, Error> {
    let root = fetch_all(client, reference, opts).await?;
    let image =
        super::import::create_or_update(client, reference.name.clone(), root.to_proto()).await?;
    Ok(image)
}

/// Resolves `reference` and fetches all its content for the wanted platforms (ctr's
/// `content fetch`); returns the root descriptor. No image record is created.
pub async fn fetch_all(
    client: &Client,
    reference: &Reference,
    opts: &Options,
) -> Result<Descriptor, Error> {
    let resolver = resolver_for(opts)?;
    let (name, resolved) = resolver.resolve(reference).await?;
    println!("{name}: resolved");
    let fetcher = resolver.fetcher(reference)?;
    let root = Descriptor {
        media_type: resolved.media_type,
        digest: resolved.digest,
        size: resolved.size,
        ..Descriptor::default()
    };
    let source_label = (
        format!("containerd.io/distribution.source.{}", reference.host),
        reference.repo.clone(),
    );
    // Fetch depth-first: a parent is written after its children, with their GC labels.
    let mut written = 0usize;
    fetch(client, &fetcher, &root, opts, &source_label, &mut written).await?;
    println!("elapsed: done, {written} blob(s) fetched");
    Ok(root)
}

/// The children of a manifest or index body for the wanted platforms.
fn children_of(desc: &Descriptor, body: &[u8], opts: &Options) -> Result<Vec<Descriptor>, Error> {
    let mut children =
        berthd::transfer::oci::parse_children(desc, body).map_err(super::Error::from)?;
    children.retain(|c| opts.platform.matches(c.platform.as_ref()));
    Ok(children)
}

/// Fetches `desc` and (for manifests and indexes) its children for the wanted platforms.
async fn fetch(
    client: &Client,
    fetcher: &remotes::Fetcher,
    desc: &Descriptor,
    opts: &Options,
    source_label: &(String, String),
    written: &mut usize,
) -> Result<(), Error> {
    let is_parent = super::is_index(&desc.media_type) || super::is_manifest(&desc.media_type);
    if is_parent {
        let body = fetcher
            .fetch(&remote(desc))
            .await?
            .bytes(JSON_LIMIT)
            .await?;
        let children = children_of(desc, &body, opts)?;
        for c in &children {
            Box::pin(fetch(client, fetcher, c, opts, source_label, written)).await?;
        }
        let mut labels: HashMap<String, String> = HashMap::new();
        labels.insert(source_label.0.clone(), source_label.1.clone());
        labels.extend(berthd::transfer::oci::gc_labels(&children));
        if !store::have_and_hold(client, &desc.digest).await? {
            store::write_bytes(
                client,
                &format!("manifest-{}", desc.digest),
                body,
                labels.clone(),
            )
            .await?;
            *written += 1;
        }
        store::set_labels(client, &desc.digest, labels).await?;
        return Ok(());
    }
    if store::have_and_hold(client, &desc.digest).await? {
        let labels = [source_label.clone()].into_iter().collect();
        store::set_labels(client, &desc.digest, labels).await?;
        return Ok(());
    }
    let stream = fetcher.fetch(&remote(desc)).await?;
    let labels: HashMap<String, String> = [source_label.clone()].into_iter().collect();
    // A fetch error (size or digest mismatch, broken connection) ends the stream without
    // a commit; it is reported after the write.
    let failure: Arc<Mutex<Option<remotes::Error>>> = Arc::default();
    let slot = failure.clone();
    let data = stream.scan((), move |(), r| {
        futures::future::ready(match r {
            Ok(b) => Some(Piece::Data(b.to_vec())),
            Err(e) => {
                if let Ok(mut s) = slot.lock() {
                    s.get_or_insert(e);
                }
                None
            }
        })
    });
    let end = Commit {
        digest: desc.digest.clone(),
        labels,
    };
    // Commit only a complete, verified stream.
    let slot = failure.clone();
    let commit = futures::stream::once(async move {
        let failed = slot.lock().map_or(true, |s| s.is_some());
        (!failed).then_some(Piece::End(end))
    })
    .filter_map(futures::future::ready);
    let pieces = data.chain(commit);
    store::write_stream(client, &format!("fetch-{}", desc.digest), desc.size, pieces).await?;
    if let Some(e) = failure.lock().ok().and_then(|mut f| f.take()) {
        return Err(e.into());
    }
    println!("{}: done", desc.digest);
    *written += 1;
    Ok(())
}

/// Pushes the image whose target is `target` as `reference` (children first; the root
/// manifest or index last, by tag).
pub async fn push(
    client: &Client,
    reference: &Reference,
    target: &Descriptor,
    opts: &Options,
) -> Result<(), Error> {
    let resolver = resolver_for(opts)?;
    let pusher = resolver.pusher(reference)?;
    push_tree(client, &pusher, target, opts, true).await?;
    println!("{}: pushed", reference.name);
    Ok(())
}

async fn push_tree(
    client: &Client,
    pusher: &remotes::Pusher,
    desc: &Descriptor,
    opts: &Options,
    root: bool,
) -> Result<(), Error> {
    let is_parent = super::is_index(&desc.media_type) || super::is_manifest(&desc.media_type);
    if !is_parent {
        return push_blob(client, pusher, desc).await;
    }
    let body = store::read_blob(client, &desc.digest, JSON_LIMIT).await?;
    let children = children_of(desc, &body, opts)?;
    for c in &children {
        Box::pin(push_tree(client, pusher, c, opts, false)).await?;
    }
    let content = Content::Bytes(Bytes::from(body));
    if root {
        pusher.push_tagged(&remote(desc), content).await?;
    } else {
        pusher.push(&remote(desc), content).await?;
    }
    println!("manifest-{}: done", desc.digest);
    Ok(())
}

async fn push_blob(
    client: &Client,
    pusher: &remotes::Pusher,
    desc: &Descriptor,
) -> Result<(), Error> {
    if pusher.exists(&remote(desc)).await? {
        println!("{}: exists", desc.digest);
        return Ok(());
    }
    let stream = client
        .content()
        .read(protos::services::content::v1::ReadContentRequest {
            digest: desc.digest.clone(),
            offset: 0,
            size: 0,
        })
        .await?
        .into_inner();
    let bytes = stream.map(|r| {
        r.map(|chunk| Bytes::from(chunk.data))
            .map_err(|s| std::io::Error::other(s.message().to_string()))
    });
    pusher
        .push(&remote(desc), Content::Stream(bytes.boxed()))
        .await?;
    println!("{}: done", desc.digest);
    Ok(())
}
