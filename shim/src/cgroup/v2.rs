//! cgroup v2 (unified): metrics (`io.containerd.cgroups.v2.Metrics`, as containerd/cgroups
//! `cgroup2.Manager.Stat`) and the OOM watch on `memory.events` via inotify.

use std::collections::BTreeMap;
use std::ffi::CString;
use std::os::fd::{FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use containerd_shim_protos::cgroups_v2::metrics as m;
use protobuf::MessageField;

use super::stat::{hugetlb_sizes, key_values, parse_u64, read_kv};
use super::{read_opt, CgroupError};

/// A process's cgroup in the unified hierarchy.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CgroupV2 {
    path: PathBuf,
}

impl CgroupV2 {
    /// The cgroup at `path` (absolute directory under a cgroup2 mount).
    pub fn from_path(path: impl Into<PathBuf>) -> Self {
        CgroupV2 { path: path.into() }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Reads the metrics; missing files (controller not enabled, cgroup removed) read as 0.
    pub fn stats(&self) -> Result<m::Metrics, CgroupError> {
        let dir = &self.path;
        let mut out = m::Metrics::new();
        let mut kv = BTreeMap::new();
        for f in ["cpu.stat", "memory.stat"] {
            let p = dir.join(f);
            if let Some(text) = read_opt(&p)? {
                kv.extend(parse_kv_lenient(&text));
            }
        }
        let g = |k: &str| kv.get(k).copied().unwrap_or_default();
        let single = |f: &str| single_value(&dir.join(f));

        let mut pids = m::PidsStat::new();
        pids.current = single("pids.current")?;
        pids.limit = single("pids.max")?;
        out.pids = MessageField::some(pids);

        let mut cpu = m::CPUStat::new();
        cpu.usage_usec = g("usage_usec");
        cpu.user_usec = g("user_usec");
        cpu.system_usec = g("system_usec");
        cpu.nr_periods = g("nr_periods");
        cpu.nr_throttled = g("nr_throttled");
        cpu.throttled_usec = g("throttled_usec");
        cpu.nr_bursts = g("nr_bursts");
        cpu.burst_usec = g("burst_usec");
        cpu.psi = psi(&dir.join("cpu.pressure"))?;
        out.cpu = MessageField::some(cpu);

        let mut mem = m::MemoryStat::new();
        mem.anon = g("anon");
        mem.file = g("file");
        mem.kernel_stack = g("kernel_stack");
        mem.slab = g("slab");
        mem.sock = g("sock");
        mem.shmem = g("shmem");
        mem.file_mapped = g("file_mapped");
        mem.file_dirty = g("file_dirty");
        mem.file_writeback = g("file_writeback");
        mem.anon_thp = g("anon_thp");
        mem.inactive_anon = g("inactive_anon");
        mem.active_anon = g("active_anon");
        mem.inactive_file = g("inactive_file");
        mem.active_file = g("active_file");
        mem.unevictable = g("unevictable");
        mem.slab_reclaimable = g("slab_reclaimable");
        mem.slab_unreclaimable = g("slab_unreclaimable");
        mem.pgfault = g("pgfault");
        mem.pgmajfault = g("pgmajfault");
        mem.workingset_refault = g("workingset_refault");
        mem.workingset_activate = g("workingset_activate");
        mem.workingset_nodereclaim = g("workingset_nodereclaim");
        mem.pgrefill = g("pgrefill");
        mem.pgscan = g("pgscan");
        mem.pgsteal = g("pgsteal");
        mem.pgactivate = g("pgactivate");
        mem.pgdeactivate = g("pgdeactivate");
        mem.pglazyfree = g("pglazyfree");
        mem.pglazyfreed = g("pglazyfreed");
        mem.thp_fault_alloc = g("thp_fault_alloc");
        mem.thp_collapse_alloc = g("thp_collapse_alloc");
        mem.usage = single("memory.current")?;
        mem.usage_limit = single("memory.max")?;
        mem.max_usage = single("memory.peak")?;
        mem.swap_usage = single("memory.swap.current")?;
        mem.swap_limit = single("memory.swap.max")?;
        mem.swap_max_usage = single("memory.swap.peak")?;
        mem.psi = psi(&dir.join("memory.pressure"))?;
        out.memory = MessageField::some(mem);

        if let Some(ev) = memory_events(dir)? {
            out.memory_events = MessageField::some(ev);
        }

        let mut io = m::IOStat::new();
        io.usage = io_stat(&dir.join("io.stat"))?;
        io.psi = psi(&dir.join("io.pressure"))?;
        out.io = MessageField::some(io);
        out.rdma = MessageField::some(m::RdmaStat::new());
        out.hugetlb = hugetlb(dir)?;
        Ok(out)
    }

    /// Writes `pid` into this cgroup's `cgroup.procs`.
    pub fn add_pid(&self, pid: i32) -> Result<(), CgroupError> {
        super::write_procs(std::iter::once(self.path.as_path()), pid)
    }
}

/// `memory.events`, or `None` when the file does not exist (no memory controller).
pub(crate) fn memory_events(dir: &Path) -> Result<Option<m::MemoryEvents>, CgroupError> {
    let Some(kv) = read_kv(&dir.join("memory.events"))? else {
        return Ok(None);
    };
    let g = |k: &str| kv.get(k).copied().unwrap_or_default();
    let mut ev = m::MemoryEvents::new();
    ev.low = g("low");
    ev.high = g("high");
    ev.max = g("max");
    ev.oom = g("oom");
    ev.oom_kill = g("oom_kill");
    ev.oom_group_kill = g("oom_group_kill");
    Ok(Some(ev))
}

/// `cgroup.events` says `populated 0`: no process left.
pub(crate) fn is_empty(dir: &Path) -> bool {
    match read_opt(&dir.join("cgroup.events")) {
        Ok(Some(text)) => text.lines().any(|l| l.trim() == "populated 0"),
        _ => true,
    }
}

/// Like `parse_kv`, skipping values that are not numbers (containerd keeps them as strings and
/// ignores them).
fn parse_kv_lenient(text: &str) -> BTreeMap<String, u64> {
    text.lines()
        .filter_map(|l| {
            let mut it = l.split_whitespace();
            let (k, v) = (it.next()?, it.next()?);
            Some((k.to_string(), v.parse().ok()?))
        })
        .collect()
}

/// A one-value file; `max` is `u64::MAX` (containerd's `getStatFileContentUint64`); missing or
/// unparsable is 0.
fn single_value(path: &Path) -> Result<u64, CgroupError> {
    let Some(text) = read_opt(path)? else {
        return Ok(0);
    };
    let t = text.trim();
    if t == "max" {
        return Ok(u64::MAX);
    }
    Ok(parse_u64(path, t).unwrap_or_else(|e| {
        log::warn!("{e}");
        0
    }))
}

/// `some avg10=0.00 avg60=0.00 avg300=0.00 total=0` / `full ...`.
fn psi(path: &Path) -> Result<MessageField<m::PSIStats>, CgroupError> {
    let Some(text) = read_opt(path)? else {
        return Ok(MessageField::none());
    };
    let mut stats = m::PSIStats::new();
    for line in text.lines() {
        let mut fields = line.split_whitespace();
        let slot = match fields.next() {
            Some("some") => &mut stats.some,
            Some("full") => &mut stats.full,
            _ => continue,
        };
        let mut d = m::PSIData::new();
        for (k, v) in key_values(fields) {
            match k {
                "avg10" => d.avg10 = v.parse().unwrap_or_default(),
                "avg60" => d.avg60 = v.parse().unwrap_or_default(),
                "avg300" => d.avg300 = v.parse().unwrap_or_default(),
                "total" => d.total = v.parse().unwrap_or_default(),
                _ => {}
            }
        }
        *slot = MessageField::some(d);
    }
    Ok(MessageField::some(stats))
}

/// `MAJ:MIN rbytes=.. wbytes=.. rios=.. wios=.. dbytes=.. dios=..` lines.
fn io_stat(path: &Path) -> Result<Vec<m::IOEntry>, CgroupError> {
    let Some(text) = read_opt(path)? else {
        return Ok(Vec::new());
    };
    let mut out = Vec::new();
    for line in text.lines() {
        let mut fields = line.split_whitespace();
        let Some((maj, min)) = fields.next().and_then(|d| d.split_once(':')) else {
            continue;
        };
        let (Ok(major), Ok(minor)) = (maj.parse(), min.parse()) else {
            continue;
        };
        let mut e = m::IOEntry::new();
        e.major = major;
        e.minor = minor;
        for (k, v) in key_values(fields) {
            let Ok(v) = v.parse() else { continue };
            match k {
                "rbytes" => e.rbytes = v,
                "wbytes" => e.wbytes = v,
                "rios" => e.rios = v,
                "wios" => e.wios = v,
                _ => {}
            }
        }
        out.push(e);
    }
    Ok(out)
}

/// `hugetlb.<size>.current` / `.max` / `.events` (failcnt = `max` events).
fn hugetlb(dir: &Path) -> Result<Vec<m::HugeTlbStat>, CgroupError> {
    let mut out = Vec::new();
    for size in hugetlb_sizes(dir, ".current") {
        let mut h = m::HugeTlbStat::new();
        h.current = single_value(&dir.join(format!("hugetlb.{size}.current")))?;
        h.max = single_value(&dir.join(format!("hugetlb.{size}.max")))?;
        let ev = dir.join(format!("hugetlb.{size}.events"));
        if let Some(text) = read_opt(&ev)? {
            h.failcnt = parse_kv_lenient(&text)
                .get("max")
                .copied()
                .unwrap_or_default();
        }
        h.pagesize = size;
        out.push(h);
    }
    Ok(out)
}

/// An inotify fd (non-blocking, close-on-exec) watching `memory.events` and `cgroup.events` of
/// `dir` for modification — what containerd/cgroups' `EventChan` watches.
pub(crate) fn events_inotify(dir: &Path) -> Result<OwnedFd, CgroupError> {
    let err = |source: std::io::Error| CgroupError::OomRegister {
        path: dir.to_path_buf(),
        source,
    };
    // SAFETY: plain syscall with flag arguments; the result is checked.
    #[allow(unsafe_code)]
    let raw = unsafe { libc::inotify_init1(libc::IN_NONBLOCK | libc::IN_CLOEXEC) };
    if raw < 0 {
        return Err(err(std::io::Error::last_os_error()));
    }
    // SAFETY: inotify_init1 returned a new fd that nothing else owns.
    #[allow(unsafe_code)]
    let fd = unsafe { OwnedFd::from_raw_fd(raw) };
    for f in ["memory.events", "cgroup.events"] {
        let p = dir.join(f);
        let c = CString::new(p.as_os_str().as_bytes())
            .map_err(|_| err(std::io::Error::from_raw_os_error(libc::EINVAL)))?;
        // SAFETY: `c` is a valid NUL-terminated path for the duration of the call.
        #[allow(unsafe_code)]
        let wd = unsafe { libc::inotify_add_watch(raw, c.as_ptr(), libc::IN_MODIFY) };
        if wd < 0 {
            let e = std::io::Error::last_os_error();
            return Err(CgroupError::OomRegister { path: p, source: e });
        }
    }
    Ok(fd)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, text: &str) {
        std::fs::write(dir.join(name), text).unwrap();
    }

