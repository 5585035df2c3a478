//! containerd 1.6's cgroup v1 metric set (`metrics/cgroups/v1/{pids,cpu,memory,hugetlb,blkio}.go`):
//! names (before the `container_` prefix and unit suffix), help strings, units, extra labels,
//! and which field of `io.containerd.cgroups.v1.Metrics` each reads. A section the shim left
//! out yields no sample, as in containerd (`if stats.Memory == nil { return nil }`).

use containerd_shim_protos::cgroups::metrics::{BlkIOEntry, Metrics};

use super::{Def, Values};

/// One sample per present section.
macro_rules! one {
    ($name:literal, $help:literal, $unit:literal, $section:ident, |$s:ident| $e:expr) => {
        Def {
            name: $name,
            help: $help,
            unit: $unit,
            labels: &[],
            values: |m: &Metrics| {
                m.$section
                    .as_ref()
                    .map(|$s| vec![(Vec::new(), $e as f64)])
                    .unwrap_or_default()
            },
        }
    };
}

/// One sample per hugetlb page size.
macro_rules! hugetlb {
    ($name:literal, $help:literal, $unit:literal, $field:ident) => {
        Def {
            name: $name,
            help: $help,
            unit: $unit,
            labels: &["page"],
            values: |m: &Metrics| {
                m.hugetlb
                    .iter()
                    .map(|h| (vec![h.pagesize.clone()], h.$field as f64))
                    .collect()
            },
        }
    };
}

/// One sample per blkio entry (`op`, `device`, `major`, `minor`).
macro_rules! blkio {
    ($name:literal, $help:literal, $unit:literal, $field:ident) => {
        Def {
            name: $name,
            help: $help,
            unit: $unit,
            labels: &["op", "device", "major", "minor"],
            values: |m: &Metrics| {
                m.blkio
                    .as_ref()
                    .map(|b| blkio_values(&b.$field))
                    .unwrap_or_default()
            },
        }
    };
}

fn blkio_values(entries: &[BlkIOEntry]) -> Values {
    entries
        .iter()
        .map(|e| {
            (
                vec![
                    e.op.clone(),
                    e.device.clone(),
                    e.major.to_string(),
                    e.minor.to_string(),
                ],
                e.value as f64,
            )
        })
        .collect()
}

