//! Unit tests of the metric tables, decoding and labels; the end-to-end comparison with
//! containerd 1.6 is `integration/tests/daemon_metrics_cgroups.rs`.

use super::*;
use containerd_shim_protos::cgroups::metrics as m1;
use containerd_shim_protos::cgroups_v2::metrics as m2;

fn names(fams: &[Family]) -> Vec<String> {
    let mut v: Vec<String> = fams
        .iter()
        .filter(|f| !f.samples.is_empty())
        .map(|f| f.name.clone())
        .collect();
    v.sort();
    v
}

fn full_v1() -> m1::Metrics {
    let mut m = m1::Metrics::new();
    m.pids.mut_or_insert_default().current = 3;
    let cpu = m.cpu.mut_or_insert_default();
    cpu.usage.mut_or_insert_default().total = 8_014_271;
    cpu.usage.mut_or_insert_default().per_cpu = vec![333_722, 7_680_549];
    let mem = m.memory.mut_or_insert_default();
    mem.usage.mut_or_insert_default().usage = 282_624;
    let mut h = m1::HugetlbStat::new();
    h.pagesize = "2MB".into();
    h.usage = 4;
    m.hugetlb.push(h);
    let mut e = m1::BlkIOEntry::new();
    e.op = "Read".into();
    e.device = "/dev/vda".into();
    e.major = 254;
    e.minor = 0;
    e.value = 4096;
    let b = m.blkio.mut_or_insert_default();
    for list in [
        &mut b.io_service_bytes_recursive,
        &mut b.io_serviced_recursive,
        &mut b.io_queued_recursive,
        &mut b.io_service_time_recursive,
        &mut b.io_merged_recursive,
        &mut b.io_time_recursive,
        &mut b.sectors_recursive,
    ] {
        list.push(e.clone());
    }
    m
}

/// Every name containerd 1.6.20 exports for a runc.v2 task on this (cgroup v1) host, taken
/// from a live scrape, plus the hugetlb and blkio families it exports when those report.
const CONTAINERD_V1_NAMES: &[&str] = &[
    "container_blkio_io_merged_recursive_total",
    "container_blkio_io_queued_recursive_total",
    "container_blkio_io_service_bytes_recursive_bytes",
    "container_blkio_io_service_time_recursive_total",
    "container_blkio_io_serviced_recursive_total",
    "container_blkio_io_time_recursive_total",
    "container_blkio_sectors_recursive_total",
    "container_cpu_kernel_nanoseconds",
    "container_cpu_throttle_periods_total",
    "container_cpu_throttled_periods_total",
    "container_cpu_throttled_time_nanoseconds",
    "container_cpu_total_nanoseconds",
    "container_cpu_user_nanoseconds",
    "container_hugetlb_failcnt_total",
    "container_hugetlb_max_bytes",
    "container_hugetlb_usage_bytes",
    "container_memory_active_anon_bytes",
    "container_memory_active_file_bytes",
    "container_memory_cache_bytes",
    "container_memory_dirty_bytes",
    "container_memory_hierarchical_memory_limit_bytes",
    "container_memory_hierarchical_memsw_limit_bytes",
    "container_memory_inactive_anon_bytes",
    "container_memory_inactive_file_bytes",
    "container_memory_kernel_failcnt_total",
    "container_memory_kernel_limit_bytes",
    "container_memory_kernel_max_bytes",
    "container_memory_kernel_usage_bytes",
    "container_memory_kerneltcp_failcnt_total",
    "container_memory_kerneltcp_limit_bytes",
    "container_memory_kerneltcp_max_bytes",
    "container_memory_kerneltcp_usage_bytes",
    "container_memory_mapped_file_bytes",
    "container_memory_pgfault_bytes",
    "container_memory_pgmajfault_bytes",
    "container_memory_pgpgin_bytes",
    "container_memory_pgpgout_bytes",
    "container_memory_rss_bytes",
    "container_memory_rss_huge_bytes",
    "container_memory_swap_failcnt_total",
    "container_memory_swap_limit_bytes",
    "container_memory_swap_max_bytes",
    "container_memory_swap_usage_bytes",
    "container_memory_total_active_anon_bytes",
    "container_memory_total_active_file_bytes",
    "container_memory_total_cache_bytes",
    "container_memory_total_dirty_bytes",
    "container_memory_total_inactive_anon_bytes",
    "container_memory_total_inactive_file_bytes",
    "container_memory_total_mapped_file_bytes",
    "container_memory_total_pgfault_bytes",
    "container_memory_total_pgmajfault_bytes",
    "container_memory_total_pgpgin_bytes",
    "container_memory_total_pgpgout_bytes",
    "container_memory_total_rss_bytes",
    "container_memory_total_rss_huge_bytes",
    "container_memory_total_unevictable_bytes",
    "container_memory_total_writeback_bytes",
    "container_memory_unevictable_bytes",
    "container_memory_usage_failcnt_total",
    "container_memory_usage_limit_bytes",
    "container_memory_usage_max_bytes",
    "container_memory_usage_usage_bytes",
    "container_memory_writeback_bytes",
    "container_per_cpu_nanoseconds",
    "container_pids_current",
    "container_pids_limit",
];

