//! Looking at tasks from the outside the way tests do: `ctr tasks ls` output, waiting for a
//! task status, and the shim process that serves a task.
//!
//! Shared by the test environments over berthd (`runtime_common`) and over a private
//! containerd (`shim_common`), which wrap these with their own daemon and `ctr`.

use std::thread;
use std::time::{Duration, Instant};

use crate::procs;

/// `(pid, status)` of task `id` in `ctr tasks ls` output (`TASK PID STATUS` columns).
#[must_use]
pub fn parse_status(ls: &str, id: &str) -> Option<(String, String)> {
    ls.lines().skip(1).find_map(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        (f.first() == Some(&id) && f.len() >= 3).then(|| (f[1].to_string(), f[2].to_string()))
    })
}

/// Polls `status_of()` (a task's `(pid, status)`) every 50 ms until the status is `status`;
/// returns that `(pid, status)`.
///
/// # Panics
/// After `timeout`, with the last status seen and `context()` (a daemon log tail).
pub fn wait_status(
    id: &str,
    status: &str,
    timeout: Duration,
    mut status_of: impl FnMut() -> Option<(String, String)>,
    context: impl Fn() -> String,
) -> (String, String) {
    let deadline = Instant::now() + timeout;
    loop {
        let s = status_of();
        if let Some(s) = &s {
            if s.1 == status {
                return s.clone();
            }
        }
        assert!(
            Instant::now() < deadline,
            "task {id} did not reach {status} within {timeout:?}; last: {s:?}\nlog:\n{}",
            context()
        );
        thread::sleep(Duration::from_millis(50));
    }
}

/// Pids of the shims serving task `id` in `namespace`: processes named `containerd-shim*`
/// started with `-namespace <namespace> -id <id>` (Go shims and ours alike).
#[must_use]
pub fn shim_pids(namespace: &str, id: &str) -> Vec<i32> {
    procs::processes_mentioning(namespace)
        .into_iter()
        .filter(|p| {
            let argv = procs::cmdline(*p);
            argv.first().is_some_and(|a| a.contains("containerd-shim"))
                && argv.windows(2).any(|w| w[0] == "-id" && w[1] == id)
                && argv
                    .windows(2)
                    .any(|w| w[0] == "-namespace" && w[1] == namespace)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_ctr_tasks_ls() {
        let ls = "TASK    PID     STATUS\nt1      4242    RUNNING\nt10     7       STOPPED\nbad\n";
        assert_eq!(
            parse_status(ls, "t1"),
            Some(("4242".into(), "RUNNING".into()))
        );
        assert_eq!(
            parse_status(ls, "t10"),
            Some(("7".into(), "STOPPED".into()))
        );
        assert_eq!(parse_status(ls, "bad"), None);
        assert_eq!(parse_status(ls, "TASK"), None);
    }
}
