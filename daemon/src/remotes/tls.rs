//! TLS client configuration for registry hosts (rustls with the ring provider): the system
//! CA bundle plus extra CA files, optional client certificate, or no verification at all
//! (`skip_verify`, still checking handshake signatures).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::sign::CertifiedKey;

/// The system CA bundle Debian's `ca-certificates` maintains.
const SYSTEM_CA_BUNDLE: &str = "/etc/ssl/certs/ca-certificates.crt";

/// A TLS setting that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A CA file is unreadable or holds no certificate.
    #[error("read CA certificates from {path}: {reason}")]
    CaFile { path: PathBuf, reason: String },
    /// A client certificate or key is unreadable or unusable.
    #[error("load client certificate {cert} (key {key}): {reason}")]
    ClientCert {
        cert: PathBuf,
        key: PathBuf,
        reason: String,
    },
    /// rustls refused the configuration.
    #[error("TLS configuration: {0}")]
    Config(#[source] rustls::Error),
}

/// What a host's TLS connection trusts and presents.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsOptions {
    /// Extra CA certificates (PEM files) trusted besides the system bundle.
    pub ca_files: Vec<PathBuf>,
    /// Client certificate and key files; a `None` key is read from the certificate file
    /// (containerd's `client = "both.pem"`). The first pair issued by a CA the server
    /// names is presented (the first pair when the server names none), as Go does.
    pub client_pairs: Vec<(PathBuf, Option<PathBuf>)>,
    /// Do not verify the server's certificate.
    pub skip_verify: bool,
    /// Trust only `ca_files`, not the system bundle (ctr's `--tlscacert` replaces the
    /// system pool; a hosts.toml `ca` adds to whichever pool is in use).
    pub no_system_roots: bool,
}

impl TlsOptions {
    /// Whether any TLS option was given (ctr: then a localhost registry is not plain HTTP).
    pub fn is_set(&self) -> bool {
        !self.ca_files.is_empty() || !self.client_pairs.is_empty() || self.skip_verify
    }
}

/// Accepts any server certificate (`skip_verify`), still checking handshake signatures.
#[derive(Debug)]
struct NoVerify(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for NoVerify {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &rustls::pki_types::ServerName<'_>,
        _ocsp_response: &[u8],
        _now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

fn load_pem_certs(path: &Path, roots: &mut rustls::RootCertStore) -> Result<(), TlsError> {
    let ca_err = |reason: String| TlsError::CaFile {
        path: path.to_path_buf(),
        reason,
    };
    let certs = CertificateDer::pem_file_iter(path).map_err(|e| ca_err(e.to_string()))?;
    let mut n = 0;
    for c in certs {
        let c = c.map_err(|e| ca_err(e.to_string()))?;
        if roots.add(c).is_ok() {
            n += 1;
        }
    }
    if n == 0 {
        return Err(ca_err("no usable certificates".into()));
    }
    Ok(())
}

fn load_client_pair(
    cert: &Path,
    key: Option<&Path>,
) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), TlsError> {
    let key_path = key.unwrap_or(cert);
    let err = |reason: String| TlsError::ClientCert {
        cert: cert.to_path_buf(),
        key: key_path.to_path_buf(),
        reason,
    };
    let chain = CertificateDer::pem_file_iter(cert)
        .map_err(|e| err(e.to_string()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| err(e.to_string()))?;
    if chain.is_empty() {
        return Err(err("no certificate in the file".into()));
    }
    let key = PrivateKeyDer::from_pem_file(key_path).map_err(|e| err(e.to_string()))?;
    Ok((chain, key))
}

/// The rustls client configuration for `opts`.
pub fn client_config(opts: &TlsOptions) -> Result<Arc<rustls::ClientConfig>, TlsError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(TlsError::Config)?;
    let builder = if opts.skip_verify {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(NoVerify(provider.clone())))
    } else {
        let mut roots = rustls::RootCertStore::empty();
        if !opts.no_system_roots {
            // A missing system bundle is fine when a CA file names the CA.
            let _ = load_pem_certs(Path::new(SYSTEM_CA_BUNDLE), &mut roots);
        }
        for ca in &opts.ca_files {
            load_pem_certs(ca, &mut roots)?;
        }
        builder.with_root_certificates(roots)
    };
    let config = if opts.client_pairs.is_empty() {
        builder.with_no_client_auth()
    } else {
        let mut keys = Vec::new();
        for (cert, key) in &opts.client_pairs {
            let (chain, der) = load_client_pair(cert, key.as_deref())?;
            let issuers = chain.iter().filter_map(|c| raw_issuer(c)).collect();
            let certified = CertifiedKey::from_der(chain, der, &provider).map_err(|e| {
                TlsError::ClientCert {
                    cert: cert.clone(),
                    key: key.clone().unwrap_or_else(|| cert.clone()),
                    reason: e.to_string(),
                }
            })?;
            keys.push((Arc::new(certified), issuers));
        }
        builder.with_client_cert_resolver(Arc::new(ClientCerts(keys)))
    };
    Ok(Arc::new(config))
}

/// Client certificates offered as Go's TLS client offers them: with no CA hints from the
/// server the first, else the first whose chain was issued by a CA the server names;
/// none when no chain fits.
#[derive(Debug)]
struct ClientCerts(Vec<(Arc<CertifiedKey>, Vec<Vec<u8>>)>);

impl rustls::client::ResolvesClientCert for ClientCerts {
    fn resolve(
        &self,
        root_hint_subjects: &[&[u8]],
        _sigschemes: &[rustls::SignatureScheme],
    ) -> Option<Arc<CertifiedKey>> {
        if root_hint_subjects.is_empty() {
            return self.0.first().map(|(k, _)| k.clone());
        }
        self.0
            .iter()
            .find(|(_, issuers)| {
                issuers
                    .iter()
                    .any(|i| root_hint_subjects.contains(&i.as_slice()))
            })
            .map(|(k, _)| k.clone())
    }

    fn has_certs(&self) -> bool {
        !self.0.is_empty()
    }
}

/// One DER TLV: (tag, contents, the whole TLV, what follows).
type Tlv<'a> = (u8, &'a [u8], &'a [u8], &'a [u8]);

fn der_tlv(input: &[u8]) -> Option<Tlv<'_>> {
    let (&tag, rest) = input.split_first()?;
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        let len = rest[..n]
            .iter()
            .fold(0usize, |acc, &b| (acc << 8) | usize::from(b));
        (len, &rest[n..])
    };
    if rest.len() < len {
        return None;
    }
    let header = input.len() - rest.len();
    Some((tag, &rest[..len], &input[..header + len], &rest[len..]))
}

/// The DER issuer Name of a certificate (Go's `RawIssuer`), to match a server's CA hints.
fn raw_issuer(cert: &[u8]) -> Option<Vec<u8>> {
    const SEQUENCE: u8 = 0x30;
    let (SEQUENCE, cert, _, _) = der_tlv(cert)? else {
        return None;
    };
    let (SEQUENCE, tbs, _, _) = der_tlv(cert)? else {
        return None;
    };
    // [0] version (optional), serialNumber, signature AlgorithmIdentifier, issuer Name.
    let (tag, _, _, mut rest) = der_tlv(tbs)?;
    if tag == 0xa0 {
        rest = der_tlv(rest)?.3;
    }
    let rest = der_tlv(rest)?.3;
    match der_tlv(rest)? {
        (SEQUENCE, _, whole, _) => Some(whole.to_vec()),
        _ => None,
    }
}
