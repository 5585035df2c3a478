//! cgroup v1: metrics (`io.containerd.cgroups.v1.Metrics`, as containerd/cgroups v1's
//! `Stat(IgnoreNotExist)`) and OOM notification through `memory.oom_control` + eventfd.

use std::collections::BTreeMap;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};

use containerd_shim_protos::cgroups::metrics as m;
use nix::sys::eventfd::EfdFlags;
use protobuf::MessageField;

use super::stat::{hugetlb_sizes, parse_u64, read_kv, read_u64};
use super::{read_opt, CgroupError};

/// A process's cgroups in a v1 (or hybrid) hierarchy: one directory per controller.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CgroupV1 {
    paths: BTreeMap<String, PathBuf>,
}

impl CgroupV1 {
    /// From explicit controller → directory pairs (what [`super::paths::v1_paths`] returns).
    pub fn from_paths(paths: BTreeMap<String, PathBuf>) -> Self {
        CgroupV1 { paths }
    }

    /// Directory of `controller` (`"memory"`, `"cpu"`, `"name=systemd"`...).
    pub fn path(&self, controller: &str) -> Option<&Path> {
        self.paths.get(controller).map(PathBuf::as_path)
    }

    /// All controller → directory pairs.
    pub fn paths(&self) -> &BTreeMap<String, PathBuf> {
        &self.paths
    }

    /// Reads the metrics of every controller present; files that do not exist (controller not
    /// mounted, swap accounting off, cgroup already removed) are skipped, as containerd does
    /// with `cgroups.IgnoreNotExist`.
    pub fn stats(&self) -> Result<m::Metrics, CgroupError> {
        let mut out = m::Metrics::new();
        // containerd/cgroups always fills CPU, even without cpu/cpuacct.
        let mut cpu = m::CPUStat::new();
        cpu.usage = MessageField::some(m::CPUUsage::new());
        cpu.throttling = MessageField::some(m::Throttle::new());
        out.cpu = MessageField::some(cpu);

        if let Some(dir) = self.path("pids") {
            pids(dir, &mut out)?;
        }
        if let Some(dir) = self.path("cpu") {
            cpu_throttling(dir, &mut out)?;
        }
        if let Some(dir) = self.path("cpuacct") {
            cpuacct(dir, &mut out)?;
        }
        if let Some(dir) = self.path("memory") {
            memory(dir, &mut out)?;
        }
        if let Some(dir) = self.path("blkio") {
            blkio(dir, Path::new("/proc/partitions"), &mut out)?;
        }
        if let Some(dir) = self.path("hugetlb") {
            hugetlb(dir, &mut out)?;
        }
        Ok(out)
    }

    /// Writes `pid` into `cgroup.procs` of every controller directory that exists.
    pub fn add_pid(&self, pid: i32) -> Result<(), CgroupError> {
        let mut dirs: Vec<&PathBuf> = self.paths.values().collect();
        dirs.dedup();
        super::write_procs(dirs.into_iter().map(PathBuf::as_path), pid)
    }
}

/// Registers an eventfd on `memory.oom_control` of `memory_dir` (the kernel's
/// `cgroup.event_control` protocol). The eventfd counts OOMs, and also fires once when the
/// cgroup is removed.
pub(crate) fn oom_eventfd(memory_dir: &Path) -> Result<OwnedFd, CgroupError> {
    let err = |source: std::io::Error| CgroupError::OomRegister {
        path: memory_dir.to_path_buf(),
        source,
    };
    let efd: OwnedFd = nix::sys::eventfd::EventFd::from_value_and_flags(
        0,
        EfdFlags::EFD_CLOEXEC | EfdFlags::EFD_NONBLOCK,
    )
    .map_err(|e| err(e.into()))?
    .into();
    let control = std::fs::File::open(memory_dir.join("memory.oom_control")).map_err(err)?;
    let line = format!("{} {}", efd.as_raw_fd(), control.as_fd().as_raw_fd());
    std::fs::write(memory_dir.join("cgroup.event_control"), line).map_err(err)?;
    Ok(efd)
}

fn pids(dir: &Path, out: &mut m::Metrics) -> Result<(), CgroupError> {
    let Some(current) = read_u64(&dir.join("pids.current"))? else {
        return Ok(());
    };
    let mut p = m::PidsStat::new();
    p.current = current;
    if let Some(max) = read_opt(&dir.join("pids.max"))? {
        // v1 reports an unlimited "max" as 0.
        if max.trim() != "max" {
            p.limit = parse_u64(&dir.join("pids.max"), max.trim())?;
        }
    }
    out.pids = MessageField::some(p);
    Ok(())
}

