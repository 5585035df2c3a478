//! Types decoded from the runtime's JSON output.
//!
//! `state`/`list` objects follow runc's `containerState` (a superset of the OCI state:
//! `rootfs`, `created`, `owner` are runc's additions); `events --stats` follows runc's
//! `types.Event` / `types.Stats` (runc `types/events.go`), field names and all. Every field
//! has a default so older or newer runtimes (and youki/crun, which omit some) still decode.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

/// Status of a container as reported by `state`/`list`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ContainerStatus {
    /// The container is being created.
    Creating,
    /// Created, init waiting for `start`.
    Created,
    /// The user process is running.
    Running,
    /// Frozen by `pause`.
    Paused,
    /// The init process has exited.
    Stopped,
    /// A status this crate does not know.
    #[serde(other)]
    Unknown,
}

/// One container as printed by `runc state <id>` and in `runc list --format json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Container {
    /// OCI version of the bundle's spec.
    #[serde(default)]
    pub oci_version: String,
    /// Container id.
    pub id: String,
    /// Pid of the container's init process (0 once stopped).
    #[serde(default)]
    pub pid: i32,
    /// Status.
    pub status: ContainerStatus,
    /// Absolute bundle path.
    #[serde(default)]
    pub bundle: String,
    /// Absolute rootfs path.
    #[serde(default)]
    pub rootfs: String,
    /// Creation time, RFC 3339 as printed by the runtime.
    #[serde(default)]
    pub created: String,
    /// Owner of the container: runc prints a user name (empty for root), youki a numeric uid;
    /// both are kept as text.
    #[serde(default, deserialize_with = "string_or_number")]
    pub owner: String,
    /// Annotations from the spec.
    #[serde(default)]
    pub annotations: Option<HashMap<String, String>>,
}

fn string_or_number<'de, D: serde::Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    Ok(match serde_json::Value::deserialize(d)? {
        serde_json::Value::String(s) => s,
        serde_json::Value::Null => String::new(),
        other => other.to_string(),
    })
}

/// One event of `runc events` (`{"type":"stats","id":...,"data":{...}}`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// Event type: `stats`, `oom`, `memoryThreshold`, ...
    #[serde(rename = "type")]
    pub kind: String,
    /// Container id.
    pub id: String,
    /// Statistics, for `stats` events.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<Stats>,
}

/// runc's `types.Stats`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Stats {
    /// CPU accounting.
    pub cpu: Cpu,
    /// Cpuset configuration.
    pub cpuset: CpuSet,
    /// Memory accounting.
    pub memory: Memory,
    /// Pids controller.
    pub pids: Pids,
    /// Block I/O.
    pub blkio: Blkio,
    /// Hugetlb per page size.
    pub hugetlb: HashMap<String, Hugetlb>,
    /// Intel RDT (kept raw: rarely present).
    pub intel_rdt: serde_json::Value,
    /// Network interfaces (kept raw: runc prints Go field names).
    pub network_interfaces: Option<Vec<serde_json::Value>>,
}

/// runc's `types.Hugetlb`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Hugetlb {
    /// Current usage in bytes.
    pub usage: u64,
    /// Maximum usage in bytes.
    pub max: u64,
    /// Allocation failures.
    pub failcnt: u64,
}

/// runc's `types.BlkioEntry`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct BlkioEntry {
    /// Device major.
    pub major: u64,
    /// Device minor.
    pub minor: u64,
    /// Operation (`Read`, `Write`, ...).
    pub op: String,
    /// Value.
    pub value: u64,
}

/// runc's `types.Blkio`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct Blkio {
    /// `ioServiceBytesRecursive`.
    pub io_service_bytes_recursive: Vec<BlkioEntry>,
    /// `ioServicedRecursive`.
    pub io_serviced_recursive: Vec<BlkioEntry>,
    /// `ioQueueRecursive` (sic: runc's JSON name).
    #[serde(rename = "ioQueueRecursive")]
    pub io_queued_recursive: Vec<BlkioEntry>,
    /// `ioServiceTimeRecursive`.
    pub io_service_time_recursive: Vec<BlkioEntry>,
    /// `ioWaitTimeRecursive`.
    pub io_wait_time_recursive: Vec<BlkioEntry>,
    /// `ioMergedRecursive`.
    pub io_merged_recursive: Vec<BlkioEntry>,
    /// `ioTimeRecursive`.
    pub io_time_recursive: Vec<BlkioEntry>,
    /// `sectorsRecursive`.
    pub sectors_recursive: Vec<BlkioEntry>,
    /// Pressure stall information (cgroup v2), kept raw.
    pub psi: Option<serde_json::Value>,
}

/// runc's `types.Pids`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Pids {
    /// Number of processes.
    pub current: u64,
    /// Limit (0 = unlimited).
    pub limit: u64,
}

