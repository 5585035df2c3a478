//! Layer media types, compression detection and the digesting readers/writers used by both
//! directions (containerd's `archive/compression` and `images.DiffCompression`).

use std::io::{self, Chain, Cursor, Read, Write};

use sha2::{Digest as _, Sha256};

use super::{Error, Result};

pub const MEDIA_TYPE_LAYER: &str = "application/vnd.oci.image.layer.v1.tar";
pub const MEDIA_TYPE_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
pub const MEDIA_TYPE_LAYER_ZSTD: &str = "application/vnd.oci.image.layer.v1.tar+zstd";
pub const MEDIA_TYPE_DOCKER_LAYER: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";
pub const MEDIA_TYPE_DOCKER_FOREIGN_LAYER: &str =
    "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip";

pub const MEDIA_TYPE_DOCKER_LAYER_TAR: &str = "application/vnd.docker.image.rootfs.diff.tar";
pub const MEDIA_TYPE_DOCKER_FOREIGN_LAYER_TAR: &str =
    "application/vnd.docker.image.rootfs.foreign.diff.tar";

/// Whether apply sniffs the blob for compression (containerd's `compressedHandler`): yes for
/// compressed types and for Docker's `rootfs.diff.tar` (often mislabelled compressed blobs);
/// no for the plain OCI tar types, which are read as they are.
pub fn sniff_for_media_type(media_type: &str) -> Result<bool> {
    let c = Compression::from_media_type(media_type)?;
    Ok(c != Compression::Uncompressed
        || media_type == MEDIA_TYPE_DOCKER_LAYER_TAR
        || media_type == MEDIA_TYPE_DOCKER_FOREIGN_LAYER_TAR)
}

/// The compression of a layer blob.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Compression {
    Uncompressed,
    #[default]
    Gzip,
    Zstd,
}

impl Compression {
    /// The compression a layer media type declares, or `UnsupportedMediaType`. Docker's
    /// uncompressed `rootfs.diff.tar` types report `Uncompressed` here; see
    /// [`sniff_for_media_type`] for how apply reads them.
    pub fn from_media_type(media_type: &str) -> Result<Compression> {
        match media_type {
            MEDIA_TYPE_DOCKER_LAYER | MEDIA_TYPE_DOCKER_FOREIGN_LAYER => {
                return Ok(Compression::Gzip)
            }
            MEDIA_TYPE_DOCKER_LAYER_TAR | MEDIA_TYPE_DOCKER_FOREIGN_LAYER_TAR => {
                return Ok(Compression::Uncompressed)
            }
            _ => {}
        }
        let base = [
            "application/vnd.oci.image.layer.v1.tar",
            "application/vnd.oci.image.layer.nondistributable.v1.tar",
        ];
        for b in base {
            if let Some(rest) = media_type.strip_prefix(b) {
                return match rest {
                    "" => Ok(Compression::Uncompressed),
                    "+gzip" => Ok(Compression::Gzip),
                    "+zstd" => Ok(Compression::Zstd),
                    _ => Err(Error::UnsupportedMediaType {
                        media_type: media_type.to_string(),
                    }),
                };
            }
        }
        Err(Error::UnsupportedMediaType {
            media_type: media_type.to_string(),
        })
    }

    /// The OCI layer media type for this compression.
    pub fn oci_media_type(self) -> &'static str {
        match self {
            Compression::Uncompressed => MEDIA_TYPE_LAYER,
            Compression::Gzip => MEDIA_TYPE_LAYER_GZIP,
            Compression::Zstd => MEDIA_TYPE_LAYER_ZSTD,
        }
    }

    /// Detect from the first bytes of a stream, as containerd's `DecompressStream` does.
    pub fn detect(magic: &[u8]) -> Compression {
        if magic.starts_with(&[0x1f, 0x8b, 0x08]) {
            Compression::Gzip
        } else if magic.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
            Compression::Zstd
        } else {
            Compression::Uncompressed
        }
    }
}

/// A decompressing reader over a layer blob, chosen by sniffing its magic bytes.
pub fn decompress<'a, R: Read + 'a>(mut blob: R) -> io::Result<(Compression, Box<dyn Read + 'a>)> {
    let mut magic = [0u8; 4];
    let mut n = 0;
    while n < magic.len() {
        match blob.read(&mut magic[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    let head: Chain<Cursor<Vec<u8>>, R> = Cursor::new(magic[..n].to_vec()).chain(blob);
    let c = Compression::detect(&magic[..n]);
    let r: Box<dyn Read + 'a> = match c {
        Compression::Uncompressed => Box::new(head),
        // Go's gzip reader (and so containerd) accepts multi-member streams.
        Compression::Gzip => Box::new(flate2::read::MultiGzDecoder::new(head)),
        Compression::Zstd => Box::new(zstd::stream::read::Decoder::new(head)?),
    };
    Ok((c, r))
}

/// `sha256:<hex>` of a finished hasher.
pub fn digest_string(h: Sha256) -> String {
    format!("sha256:{}", hex::encode(h.finalize()))
}

/// Reads through while hashing and counting what was read.
pub struct DigestReader<R> {
    inner: R,
    hasher: Sha256,
    count: u64,
}

impl<R: Read> DigestReader<R> {
    pub fn new(inner: R) -> Self {
        DigestReader {
            inner,
            hasher: Sha256::new(),
            count: 0,
        }
    }
    /// Read the rest of the stream (e.g. tar padding after the end marker) into the digest.
    pub fn drain(&mut self) -> io::Result<()> {
        io::copy(self, &mut io::sink()).map(|_| ())
    }
    pub fn finish(self) -> (String, u64) {
        (digest_string(self.hasher), self.count)
    }
}

impl<R: Read> Read for DigestReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        self.count += n as u64;
        Ok(n)
    }
}

/// Writes through while hashing and counting what was written.
pub struct DigestWriter<W> {
    inner: W,
    hasher: Sha256,
    count: u64,
}

impl<W: Write> DigestWriter<W> {
    pub fn new(inner: W) -> Self {
        DigestWriter {
            inner,
            hasher: Sha256::new(),
            count: 0,
        }
    }
    pub fn finish(self) -> (W, String, u64) {
        (self.inner, digest_string(self.hasher), self.count)
    }
}

impl<W: Write> Write for DigestWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.count += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// A compressing writer for one of the three compressions.
pub enum Compressor<W: Write> {
    Plain(W),
    Gzip(flate2::write::GzEncoder<W>),
    Zstd(zstd::stream::write::Encoder<'static, W>),
}

impl<W: Write> Compressor<W> {
    pub fn new(c: Compression, w: W) -> io::Result<Self> {
        Ok(match c {
            Compression::Uncompressed => Compressor::Plain(w),
            Compression::Gzip => Compressor::Gzip(flate2::write::GzEncoder::new(
                w,
                flate2::Compression::default(),
            )),
            Compression::Zstd => Compressor::Zstd(zstd::stream::write::Encoder::new(w, 3)?),
        })
    }
    /// Write the trailer and return the inner writer.
    pub fn finish(self) -> io::Result<W> {
        match self {
            Compressor::Plain(w) => Ok(w),
            Compressor::Gzip(g) => g.finish(),
            Compressor::Zstd(z) => z.finish(),
        }
    }
}

impl<W: Write> Write for Compressor<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Compressor::Plain(w) => w.write(buf),
            Compressor::Gzip(g) => g.write(buf),
            Compressor::Zstd(z) => z.write(buf),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        match self {
            Compressor::Plain(w) => w.flush(),
            Compressor::Gzip(g) => g.flush(),
            Compressor::Zstd(z) => z.flush(),
        }
    }
}
