//! `ctr events` captured in the background, for tests that assert which events a daemon
//! published (topics, their order, how many of each).
//!
//! One type for every daemon the harness drives: [`Events::spawn`] takes any `ctr` command
//! already bound to a socket and namespace — Debian's ctr against berthd
//! ([`crate::daemon::TestDaemon::ctr_command`]), or 1.6's/2.3.4's ctr against a private
//! containerd ([`crate::containerd::Containerd::ctr_command`]) — and appends `events`. A
//! thread copies ctr's stdout into a shared buffer line by line; dropping the value kills ctr.
//!
//! ctr prints one event a line: `<timestamp> <topic> <namespace> <event JSON>`, so a topic is
//! the first word starting with `/` and "mentions" is a plain substring test on the line.

use std::io::{BufRead as _, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread;
use std::time::{Duration, Instant};

use crate::containerd::Containerd;
use crate::daemon::TestDaemon;

/// How long [`Events::spawn`] waits for ctr's subscription to reach the daemon: events
/// published before that would be missed.
const SUBSCRIBE_GRACE: Duration = Duration::from_millis(300);

/// Errors from starting `ctr events`.
#[derive(Debug, thiserror::Error)]
pub enum EventsError {
    #[error("spawning `{ctr} events`: {source}")]
    Spawn { ctr: String, source: std::io::Error },
}

/// Anything that hands out a `ctr` command bound to its daemon (address and namespace set).
pub trait CtrTarget {
    /// A fresh `ctr` command with `--address` and `--namespace` set; the caller adds args.
    fn ctr_command(&self) -> Command;
}

impl CtrTarget for TestDaemon {
    fn ctr_command(&self) -> Command {
        TestDaemon::ctr_command(self)
    }
}

impl CtrTarget for Containerd {
    fn ctr_command(&self) -> Command {
        Containerd::ctr_command(self)
    }
}

/// `ctr events` running in the background; [`Events::text`] is what it printed so far.
#[derive(Debug)]
pub struct Events {
    child: Child,
    out: Arc<Mutex<String>>,
}

impl Events {
    /// Runs `<ctr> events` (`ctr` already carries `--address`/`--namespace`) and returns once
    /// the subscription has had time to reach the daemon.
    ///
    /// # Errors
    /// When ctr cannot be spawned.
    pub fn spawn(mut ctr: Command) -> Result<Events, EventsError> {
        let mut child = ctr
            .arg("events")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|source| EventsError::Spawn {
                ctr: ctr.get_program().to_string_lossy().into_owned(),
                source,
            })?;
        let out = Arc::new(Mutex::new(String::new()));
        if let Some(stdout) = child.stdout.take() {
            let sink = Arc::clone(&out);
            thread::spawn(move || {
                for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                    let mut s = sink.lock().unwrap_or_else(PoisonError::into_inner);
                    s.push_str(&line);
                    s.push('\n');
                }
            });
        }
        thread::sleep(SUBSCRIBE_GRACE);
        Ok(Events { child, out })
    }

    /// [`Events::spawn`] with `target`'s ctr.
    ///
    /// # Panics
    /// When ctr cannot be spawned.
    #[must_use]
    pub fn start(target: &impl CtrTarget) -> Events {
        Events::spawn(target.ctr_command()).unwrap_or_else(|e| panic!("{e}"))
    }

    /// Everything ctr printed so far.
    #[must_use]
    pub fn text(&self) -> String {
        self.out
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Topics of the lines that mention all of `needles`, in order.
    #[must_use]
    pub fn topics(&self, needles: &[&str]) -> Vec<String> {
        self.text()
            .lines()
            .filter(|l| needles.iter().all(|n| l.contains(n)))
            .filter_map(|l| {
                l.split_whitespace()
                    .find(|w| w.starts_with('/'))
                    .map(str::to_string)
            })
            .collect()
    }

    /// Lines with `topic` that mention all of `needles`.
    #[must_use]
    pub fn count(&self, topic: &str, needles: &[&str]) -> usize {
        let topic = format!(" {topic} ");
        self.text()
            .lines()
            .filter(|l| l.contains(&topic) && needles.iter().all(|n| l.contains(n)))
            .count()
    }

    /// Waits until `count(topic, needles) >= n`.
    ///
    /// # Panics
    /// After `timeout`, with everything ctr printed.
    pub fn wait_for(&self, topic: &str, needles: &[&str], n: usize, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while self.count(topic, needles) < n {
            assert!(
                Instant::now() < deadline,
                "no {n}× {topic} {needles:?} within {timeout:?}; events:\n{}",
                self.text()
            );
            thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Events {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