/// runc's `types.Throttling`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct Throttling {
    /// Enforcement periods.
    pub periods: u64,
    /// Periods throttled.
    pub throttled_periods: u64,
    /// Total throttled time (ns).
    pub throttled_time: u64,
}

/// runc's `types.CpuUsage` (nanoseconds).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct CpuUsage {
    /// Total CPU time.
    pub total: u64,
    /// Per-CPU time.
    pub percpu: Vec<u64>,
    /// Per-CPU kernel time.
    pub percpu_kernel: Vec<u64>,
    /// Per-CPU user time.
    pub percpu_user: Vec<u64>,
    /// Kernel time.
    pub kernel: u64,
    /// User time.
    pub user: u64,
}

/// runc's `types.Cpu`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Cpu {
    /// Usage.
    pub usage: CpuUsage,
    /// Throttling.
    pub throttling: Throttling,
    /// Pressure stall information, kept raw.
    pub psi: Option<serde_json::Value>,
}

/// runc's `types.CPUSet`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
#[allow(missing_docs)]
pub struct CpuSet {
    pub cpus: Vec<u16>,
    pub cpu_exclusive: u64,
    pub mems: Vec<u16>,
    pub mem_hardwall: u64,
    pub mem_exclusive: u64,
    pub memory_migrate: u64,
    pub memory_spread_page: u64,
    pub memory_spread_slab: u64,
    pub memory_pressure: u64,
    pub sched_load_balance: u64,
    pub sched_relax_domain_level: i64,
}

/// runc's `types.MemoryEntry` (bytes).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct MemoryEntry {
    /// Limit.
    pub limit: u64,
    /// Current usage.
    pub usage: u64,
    /// Maximum recorded usage.
    pub max: u64,
    /// Times the limit was hit.
    pub failcnt: u64,
}

/// runc's `types.Memory`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Memory {
    /// Page cache.
    pub cache: u64,
    /// Memory usage and limit.
    pub usage: MemoryEntry,
    /// Memory+swap usage and limit.
    pub swap: MemoryEntry,
    /// Kernel memory.
    pub kernel: MemoryEntry,
    /// Kernel TCP memory.
    #[serde(rename = "kernelTCP")]
    pub kernel_tcp: MemoryEntry,
    /// Raw `memory.stat` counters.
    pub raw: HashMap<String, u64>,
    /// Pressure stall information, kept raw.
    pub psi: Option<serde_json::Value>,
    /// cgroup v2 memory events, kept raw.
    pub event_count: Option<serde_json::Value>,
}

/// Parses the text table `list` prints (`ID PID STATUS BUNDLE CREATED OWNER`), for runtimes
/// that ignore `--format json` (youki 0.7). `None` when the text is not such a table.
pub(crate) fn parse_list_table(text: &str) -> Option<Vec<Container>> {
    let mut lines = text.lines().filter(|l| !l.trim().is_empty());
    let header: Vec<&str> = lines.next()?.split_whitespace().collect();
    if header.first() != Some(&"ID") || header.get(2) != Some(&"STATUS") {
        return None;
    }
    let mut out = Vec::new();
    for line in lines {
        let cols: Vec<&str> = line.split_whitespace().collect();
        if cols.len() < 3 {
            return None;
        }
        let status = serde_json::from_value(serde_json::Value::String(cols[2].to_lowercase()))
            .unwrap_or(ContainerStatus::Unknown);
        out.push(Container {
            oci_version: String::new(),
            id: cols[0].to_string(),
            pid: cols[1].parse().unwrap_or(0),
            status,
            bundle: cols.get(3).map(ToString::to_string).unwrap_or_default(),
            rootfs: String::new(),
            created: cols.get(4).map(ToString::to_string).unwrap_or_default(),
            owner: cols.get(5).map(ToString::to_string).unwrap_or_default(),
            annotations: None,
        });
    }
    Some(out)
}

/// Parsed `runc --version` / `runc version` output.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Version {
    /// The runtime's name as printed (`runc`, `youki`, `crun`).
    pub name: String,
    /// The runtime's version (`1.1.5+ds1`).
    pub version: String,
    /// `commit:` line, if printed.
    pub commit: Option<String>,
    /// `spec:` line: the OCI runtime spec version supported.
    pub spec: Option<String>,
    /// All `key: value` lines after the first.
    pub extra: Vec<(String, String)>,
}