    #[test]
    fn metrics_from_fixture_files() {
        let d = tempfile::tempdir().unwrap();
        let dir = d.path();
        write(dir, "cgroup.controllers", "cpu io memory pids\n");
        write(
            dir,
            "cpu.stat",
            "usage_usec 1000\nuser_usec 600\nsystem_usec 400\nnr_periods 5\nnr_throttled 1\nthrottled_usec 20\n",
        );
        write(
            dir,
            "memory.stat",
            "anon 4096\nfile 8192\npgfault 77\nweird_string abc\n",
        );
        write(dir, "memory.current", "12288\n");
        write(dir, "memory.max", "max\n");
        write(dir, "memory.peak", "20000\n");
        write(
            dir,
            "memory.events",
            "low 0\nhigh 0\nmax 3\noom 2\noom_kill 1\noom_group_kill 0\n",
        );
        write(dir, "pids.current", "4\n");
        write(dir, "pids.max", "max\n");
        write(
            dir,
            "io.stat",
            "254:0 rbytes=4096 wbytes=8192 rios=1 wios=2 dbytes=0 dios=0\n",
        );
        write(
            dir,
            "cpu.pressure",
            "some avg10=1.50 avg60=0.00 avg300=0.00 total=1234\nfull avg10=0.00 avg60=0.00 avg300=0.00 total=5\n",
        );
        write(dir, "hugetlb.2MB.current", "0\n");
        write(dir, "hugetlb.2MB.max", "max\n");
        write(dir, "hugetlb.2MB.events", "max 4\n");

        let s = CgroupV2::from_path(dir).stats().unwrap();
        assert_eq!((s.pids.current, s.pids.limit), (4, u64::MAX));
        assert_eq!(
            (s.cpu.usage_usec, s.cpu.user_usec, s.cpu.system_usec),
            (1000, 600, 400)
        );
        assert_eq!(
            (s.cpu.nr_periods, s.cpu.nr_throttled, s.cpu.throttled_usec),
            (5, 1, 20)
        );
        assert_eq!(s.cpu.psi.some.total, 1234);
        assert!((s.cpu.psi.some.avg10 - 1.5).abs() < 1e-9);
        assert_eq!(s.cpu.psi.full.total, 5);
        assert_eq!(
            (s.memory.anon, s.memory.file, s.memory.pgfault),
            (4096, 8192, 77)
        );
        assert_eq!(s.memory.usage, 12288);
        assert_eq!(s.memory.usage_limit, u64::MAX);
        assert_eq!(s.memory.max_usage, 20000);
        assert_eq!(s.memory.swap_usage, 0);
        assert_eq!(
            (
                s.memory_events.max,
                s.memory_events.oom,
                s.memory_events.oom_kill
            ),
            (3, 2, 1)
        );
        assert_eq!(s.io.usage.len(), 1);
        let io = &s.io.usage[0];
        assert_eq!(
            (io.major, io.minor, io.rbytes, io.wbytes, io.rios, io.wios),
            (254, 0, 4096, 8192, 1, 2)
        );
        assert_eq!(s.hugetlb.len(), 1);
        assert_eq!((s.hugetlb[0].max, s.hugetlb[0].failcnt), (u64::MAX, 4));
        assert_eq!(s.hugetlb[0].pagesize, "2MB");
    }

    #[test]
    fn no_memory_controller_means_no_memory_events() {
        let d = tempfile::tempdir().unwrap();
        write(d.path(), "cpu.stat", "usage_usec 1\n");
        let s = CgroupV2::from_path(d.path()).stats().unwrap();
        assert!(s.memory_events.is_none());
        assert_eq!(s.cpu.usage_usec, 1);
        assert_eq!(s.memory.usage, 0);
    }

    #[test]
    fn populated_zero_is_empty() {
        let d = tempfile::tempdir().unwrap();
        write(d.path(), "cgroup.events", "populated 1\nfrozen 0\n");
        assert!(!is_empty(d.path()));
        write(d.path(), "cgroup.events", "populated 0\nfrozen 0\n");
        assert!(is_empty(d.path()));
    }
}
