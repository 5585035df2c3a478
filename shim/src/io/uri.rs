//! Parsing the stdio strings containerd puts in `CreateTaskRequest` / `ExecProcessRequest`.
//!
//! containerd decides the kind of IO from the *stdout* string only (`pkg/process/io.go`
//! `createIO`): no scheme means fifo paths, `file://` appends to a file, `binary://` (and
//! `binary-v2://` since 2.x) runs a logging binary, and all-empty means null IO.

use std::path::PathBuf;

use super::IoError;

/// The stdio of one process exactly as containerd sends it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StdioSpec {
    pub stdin: String,
    pub stdout: String,
    pub stderr: String,
    pub terminal: bool,
}

impl StdioSpec {
    /// containerd's `Stdio.IsNull`: nothing at all was requested.
    pub fn is_null(&self) -> bool {
        self.stdin.is_empty() && self.stdout.is_empty() && self.stderr.is_empty()
    }
}

/// A logging binary and its arguments, from `binary:///path?k=v&flag`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LoggerSpec {
    pub path: PathBuf,
    /// `k`, `v` pairs flattened in URI order (containerd's `NewBinaryCmd`; a key without a value
    /// gives an empty argument, like Go's `url.Values`).
    pub args: Vec<String>,
    /// `binary-v2://`: the binary must write a byte on fd 5 (plain EOF means it crashed).
    pub v2: bool,
}

/// Where a process's output goes, decided from the stdio strings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Destination {
    /// All three strings empty.
    Null,
    /// Plain paths (normally fifos created by the client; a regular file is appended to).
    Fifo {
        stdout: Option<PathBuf>,
        stderr: Option<PathBuf>,
    },
    /// `file:///abs/path`: stdout and stderr appended to one file.
    File(PathBuf),
    /// `binary:///abs/path?args`.
    Binary(LoggerSpec),
}

/// Parses the destination of `spec` (the stdin string is always a fifo path and is used as is).
pub fn parse_destination(spec: &StdioSpec) -> Result<Destination, IoError> {
    if spec.is_null() {
        return Ok(Destination::Null);
    }
    // containerd looks at stdout only; fall back to stderr when only stderr is set.
    let uri = if spec.stdout.is_empty() {
        &spec.stderr
    } else {
        &spec.stdout
    };
    let Some((scheme, rest)) = split_scheme(uri) else {
        let path = |s: &str| (!s.is_empty()).then(|| PathBuf::from(s));
        return Ok(Destination::Fifo {
            stdout: path(&spec.stdout),
            stderr: path(&spec.stderr),
        });
    };
    let invalid = |reason: &str| IoError::InvalidUri {
        uri: uri.clone(),
        reason: reason.to_string(),
    };
    let scheme_lc = scheme.to_ascii_lowercase();
    match scheme_lc.as_str() {
        "fifo" | "file" | "binary" | "binary-v2" => {}
        _ => {
            return Err(IoError::UnknownScheme {
                uri: uri.clone(),
                scheme: scheme.to_string(),
            })
        }
    }
    let Some(after) = rest.strip_prefix("//") else {
        return Err(invalid("expected scheme:///absolute/path"));
    };
    let (authority_path, query) = match after.split_once('?') {
        Some((a, q)) => (a, Some(q)),
        None => (after, None),
    };
    let authority_path = authority_path.split('#').next().unwrap_or_default();
    let (host, raw_path) = match authority_path.find('/') {
        Some(i) => authority_path.split_at(i),
        None => (authority_path, ""),
    };
    if !host.is_empty() {
        return Err(invalid(&format!(
            "host {host:?} is not allowed; use three slashes: {scheme}:///absolute/path"
        )));
    }
    let path = percent_decode(raw_path, false).ok_or_else(|| invalid("bad %-escape in path"))?;
    if !path.starts_with('/') {
        return Err(invalid("path must be absolute"));
    }
    match scheme_lc.as_str() {
        "fifo" => Ok(Destination::Fifo {
            stdout: Some(PathBuf::from(&path)),
            stderr: (!spec.stderr.is_empty()).then(|| PathBuf::from(&path)),
        }),
        "file" => Ok(Destination::File(PathBuf::from(path))),
        _ => {
            let mut args = Vec::new();
            for pair in query
                .unwrap_or_default()
                .split('&')
                .filter(|p| !p.is_empty())
            {
                let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
                let k = percent_decode(k, true).ok_or_else(|| invalid("bad %-escape in query"))?;
                let v = percent_decode(v, true).ok_or_else(|| invalid("bad %-escape in query"))?;
                args.push(k);
                args.push(v);
            }
            Ok(Destination::Binary(LoggerSpec {
                path: PathBuf::from(path),
                args,
                v2: scheme_lc == "binary-v2",
            }))
        }
    }
}

