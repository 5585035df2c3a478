//! Stats for `ctr t metrics`: the runtime's `events --stats` snapshot converted into containerd's
//! `io.containerd.cgroups.v1.Metrics` (the type the Go shim returns on a cgroup v1 host).
//!
//! This asks the OCI runtime rather than reading cgroup files so it works for any runtime that
//! implements `events --stats` (runc, crun); the `cgroup` module reads the files directly for
//! OOM watching.

use containerd_shim_protos::cgroups::metrics::{
    CPUStat, CPUUsage, MemoryEntry, Metrics, PidsStat, Throttle,
};
use containerd_shim_protos::protobuf::well_known_types::any::Any;

/// Type URL of cgroup v1 metrics, as containerd's `typeurl` registers them.
pub const METRICS_V1_URL: &str = "io.containerd.cgroups.v1.Metrics";

fn entry(e: &runc_wrapper::types::MemoryEntry) -> MemoryEntry {
    let mut m = MemoryEntry::new();
    m.limit = e.limit;
    m.usage = e.usage;
    m.max = e.max;
    m.failcnt = e.failcnt;
    m
}

/// Converts runc's stats into the v1 `Metrics` message, packed as an `Any`.
pub fn v1_metrics(s: &runc_wrapper::Stats) -> Any {
    let mut m = Metrics::new();
    let mut pids = PidsStat::new();
    pids.current = s.pids.current;
    pids.limit = s.pids.limit;
    m.pids = Some(pids).into();

    let mut usage = CPUUsage::new();
    usage.total = s.cpu.usage.total;
    usage.kernel = s.cpu.usage.kernel;
    usage.user = s.cpu.usage.user;
    usage.per_cpu = s.cpu.usage.percpu.clone();
    let mut thr = Throttle::new();
    thr.periods = s.cpu.throttling.periods;
    thr.throttled_periods = s.cpu.throttling.throttled_periods;
    thr.throttled_time = s.cpu.throttling.throttled_time;
    let mut cpu = CPUStat::new();
    cpu.usage = Some(usage).into();
    cpu.throttling = Some(thr).into();
    m.cpu = Some(cpu).into();

    let raw = |k: &str| s.memory.raw.get(k).copied().unwrap_or(0);
    let mut mem = crate::cgroup::v1::memory_stat(raw);
    mem.usage = Some(entry(&s.memory.usage)).into();
    mem.swap = Some(entry(&s.memory.swap)).into();
    mem.kernel = Some(entry(&s.memory.kernel)).into();
    mem.kernel_tcp = Some(entry(&s.memory.kernel_tcp)).into();
    m.memory = Some(mem).into();
    crate::options::pack_any(METRICS_V1_URL, &m)
}

#[cfg(test)]
mod tests {
    use super::*;
    use containerd_shim_protos::protobuf::Message;

    #[test]
    fn converts_memory_and_pids() {
        let mut s = runc_wrapper::Stats::default();
        s.pids.current = 3;
        s.memory.usage.usage = 4096;
        s.memory.raw.insert("total_rss".into(), 1234);
        let any = v1_metrics(&s);
        assert_eq!(any.type_url, METRICS_V1_URL);
        let m = Metrics::parse_from_bytes(&any.value).expect("decode");
        assert_eq!(m.pids.current, 3);
        assert_eq!(m.memory.usage.usage, 4096);
        assert_eq!(m.memory.total_rss, 1234);
    }
}
