//! containerd's filter language, implemented once and used by every `List` (content,
//! images, leases, snapshots, containers, introspection) and by event subscriptions.
//!
//! Grammar (containerd `filters/parser.go`):
//! ```text
//! selectors := selector ("," selector)*      -- all must match
//! selector  := fieldpath (operator value)?   -- no operator: field is present
//! fieldpath := field ("." field)*
//! field     := quoted | [A-Za-z0-9_-]+
//! operator  := "==" | "!=" | "~="
//! value     := quoted | [^\s,]+
//! quoted    := "..." (Go escapes) | /.../ or |...| (regexp-friendly: only the delimiter is escaped)
//! ```
//! Several filter strings in one request are OR-ed ([`Filter::parse_all`]). As in containerd,
//! `|` is a quote delimiter (handy for regexps containing `/`), not an OR operator.
//! Objects expose their fields through [`Adaptor`]; `!=` matches an absent field, as upstream.

use regex::Regex;

/// A filter that did not parse; always an InvalidArgument for the caller.
#[derive(Debug, thiserror::Error)]
#[error("filters: parse error: [{input}] at byte {pos}: {msg}")]
pub struct ParseError {
    /// The filter string as given.
    pub input: String,
    /// Byte offset of the problem.
    pub pos: usize,
    /// What was expected.
    pub msg: String,
}

impl crate::errdefs::HasKind for ParseError {
    fn kind(&self) -> crate::errdefs::Kind {
        crate::errdefs::Kind::InvalidArgument
    }
}

/// Something a filter can look into: returns the value at a field path, `None` if absent.
pub trait Adaptor {
    /// Value of `path` (already split on `.`; quoted parts kept whole).
    fn field(&self, path: &[String]) -> Option<String>;
}

#[derive(Debug, Clone)]
enum Op {
    Present,
    Equal(String),
    NotEqual(String),
    // The pattern is kept even if it does not compile: containerd then never matches.
    Matches(Option<Regex>),
}

#[derive(Debug, Clone)]
struct Selector {
    path: Vec<String>,
    op: Op,
}

impl Selector {
    fn matches(&self, a: &dyn Adaptor) -> bool {
        let v = a.field(&self.path);
        match &self.op {
            Op::Present => v.is_some(),
            Op::Equal(want) => v.as_deref() == Some(want.as_str()),
            Op::NotEqual(want) => v.as_deref().unwrap_or("") != want,
            Op::Matches(Some(re)) => re.is_match(v.as_deref().unwrap_or("")),
            Op::Matches(None) => false,
        }
    }
}

/// A parsed filter: OR over filter strings, each an AND of selectors. Empty matches all.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    any: Vec<Vec<Selector>>,
}

impl Filter {
    /// Parse one filter string (`""` matches everything).
    pub fn parse(s: &str) -> Result<Self, ParseError> {
        Self::parse_all([s])
    }

    /// Parse several filter strings, OR-ed together, as containerd's `ParseAll`.
    pub fn parse_all<I, S>(ss: I) -> Result<Self, ParseError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let mut any = Vec::new();
        for s in ss {
            let s = s.as_ref();
            if s.is_empty() {
                // An empty string is "always": the whole OR is then always true.
                return Ok(Self::default());
            }
            any.push(Parser::new(s).selectors()?);
        }
        Ok(Self { any })
    }

    /// Whether the object passes.
    pub fn matches(&self, a: &dyn Adaptor) -> bool {
        self.any.is_empty() || self.any.iter().any(|all| all.iter().all(|s| s.matches(a)))
    }
}

#[derive(Debug, PartialEq)]
enum Tok {
    Eof,
    Quoted(String),
    Value(String),
    Field(String),
    Sep(char),
    Operator(String),
    Illegal(char),
}

struct Parser<'a> {
    input: &'a str,
    pos: usize,
    value_mode: bool,
}

fn is_field_char(c: char) -> bool {
    c == '-' || c == '_' || c.is_ascii_alphanumeric()
}

impl<'a> Parser<'a> {
    fn new(input: &'a str) -> Self {
        Self {
            input,
            pos: 0,
            value_mode: false,
        }
    }

    fn err(&self, pos: usize, msg: impl Into<String>) -> ParseError {
        ParseError {
            input: self.input.to_string(),
            pos,
            msg: msg.into(),
        }
    }

    fn peek_char(&self) -> Option<char> {
        self.input[self.pos..].chars().next()
    }

