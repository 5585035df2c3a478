//! The restart monitor's decisions, free of I/O so they can be tested as tables: restart
//! policies (containerd `core/runtime/restart.NewPolicy` / `Reconcile`, 2.x) and the per-
//! container plan (containerd `plugins/restart/monitor.go` `monitor`): given a container's
//! labels and what its task looks like now, start it again, stop it, or leave it alone.

use std::fmt;

use crate::metadata::Labels;
use crate::runtime::Status;

/// `containerd.io/restart.status`: the status the monitor keeps the task in
/// (`running` or `stopped`; other values are only compared, never acted on).
pub const STATUS_LABEL: &str = "containerd.io/restart.status";
/// `containerd.io/restart.loguri`: stdout and stderr of restarted tasks (`file://`,
/// `binary://`, ...).
pub const LOG_URI_LABEL: &str = "containerd.io/restart.loguri";
/// `containerd.io/restart.logpath`: a file for stdout and stderr. Deprecated in containerd 1.5
/// for [`LOG_URI_LABEL`], still honoured by 1.6 (and here) when no log URI is set.
pub const LOG_PATH_LABEL: &str = "containerd.io/restart.logpath";
/// `containerd.io/restart.policy`: `always` (default), `no`, `on-failure[:N]`,
/// `unless-stopped`.
pub const POLICY_LABEL: &str = "containerd.io/restart.policy";
/// `containerd.io/restart.count`: how often the monitor restarted the task (it writes it).
pub const COUNT_LABEL: &str = "containerd.io/restart.count";
/// `containerd.io/restart.explicitly-stopped`: set (by nerdctl's `stop`) to keep an
/// `unless-stopped` container down.
pub const EXPLICITLY_STOPPED_LABEL: &str = "containerd.io/restart.explicitly-stopped";

/// A restart policy label that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    /// `always:3`, `no:1`, `unless-stopped:2`.
    #[error(
        "restart policy {name:?} does not support a max retry count; only on-failure[:N] does"
    )]
    NoRetryCount {
        /// The policy name before the colon.
        name: String,
    },
    /// `on-failure:x`.
    #[error("invalid max retry count {count:?} in restart policy {policy:?}: want on-failure:N with N an integer")]
    BadRetryCount {
        /// The whole label value.
        policy: String,
        /// The part after the colon.
        count: String,
    },
    /// Anything else.
    #[error("restart policy {policy:?} not supported: want always, no, on-failure[:N] or unless-stopped")]
    Unsupported {
        /// The label value.
        policy: String,
    },
}

/// The policy's kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PolicyName {
    /// Never restart.
    No,
    /// Restart whatever the exit status.
    Always,
    /// Restart on a non-zero exit status, up to a count (0 = unlimited).
    OnFailure,
    /// As `always`, unless the container was explicitly stopped.
    UnlessStopped,
}

/// A parsed `containerd.io/restart.policy` value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    /// Kind.
    pub name: PolicyName,
    /// `on-failure:N`'s N (0 when absent: no limit).
    pub max_retries: i64,
}

/// Go's `strconv.Atoi`: optional sign, ASCII digits only.
fn atoi(s: &str) -> Option<i64> {
    let digits = s.strip_prefix(['+', '-']).unwrap_or(s);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

/// Go's `strconv.ParseBool`.
fn parse_bool(s: &str) -> Option<bool> {
    match s {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Some(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Some(false),
        _ => None,
    }
}

impl Policy {
    /// containerd `NewPolicy`: an empty value means `always`; only `on-failure` takes a
    /// `:N` (parts after a second colon are ignored, as containerd does).
    pub fn parse(s: &str) -> Result<Policy, PolicyError> {
        let mut parts = s.split(':');
        let head = parts.next().unwrap_or_default();
        let count = parts.next();
        let name = match head {
            "" | "always" => PolicyName::Always,
            "no" => PolicyName::No,
            "unless-stopped" => PolicyName::UnlessStopped,
            "on-failure" => {
                let max_retries = match count {
                    None => 0,
                    Some(c) => atoi(c).ok_or_else(|| PolicyError::BadRetryCount {
                        policy: s.to_string(),
                        count: c.to_string(),
                    })?,
                };
                return Ok(Policy {
                    name: PolicyName::OnFailure,
                    max_retries,
                });
            }
            _ => {
                return Err(PolicyError::Unsupported {
                    policy: s.to_string(),
                })
            }
        };
        if count.is_some() {
            return Err(PolicyError::NoRetryCount {
                name: head.to_string(),
            });
        }
        Ok(Policy {
            name,
            max_retries: 0,
        })
    }

    /// containerd `Reconcile`: should a task that ended with `exit_status` run again, given
    /// the container's labels (count, explicitly-stopped)?
    pub fn should_restart(&self, exit_status: u32, labels: &Labels) -> Result<bool, String> {
        Ok(match self.name {
            PolicyName::Always => true,
            PolicyName::No => false,
            PolicyName::OnFailure => {
                let count = match labels.get(COUNT_LABEL).map(String::as_str) {
                    None | Some("") => 0,
                    Some(c) => atoi(c).ok_or_else(|| {
                        format!("label {COUNT_LABEL}={c:?} is not an integer restart count")
                    })?,
                };
                exit_status != 0 && (self.max_retries == 0 || count < self.max_retries)
            }
            PolicyName::UnlessStopped => {
                let stopped = labels
                    .get(EXPLICITLY_STOPPED_LABEL)
                    .and_then(|v| parse_bool(v))
                    .unwrap_or(false);
                !stopped
            }
        })
    }
}

impl fmt::Display for Policy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = match self.name {
            PolicyName::No => "no",
            PolicyName::Always => "always",
            PolicyName::OnFailure => "on-failure",
            PolicyName::UnlessStopped => "unless-stopped",
        };
        if self.max_retries > 0 {
            write!(f, "{name}:{}", self.max_retries)
        } else {
            f.write_str(name)
        }
    }
}

