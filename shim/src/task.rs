//! The task model: containers, their init and exec'd processes, and the process state machine.
//!
//! States and allowed operations follow containerd's `pkg/process` (`init_state.go`,
//! `exec_state.go`): created → running ⇄ paused → stopped → deleted; an init created from a
//! checkpoint carries a [`RestorePlan`] and is restored (`runc restore`) by its Start, as
//! containerd's `createdCheckpointState`. Everything here is plain
//! data mutated under the service's lock; nothing in this module awaits, so a state change and
//! the event it publishes happen atomically with respect to the exit handler.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::SystemTime;

use tokio::sync::watch;

use crate::error::TaskError;
use crate::io::{ProcessIo, StdioSpec};
use crate::options::RuncOptions;
use crate::reaper::Exit;
use crate::runtime::Runtime;

/// Lifecycle state of a process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Created,
    Running,
    Paused,
    Stopped,
}

impl Status {
    pub fn name(self) -> &'static str {
        match self {
            Status::Created => "created",
            Status::Running => "running",
            Status::Paused => "paused",
            Status::Stopped => "stopped",
        }
    }
}

/// One process: a container's init (`exec_id` empty) or an exec'd process.
pub struct Proc {
    pub exec_id: String,
    pub stdio: StdioSpec,
    pub pid: u32,
    pub status: Status,
    pub exit_status: u32,
    pub exited_at: Option<SystemTime>,
    /// Flips to true once the process exited (Wait subscribes to it).
    pub exited: watch::Sender<bool>,
    pub io: Option<Arc<ProcessIo>>,
    /// The process spec of an exec (JSON of `specs.Process`), consumed by Start.
    pub spec: Option<oci_spec::runtime::Process>,
    /// A Start is in flight: an exit seen meanwhile is held back until the start event is out.
    pub starting: bool,
    pub deferred_exit: Option<Exit>,
}

impl Proc {
    pub fn new(exec_id: &str, stdio: StdioSpec) -> Proc {
        Proc {
            exec_id: exec_id.to_string(),
            stdio,
            pid: 0,
            status: Status::Created,
            exit_status: 0,
            exited_at: None,
            exited: watch::channel(false).0,
            io: None,
            spec: None,
            starting: false,
            deferred_exit: None,
        }
    }

    /// Records the exit (containerd's `SetExited`); false if it had already exited.
    pub fn set_exited(&mut self, status: u32, at: SystemTime) -> bool {
        if self.status == Status::Stopped && self.exited_at.is_some() {
            return false;
        }
        self.status = Status::Stopped;
        self.exit_status = status;
        self.exited_at = Some(at);
        self.exited.send_replace(true);
        true
    }
}

/// One container managed by this shim.
pub struct Container {
    pub id: String,
    pub bundle: PathBuf,
    pub rootfs: Option<PathBuf>,
    pub options: RuncOptions,
    pub runtime: Runtime,
    pub init: Proc,
    pub execs: HashMap<String, Proc>,
    pub reserved: HashSet<String>,
    /// No private pid namespace: on init exit, kill what is left (`ShouldKillAllOnExit`).
    pub kill_all_on_exit: bool,
    /// The init's cgroup (for Stats and OOM watching), found after create.
    pub cgroup: Option<crate::cgroup::Cgroup>,
    /// The init exited while exec'd processes still ran: its exit, published after theirs.
    pub pending_init_exit: Option<Exit>,
    /// Created from a checkpoint: the init is restored by `runc restore` at Start
    /// (containerd's `createdCheckpointState`); that Start takes it.
    pub restore: Option<RestorePlan>,
}

/// What a Create with a checkpoint leaves for Start (containerd `createCheckpointedState`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RestorePlan {
    /// `--image-path`: the CRIU image directory (`CreateTaskRequest.checkpoint`).
    pub image_path: PathBuf,
    /// `--work-path`: runc `Options.CriuWorkPath`, if set.
    pub work_path: Option<PathBuf>,
}

impl RestorePlan {
    /// The plan for a create request's checkpoint fields; `None` without a checkpoint.
    pub fn from_request(checkpoint: &str, criu_work_path: &str) -> Option<RestorePlan> {
        let some = |s: &str| (!s.is_empty()).then(|| PathBuf::from(s));
        Some(RestorePlan {
            image_path: some(checkpoint)?,
            work_path: some(criu_work_path),
        })
    }
}