#[test]
fn v1_set_has_containerds_names() {
    let fams = TaskMetrics::V1(full_v1()).families(&base_labels("n", "c", ""));
    assert_eq!(names(&fams), CONTAINERD_V1_NAMES);
}

#[test]
fn v1_sections_left_out_by_the_shim_export_nothing() {
    let mut m = m1::Metrics::new();
    m.pids.mut_or_insert_default().current = 1;
    let fams = TaskMetrics::V1(m).families(&base_labels("n", "c", ""));
    assert_eq!(
        names(&fams),
        ["container_pids_current", "container_pids_limit"]
    );
}

#[test]
fn v1_labels_per_metric() {
    let fams = TaskMetrics::V1(full_v1()).families(&base_labels("n", "c", "io.containerd.runc.v2"));
    let keys = |name: &str| -> Vec<Vec<String>> {
        fams.iter()
            .find(|f| f.name == name)
            .unwrap_or_else(|| panic!("{name} missing"))
            .samples
            .iter()
            .map(|s| s.labels.iter().map(|l| l.0.clone()).collect())
            .collect()
    };
    assert_eq!(
        keys("container_per_cpu_nanoseconds"),
        vec![vec!["container_id", "namespace", "runtime", "cpu"]; 2]
    );
    assert_eq!(
        keys("container_blkio_io_service_bytes_recursive_bytes"),
        vec![vec![
            "container_id",
            "namespace",
            "runtime",
            "op",
            "device",
            "major",
            "minor"
        ]]
    );
    assert_eq!(
        keys("container_hugetlb_usage_bytes"),
        vec![vec!["container_id", "namespace", "runtime", "page"]]
    );
    let text = text::encode(fams);
    assert!(
        text.contains("container_per_cpu_nanoseconds{container_id=\"c\",cpu=\"1\",namespace=\"n\",runtime=\"io.containerd.runc.v2\"} 7.680549e+06\n"),
        "{text}"
    );
    assert!(
        text.contains("container_blkio_io_service_bytes_recursive_bytes{container_id=\"c\",device=\"/dev/vda\",major=\"254\",minor=\"0\",namespace=\"n\",op=\"Read\",runtime=\"io.containerd.runc.v2\"} 4096\n"),
        "{text}"
    );
    assert!(
        text.contains("# HELP container_memory_usage_usage_bytes The memory usage\n# TYPE container_memory_usage_usage_bytes gauge\n"),
        "{text}"
    );
}

