//! `images export`: writes images as an OCI image layout tar (containerd
//! `archive.Export`). The archive writer is berthd's
//! ([`berthd::transfer::export::write_archive`], shared with the Transfer service); here
//! it reads blobs over the content gRPC service, each spooled through a temporary file
//! since layers can be far larger than memory.

use std::io::{Seek, SeekFrom, Write};

use berthd::transfer::export::{self as archive, ArchiveError, ArchiveOptions, BlobReader};
use berthd::transfer::oci::BlobSource;

use super::{store, Descriptor, PlatformMatcher, WalkError};
use crate::client::Client;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Image(#[from] super::Error),
    #[error(transparent)]
    Store(#[from] store::Error),
    #[error(transparent)]
    Archive(#[from] ArchiveError),
}

impl From<WalkError> for Error {
    fn from(e: WalkError) -> Self {
        Error::Image(e.into())
    }
}

/// berthd's content service over gRPC, as the archive writer's blob reader: the walks'
/// reads as [`super::Remote`] does them, blobs spooled.
struct Remote<'a>(&'a Client);

impl BlobSource for Remote<'_> {
    type Error = Error;
    async fn read_json_blob(
        &self,
        what: &'static str,
        desc: &Descriptor,
    ) -> Result<Vec<u8>, Error> {
        Ok(super::Remote(self.0).read_json_blob(what, desc).await?)
    }
}

impl BlobReader for Remote<'_> {
    type Blob = std::fs::File;
    async fn open_blob(&self, digest: &str) -> Result<(std::fs::File, u64), Error> {
        let io = |e| Error::Archive(ArchiveError::Io(e));
        let mut spool = tempfile::tempfile().map_err(io)?;
        let n = store::copy_blob(self.0, digest, &mut spool).await?;
        spool.seek(SeekFrom::Start(0)).map_err(io)?;
        Ok((spool, n))
    }
}

/// Exports `images` (name, target) to `out`.
pub async fn export<W: Write>(
    client: &Client,
    images: &[(String, Descriptor)],
    platform: &PlatformMatcher,
    manifest_json: bool,
    out: W,
) -> Result<(), Error> {
    let o = ArchiveOptions {
        matcher: platform.matcher(),
        manifest_json,
        skip_non_distributable: false,
        // As ctr 1.6 writes it.
        index_media_type: false,
    };
    archive::write_archive(&Remote(client), images, &o, out).await
}