impl Container {
    /// The process by exec id (`""` is init).
    pub fn process(&self, exec_id: &str) -> Result<&Proc, TaskError> {
        if exec_id.is_empty() {
            return Ok(&self.init);
        }
        self.execs.get(exec_id).ok_or_else(|| {
            TaskError::NotFound(format!(
                "process {exec_id} does not exist in container {}",
                self.id
            ))
        })
    }

    pub fn process_mut(&mut self, exec_id: &str) -> Result<&mut Proc, TaskError> {
        if exec_id.is_empty() {
            return Ok(&mut self.init);
        }
        let id = self.id.clone();
        self.execs.get_mut(exec_id).ok_or_else(|| {
            TaskError::NotFound(format!(
                "process {exec_id} does not exist in container {id}"
            ))
        })
    }

    /// Whether an exec'd process is running or being started.
    pub fn execs_running(&self) -> bool {
        self.execs
            .values()
            .any(|p| p.starting || matches!(p.status, Status::Running | Status::Paused))
    }

    /// (exec id, process) owning `pid`, if any and still tracked.
    pub fn find_pid(&self, pid: u32) -> Option<&str> {
        if pid == 0 {
            return None;
        }
        if self.init.pid == pid {
            return Some("");
        }
        self.execs
            .iter()
            .find(|(_, p)| p.pid == pid)
            .map(|(id, _)| id.as_str())
    }
}

/// All containers plus bookkeeping for exits that arrive before their pid is known.
#[derive(Default)]
pub struct State {
    pub containers: HashMap<String, Container>,
    /// Starts in flight whose pid is not known yet (create, exec start).
    pub pending_starts: usize,
    /// Exits of unknown pids seen while `pending_starts > 0`.
    pub early_exits: HashMap<u32, Exit>,
}

impl State {
    pub fn container(&self, id: &str) -> Result<&Container, TaskError> {
        self.containers
            .get(id)
            .ok_or_else(|| TaskError::NotFound(format!("container {id} not created")))
    }

    pub fn container_mut(&mut self, id: &str) -> Result<&mut Container, TaskError> {
        self.containers
            .get_mut(id)
            .ok_or_else(|| TaskError::NotFound(format!("container {id} not created")))
    }

    /// Which container/process owns `pid`.
    pub fn find_pid(&self, pid: u32) -> Option<(String, String)> {
        self.containers
            .values()
            .find_map(|c| c.find_pid(pid).map(|e| (c.id.clone(), e.to_string())))
    }

    /// Ends a pending start; forgets early exits when none is in flight any more.
    pub fn end_start(&mut self) {
        self.pending_starts = self.pending_starts.saturating_sub(1);
        if self.pending_starts == 0 {
            self.early_exits.clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_is_recorded_once() {
        let mut p = Proc::new("", StdioSpec::default());
        let rx = p.exited.subscribe();
        assert!(p.set_exited(137, SystemTime::now()));
        assert!(
            !p.set_exited(0, SystemTime::now()),
            "second exit must be ignored"
        );
        assert_eq!(p.exit_status, 137);
        assert_eq!(p.status, Status::Stopped);
        assert!(*rx.borrow());
    }

    #[test]
    fn restore_plan_only_with_a_checkpoint() {
        assert_eq!(RestorePlan::from_request("", "/w"), None);
        let p = RestorePlan::from_request("/ck", "/w").unwrap();
        assert_eq!(p.image_path, PathBuf::from("/ck"));
        assert_eq!(p.work_path, Some(PathBuf::from("/w")));
    }

    #[test]
    fn early_exits_forgotten_when_no_start_in_flight() {
        let mut s = State {
            pending_starts: 1,
            ..Default::default()
        };
        s.early_exits.insert(
            42,
            Exit {
                pid: 42,
                status: 0,
                raw: 0,
                at: SystemTime::now(),
            },
        );
        s.end_start();
        assert!(s.early_exits.is_empty());
        assert!(matches!(s.container("nope"), Err(TaskError::NotFound(m)) if m.contains("nope")));
    }
}