/// containerd's `ProcessStatus` string of a task status, as the status label names it.
pub fn status_name(s: Status) -> &'static str {
    match s {
        Status::Unknown => "unknown",
        Status::Created => "created",
        Status::Running => "running",
        Status::Stopped => "stopped",
        Status::Paused => "paused",
        Status::Pausing => "pausing",
    }
}

/// Where a restarted task's stdout and stderr go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LogTarget {
    /// `cio.NullIO`: nowhere.
    Null,
    /// `cio.LogURI`: this URI for both (the `loguri` label, or `file://` + `logpath`).
    Uri(String),
}

/// What to do about one container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Plan {
    /// Delete the old task if any, set the count label to `count`, create and start a task.
    Start {
        /// The new value of `containerd.io/restart.count`.
        count: i64,
        /// stdout/stderr.
        log: LogTarget,
    },
    /// Kill (SIGKILL, all processes) and delete the task.
    Stop,
}

/// How a task looked when the monitor checked, `None` when there is no task or its state
/// could not be read (containerd treats both alike: zero status, exit status 0).
pub type Observed = Option<(Status, u32)>;

/// The log target of the labels: `loguri` wins over the deprecated `logpath`
/// (containerd 1.6 `startChange.apply`). A relative log path cannot be turned into a
/// `file://` URI (containerd's `LogURIGenerator`: "absolute path needed").
pub fn log_target(labels: &Labels) -> Result<LogTarget, String> {
    let uri = labels.get(LOG_URI_LABEL).map(String::as_str).unwrap_or("");
    let path = labels.get(LOG_PATH_LABEL).map(String::as_str).unwrap_or("");
    if !uri.is_empty() {
        if uri.starts_with(':') || uri.chars().any(char::is_control) {
            return Err(format!(
                "label {LOG_URI_LABEL}={uri:?} is not a URI: use e.g. file:///var/log/c1.log or binary:///usr/bin/logger"
            ));
        }
        return Ok(LogTarget::Uri(uri.to_string()));
    }
    if !path.is_empty() {
        if !path.starts_with('/') {
            return Err(format!(
                "label {LOG_PATH_LABEL}={path:?}: absolute path needed"
            ));
        }
        return Ok(LogTarget::Uri(format!("file://{path}")));
    }
    Ok(LogTarget::Null)
}

