//! containerd 1.6's cgroup v2 metric set (`metrics/cgroups/v2/{pids,cpu,memory,io}.go`), used
//! for tasks whose shim reports `io.containerd.cgroups.v2.Metrics` (unified hosts). Note
//! `container_memory_oom_total` here is a gauge read from `memory.events` (the v1 set has a
//! counter of the same name fed by an eventfd, see `oom.rs`).

use containerd_shim_protos::cgroups_v2::metrics::{IOEntry, Metrics};

use super::Def;

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

/// One sample per device of `io.stat` (`major`, `minor`).
macro_rules! io {
    ($name:literal, $help:literal, $unit:literal, $field:ident) => {
        Def {
            name: $name,
            help: $help,
            unit: $unit,
            labels: &["major", "minor"],
            values: |m: &Metrics| {
                m.io.as_ref()
                    .map(|io| {
                        io.usage
                            .iter()
                            .map(|e: &IOEntry| {
                                (
                                    vec![e.major.to_string(), e.minor.to_string()],
                                    e.$field as f64,
                                )
                            })
                            .collect()
                    })
                    .unwrap_or_default()
            },
        }
    };
}

/// Every v2 metric, in containerd's collector order (pids, cpu, memory, io).
pub static METRICS: &[Def<Metrics>] = &[
    one!(
        "pids",
        "The limit to the number of pids allowed (cgroup v2)",
        "limit",
        pids,
        |s| s.limit
    ),
    one!(
        "pids",
        "The current number of pids (cgroup v2)",
        "current",
        pids,
        |s| s.current
    ),
    one!(
        "cpu_usage_usec",
        "Total cpu usage (cgroup v2)",
        "microseconds",
        cpu,
        |s| s.usage_usec
    ),
    one!(
        "cpu_user_usec",
        "Current cpu usage in user space (cgroup v2)",
        "microseconds",
        cpu,
        |s| s.user_usec
    ),
    one!(
        "cpu_system_usec",
        "Current cpu usage in kernel space (cgroup v2)",
        "microseconds",
        cpu,
        |s| s.system_usec
    ),
    one!(
        "cpu_nr_periods",
        "Current cpu number of periods (only if controller is enabled)",
        "total",
        cpu,
        |s| s.nr_periods
    ),
    one!(
        "cpu_nr_throttled",
        "Total number of times tasks have been throttled (only if controller is enabled)",
        "total",
        cpu,
        |s| s.nr_throttled
    ),
    one!(
        "cpu_throttled_usec",
        "Total time duration for which tasks have been throttled. (only if controller is enabled)",
        "microseconds",
        cpu,
        |s| s.throttled_usec
    ),
    one!(
        "memory_usage",
        "Current memory usage (cgroup v2)",
        "bytes",
        memory,
        |s| s.usage
    ),
    one!(
        "memory_usage_limit",
        "Current memory usage limit (cgroup v2)",
        "bytes",
        memory,
        |s| s.usage_limit
    ),
    one!(
        "memory_swap_usage",
        "Current swap usage (cgroup v2)",
        "bytes",
        memory,
        |s| s.swap_usage
    ),
    one!(
        "memory_swap_limit",
        "Current swap usage limit (cgroup v2)",
        "bytes",
        memory,
        |s| s.swap_limit
    ),
    one!(
        "memory_file_mapped",
        "The file_mapped amount",
        "bytes",
        memory,
        |s| s.file_mapped
    ),
    one!(
        "memory_file_dirty",
        "The file_dirty amount",
        "bytes",
        memory,
        |s| s.file_dirty
    ),
    one!(
        "memory_file_writeback",
        "The file_writeback amount",
        "bytes",
        memory,
        |s| s.file_writeback
    ),
    one!(
        "memory_pgactivate",
        "The pgactivate amount",
        "bytes",
        memory,
        |s| s.pgactivate
    ),
    one!(
        "memory_pgdeactivate",
        "The pgdeactivate amount",
        "bytes",
        memory,
        |s| s.pgdeactivate
    ),
    one!(
        "memory_pgfault",
        "The pgfault amount",
        "bytes",
        memory,
        |s| s.pgfault
    ),
    one!(
        "memory_pgmajfault",
        "The pgmajfault amount",
        "bytes",
        memory,
        |s| s.pgmajfault
    ),
    one!(
        "memory_pglazyfree",
        "The pglazyfree amount",
        "bytes",
        memory,
        |s| s.pglazyfree
    ),
    one!(
        "memory_pgrefill",
        "The pgrefill amount",
        "bytes",
        memory,
        |s| s.pgrefill
    ),
    one!(
        "memory_pglazyfreed",
        "The pglazyfreed amount",
        "bytes",
        memory,
        |s| s.pglazyfreed
    ),
    one!("memory_pgscan", "The pgscan amount", "bytes", memory, |s| s
        .pgscan),
    one!(
        "memory_pgsteal",
        "The pgsteal amount",
        "bytes",
        memory,
        |s| s.pgsteal
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
    one!("memory_anon", "The anon amount", "bytes", memory, |s| s
        .anon),
    one!("memory_file", "The file amount", "bytes", memory, |s| s
        .file),
    one!(
        "memory_kernel_stack",
        "The kernel_stack amount",
        "bytes",
        memory,
        |s| s.kernel_stack
    ),
    one!("memory_slab", "The slab amount", "bytes", memory, |s| s
        .slab),
    one!("memory_sock", "The sock amount", "bytes", memory, |s| s
        .sock),
    one!("memory_shmem", "The shmem amount", "bytes", memory, |s| s
        .shmem),
    one!(
        "memory_anon_thp",
        "The anon_thp amount",
        "bytes",
        memory,
        |s| s.anon_thp
    ),
    one!(
        "memory_slab_reclaimable",
        "The slab_reclaimable amount",
        "bytes",
        memory,
        |s| s.slab_reclaimable
    ),
    one!(
        "memory_slab_unreclaimable",
        "The slab_unreclaimable amount",
        "bytes",
        memory,
        |s| s.slab_unreclaimable
    ),
    one!(
        "memory_workingset_refault",
        "The workingset_refault amount",
        "bytes",
        memory,
        |s| s.workingset_refault
    ),
    one!(
        "memory_workingset_activate",
        "The workingset_activate amount",
        "bytes",
        memory,
        |s| s.workingset_activate
    ),
    one!(
        "memory_workingset_nodereclaim",
        "The workingset_nodereclaim amount",
        "bytes",
        memory,
        |s| s.workingset_nodereclaim
    ),
    one!(
        "memory_thp_fault_alloc",
        "The thp_fault_alloc amount",
        "bytes",
        memory,
        |s| s.thp_fault_alloc
    ),
    one!(
        "memory_thp_collapse_alloc",
        "The thp_collapse_alloc amount",
        "bytes",
        memory,
        |s| s.thp_collapse_alloc
    ),
    one!(
        "memory_oom",
        "The number of times a container has received an oom event",
        "total",
        memory_events,
        |s| s.oom
    ),
    io!("io_rbytes", "IO bytes read", "bytes", rbytes),
    io!("io_wbytes", "IO bytes written", "bytes", wbytes),
    io!("io_rios", "Number of read IOs", "total", rios),
    io!("io_wios", "Number of write IOs", "total", wios),
];