    /// Next non-space character without consuming it.
    fn peek_nonspace(&self) -> Option<char> {
        self.input[self.pos..].chars().find(|c| !c.is_whitespace())
    }

    fn scan(&mut self) -> Result<(usize, Tok), ParseError> {
        while let Some(c) = self.peek_char() {
            if !c.is_whitespace() {
                break;
            }
            self.pos += c.len_utf8();
        }
        let start = self.pos;
        let Some(c) = self.peek_char() else {
            return Ok((start, Tok::Eof));
        };
        if c == '\0' {
            return Err(self.err(start, "unexpected null"));
        }
        self.pos += c.len_utf8();
        match c {
            '"' | '/' | '|' => {
                let body = self.scan_quoted(start, c)?;
                Ok((start, Tok::Quoted(body)))
            }
            ',' | '.' => {
                self.value_mode = false;
                Ok((start, Tok::Sep(c)))
            }
            '=' | '!' | '~' => {
                while let Some(n @ ('=' | '!' | '~')) = self.peek_char() {
                    self.pos += n.len_utf8();
                }
                self.value_mode = true;
                Ok((
                    start,
                    Tok::Operator(self.input[start..self.pos].to_string()),
                ))
            }
            _ if self.value_mode => {
                while let Some(n) = self.peek_char() {
                    if n == ',' || n.is_whitespace() || n.is_control() {
                        break;
                    }
                    self.pos += n.len_utf8();
                }
                self.value_mode = false;
                Ok((start, Tok::Value(self.input[start..self.pos].to_string())))
            }
            _ if is_field_char(c) => {
                while let Some(n) = self.peek_char() {
                    if !is_field_char(n) {
                        break;
                    }
                    self.pos += n.len_utf8();
                }
                Ok((start, Tok::Field(self.input[start..self.pos].to_string())))
            }
            _ => Ok((start, Tok::Illegal(c))),
        }
    }

    /// Reads up to the closing `quote` and unquotes. `"` strings take Go escapes; `/` and `|`
    /// strings only unescape the delimiter and keep other backslashes for the regexp engine.
    fn scan_quoted(&mut self, start: usize, quote: char) -> Result<String, ParseError> {
        let mut out = String::new();
        let mut chars = self.input[self.pos..].char_indices();
        while let Some((i, c)) = chars.next() {
            match c {
                '\n' => break,
                c if c == quote => {
                    self.pos += i + c.len_utf8();
                    return Ok(out);
                }
                '\\' => {
                    let Some((_, e)) = chars.next() else { break };
                    if e == quote {
                        out.push(e);
                    } else if quote != '"' {
                        out.push('\\');
                        out.push(e);
                    } else {
                        match e {
                            'a' => out.push('\u{7}'),
                            'b' => out.push('\u{8}'),
                            'f' => out.push('\u{c}'),
                            'n' => out.push('\n'),
                            'r' => out.push('\r'),
                            't' => out.push('\t'),
                            'v' => out.push('\u{b}'),
                            '\\' => out.push('\\'),
                            'x' | 'u' | 'U' => {
                                let n = match e {
                                    'x' => 2,
                                    'u' => 4,
                                    _ => 8,
                                };
                                let digits: String =
                                    chars.by_ref().take(n).map(|(_, d)| d).collect();
                                let ch = u32::from_str_radix(&digits, 16)
                                    .ok()
                                    .filter(|_| digits.len() == n)
                                    .and_then(char::from_u32)
                                    .ok_or_else(|| {
                                        self.err(start, "illegal numeric escape sequence")
                                    })?;
                                out.push(ch);
                            }
                            _ => return Err(self.err(start, "illegal escape sequence")),
                        }
                    }
                }
                c => out.push(c),
            }
        }
        Err(self.err(start, "quoted literal not terminated"))
    }

    fn selectors(&mut self) -> Result<Vec<Selector>, ParseError> {
        let mut out = vec![self.selector()?];
        loop {
            let (pos, tok) = self.scan()?;
            match tok {
                Tok::Eof => return Ok(out),
                Tok::Sep(',') => out.push(self.selector()?),
                other => return Err(self.err(pos, format!("unexpected input: {other:?}"))),
            }
        }
    }

