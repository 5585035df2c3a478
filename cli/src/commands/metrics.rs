//! The cgroup v1 metrics a shim returns for `tasks metrics` (`io.containerd.cgroups.v1.Metrics`
//! from containerd/cgroups `stats/v1/metrics.proto`): only the messages and fields ctr's
//! table prints are declared; prost skips the rest of the wire data.

use prost::Message;

pub const V1_TYPE_URL: &str = "io.containerd.cgroups.v1.Metrics";

#[derive(Clone, PartialEq, Message)]
pub struct Metrics {
    #[prost(message, optional, tag = "2")]
    pub pids: Option<PidsStat>,
    #[prost(message, optional, tag = "3")]
    pub cpu: Option<CpuStat>,
    #[prost(message, optional, tag = "4")]
    pub memory: Option<MemoryStat>,
}

#[derive(Clone, PartialEq, Message)]
pub struct PidsStat {
    #[prost(uint64, tag = "1")]
    pub current: u64,
    #[prost(uint64, tag = "2")]
    pub limit: u64,
}

#[derive(Clone, PartialEq, Message)]
pub struct CpuStat {
    #[prost(message, optional, tag = "1")]
    pub usage: Option<CpuUsage>,
}

#[derive(Clone, PartialEq, Message)]
pub struct CpuUsage {
    #[prost(uint64, tag = "1")]
    pub total: u64,
    #[prost(uint64, tag = "2")]
    pub kernel: u64,
    #[prost(uint64, tag = "3")]
    pub user: u64,
    #[prost(uint64, repeated, tag = "4")]
    pub per_cpu: Vec<u64>,
}

#[derive(Clone, PartialEq, Message)]
pub struct MemoryStat {
    #[prost(uint64, tag = "1")]
    pub cache: u64,
    #[prost(uint64, tag = "2")]
    pub rss: u64,
    #[prost(uint64, tag = "18")]
    pub total_cache: u64,
    #[prost(message, optional, tag = "33")]
    pub usage: Option<MemoryEntry>,
}

#[derive(Clone, PartialEq, Message)]
pub struct MemoryEntry {
    #[prost(uint64, tag = "1")]
    pub limit: u64,
    #[prost(uint64, tag = "2")]
    pub usage: u64,
    #[prost(uint64, tag = "3")]
    pub max: u64,
    #[prost(uint64, tag = "4")]
    pub failcnt: u64,
}

/// Go's `%v` of a `[]uint64`: `[1 2 3]`.
fn go_slice(v: &[u64]) -> String {
    let parts: Vec<String> = v.iter().map(u64::to_string).collect();
    format!("[{}]", parts.join(" "))
}

/// ctr's `printCgroupMetricsTable` rows (tab-separated, for the shared tab writer).
pub fn v1_table_rows(m: &Metrics) -> Vec<String> {
    let mut rows = vec!["METRIC\tVALUE\t".to_string()];
    if let Some(mem) = &m.memory {
        let usage = mem.usage.clone().unwrap_or_default();
        rows.push(format!("memory.usage_in_bytes\t{}\t", usage.usage));
        rows.push(format!("memory.limit_in_bytes\t{}\t", usage.limit));
        rows.push(format!("memory.stat.cache\t{}\t", mem.total_cache));
    }
    if let Some(cpu) = &m.cpu {
        let usage = cpu.usage.clone().unwrap_or_default();
        rows.push(format!("cpuacct.usage\t{}\t", usage.total));
        rows.push(format!(
            "cpuacct.usage_percpu\t{}\t",
            go_slice(&usage.per_cpu)
        ));
    }
    if let Some(p) = &m.pids {
        rows.push(format!("pids.current\t{}\t", p.current));
        rows.push(format!("pids.limit\t{}\t", p.limit));
    }
    rows
}

/// The decoded fields as JSON (containerd's field names).
pub fn v1_json(m: &Metrics) -> serde_json::Value {
    let mut v = serde_json::Map::new();
    if let Some(p) = &m.pids {
        v.insert(
            "pids".into(),
            serde_json::json!({"current": p.current, "limit": p.limit}),
        );
    }
    if let Some(cpu) = &m.cpu {
        let u = cpu.usage.clone().unwrap_or_default();
        v.insert(
            "cpu".into(),
            serde_json::json!({"usage": {"total": u.total, "kernel": u.kernel, "user": u.user, "per_cpu": u.per_cpu}}),
        );
    }
    if let Some(mem) = &m.memory {
        let u = mem.usage.clone().unwrap_or_default();
        v.insert(
            "memory".into(),
            serde_json::json!({"cache": mem.cache, "rss": mem.rss, "total_cache": mem.total_cache,
                "usage": {"limit": u.limit, "usage": u.usage, "max": u.max, "failcnt": u.failcnt}}),
        );
    }
    serde_json::Value::Object(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_the_fields_ctr_prints_and_skips_the_rest() {
        let m = Metrics {
            pids: Some(PidsStat {
                current: 2,
                limit: 0,
            }),
            cpu: Some(CpuStat {
                usage: Some(CpuUsage {
                    total: 10,
                    per_cpu: vec![4, 6],
                    ..Default::default()
                }),
            }),
            memory: None,
        };
        let back = Metrics::decode(m.encode_to_vec().as_slice()).unwrap();
        let rows = v1_table_rows(&back);
        assert_eq!(rows[1], "cpuacct.usage\t10\t");
        assert_eq!(rows[2], "cpuacct.usage_percpu\t[4 6]\t");
        assert_eq!(rows[3], "pids.current\t2\t");
    }
}
