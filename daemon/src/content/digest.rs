//! `Digest`: an OCI content digest, validated once at the edge so that `hex()` is always a
//! safe single path component (no `/`, no `..`).

use sha2::{Digest as _, Sha256};
use std::fmt;

/// A digest string that is not `sha256:<64 lowercase hex>`.
#[derive(Debug, thiserror::Error)]
pub enum DigestError {
    /// Not `algorithm:hex`, wrong length or non-hex characters.
    #[error("invalid digest {0:?}: want sha256:<64 lowercase hex characters>")]
    Invalid(String),
    /// Algorithm other than sha256.
    #[error("unsupported digest algorithm in {0:?}: only sha256 is supported")]
    Unsupported(String),
}

impl crate::errdefs::HasKind for DigestError {
    fn kind(&self) -> crate::errdefs::Kind {
        crate::errdefs::Kind::InvalidArgument
    }
}

/// A validated `sha256:<hex>` digest.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest(String);

impl Digest {
    /// Parses and validates a digest string.
    pub fn parse(s: &str) -> Result<Self, DigestError> {
        let (algo, hex) = s
            .split_once(':')
            .ok_or_else(|| DigestError::Invalid(s.to_string()))?;
        match algo {
            "sha256" => {}
            "sha384" | "sha512" => return Err(DigestError::Unsupported(s.to_string())),
            _ => return Err(DigestError::Invalid(s.to_string())),
        }
        if hex.len() != 64
            || !hex
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        {
            return Err(DigestError::Invalid(s.to_string()));
        }
        Ok(Self(s.to_string()))
    }

    /// Digest of `data`.
    pub fn from_bytes(data: &[u8]) -> Self {
        Self::from_hasher(Sha256::new_with_prefix(data))
    }

    /// Finishes a running hash.
    pub fn from_hasher(h: Sha256) -> Self {
        Self(format!("sha256:{}", hex::encode(h.finalize())))
    }

    /// `sha256`.
    pub fn algorithm(&self) -> &str {
        "sha256"
    }

    /// The hex part.
    pub fn hex(&self) -> &str {
        &self.0[7..]
    }

    /// The full string.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::str::FromStr for Digest {
    type Err = DigestError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_path_tricks() {
        for bad in [
            "",
            "sha256:",
            "sha256:../../etc/passwd",
            "sha256:/abc",
            &format!("sha256:{}", "A".repeat(64)),
            &format!("md5:{}", "a".repeat(64)),
            &format!("sha256:{}/", "a".repeat(63)),
        ] {
            assert!(Digest::parse(bad).is_err(), "{bad}");
        }
        let ok = format!("sha256:{}", "a".repeat(64));
        assert_eq!(Digest::parse(&ok).unwrap().hex(), "a".repeat(64));
    }
}