#[test]
fn v2_set_has_containerds_names() {
    let mut m = m2::Metrics::new();
    m.pids.mut_or_insert_default().current = 1;
    m.cpu.mut_or_insert_default().usage_usec = 10;
    m.memory.mut_or_insert_default().usage = 4096;
    m.memory_events.mut_or_insert_default().oom = 2;
    let mut io = m2::IOEntry::new();
    io.major = 8;
    io.rbytes = 512;
    m.io.mut_or_insert_default().usage.push(io);
    let fams = TaskMetrics::V2(m).families(&base_labels("n", "c", ""));
    let got = names(&fams);
    assert_eq!(got.len(), 48, "{got:?}");
    for n in [
        "container_pids_limit",
        "container_pids_current",
        "container_cpu_usage_usec_microseconds",
        "container_cpu_nr_throttled_total",
        "container_cpu_throttled_usec_microseconds",
        "container_memory_usage_bytes",
        "container_memory_usage_limit_bytes",
        "container_memory_swap_limit_bytes",
        "container_memory_file_mapped_bytes",
        "container_memory_workingset_nodereclaim_bytes",
        "container_memory_thp_collapse_alloc_bytes",
        "container_memory_oom_total",
        "container_io_rbytes_bytes",
        "container_io_wios_total",
    ] {
        assert!(got.iter().any(|g| g == n), "{n} missing from {got:?}");
    }
    let oom = fams
        .iter()
        .find(|f| f.name == "container_memory_oom_total")
        .expect("oom");
    assert_eq!((oom.kind, oom.samples[0].value), (Kind::Gauge, 2.0));
    let io = fams
        .iter()
        .find(|f| f.name == "container_io_rbytes_bytes")
        .expect("io");
    assert_eq!(
        io.samples[0].labels,
        base_labels("n", "c", "")
            .into_iter()
            .chain([
                ("major".to_string(), "8".to_string()),
                ("minor".to_string(), "0".to_string())
            ])
            .collect::<Vec<_>>()
    );
}

#[test]
fn stats_decode_by_type_url() {
    let any = |type_url: &str, value: Vec<u8>| crate::runtime::Any {
        type_url: type_url.into(),
        value,
    };
    let v1 = full_v1().write_to_bytes().expect("encode");
    assert!(matches!(
        TaskMetrics::decode("n", "c", &any("io.containerd.cgroups.v1.Metrics", v1)),
        Ok(TaskMetrics::V1(m)) if m.pids.current == 3
    ));
    assert!(matches!(
        TaskMetrics::decode(
            "n",
            "c",
            &any("io.containerd.cgroups.v2.Metrics", Vec::new())
        ),
        Ok(TaskMetrics::V2(_))
    ));
    let err = TaskMetrics::decode("n", "c", &any("example.com/Other", Vec::new()))
        .expect_err("unknown type");
    assert!(
        err.to_string().contains("n/c") && err.to_string().contains("example.com/Other"),
        "{err}"
    );
    let err = TaskMetrics::decode(
        "n",
        "c",
        &any("io.containerd.cgroups.v1.Metrics", vec![0xff]),
    )
    .expect_err("garbage");
    assert!(matches!(err, Error::Decode { .. }), "{err}");
}

#[test]
fn runtime_label_only_for_tasks_created_here() {
    assert_eq!(
        base_labels("n", "c", ""),
        [
            ("container_id".to_string(), "c".to_string()),
            ("namespace".to_string(), "n".to_string())
        ]
    );
    assert_eq!(base_labels("n", "c", "io.containerd.runc.v2").len(), 3);
}

#[test]
fn v1_bundles_are_recognised_by_path() {
    assert!(is_v1_bundle(
        "/run/berth/io.containerd.runtime.v1.linux/default/c1"
    ));
    assert!(!is_v1_bundle(
        "/run/berth/io.containerd.runtime.v2.task/default/c1"
    ));
    assert!(!is_v1_bundle("c1"));
}

#[test]
fn no_prometheus_parses_from_the_plugin_section() {
    let text =
        "version = 2\n[plugins.\"io.containerd.monitor.v1.cgroups\"]\n  no_prometheus = true\n";
    let (cfg, warnings) =
        crate::config::Config::parse(text, std::path::Path::new("config.toml")).expect("parse");
    assert!(warnings.is_empty(), "{warnings:?}");
    let c: Config = cfg
        .plugin_config("io.containerd.monitor.v1.cgroups")
        .expect("section");
    assert!(c.no_prometheus);
}