fn cpu_throttling(dir: &Path, out: &mut m::Metrics) -> Result<(), CgroupError> {
    let Some(kv) = read_kv(&dir.join("cpu.stat"))? else {
        return Ok(());
    };
    let t = out
        .cpu
        .mut_or_insert_default()
        .throttling
        .mut_or_insert_default();
    t.periods = kv.get("nr_periods").copied().unwrap_or_default();
    t.throttled_periods = kv.get("nr_throttled").copied().unwrap_or_default();
    t.throttled_time = kv.get("throttled_time").copied().unwrap_or_default();
    Ok(())
}

fn cpuacct(dir: &Path, out: &mut m::Metrics) -> Result<(), CgroupError> {
    let usage = out
        .cpu
        .mut_or_insert_default()
        .usage
        .mut_or_insert_default();
    if let Some(total) = read_u64(&dir.join("cpuacct.usage"))? {
        usage.total = total;
    }
    if let Some(kv) = read_kv(&dir.join("cpuacct.stat"))? {
        // USER_HZ ticks to nanoseconds, as containerd/cgroups.
        let tick_ns = 1_000_000_000 / clock_ticks();
        usage.user = kv.get("user").copied().unwrap_or_default() * tick_ns;
        usage.kernel = kv.get("system").copied().unwrap_or_default() * tick_ns;
    }
    let percpu_path = dir.join("cpuacct.usage_percpu");
    if let Some(text) = read_opt(&percpu_path)? {
        usage.per_cpu = text
            .split_whitespace()
            .map(|v| parse_u64(&percpu_path, v))
            .collect::<Result<_, _>>()?;
    }
    Ok(())
}

fn clock_ticks() -> u64 {
    nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .ok()
        .flatten()
        .and_then(|v| u64::try_from(v).ok())
        .filter(|v| *v > 0)
        .unwrap_or(100)
}

fn memory(dir: &Path, out: &mut m::Metrics) -> Result<(), CgroupError> {
    let Some(raw) = read_kv(&dir.join("memory.stat"))? else {
        return Ok(());
    };
    let mut s = memory_stat(|k| raw.get(k).copied().unwrap_or_default());
    for (module, entry) in [
        ("memory.", &mut s.usage),
        ("memory.memsw.", &mut s.swap),
        ("memory.kmem.", &mut s.kernel),
        ("memory.kmem.tcp.", &mut s.kernel_tcp),
    ] {
        let mut e = m::MemoryEntry::new();
        for (name, value) in [
            ("usage_in_bytes", &mut e.usage),
            ("max_usage_in_bytes", &mut e.max),
            ("failcnt", &mut e.failcnt),
            ("limit_in_bytes", &mut e.limit),
        ] {
            if let Some(v) = read_u64(&dir.join(format!("{module}{name}")))? {
                *value = v;
            }
        }
        *entry = MessageField::some(e);
    }
    out.memory = MessageField::some(s);

    if let Some(kv) = read_kv(&dir.join("memory.oom_control"))? {
        let mut oc = m::MemoryOomControl::new();
        oc.oom_kill_disable = kv.get("oom_kill_disable").copied().unwrap_or_default();
        oc.under_oom = kv.get("under_oom").copied().unwrap_or_default();
        oc.oom_kill = kv.get("oom_kill").copied().unwrap_or_default();
        out.memory_oom_control = MessageField::some(oc);
    }
    Ok(())
}

/// The `memory.stat` counters (cgroup v1 names, e.g. `total_rss`) as containerd's
/// `MemoryStat` fields; `g` gives a counter's value (0 when absent). The usage/swap/kernel
/// entries and the OOM control are filled by the caller. Also used for runc's `events
/// --stats` output (`crate::metrics`), which carries the same counters.
pub(crate) fn memory_stat(g: impl Fn(&str) -> u64) -> m::MemoryStat {
    let mut s = m::MemoryStat::new();
    s.cache = g("cache");
    s.rss = g("rss");
    s.rss_huge = g("rss_huge");
    s.mapped_file = g("mapped_file");
    s.dirty = g("dirty");
    s.writeback = g("writeback");
    s.pg_pg_in = g("pgpgin");
    s.pg_pg_out = g("pgpgout");
    s.pg_fault = g("pgfault");
    s.pg_maj_fault = g("pgmajfault");
    s.inactive_anon = g("inactive_anon");
    s.active_anon = g("active_anon");
    s.inactive_file = g("inactive_file");
    s.active_file = g("active_file");
    s.unevictable = g("unevictable");
    s.hierarchical_memory_limit = g("hierarchical_memory_limit");
    s.hierarchical_swap_limit = g("hierarchical_memsw_limit");
    s.total_cache = g("total_cache");
    s.total_rss = g("total_rss");
    s.total_rss_huge = g("total_rss_huge");
    s.total_mapped_file = g("total_mapped_file");
    s.total_dirty = g("total_dirty");
    s.total_writeback = g("total_writeback");
    s.total_pg_pg_in = g("total_pgpgin");
    s.total_pg_pg_out = g("total_pgpgout");
    s.total_pg_fault = g("total_pgfault");
    s.total_pg_maj_fault = g("total_pgmajfault");
    s.total_inactive_anon = g("total_inactive_anon");
    s.total_active_anon = g("total_active_anon");
    s.total_inactive_file = g("total_inactive_file");
    s.total_active_file = g("total_active_file");
    s.total_unevictable = g("total_unevictable");
    s
}