    fn selector(&mut self) -> Result<Selector, ParseError> {
        let path = self.fieldpath()?;
        match self.peek_nonspace() {
            None | Some(',') => {
                return Ok(Selector {
                    path,
                    op: Op::Present,
                })
            }
            _ => {}
        }
        let (pos, tok) = self.scan()?;
        let Tok::Operator(op) = tok else {
            return Err(self.err(pos, "expected an operator (\"==\"|\"!=\"|\"~=\")"));
        };
        let (vpos, vtok) = self.scan()?;
        let value = match vtok {
            Tok::Value(v) | Tok::Field(v) | Tok::Quoted(v) => v,
            Tok::Eof => return Err(self.err(vpos, "unexpected end of input, expected a value")),
            _ => return Err(self.err(vpos, "expected value or quoted")),
        };
        let op = match op.as_str() {
            "==" => Op::Equal(value),
            "!=" => Op::NotEqual(value),
            "~=" => Op::Matches(Regex::new(&value).ok()),
            other => return Err(self.err(pos, format!("unsupported operator {other:?}"))),
        };
        Ok(Selector { path, op })
    }

    fn fieldpath(&mut self) -> Result<Vec<String>, ParseError> {
        let mut out = vec![self.field()?];
        while self.peek_nonspace() == Some('.') {
            self.scan()?;
            out.push(self.field()?);
        }
        Ok(out)
    }

    fn field(&mut self) -> Result<String, ParseError> {
        let (pos, tok) = self.scan()?;
        match tok {
            Tok::Field(s) | Tok::Quoted(s) => Ok(s),
            _ => Err(self.err(pos, "expected field or quoted")),
        }
    }
}

/// Adaptor helper: look a `labels.<key>` path up in a label map (the key may itself contain
/// dots when not quoted, so the rest of the path is re-joined, as containerd's adaptors do).
pub fn label_field(
    labels: &std::collections::HashMap<String, String>,
    rest: &[String],
) -> Option<String> {
    if rest.is_empty() {
        return None;
    }
    labels.get(&rest.join(".")).cloned()
}

/// Returns `Some(v)` if `v` is non-empty: containerd treats an empty field as absent.
pub fn non_empty(v: &str) -> Option<String> {
    (!v.is_empty()).then(|| v.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    struct Obj {
        name: &'static str,
        labels: HashMap<String, String>,
    }

    impl Adaptor for Obj {
        fn field(&self, path: &[String]) -> Option<String> {
            match path.first().map(String::as_str) {
                Some("name") => non_empty(self.name),
                Some("labels") => label_field(&self.labels, &path[1..]),
                _ => None,
            }
        }
    }

    fn obj(name: &'static str, labels: &[(&str, &str)]) -> Obj {
        Obj {
            name,
            labels: labels
                .iter()
                .map(|(k, v)| ((*k).to_string(), (*v).to_string()))
                .collect(),
        }
    }

    #[test]
    fn table() {
        let a = obj(
            "docker.io/library/busybox:latest",
            &[("foo", "bar"), ("a.b", "c"), ("empty", "")],
        );
        let cases: &[(&str, bool)] = &[
            ("", true),
            ("name", true),
            ("nope", false),
            ("name==docker.io/library/busybox:latest", true),
            ("name==busybox", false),
            ("name!=busybox", true),
            ("nope!=x", true),
            (r"name~=busybox", true),
            (r"name~=/^docker\.io\/.*box/", true),
            (r"name~=|^docker.io/|", true),
            ("name~=^alpine", false),
            ("labels.foo==bar", true),
            ("labels.\"foo\"==bar", true),
            ("labels.foo==bar,name~=busy", true),
            ("labels.foo==bar,name~=alpine", false),
            ("labels.\"a.b\"==c", true),
            ("labels.a.b==c", true),
            ("labels.empty", true),
            ("labels.foo == \"bar\"", true),
            ("name~=[", false),
        ];
        for (f, want) in cases {
            let flt = Filter::parse(f).unwrap_or_else(|e| panic!("{f}: {e}"));
            assert_eq!(flt.matches(&a), *want, "filter {f:?}");
        }
    }

    #[test]
    fn or_across_strings() {
        let a = obj("x", &[]);
        let f = Filter::parse_all(["name==y", "name==x"]).unwrap();
        assert!(f.matches(&a));
        let f = Filter::parse_all(["name==y", "name==z"]).unwrap();
        assert!(!f.matches(&a));
    }

    #[test]
    fn parse_errors() {
        for bad in [
            "name==",
            "==x",
            "name==x,",
            "name=x!",
            "\"unterminated",
            "name,,x",
            "labels.",
            "a b",
        ] {
            assert!(Filter::parse(bad).is_err(), "{bad:?} should not parse");
        }
    }
}