/// Every v1 metric, in containerd's collector order (pids, cpu, memory, hugetlb, blkio).
pub static METRICS: &[Def<Metrics>] = &[
    one!(
        "pids",
        "The limit to the number of pids allowed",
        "limit",
        pids,
        |s| s.limit
    ),
    one!("pids", "The current number of pids", "current", pids, |s| s
        .current),
    one!("cpu_total", "The total cpu time", "nanoseconds", cpu, |s| s
        .usage
        .total),
    one!(
        "cpu_kernel",
        "The total kernel cpu time",
        "nanoseconds",
        cpu,
        |s| s.usage.kernel
    ),
    one!(
        "cpu_user",
        "The total user cpu time",
        "nanoseconds",
        cpu,
        |s| s.usage.user
    ),
    Def {
        name: "per_cpu",
        help: "The total cpu time per cpu",
        unit: "nanoseconds",
        labels: &["cpu"],
        values: |m: &Metrics| {
            m.cpu
                .as_ref()
                .map(|c| {
                    c.usage
                        .per_cpu
                        .iter()
                        .enumerate()
                        .map(|(i, v)| (vec![i.to_string()], *v as f64))
                        .collect()
                })
                .unwrap_or_default()
        },
    },
    one!(
        "cpu_throttle_periods",
        "The total cpu throttle periods",
        "total",
        cpu,
        |s| s.throttling.periods
    ),
    one!(
        "cpu_throttled_periods",
        "The total cpu throttled periods",
        "total",
        cpu,
        |s| s.throttling.throttled_periods
    ),
    one!(
        "cpu_throttled_time",
        "The total cpu throttled time",
        "nanoseconds",
        cpu,
        |s| s.throttling.throttled_time
    ),
    one!(
        "memory_cache",
        "The cache amount used",
        "bytes",
        memory,
        |s| s.cache
    ),
    one!("memory_rss", "The rss amount used", "bytes", memory, |s| s
        .rss),
    one!(
        "memory_rss_huge",
        "The rss_huge amount used",
        "bytes",
        memory,
        |s| s.rss_huge
    ),
    one!(
        "memory_mapped_file",
        "The mapped_file amount used",
        "bytes",
        memory,
        |s| s.mapped_file
    ),
    one!("memory_dirty", "The dirty amount", "bytes", memory, |s| s
        .dirty),
    one!(
        "memory_writeback",
        "The writeback amount",
        "bytes",
        memory,
        |s| s.writeback
    ),
    one!("memory_pgpgin", "The pgpgin amount", "bytes", memory, |s| s
        .pg_pg_in),
    one!(
        "memory_pgpgout",
        "The pgpgout amount",
        "bytes",
        memory,
        |s| s.pg_pg_out
    ),
    one!(
        "memory_pgfault",
        "The pgfault amount",
        "bytes",
        memory,
        |s| s.pg_fault
    ),
    one!(
        "memory_pgmajfault",
        "The pgmajfault amount",
        "bytes",
        memory,
        |s| s.pg_maj_fault
    ),
    one!(
        "memory_inactive_anon",
        "The inactive_anon amount",
        "bytes",
        memory,
        |s| s.inactive_anon
    ),
    one!(
        "memory_active_anon",
        "The active_anon amount",
        "bytes",
        memory,
        |s| s.active_anon
    ),
    one!(
        "memory_inactive_file",
        "The inactive_file amount",
        "bytes",
        memory,
        |s| s.inactive_file
    ),
    one!(
        "memory_active_file",
        "The active_file amount",
        "bytes",
        memory,
        |s| s.active_file
    ),
    one!(
        "memory_unevictable",
        "The unevictable amount",
        "bytes",
        memory,
        |s| s.unevictable
    ),
    one!(
        "memory_hierarchical_memory_limit",
        "The hierarchical_memory_limit amount",
        "bytes",
        memory,
        |s| s.hierarchical_memory_limit
    ),
    one!(
        "memory_hierarchical_memsw_limit",
        "The hierarchical_memsw_limit amount",
        "bytes",
        memory,
        |s| s.hierarchical_swap_limit
    ),
    one!(
        "memory_total_cache",
        "The total_cache amount used",
        "bytes",
        memory,
        |s| s.total_cache
    ),
    one!(
        "memory_total_rss",
        "The total_rss amount used",
        "bytes",
        memory,
        |s| s.total_rss
    ),
    one!(
        "memory_total_rss_huge",
        "The total_rss_huge amount used",
        "bytes",
        memory,
        |s| s.total_rss_huge
    ),
    one!(
        "memory_total_mapped_file",
        "The total_mapped_file amount used",
        "bytes",
        memory,
        |s| s.total_mapped_file
    ),
    one!(
        "memory_total_dirty",
        "The total_dirty amount",
        "bytes",
        memory,
        |s| s.total_dirty
    ),
    one!(
        "memory_total_writeback",
        "The total_writeback amount",
        "bytes",
        memory,
        |s| s.total_writeback
    ),
    one!(
        "memory_total_pgpgin",
        "The total_pgpgin amount",
        "bytes",
        memory,
        |s| s.total_pg_pg_in
    ),
    one!(
        "memory_total_pgpgout",
        "The total_pgpgout amount",
        "bytes",
        memory,
        |s| s.total_pg_pg_out
    ),
    one!(
        "memory_total_pgfault",
        "The total_pgfault amount",
        "bytes",
        memory,
        |s| s.total_pg_fault
    ),
    one!(
        "memory_total_pgmajfault",
        "The total_pgmajfault amount",
        "bytes",
        memory,
        |s| s.total_pg_maj_fault
    ),
    one!(
        "memory_total_inactive_anon",
        "The total_inactive_anon amount",
        "bytes",
        memory,
        |s| s.total_inactive_anon
    ),
    one!(
        "memory_total_active_anon",
        "The total_active_anon amount",
        "bytes",
        memory,
        |s| s.total_active_anon
    ),
    one!(
        "memory_total_inactive_file",
        "The total_inactive_file amount",
        "bytes",
        memory,
        |s| s.total_inactive_file
    ),
    one!(
        "memory_total_active_file",
        "The total_active_file amount",
        "bytes",
        memory,
        |s| s.total_active_file
    ),
    one!(
        "memory_total_unevictable",
        "The total_unevictable amount",
        "bytes",
        memory,
        |s| s.total_unevictable
    ),
    one!(
        "memory_usage_failcnt",
        "The usage failcnt",
        "total",
        memory,
        |s| s.usage.failcnt
    ),
    one!(
        "memory_usage_limit",
        "The memory limit",
        "bytes",
        memory,
        |s| s.usage.limit
    ),
    one!(
        "memory_usage_max",
        "The memory maximum usage",
        "bytes",
        memory,
        |s| s.usage.max
    ),
    one!(
        "memory_usage_usage",
        "The memory usage",
        "bytes",
        memory,
        |s| s.usage.usage
    ),
    one!(
        "memory_swap_failcnt",
        "The swap failcnt",
        "total",
        memory,
        |s| s.swap.failcnt
    ),
    one!(
        "memory_swap_limit",
        "The swap limit",
        "bytes",
        memory,
        |s| s.swap.limit
    ),
    one!(
        "memory_swap_max",
        "The swap maximum usage",
        "bytes",
        memory,
        |s| s.swap.max
    ),
    one!(
        "memory_swap_usage",
        "The swap usage",
        "bytes",
        memory,
        |s| s.swap.usage
    ),
    one!(
        "memory_kernel_failcnt",
        "The kernel failcnt",
        "total",
        memory,
        |s| s.kernel.failcnt
    ),
    one!(
        "memory_kernel_limit",
        "The kernel limit",
        "bytes",
        memory,
        |s| s.kernel.limit
    ),
    one!(
        "memory_kernel_max",
        "The kernel maximum usage",
        "bytes",
        memory,
        |s| s.kernel.max
    ),
    one!(
        "memory_kernel_usage",
        "The kernel usage",
        "bytes",
        memory,
        |s| s.kernel.usage
    ),
    one!(
        "memory_kerneltcp_failcnt",
        "The kerneltcp failcnt",
        "total",
        memory,
        |s| s.kernel_tcp.failcnt
    ),
    one!(
        "memory_kerneltcp_limit",
        "The kerneltcp limit",
        "bytes",
        memory,
        |s| s.kernel_tcp.limit
    ),
    one!(
        "memory_kerneltcp_max",
        "The kerneltcp maximum usage",
        "bytes",
        memory,
        |s| s.kernel_tcp.max
    ),
    one!(
        "memory_kerneltcp_usage",
        "The kerneltcp usage",
        "bytes",
        memory,
        |s| s.kernel_tcp.usage
    ),
    hugetlb!("hugetlb_usage", "The hugetlb usage", "bytes", usage),
    hugetlb!("hugetlb_failcnt", "The hugetlb failcnt", "total", failcnt),
    hugetlb!("hugetlb_max", "The hugetlb maximum usage", "bytes", max),
    blkio!(
        "blkio_io_merged_recursive",
        "The blkio io merged recursive",
        "total",
        io_merged_recursive
    ),
    blkio!(
        "blkio_io_queued_recursive",
        "The blkio io queued recursive",
        "total",
        io_queued_recursive
    ),
    blkio!(
        "blkio_io_service_bytes_recursive",
        "The blkio io service bytes recursive",
        "bytes",
        io_service_bytes_recursive
    ),
    blkio!(
        "blkio_io_service_time_recursive",
        "The blkio io service time recursive",
        "total",
        io_service_time_recursive
    ),
    blkio!(
        "blkio_io_serviced_recursive",
        "The blkio io serviced recursive",
        "total",
        io_serviced_recursive
    ),
    blkio!(
        "blkio_io_time_recursive",
        "The blkio io time recursive",
        "total",
        io_time_recursive
    ),
    blkio!(
        "blkio_sectors_recursive",
        "The blkio sectors recursive",
        "total",
        sectors_recursive
    ),
];
