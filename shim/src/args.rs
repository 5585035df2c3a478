//! Command-line flags, parsed the way Go's `flag` package parses them.
//!
//! containerd invokes every shim with Go-style single-dash flags
//! (`-namespace default -id t1 -address /run/containerd/containerd.sock start`), so we accept
//! exactly what `runtime/v2/shim/shim.go` `parseFlags` accepts: `-flag value`, `-flag=value`,
//! `--flag value`, boolean flags without a value, and the first non-flag word as the action.

use std::ffi::OsString;

/// Errors from parsing the command line.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ArgsError {
    /// A flag that the shim does not know (Go prints the same text).
    #[error("flag provided but not defined: -{0}")]
    UnknownFlag(String),
    /// A flag that takes a value was last on the command line.
    #[error("flag needs an argument: -{0}")]
    MissingValue(String),
    /// A boolean flag was given a value other than true/false.
    #[error("invalid boolean value {value:?} for -{flag}: parse error")]
    BadBool { flag: String, value: String },
    /// A flag or action is not valid UTF-8.
    #[error("argument {0:?} is not valid UTF-8")]
    NotUtf8(OsString),
}

/// What the invocation asks the binary to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// `-v` / `-version`: print the version and exit.
    Version,
    /// `-info`: read runc options from stdin, print a marshalled `RuntimeInfo`.
    Info,
    /// `start`: create the socket, launch the long-running shim, print its address.
    Start,
    /// `delete`: clean up after a shim that is gone, print a marshalled `DeleteResponse`.
    Delete,
    /// No action: this is the long-running shim serving ttrpc.
    Serve,
    /// Any other word: rejected by `main` with a message naming it.
    Unknown(String),
}

/// Parsed command line.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Flags {
    pub debug: bool,
    pub version: bool,
    pub info: bool,
    pub namespace: String,
    pub id: String,
    pub socket: String,
    pub debug_socket: String,
    pub bundle: String,
    pub address: String,
    pub publish_binary: String,
    /// First non-flag argument, if any.
    pub action: Option<String>,
}

impl Flags {
    /// Parses `args` (without the program name).
    pub fn parse<I: IntoIterator<Item = OsString>>(args: I) -> Result<Flags, ArgsError> {
        let mut flags = Flags::default();
        let mut it = args
            .into_iter()
            .map(|a| a.into_string().map_err(ArgsError::NotUtf8));
        while let Some(arg) = it.next() {
            let arg = arg?;
            if arg == "--" {
                if let Some(next) = it.next() {
                    flags.action = Some(next?);
                }
                break;
            }
            let Some(body) = arg.strip_prefix("--").or_else(|| arg.strip_prefix('-')) else {
                flags.action = Some(arg);
                break;
            };
            if body.is_empty() {
                flags.action = Some(arg);
                break;
            }
            let (name, inline) = match body.split_once('=') {
                Some((n, v)) => (n.to_string(), Some(v.to_string())),
                None => (body.to_string(), None),
            };
            let bool_slot = match name.as_str() {
                "debug" => Some(&mut flags.debug),
                "v" | "version" => Some(&mut flags.version),
                "info" => Some(&mut flags.info),
                _ => None,
            };
            if let Some(slot) = bool_slot {
                *slot = match inline.as_deref() {
                    None | Some("true" | "1" | "t" | "T" | "TRUE" | "True") => true,
                    Some("false" | "0" | "f" | "F" | "FALSE" | "False") => false,
                    Some(other) => {
                        return Err(ArgsError::BadBool {
                            flag: name,
                            value: other.to_string(),
                        })
                    }
                };
                continue;
            }
            let slot = match name.as_str() {
                "namespace" => &mut flags.namespace,
                "id" => &mut flags.id,
                "socket" => &mut flags.socket,
                "debug-socket" => &mut flags.debug_socket,
                "bundle" => &mut flags.bundle,
                "address" => &mut flags.address,
                "publish-binary" => &mut flags.publish_binary,
                _ => return Err(ArgsError::UnknownFlag(name)),
            };
            *slot = match inline {
                Some(v) => v,
                None => it.next().ok_or(ArgsError::MissingValue(name))??,
            };
        }
        Ok(flags)
    }

    /// The action this command line asks for; `-v` and `-info` win over any word.
    pub fn action(&self) -> Action {
        if self.version {
            return Action::Version;
        }
        if self.info {
            return Action::Info;
        }
        match self.action.as_deref() {
            None => Action::Serve,
            Some("start") => Action::Start,
            Some("delete") => Action::Delete,
            Some(other) => Action::Unknown(other.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Flags, ArgsError> {
        Flags::parse(args.iter().map(OsString::from))
    }

    #[test]
    fn containerd_start_command_line() {
        let f = parse(&[
            "-namespace",
            "default",
            "-address",
            "/run/containerd/containerd.sock",
            "-publish-binary",
            "/usr/bin/containerd",
            "-id",
            "t1",
            "-debug",
            "start",
        ])
        .expect("parse");
        assert_eq!(f.namespace, "default");
        assert_eq!(f.id, "t1");
        assert!(f.debug);
        assert_eq!(f.action(), Action::Start);
    }

    #[test]
    fn equals_and_double_dash_forms() {
        let f = parse(&[
            "--namespace=k8s.io",
            "-debug=false",
            "-bundle",
            "/b",
            "delete",
        ])
        .expect("parse");
        assert_eq!(f.namespace, "k8s.io");
        assert!(!f.debug);
        assert_eq!(f.bundle, "/b");
        assert_eq!(f.action(), Action::Delete);
    }

    #[test]
    fn version_and_info_win() {
        assert_eq!(parse(&["-v"]).expect("parse").action(), Action::Version);
        assert_eq!(
            parse(&["-info", "start"]).expect("parse").action(),
            Action::Info
        );
        assert_eq!(parse(&[]).expect("parse").action(), Action::Serve);
    }

    #[test]
    fn bad_input_names_the_flag() {
        assert_eq!(
            parse(&["-bogus"]),
            Err(ArgsError::UnknownFlag("bogus".into()))
        );
        assert_eq!(parse(&["-id"]), Err(ArgsError::MissingValue("id".into())));
        assert!(matches!(
            parse(&["-debug=maybe"]),
            Err(ArgsError::BadBool { .. })
        ));
        assert_eq!(
            parse(&["frobnicate"]).expect("parse").action(),
            Action::Unknown("frobnicate".into())
        );
    }
}
