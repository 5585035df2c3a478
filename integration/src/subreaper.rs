//! Make the test process a child subreaper, and reap the orphans that re-parent to it.
//!
//! PID 1 on the test machines does not reap orphans, and containerd's shims daemonize (the
//! `start` invocation forks the long-running shim and exits), so without a subreaper a killed
//! shim stays a zombie forever and "no leftover processes" checks cannot be written. With
//! `PR_SET_CHILD_SUBREAPER` every orphan below the test process re-parents to it instead.
//!
//! # Reaping without stealing
//! The test process also waits on its own children (`Command::output()`, `Child::wait()`, tokio
//! processes). A `waitpid(-1)` loop would steal their statuses (the owner gets `ECHILD`). So the
//! background reaper never waits on "any child": a thread scans `/proc` every 100 ms and
//! `waitpid()`s, by pid, only zombies whose parent is us AND that are orphans, decided as:
//! - not in the registry of pids the harness spawned itself ([`register`]), and
//! - either in a different process group than the test process (shims call `setpgid`/`setsid`
//!   and container processes inherit that; `std`/`tokio` children stay in our group), or
//!   seen earlier by the scanner with a parent other than us (re-parented while we watched).
//!
//! A test that spawns a direct child in its own process group (`process_group(0)`) and waits on
//! it must [`register`] its pid (harness helpers do this for the daemons they start).

use std::collections::HashSet;
use std::sync::{Mutex, OnceLock};
use std::thread;
use std::time::Duration;

use nix::sys::wait::{waitpid, WaitPidFlag};
use nix::unistd::Pid;

use crate::procs::{all_processes, ProcStat};

/// Errors from setting up the subreaper.
#[derive(Debug, Clone, thiserror::Error)]
pub enum SubreaperError {
    #[error("prctl(PR_SET_CHILD_SUBREAPER) failed: {0} (needs Linux >= 3.4)")]
    Prctl(String),
    #[error("starting the reaper thread: {0}")]
    Thread(String),
}

#[derive(Default)]
struct State {
    /// Pids spawned by the harness itself: their owners wait on them.
    registered: HashSet<i32>,
    /// Pids seen below us with a parent other than us (candidates for re-parenting).
    seen_foreign_parent: HashSet<i32>,
    /// How many orphans the thread reaped (for tests and diagnostics).
    reaped: u64,
}

static STATE: OnceLock<Mutex<State>> = OnceLock::new();
static STARTED: OnceLock<Result<(), SubreaperError>> = OnceLock::new();

fn state() -> &'static Mutex<State> {
    STATE.get_or_init(|| Mutex::new(State::default()))
}

/// Makes the current process a child subreaper and starts the orphan reaper thread.
/// Idempotent and thread-safe: every test that may leave orphans calls it first.
///
/// # Errors
/// `prctl` or thread creation failed (the error is remembered and returned to every caller).
pub fn ensure() -> Result<(), SubreaperError> {
    STARTED
        .get_or_init(|| {
            nix::sys::prctl::set_child_subreaper(true)
                .map_err(|e| SubreaperError::Prctl(e.to_string()))?;
            thread::Builder::new()
                .name("berth-test-reaper".into())
                .spawn(reaper_loop)
                .map(|_| ())
                .map_err(|e| SubreaperError::Thread(e.to_string()))
        })
        .clone()
}

/// True when this process is a child subreaper.
#[must_use]
pub fn is_subreaper() -> bool {
    nix::sys::prctl::get_child_subreaper().unwrap_or(false)
}

/// Marks `pid` as a direct child that its owner waits on: the reaper never touches it.
pub fn register(pid: u32) {
    if let Ok(mut s) = state().lock() {
        s.registered.insert(pid.cast_signed());
    }
}

/// Spawns `cmd` and registers its pid atomically with respect to the reaper thread: the state
/// lock is held across the spawn, so a child that exits at once (a daemon failing at start-up)
/// cannot be taken for an orphan between `spawn` and [`register`] and reaped from under its
/// owner (whose `try_wait` would then see `ECHILD` instead of the exit status).
///
/// # Errors
/// The spawn error.
pub fn spawn_registered(cmd: &mut std::process::Command) -> std::io::Result<std::process::Child> {
    let mut guard = state()
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let child = cmd.spawn()?;
    guard.registered.insert(child.id().cast_signed());
    Ok(child)
}

/// Forgets a registered pid (after its owner has waited on it).
pub fn unregister(pid: u32) {
    if let Ok(mut s) = state().lock() {
        s.registered.remove(&pid.cast_signed());
    }
}

/// Number of orphans reaped so far by the background thread.
#[must_use]
pub fn reaped_count() -> u64 {
    state().lock().map_or(0, |s| s.reaped)
}

fn reaper_loop() {
    let me = std::process::id().cast_signed();
    let my_pgrp = nix::unistd::getpgrp().as_raw();
    loop {
        scan_once(me, my_pgrp);
        thread::sleep(Duration::from_millis(100));
    }
}

fn scan_once(me: i32, my_pgrp: i32) {
    let procs = all_processes();
    let below_us = descendants_of(me, &procs);
    let mut to_reap = Vec::new();
    {
        let Ok(mut s) = state().lock() else { return };
        // Remember processes below us that currently have another parent: if they later show
        // up as our children they were re-parented, so they are ours to reap.
        for p in &procs {
            if p.ppid != me && below_us.contains(&p.pid) {
                s.seen_foreign_parent.insert(p.pid);
            }
        }
        for p in &procs {
            if p.ppid == me && p.state == 'Z' && is_orphan(p, my_pgrp, &s) {
                to_reap.push(p.pid);
            }
        }
        let live: HashSet<i32> = procs.iter().map(|p| p.pid).collect();
        s.seen_foreign_parent.retain(|pid| live.contains(pid));
    }
    for pid in to_reap {
        // By pid and WNOHANG: only this zombie, never "any child".
        if let Ok(status) = waitpid(Pid::from_raw(pid), Some(WaitPidFlag::WNOHANG)) {
            if status.pid().is_some() {
                log::debug!("reaped orphan {pid}: {status:?}");
                if let Ok(mut s) = state().lock() {
                    s.reaped += 1;
                    s.seen_foreign_parent.remove(&pid);
                }
            }
        }
    }
}

fn is_orphan(p: &ProcStat, my_pgrp: i32, s: &State) -> bool {
    !s.registered.contains(&p.pid) && (p.pgrp != my_pgrp || s.seen_foreign_parent.contains(&p.pid))
}

fn descendants_of(root: i32, procs: &[ProcStat]) -> HashSet<i32> {
    let mut out = HashSet::new();
    let mut frontier = vec![root];
    while let Some(pid) = frontier.pop() {
        for p in procs {
            if p.ppid == pid && out.insert(p.pid) {
                frontier.push(p.pid);
            }
        }
    }
    out
}