impl Version {
    /// Parses the text printed by `<runtime> --version`. Understands runc's
    /// `runc version 1.1.5`, youki's `youki version: 0.7.0` and crun's `crun version 1.8.1`.
    ///
    /// # Errors
    /// A reason string when the first line has no `version` word.
    pub fn parse(text: &str) -> Result<Version, String> {
        let mut lines = text.lines().map(str::trim).filter(|l| !l.is_empty());
        let first = lines.next().ok_or("empty output")?;
        let (name, rest) = first
            .split_once(" version")
            .ok_or_else(|| format!("first line {first:?} does not contain \" version\""))?;
        let version = rest.trim_start_matches(':').trim().to_string();
        if version.is_empty() {
            return Err(format!("no version number in {first:?}"));
        }
        let mut v = Version {
            name: name.trim().to_string(),
            version,
            ..Version::default()
        };
        for line in lines {
            if let Some((k, val)) = line.split_once(':') {
                let (k, val) = (k.trim().to_string(), val.trim().to_string());
                match k.as_str() {
                    "commit" => v.commit = Some(val.clone()),
                    "spec" => v.spec = Some(val.clone()),
                    _ => {}
                }
                v.extra.push((k, val));
            }
        }
        Ok(v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_runc_version() {
        let v = Version::parse(
            "runc version 1.1.5+ds1\ncommit: 1.1.5+ds1-1+deb12u1\nspec: 1.0.2-dev\ngo: go1.19.8\nlibseccomp: 2.5.4\n",
        )
        .unwrap();
        assert_eq!(v.name, "runc");
        assert_eq!(v.version, "1.1.5+ds1");
        assert_eq!(v.commit.as_deref(), Some("1.1.5+ds1-1+deb12u1"));
        assert_eq!(v.spec.as_deref(), Some("1.0.2-dev"));
        assert_eq!(v.extra.len(), 4);
    }

    #[test]
    fn parses_youki_version() {
        let v = Version::parse("youki version: 0.7.0\ncommit: abc\nspec: 1.1.0\n").unwrap();
        assert_eq!((v.name.as_str(), v.version.as_str()), ("youki", "0.7.0"));
        assert_eq!(v.spec.as_deref(), Some("1.1.0"));
    }

    #[test]
    fn rejects_garbage_version() {
        assert!(Version::parse("").is_err());
        assert!(Version::parse("hello world").is_err());
    }

    #[test]
    fn decodes_runc_state() {
        let c: Container = serde_json::from_str(
            r#"{"ociVersion":"1.0.2-dev","id":"c1","pid":42,"status":"paused","bundle":"/b",
                "rootfs":"/b/rootfs","created":"2026-01-01T00:00:00.0Z","owner":""}"#,
        )
        .unwrap();
        assert_eq!(c.status, ContainerStatus::Paused);
        assert_eq!(c.pid, 42);
        assert!(c.annotations.is_none());
        let c: Container = serde_json::from_str(r#"{"id":"c","status":"weird","pid":0}"#).unwrap();
        assert_eq!(c.status, ContainerStatus::Unknown);
        // youki prints the owner as a numeric uid.
        let c: Container =
            serde_json::from_str(r#"{"id":"c","status":"created","pid":5,"owner":0}"#).unwrap();
        assert_eq!(c.owner, "0");
    }

    #[test]
    fn parses_youki_list_table() {
        let t = "ID            PID   STATUS   BUNDLE                 CREATED                    CREATOR\n\
                 c1  9934  Running  /tmp/b  2026-11-23T11:36:44+00:00  root\n\
                 c2  0     Stopped  /tmp/c  2026-11-23T11:36:45+00:00  root\n";
        let l = parse_list_table(t).unwrap();
        assert_eq!(l.len(), 2);
        assert_eq!((l[0].id.as_str(), l[0].pid), ("c1", 9934));
        assert_eq!(l[0].status, ContainerStatus::Running);
        assert_eq!(l[1].status, ContainerStatus::Stopped);
        assert_eq!(l[1].bundle, "/tmp/c");
        assert!(parse_list_table("ID PID STATUS\n").unwrap().is_empty());
        assert!(parse_list_table("garbage").is_none());
    }

    #[test]
    fn decodes_runc_stats_event() {
        let e: Event = serde_json::from_str(
            r#"{"type":"stats","id":"c1","data":{"cpu":{"usage":{"total":10,"percpu":[4,6],"kernel":1,"user":2},"throttling":{}},
            "memory":{"cache":5,"usage":{"limit":1048576,"usage":300,"max":400,"failcnt":0},"swap":{"limit":0,"failcnt":0},
            "kernel":{"limit":0,"failcnt":0},"kernelTCP":{"limit":0,"failcnt":0},"raw":{"rss":7}},
            "pids":{"current":1},"blkio":{"ioQueueRecursive":[{"major":8,"op":"Read","value":3}]},"hugetlb":{"2MB":{"failcnt":0}},
            "intel_rdt":{},"network_interfaces":null}}"#,
        )
        .unwrap();
        assert_eq!(e.kind, "stats");
        let s = e.data.unwrap();
        assert_eq!(s.cpu.usage.percpu, vec![4, 6]);
        assert_eq!(s.memory.usage.limit, 1_048_576);
        assert_eq!(s.memory.kernel_tcp.limit, 0);
        assert_eq!(s.memory.raw["rss"], 7);
        assert_eq!(s.pids.current, 1);
        assert_eq!(s.blkio.io_queued_recursive[0].major, 8);
        assert!(s.hugetlb.contains_key("2MB"));
    }
}
