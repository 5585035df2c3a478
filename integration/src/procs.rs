//! Reading `/proc` and cleaning up after real processes and mounts.
//!
//! The harness starts real daemons (containerd, berthd, docker-registry) whose children outlive
//! them (shims, container processes) and which leave mounts behind when killed. Everything here
//! finds those by what is observable from outside (`/proc/<pid>/stat`, `cmdline`, `cwd`,
//! `/proc/self/mountinfo`) so that cleanup works even after a `kill -9`.

use std::collections::{HashMap, HashSet};
use std::fs;
use std::path::{Path, PathBuf};
use std::thread;
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

/// Errors from reading `/proc` or unmounting.
#[derive(Debug, thiserror::Error)]
pub enum ProcError {
    #[error("reading {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("unmounting {path}: {source}")]
    Unmount { path: PathBuf, source: nix::Error },
}

/// The fields of `/proc/<pid>/stat` the harness needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcStat {
    pub pid: i32,
    /// Executable name (`comm`), at most 15 bytes.
    pub comm: String,
    /// Single-letter state: `R`, `S`, `D`, `Z` (zombie), `T`…
    pub state: char,
    pub ppid: i32,
    pub pgrp: i32,
    pub session: i32,
}

impl ProcStat {
    /// Parses one `/proc/<pid>/stat` line. `comm` may contain spaces and parentheses, so the
    /// fields after it are found from the LAST `)`.
    #[must_use]
    pub fn parse(line: &str) -> Option<Self> {
        let open = line.find('(')?;
        let close = line.rfind(')')?;
        let pid = line[..open].trim().parse().ok()?;
        let comm = line[open + 1..close].to_string();
        let mut rest = line[close + 1..].split_whitespace();
        let state = rest.next()?.chars().next()?;
        let ppid = rest.next()?.parse().ok()?;
        let pgrp = rest.next()?.parse().ok()?;
        let session = rest.next()?.parse().ok()?;
        Some(Self {
            pid,
            comm,
            state,
            ppid,
            pgrp,
            session,
        })
    }

    /// Reads `/proc/<pid>/stat`; `None` when the process is gone.
    #[must_use]
    pub fn read(pid: i32) -> Option<Self> {
        fs::read_to_string(format!("/proc/{pid}/stat"))
            .ok()
            .and_then(|s| Self::parse(&s))
    }
}

/// All processes currently visible in `/proc` (racy by nature: processes come and go).
#[must_use]
pub fn all_processes() -> Vec<ProcStat> {
    let Ok(dir) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(Result::ok)
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter_map(ProcStat::read)
        .collect()
}

