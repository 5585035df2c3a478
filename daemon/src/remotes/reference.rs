//! Image references as containerd's `reference/docker` normalises them: `busybox` is
//! `docker.io/library/busybox:latest`; split into registry host, repository and object
//! (tag or digest) for the distribution API.

/// A reference the distribution API cannot use.
#[derive(Debug, thiserror::Error)]
pub enum ReferenceError {
    /// Empty, upper case, whitespace, or no host/repository/object shape.
    #[error("failed to resolve reference {0:?}: invalid reference format")]
    Invalid(String),
}

/// `host/repo:tag` or `host/repo@digest`, normalised (docker.io defaults applied).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reference {
    /// The full normalised name, e.g. `docker.io/library/busybox:latest`.
    pub name: String,
    /// The registry host as named (`docker.io`, `127.0.0.1:5000`).
    pub host: String,
    /// The repository path inside the registry (`library/busybox`).
    pub repo: String,
    /// The tag or `sha256:` digest.
    pub object: String,
}

impl Reference {
    /// Parses and normalises `s`.
    pub fn parse(s: &str) -> Result<Self, ReferenceError> {
        let name = normalize(s)?;
        let bad = || ReferenceError::Invalid(s.to_string());
        let (host, rest) = name.split_once('/').ok_or_else(bad)?;
        let (repo, object) = match rest.split_once('@') {
            Some((r, d)) => (r.to_string(), d.to_string()),
            None => {
                let (r, t) = rest.rsplit_once(':').ok_or_else(bad)?;
                (r.to_string(), t.to_string())
            }
        };
        if repo.is_empty() || object.is_empty() {
            return Err(bad());
        }
        Ok(Reference {
            host: host.to_string(),
            name,
            repo,
            object,
        })
    }

    /// Whether the object is a digest rather than a tag.
    pub fn is_digest(&self) -> bool {
        self.object.contains(':')
    }
}

/// containerd's `reference/docker.ParseNormalizedNamed` + `TagNameOnly` for the common
/// forms: a missing domain is `docker.io` (`library/` for single names), a missing tag
/// is `latest`.
pub fn normalize(reference: &str) -> Result<String, ReferenceError> {
    if reference.is_empty()
        || reference.contains(char::is_whitespace)
        || reference.chars().any(|c| c.is_ascii_uppercase())
    {
        return Err(ReferenceError::Invalid(reference.to_string()));
    }
    let (name_part, digest) = match reference.split_once('@') {
        Some((n, d)) => (n, Some(d)),
        None => (reference, None),
    };
    let last_slash = name_part.rfind('/').map_or(0, |i| i + 1);
    let (name, tag) = match name_part[last_slash..].rfind(':') {
        Some(i) => (
            &name_part[..last_slash + i],
            Some(&name_part[last_slash + i + 1..]),
        ),
        None => (name_part, None),
    };
    let full = match name.split_once('/') {
        Some((first, _)) if first.contains('.') || first.contains(':') || first == "localhost" => {
            name.to_string()
        }
        Some(_) => format!("docker.io/{name}"),
        None => format!("docker.io/library/{name}"),
    };
    Ok(match (tag, digest) {
        (_, Some(d)) => format!("{full}@{d}"),
        (Some(t), None) => format!("{full}:{t}"),
        (None, None) => format!("{full}:latest"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_split_into_host_repo_object() {
        let r = Reference::parse("127.0.0.1:5000/library/busybox:test").unwrap();
        assert_eq!(
            (r.host.as_str(), r.repo.as_str(), r.object.as_str()),
            ("127.0.0.1:5000", "library/busybox", "test")
        );
        let r = Reference::parse("busybox").unwrap();
        assert_eq!(r.name, "docker.io/library/busybox:latest");
        assert_eq!(r.host, "docker.io");
        let d = format!("sha256:{}", "a".repeat(64));
        let r = Reference::parse(&format!("localhost:5000/x@{d}")).unwrap();
        assert!(r.is_digest());
        assert_eq!(r.object, d);
        assert!(Reference::parse("Busybox").is_err());
    }
}