/// containerd 2.x `monitor.monitor` for one container: compare the status label with the
/// observed task, apply the restart policy. `Err` carries a message to log (the container is
/// then left alone this round, as containerd does).
pub fn plan(labels: &Labels, observed: Observed) -> Result<Option<Plan>, String> {
    let desired = labels.get(STATUS_LABEL).map(String::as_str).unwrap_or("");
    if let Some((status, _)) = observed {
        if desired == status_name(status) {
            return Ok(None);
        }
    }
    match desired {
        "running" => {
            let (status, exit_status) = observed.unwrap_or((Status::Unknown, 0));
            if matches!(status, Status::Paused | Status::Pausing) {
                return Ok(None);
            }
            let policy = Policy::parse(labels.get(POLICY_LABEL).map_or("", String::as_str))
                .map_err(|e| e.to_string())?;
            if !policy.should_restart(exit_status, labels)? {
                return Ok(None);
            }
            // As containerd: an unreadable count restarts from 0.
            let count = labels
                .get(COUNT_LABEL)
                .and_then(|c| atoi(c))
                .unwrap_or(0)
                .saturating_add(1);
            Ok(Some(Plan::Start {
                count,
                log: log_target(labels)?,
            }))
        }
        // No task (or unreadable) is as good as stopped.
        "stopped" if observed.is_some() => Ok(Some(Plan::Stop)),
        _ => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(kv: &[(&str, &str)]) -> Labels {
        kv.iter()
            .map(|(k, v)| ((*k).to_string(), (*v).to_string()))
            .collect()
    }

    #[test]
    fn policies_parse_as_containerd_new_policy() {
        use PolicyName::*;
        let ok = [
            ("", Always, 0, "always"),
            ("always", Always, 0, "always"),
            ("no", No, 0, "no"),
            ("unless-stopped", UnlessStopped, 0, "unless-stopped"),
            ("on-failure", OnFailure, 0, "on-failure"),
            ("on-failure:2", OnFailure, 2, "on-failure:2"),
            ("on-failure:+5", OnFailure, 5, "on-failure:5"),
            ("on-failure:0", OnFailure, 0, "on-failure"),
            ("on-failure:-1", OnFailure, -1, "on-failure"),
            ("on-failure:3:junk", OnFailure, 3, "on-failure:3"),
        ];
        for (s, name, max, shown) in ok {
            let p = Policy::parse(s).unwrap_or_else(|e| panic!("{s:?}: {e}"));
            assert_eq!((p.name, p.max_retries), (name, max), "{s:?}");
            assert_eq!(p.to_string(), shown, "{s:?}");
        }
        let bad = [
            ("always:3", "does not support a max retry count"),
            ("no:1", "does not support"),
            ("unless-stopped:2", "does not support"),
            (":1", "does not support"),
            ("on-failure:x", "invalid max retry count \"x\""),
            ("on-failure:", "invalid max retry count \"\""),
            ("on-failure: 2", "invalid max retry count"),
            ("sometimes", "\"sometimes\" not supported"),
            ("Always", "not supported"),
        ];
        for (s, needle) in bad {
            let e = Policy::parse(s).expect_err(s).to_string();
            assert!(e.contains(needle), "{s:?}: {e}");
        }
    }

    #[test]
    fn policies_reconcile_as_containerd() {
        // (policy, exit status, count label, explicitly-stopped label, restart?)
        type Row = (
            &'static str,
            u32,
            Option<&'static str>,
            Option<&'static str>,
            bool,
        );
        let table: &[Row] = &[
            ("", 0, None, None, true),
            ("always", 0, None, None, true),
            ("always", 1, Some("99"), Some("true"), true),
            ("no", 1, None, None, false),
            ("on-failure", 0, None, None, false),
            ("on-failure", 3, None, None, true),
            ("on-failure", 3, Some("1000"), None, true),
            ("on-failure:2", 3, None, None, true),
            ("on-failure:2", 3, Some(""), None, true),
            ("on-failure:2", 3, Some("1"), None, true),
            ("on-failure:2", 3, Some("2"), None, false),
            ("on-failure:2", 3, Some("3"), None, false),
            ("on-failure:2", 0, Some("0"), None, false),
            ("on-failure:-1", 3, None, None, false),
            ("unless-stopped", 0, None, None, true),
            ("unless-stopped", 0, None, Some("false"), true),
            ("unless-stopped", 0, None, Some("true"), false),
            ("unless-stopped", 0, None, Some("1"), false),
            ("unless-stopped", 0, None, Some("T"), false),
            ("unless-stopped", 0, None, Some("yes"), true),
        ];
        for (policy, exit, count, stopped, want) in table {
            let mut l = labels(&[]);
            if let Some(c) = count {
                l.insert(COUNT_LABEL.into(), (*c).into());
            }
            if let Some(s) = stopped {
                l.insert(EXPLICITLY_STOPPED_LABEL.into(), (*s).into());
            }
            let got = Policy::parse(policy)
                .expect("policy")
                .should_restart(*exit, &l)
                .expect("reconcile");
            assert_eq!(
                got, *want,
                "{policy:?} exit {exit} count {count:?} stopped {stopped:?}"
            );
        }
        let l = labels(&[(COUNT_LABEL, "two")]);
        let e = Policy::parse("on-failure:3")
            .expect("policy")
            .should_restart(1, &l)
            .expect_err("bad count");
        assert!(e.contains("\"two\""), "{e}");
    }

    #[test]
    fn plans_follow_the_status_label_and_the_policy() {
        let run = |extra: &[(&str, &str)]| {
            let mut l = labels(&[(STATUS_LABEL, "running")]);
            l.extend(labels(extra));
            l
        };
        let start = |count| {
            Some(Plan::Start {
                count,
                log: LogTarget::Null,
            })
        };
        let stopped = |code| Some((Status::Stopped, code));
        // (labels, observed, plan)
        let table: Vec<(Labels, Observed, Option<Plan>)> = vec![
            (run(&[]), Some((Status::Running, 0)), None),
            (run(&[]), stopped(3), start(1)),
            (run(&[]), stopped(0), start(1)),
            (run(&[]), None, start(1)),
            (run(&[]), Some((Status::Created, 0)), start(1)),
            (run(&[]), Some((Status::Unknown, 0)), start(1)),
            (run(&[]), Some((Status::Paused, 0)), None),
            (run(&[]), Some((Status::Pausing, 0)), None),
            (run(&[(COUNT_LABEL, "4")]), stopped(3), start(5)),
            (run(&[(COUNT_LABEL, "junk")]), stopped(3), start(1)),
            (run(&[(POLICY_LABEL, "no")]), stopped(3), None),
            (run(&[(POLICY_LABEL, "on-failure")]), stopped(0), None),
            // containerd's known issue: a missing task has exit status 0.
            (run(&[(POLICY_LABEL, "on-failure")]), None, None),
            (run(&[(POLICY_LABEL, "on-failure:2")]), stopped(3), start(1)),
            (
                run(&[(POLICY_LABEL, "on-failure:2"), (COUNT_LABEL, "1")]),
                stopped(3),
                start(2),
            ),
            (
                run(&[(POLICY_LABEL, "on-failure:2"), (COUNT_LABEL, "2")]),
                stopped(3),
                None,
            ),
            (
                run(&[
                    (POLICY_LABEL, "unless-stopped"),
                    (EXPLICITLY_STOPPED_LABEL, "true"),
                ]),
                stopped(137),
                None,
            ),
            (
                run(&[(POLICY_LABEL, "unless-stopped")]),
                stopped(137),
                start(1),
            ),
            (
                labels(&[(STATUS_LABEL, "stopped")]),
                Some((Status::Running, 0)),
                Some(Plan::Stop),
            ),
            (
                labels(&[(STATUS_LABEL, "stopped")]),
                Some((Status::Created, 0)),
                Some(Plan::Stop),
            ),
            (labels(&[(STATUS_LABEL, "stopped")]), stopped(0), None),
            (labels(&[(STATUS_LABEL, "stopped")]), None, None),
            (
                labels(&[(STATUS_LABEL, "paused")]),
                Some((Status::Running, 0)),
                None,
            ),
            (labels(&[(STATUS_LABEL, "")]), None, None),
        ];
        for (l, observed, want) in table {
            let got = plan(&l, observed).expect("plan");
            assert_eq!(got, want, "labels {l:?} observed {observed:?}");
        }
    }

    #[test]
    fn log_targets_prefer_the_uri_and_need_absolute_paths() {
        type Case = (
            &'static [(&'static str, &'static str)],
            Result<LogTarget, &'static str>,
        );
        let cases: &[Case] = &[
            (&[], Ok(LogTarget::Null)),
            (
                &[(LOG_URI_LABEL, "file:///var/log/c1.log")],
                Ok(LogTarget::Uri("file:///var/log/c1.log".into())),
            ),
            (
                &[(LOG_PATH_LABEL, "/var/log/c1.log")],
                Ok(LogTarget::Uri("file:///var/log/c1.log".into())),
            ),
            (
                &[
                    (LOG_URI_LABEL, "binary:///usr/bin/logger?tag=x"),
                    (LOG_PATH_LABEL, "/var/log/c1.log"),
                ],
                Ok(LogTarget::Uri("binary:///usr/bin/logger?tag=x".into())),
            ),
            (&[(LOG_PATH_LABEL, "c1.log")], Err("absolute path needed")),
            (&[(LOG_URI_LABEL, "://x")], Err("is not a URI")),
            (&[(LOG_URI_LABEL, "file:///a\nb")], Err("is not a URI")),
        ];
        for (kv, want) in cases {
            let got = log_target(&labels(kv));
            match (got, want) {
                (Ok(g), Ok(w)) => assert_eq!(&g, w, "{kv:?}"),
                (Err(g), Err(w)) => assert!(g.contains(w), "{kv:?}: {g}"),
                (g, w) => panic!("{kv:?}: got {g:?}, want {w:?}"),
            }
        }
        // A bad policy is logged and the container left alone, as containerd's Reconcile.
        let l = labels(&[(STATUS_LABEL, "running"), (POLICY_LABEL, "bogus")]);
        let e = plan(&l, Some((Status::Stopped, 3))).expect_err("bad policy");
        assert!(e.contains("\"bogus\" not supported"), "{e}");
        // A bad log label leaves the container alone (logged), as containerd's apply error.
        let l = labels(&[(STATUS_LABEL, "running"), (LOG_PATH_LABEL, "rel")]);
        assert!(plan(&l, None).is_err());
    }
}