fn blkio(dir: &Path, partitions: &Path, out: &mut m::Metrics) -> Result<(), CgroupError> {
    let devices = read_opt(partitions)?
        .map(|t| parse_partitions(&t))
        .unwrap_or_default();
    let mut b = m::BlkIOStat::new();
    let mut total = 0;
    // CFQ/BFQ files first, then the throttle files (containerd/cgroups blkio.Stat).
    if dir.join("blkio.io_serviced_recursive").exists() {
        for (name, entries) in [
            ("sectors_recursive", &mut b.sectors_recursive),
            (
                "io_service_bytes_recursive",
                &mut b.io_service_bytes_recursive,
            ),
            ("io_serviced_recursive", &mut b.io_serviced_recursive),
            ("io_queued_recursive", &mut b.io_queued_recursive),
            (
                "io_service_time_recursive",
                &mut b.io_service_time_recursive,
            ),
            ("io_wait_time_recursive", &mut b.io_wait_time_recursive),
            ("io_merged_recursive", &mut b.io_merged_recursive),
            ("time_recursive", &mut b.io_time_recursive),
        ] {
            *entries = blkio_entries(&dir.join(format!("blkio.{name}")), &devices)?;
            total += entries.len();
        }
    }
    if total == 0 {
        b.io_serviced_recursive = blkio_entries(&dir.join("blkio.throttle.io_serviced"), &devices)?;
        b.io_service_bytes_recursive =
            blkio_entries(&dir.join("blkio.throttle.io_service_bytes"), &devices)?;
    }
    out.blkio = MessageField::some(b);
    Ok(())
}

/// `/proc/partitions`: (major, minor) → `/dev/<name>`.
fn parse_partitions(text: &str) -> BTreeMap<(u64, u64), String> {
    text.lines()
        .skip(2)
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let (maj, min, name) = (f.first()?, f.get(1)?, f.get(3)?);
            Some((
                (maj.parse().ok()?, min.parse().ok()?),
                format!("/dev/{name}"),
            ))
        })
        .collect()
}

fn blkio_entries(
    path: &Path,
    devices: &BTreeMap<(u64, u64), String>,
) -> Result<Vec<m::BlkIOEntry>, CgroupError> {
    let Some(text) = read_opt(path)? else {
        return Ok(Vec::new());
    };
    let mut out = Vec::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        // "8:0 Read 1234", "8:0 1234" or "Total 1234".
        let fields: Vec<&str> = line.split([' ', ':']).filter(|f| !f.is_empty()).collect();
        if fields.len() == 2 && fields[0] == "Total" {
            continue;
        }
        let bad = || CgroupError::Parse {
            path: path.to_path_buf(),
            reason: format!("unexpected line {line:?}"),
        };
        if fields.len() < 3 {
            return Err(bad());
        }
        let mut e = m::BlkIOEntry::new();
        e.major = fields[0].parse().map_err(|_| bad())?;
        e.minor = fields[1].parse().map_err(|_| bad())?;
        let value = if fields.len() == 4 {
            e.op = fields[2].to_string();
            fields[3]
        } else {
            fields[2]
        };
        e.value = value.parse().map_err(|_| bad())?;
        e.device = devices
            .get(&(e.major, e.minor))
            .cloned()
            .unwrap_or_default();
        out.push(e);
    }
    Ok(out)
}