/// `scheme:rest` when `s` starts with an RFC 3986 scheme; `None` for plain paths.
fn split_scheme(s: &str) -> Option<(&str, &str)> {
    let (scheme, rest) = s.split_once(':')?;
    let mut chars = scheme.chars();
    let first_ok = chars.next().is_some_and(|c| c.is_ascii_alphabetic());
    let rest_ok = chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'));
    (first_ok && rest_ok).then_some((scheme, rest))
}

/// Decodes `%XX` escapes (and `+` as space in query strings, as Go's `url.ParseQuery`).
fn percent_decode(s: &str, plus_is_space: bool) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let hex = s.get(i + 1..i + 3)?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 3;
            }
            b'+' if plus_is_space => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(stdin: &str, stdout: &str, stderr: &str) -> StdioSpec {
        StdioSpec {
            stdin: stdin.into(),
            stdout: stdout.into(),
            stderr: stderr.into(),
            terminal: false,
        }
    }

    #[test]
    fn empty_strings_are_null_io() {
        assert_eq!(
            parse_destination(&spec("", "", "")).unwrap(),
            Destination::Null
        );
    }

    #[test]
    fn plain_paths_are_fifos() {
        let d = parse_destination(&spec("/f/in", "/f/out", "")).unwrap();
        assert_eq!(
            d,
            Destination::Fifo {
                stdout: Some("/f/out".into()),
                stderr: None
            }
        );
    }

    #[test]
    fn file_uri_decodes_path() {
        let d = parse_destination(&spec("", "file:///var/log/a%20b.log", "file:///x")).unwrap();
        assert_eq!(d, Destination::File("/var/log/a b.log".into()));
    }

    #[test]
    fn binary_uri_flattens_query_in_order() {
        let d = parse_destination(&spec(
            "",
            "binary:///usr/bin/logger?id=abc&flag&x=a+b%2F",
            "",
        ))
        .unwrap();
        assert_eq!(
            d,
            Destination::Binary(LoggerSpec {
                path: "/usr/bin/logger".into(),
                args: vec![
                    "id".into(),
                    "abc".into(),
                    "flag".into(),
                    "".into(),
                    "x".into(),
                    "a b/".into()
                ],
                v2: false,
            })
        );
        let d = parse_destination(&spec("", "binary-v2:///l", "")).unwrap();
        assert!(matches!(
            d,
            Destination::Binary(LoggerSpec { v2: true, .. })
        ));
    }

    #[test]
    fn bad_uris_name_the_uri() {
        for (uri, want) in [
            ("http://example.com/x", "unknown stdio scheme"),
            ("file://host/x", "host \"host\""),
            ("binary://logger", "host \"logger\""),
            ("file:relative", "expected scheme:///"),
            ("file:///a%zz", "bad %-escape"),
        ] {
            let err = parse_destination(&spec("", uri, "")).unwrap_err();
            let msg = err.to_string();
            assert!(msg.contains(uri), "{msg} should name {uri}");
            assert!(msg.contains(want), "{msg} should contain {want}");
            assert!(err.is_invalid_argument());
        }
    }
}
