//! Registry authentication pieces: credentials, `WWW-Authenticate` challenges, Basic
//! headers and Bearer token responses (the token request itself goes through the
//! transport in `docker.rs`).

use std::collections::HashMap;

/// A user name and password (or identity token) for one registry host.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    pub username: String,
    pub secret: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("username", &self.username)
            .field("secret", &"<redacted>")
            .finish()
    }
}

impl Credentials {
    /// The `Authorization: Basic …` value.
    pub fn basic_header(&self) -> String {
        format!(
            "Basic {}",
            base64(format!("{}:{}", self.username, self.secret).as_bytes())
        )
    }
}

/// The scheme and `key="value"` parameters of a `WWW-Authenticate` challenge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Challenge {
    /// Lower-cased scheme: `basic`, `bearer`.
    pub scheme: String,
    pub params: HashMap<String, String>,
}

impl Challenge {
    /// Parses one challenge (registries send a single one).
    pub fn parse(header: &str) -> Self {
        let (scheme, rest) = header.trim().split_once(' ').unwrap_or((header.trim(), ""));
        let mut params = HashMap::new();
        let mut s = rest;
        while let Some((k, v)) = s.split_once('=') {
            let k = k.trim().trim_start_matches(',').trim().to_ascii_lowercase();
            let v = v.trim_start();
            let (val, remaining) = if let Some(stripped) = v.strip_prefix('"') {
                match stripped.split_once('"') {
                    Some((val, r)) => (val.to_string(), r),
                    None => (stripped.to_string(), ""),
                }
            } else {
                match v.split_once(',') {
                    Some((val, r)) => (val.trim().to_string(), r),
                    None => (v.trim().to_string(), ""),
                }
            };
            params.insert(k, val);
            s = remaining;
        }
        Challenge {
            scheme: scheme.to_ascii_lowercase(),
            params,
        }
    }

    /// The token URL for a Bearer challenge: realm with `service` and `scope` appended.
    pub fn token_url(&self) -> Option<String> {
        let mut url = self.params.get("realm")?.clone();
        let mut sep = if url.contains('?') { '&' } else { '?' };
        for key in ["service", "scope"] {
            if let Some(v) = self.params.get(key) {
                url.push(sep);
                url.push_str(key);
                url.push('=');
                url.push_str(&query_escape(v));
                sep = '&';
            }
        }
        Some(url)
    }
}

/// The token in a token endpoint's JSON answer (`token`, or OAuth2's `access_token`).
pub fn token_from_response(body: &[u8]) -> Result<String, String> {
    let v: serde_json::Value = serde_json::from_slice(body).map_err(|e| e.to_string())?;
    v.get("token")
        .or_else(|| v.get("access_token"))
        .and_then(serde_json::Value::as_str)
        .filter(|t| !t.is_empty())
        .map(str::to_string)
        .ok_or_else(|| "no token in response".to_string())
}

/// Percent-encodes a query value.
pub fn query_escape(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                char::from(b).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Standard base64 with padding (RFC 4648).
pub fn base64(data: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_challenge_parameters_parse() {
        let c = Challenge::parse(
            r#"Bearer realm="http://a/token",service="reg",scope="repository:x:pull""#,
        );
        assert_eq!(c.scheme, "bearer");
        assert_eq!(c.params["realm"], "http://a/token");
        assert_eq!(c.params["service"], "reg");
        assert_eq!(c.params["scope"], "repository:x:pull");
        assert_eq!(
            c.token_url().unwrap(),
            "http://a/token?service=reg&scope=repository%3Ax%3Apull"
        );
    }

    #[test]
    fn basic_header_is_rfc4648() {
        let c = Credentials {
            username: "foo".into(),
            secret: "bar".into(),
        };
        assert_eq!(c.basic_header(), "Basic Zm9vOmJhcg==");
        assert_eq!(base64(b"fooba"), "Zm9vYmE=");
        assert_eq!(base64(b"f"), "Zg==");
    }
}