/// `argv` of a process (empty for zombies and kernel threads).
#[must_use]
pub fn cmdline(pid: i32) -> Vec<String> {
    fs::read(format!("/proc/{pid}/cmdline"))
        .map(|b| {
            b.split(|&c| c == 0)
                .filter(|s| !s.is_empty())
                .map(|s| String::from_utf8_lossy(s).into_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// Current working directory of a process, if readable.
#[must_use]
pub fn cwd(pid: i32) -> Option<PathBuf> {
    fs::read_link(format!("/proc/{pid}/cwd")).ok()
}

/// `pids` plus every live descendant of them.
#[must_use]
pub fn with_descendants(pids: &[i32]) -> Vec<i32> {
    let procs = all_processes();
    let mut children: HashMap<i32, Vec<i32>> = HashMap::new();
    for p in &procs {
        children.entry(p.ppid).or_default().push(p.pid);
    }
    let mut seen: HashSet<i32> = HashSet::new();
    let mut stack: Vec<i32> = pids.to_vec();
    let mut out = Vec::new();
    while let Some(pid) = stack.pop() {
        if !seen.insert(pid) {
            continue;
        }
        out.push(pid);
        if let Some(c) = children.get(&pid) {
            stack.extend(c);
        }
    }
    out
}

/// Processes (not zombies) whose command line or working directory mentions `needle`.
/// Used to find shims and runtimes started for a private daemon: their argv carries the
/// daemon's socket address and their cwd is the bundle under its state directory.
#[must_use]
pub fn processes_mentioning(needle: &str) -> Vec<i32> {
    let me = std::process::id().cast_signed();
    all_processes()
        .into_iter()
        .filter(|p| p.pid != me && p.state != 'Z')
        .filter(|p| {
            cmdline(p.pid).iter().any(|a| a.contains(needle))
                || cwd(p.pid).is_some_and(|c| c.to_string_lossy().contains(needle))
        })
        .map(|p| p.pid)
        .collect()
}

/// True while the process exists and is not a zombie.
#[must_use]
pub fn is_alive(pid: i32) -> bool {
    ProcStat::read(pid).is_some_and(|s| s.state != 'Z')
}

/// SIGKILLs every pid given and waits (up to `timeout`) until none of them is alive any more.
/// Returns the pids still alive after the timeout (empty on success).
pub fn kill_all_and_wait(pids: &[i32], timeout: Duration) -> Vec<i32> {
    for &pid in pids {
        let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
    }
    let deadline = Instant::now() + timeout;
    loop {
        let alive: Vec<i32> = pids.iter().copied().filter(|&p| is_alive(p)).collect();
        if alive.is_empty() || Instant::now() >= deadline {
            return alive;
        }
        thread::sleep(Duration::from_millis(20));
    }
}

/// Mount points (from `/proc/self/mountinfo`) at or below `dir`, deepest first.
#[must_use]
pub fn mounts_under(dir: &Path) -> Vec<PathBuf> {
    let Ok(info) = fs::read_to_string("/proc/self/mountinfo") else {
        return Vec::new();
    };
    let mut out: Vec<PathBuf> = info
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(|m| PathBuf::from(unescape_mountinfo(m)))
        .filter(|m| m.starts_with(dir))
        .collect();
    out.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    out.dedup();
    out
}

/// mountinfo escapes space, tab, newline and backslash as `\ooo` octal.
fn unescape_mountinfo(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 4 <= b.len() && b[i + 1..i + 4].iter().all(u8::is_ascii_digit) {
            if let Ok(v) = u8::from_str_radix(&s[i + 1..i + 4], 8) {
                out.push(v);
                i += 4;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Lazily unmounts everything at or below `dir` (deepest first, repeated for stacked mounts).
///
/// # Errors
/// The first mount that could not be unmounted.
pub fn unmount_all_under(dir: &Path) -> Result<(), ProcError> {
    for _ in 0..8 {
        let mounts = mounts_under(dir);
        if mounts.is_empty() {
            return Ok(());
        }
        for m in mounts {
            match nix::mount::umount2(&m, nix::mount::MntFlags::MNT_DETACH) {
                Ok(()) | Err(nix::Error::EINVAL | nix::Error::ENOENT) => {}
                Err(source) => return Err(ProcError::Unmount { path: m, source }),
            }
        }
    }
    Ok(())
}

/// Removes a directory tree after unmounting whatever is mounted inside it. Missing is fine.
///
/// # Errors
/// Unmount failures, or removal failures other than "not found".
pub fn remove_tree(dir: &Path) -> Result<(), ProcError> {
    unmount_all_under(dir)?;
    match fs::remove_dir_all(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(ProcError::Read {
            path: dir.to_path_buf(),
            source,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_stat_with_spaces_and_parens_in_comm() {
        let s = ProcStat::parse("42 (a (b) c) S 1 42 42 0 -1 4194560 0").expect("parses");
        assert_eq!(s.pid, 42);
        assert_eq!(s.comm, "a (b) c");
        assert_eq!(s.state, 'S');
        assert_eq!((s.ppid, s.pgrp, s.session), (1, 42, 42));
    }

    #[test]
    fn unescapes_mountinfo_octal() {
        assert_eq!(unescape_mountinfo(r"/tmp/a\040b"), "/tmp/a b");
        assert_eq!(unescape_mountinfo("/plain"), "/plain");
    }

    #[test]
    fn own_process_is_found() {
        let me = std::process::id().cast_signed();
        let s = ProcStat::read(me).expect("own stat");
        assert_eq!(s.pid, me);
        assert!(with_descendants(&[me]).contains(&me));
    }
}