fn hugetlb(dir: &Path, out: &mut m::Metrics) -> Result<(), CgroupError> {
    for size in hugetlb_sizes(dir, ".usage_in_bytes") {
        let mut h = m::HugetlbStat::new();
        for (name, value) in [
            ("usage_in_bytes", &mut h.usage),
            ("max_usage_in_bytes", &mut h.max),
            ("failcnt", &mut h.failcnt),
        ] {
            if let Some(v) = read_u64(&dir.join(format!("hugetlb.{size}.{name}")))? {
                *value = v;
            }
        }
        h.pagesize = size;
        out.hugetlb.push(h);
    }
    Ok(())
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
        write(dir, "pids.current", "3\n");
        write(dir, "pids.max", "max\n");
        write(
            dir,
            "cpu.stat",
            "nr_periods 10\nnr_throttled 2\nthrottled_time 500\n",
        );
        write(dir, "cpuacct.usage", "123456789\n");
        write(dir, "cpuacct.stat", "user 150\nsystem 50\n");
        write(dir, "cpuacct.usage_percpu", "100 200 \n");
        write(
            dir,
            "memory.stat",
            "cache 4096\nrss 8192\ntotal_rss 8192\nhierarchical_memory_limit 9223372036854771712\n",
        );
        write(dir, "memory.usage_in_bytes", "12288\n");
        write(dir, "memory.max_usage_in_bytes", "20480\n");
        write(dir, "memory.limit_in_bytes", "16777216\n");
        write(dir, "memory.failcnt", "7\n");
        write(dir, "memory.kmem.usage_in_bytes", "100\n");
        write(
            dir,
            "memory.oom_control",
            "oom_kill_disable 0\nunder_oom 0\noom_kill 2\n",
        );
        write(
            dir,
            "blkio.throttle.io_service_bytes",
            "8:0 Read 4096\n8:0 Write 0\nTotal 4096\n",
        );
        write(dir, "blkio.throttle.io_serviced", "8:0 Read 1\nTotal 1\n");
        write(dir, "hugetlb.2MB.usage_in_bytes", "0\n");
        write(dir, "hugetlb.2MB.max_usage_in_bytes", "2097152\n");
        write(dir, "hugetlb.2MB.failcnt", "1\n");

        let paths = ["pids", "cpu", "cpuacct", "memory", "blkio", "hugetlb"]
            .into_iter()
            .map(|c| (c.to_string(), dir.to_path_buf()))
            .collect();
        let s = CgroupV1::from_paths(paths).stats().unwrap();
        assert_eq!((s.pids.current, s.pids.limit), (3, 0));
        assert_eq!(s.cpu.throttling.periods, 10);
        assert_eq!(s.cpu.throttling.throttled_periods, 2);
        assert_eq!(s.cpu.throttling.throttled_time, 500);
        assert_eq!(s.cpu.usage.total, 123456789);
        let tick = 1_000_000_000 / clock_ticks();
        assert_eq!(s.cpu.usage.user, 150 * tick);
        assert_eq!(s.cpu.usage.kernel, 50 * tick);
        assert_eq!(s.cpu.usage.per_cpu, vec![100, 200]);
        assert_eq!(
            (s.memory.cache, s.memory.rss, s.memory.total_rss),
            (4096, 8192, 8192)
        );
        assert_eq!(s.memory.usage.usage, 12288);
        assert_eq!(s.memory.usage.max, 20480);
        assert_eq!(s.memory.usage.limit, 16777216);
        assert_eq!(s.memory.usage.failcnt, 7);
        assert_eq!(s.memory.kernel.usage, 100);
        assert_eq!(
            s.memory.swap.usage, 0,
            "no memsw files: swap accounting off"
        );
        assert_eq!(s.memory_oom_control.oom_kill, 2);
        assert_eq!(s.blkio.io_service_bytes_recursive.len(), 2);
        let e = &s.blkio.io_service_bytes_recursive[0];
        assert_eq!(
            (e.major, e.minor, e.op.as_str(), e.value),
            (8, 0, "Read", 4096)
        );
        assert_eq!(s.blkio.io_serviced_recursive.len(), 1);
        assert_eq!(s.hugetlb.len(), 1);
        assert_eq!(s.hugetlb[0].pagesize, "2MB");
        assert_eq!((s.hugetlb[0].max, s.hugetlb[0].failcnt), (2097152, 1));
    }

    #[test]
    fn missing_cgroup_reads_as_empty_metrics() {
        let paths = [("memory".to_string(), PathBuf::from("/nonexistent/cg"))]
            .into_iter()
            .collect();
        let s = CgroupV1::from_paths(paths).stats().unwrap();
        assert!(s.memory.is_none());
        assert!(s.cpu.is_some());
    }

    #[test]
    fn garbage_is_a_parse_error_naming_the_file() {
        let d = tempfile::tempdir().unwrap();
        write(d.path(), "pids.current", "lots\n");
        let paths = [("pids".to_string(), d.path().to_path_buf())]
            .into_iter()
            .collect();
        let err = CgroupV1::from_paths(paths).stats().unwrap_err();
        assert!(err.to_string().contains("pids.current"), "{err}");
    }

    #[test]
    fn negative_numbers_read_as_zero() {
        assert_eq!(parse_u64(Path::new("x"), "-1").unwrap(), 0);
        assert!(parse_u64(Path::new("x"), "-").is_err());
    }

    #[test]
    fn partitions_map_devices() {
        let p = parse_partitions(
            "major minor  #blocks  name\n\n 254        0   10485760 vda\n 254  1 1 vda1\n",
        );
        assert_eq!(p[&(254, 0)], "/dev/vda");
        assert_eq!(p[&(254, 1)], "/dev/vda1");
    }
}
