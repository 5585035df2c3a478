//! `berth-bench --quick` in the test suite so the benchmark does not rot (issue 7): the real
//! binary against real berthd + our shim, Debian's containerd 1.6.20 + Go shim (and the other
//! columns), runc and docker-registry. Asserts that the table and the JSON are produced and
//! that every scenario measured something sane on both berth and containerd, without failures.
//! Numbers are not compared with targets: benchmarks are not tests.

use std::process::Command;

use serde_json::Value;

fn f64_at(v: &Value, ptr: &str) -> f64 {
    v.pointer(ptr)
        .and_then(Value::as_f64)
        .unwrap_or_else(|| panic!("no number at {ptr} in {v:#}"))
}

/// The per-system entry `key` of a scenario's `systems` array, required to have run.
fn system<'a>(systems: &'a Value, key: &str, scenario: &str) -> &'a Value {
    let s = systems
        .as_array()
        .and_then(|a| a.iter().find(|s| s["system"] == key))
        .unwrap_or_else(|| panic!("{scenario}: no `{key}` column in {systems:#}"));
    assert_eq!(
        s["status"], "ok",
        "{scenario}: {key} did not run: {:#}",
        s["result"]
    );
    &s["result"]
}

/// A stats summary with `n` successes (or at least one when `n` is 0) and no failures.
fn clean_summary(s: &Value, n: u64, what: &str) {
    let total = s["total"].as_u64().unwrap_or(0);
    assert_eq!(s["failures"], 0, "{what}: failures: {s:#}");
    if n == 0 {
        assert!(total > 0, "{what}: nothing succeeded: {s:#}");
    } else {
        assert_eq!(total, n, "{what}: {s:#}");
    }
    let p50 = f64_at(s, "/p50_ms");
    let p95 = f64_at(s, "/p95_ms");
    assert!(p50 > 0.0 && p95 >= p50 && p95 < 60_000.0, "{what}: {s:#}");
    assert!(f64_at(s, "/per_second") > 0.0, "{what}: {s:#}");
}

#[test]
fn bench_quick_produces_table_and_json_with_berth_and_containerd_measured() {
    // Fails (with the cargo command) when berthd or our shim is missing or older than its
    // sources; the bench then uses exactly these.
    let berthd = integration::bins::berthd_bin();
    let _ = integration::bins::our_shim_bin();
    let bin_dir = berthd.parent().expect("berthd has a directory");
    let dir = tempfile::tempdir().expect("tempdir");
    let json_path = dir.path().join("bench.json");
    let out = Command::new(env!("CARGO_BIN_EXE_berth-bench"))
        .arg("--quick")
        .arg("--json")
        .arg(&json_path)
        .arg("--bin-dir")
        .arg(bin_dir)
        .output()
        .expect("running berth-bench");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "berth-bench --quick failed ({}):\n{stdout}\n{stderr}",
        out.status
    );

    // The markdown table: every scenario, both main columns, targets beside them.
    for heading in [
        "### 1. Start latency",
        "### 2. Throughput",
        "### 3. Density",
        "### 4. Restart",
        "### 5. Pull + unpack",
        "| berthd + berth shim |",
        "containerd 1.6.20 + Go shim",
        "≤ +10",
        "≥ 2×",
        "≤ 1.0",
    ] {
        assert!(
            stdout.contains(heading),
            "table lacks `{heading}`:\n{stdout}"
        );
    }
    assert!(
        !stdout.contains("**failed**"),
        "a system failed:\n{stdout}\n{stderr}"
    );

    let report: Value = serde_json::from_str(
        &std::fs::read_to_string(&json_path).expect("berth-bench wrote the JSON report"),
    )
    .expect("the JSON report parses");
    assert_eq!(report["quick"], true);

    let lat = &report["latency"];
    assert_eq!(lat["runc_floor"]["status"], "ok", "{lat:#}");
    clean_summary(&lat["runc_floor"]["result"], 3, "bare runc run");
    for key in ["berth", "containerd"] {
        let s = system(&lat["systems"], key, "latency");
        clean_summary(&s["run_rm"], 3, &format!("{key} run --rm"));
        clean_summary(&s["ctr_version"], 3, &format!("{key} ctr version"));
        // CPU per run is accounted to the daemon and to what the bench reaped (ctr, shim, runc).
        assert!(f64_at(s, "/cpu/daemon_ms") > 0.0, "{key}: {s:#}");
        assert!(
            f64_at(s, "/cpu/client_shim_runc_ms") > f64_at(s, "/cpu/ctr_version_ms"),
            "{key}: {s:#}"
        );
        // A container run costs more than the client alone and more than bare runc.
        assert!(
            f64_at(s, "/run_rm/p50_ms") > f64_at(s, "/ctr_version/p50_ms"),
            "{key}: {s:#}"
        );
    }

    for key in ["berth", "containerd"] {
        let points = system(&report["throughput"]["systems"], key, "throughput");
        let concurrencies: Vec<u64> = points
            .as_array()
            .expect("points")
            .iter()
            .map(|p| p["concurrency"].as_u64().expect("concurrency"))
            .collect();
        assert_eq!(concurrencies, vec![1, 4, 8], "{key}");
        for p in points.as_array().expect("points") {
            clean_summary(
                &p["summary"],
                0,
                &format!("{key} throughput at {}", p["concurrency"]),
            );
        }
    }

    for key in ["berth", "containerd"] {
        let d = system(&report["density"], key, "density");
        assert_eq!(d["running"], 3, "{key}: {d:#}");
        assert_eq!(
            d["shims"]["count"], 3,
            "{key}: one shim per container: {d:#}"
        );
        clean_summary(&d["start"], 3, &format!("{key} run -d"));
        assert!(f64_at(d, "/shims/mean/anon_kb") > 0.0, "{key}: {d:#}");
        assert!(
            f64_at(d, "/shims/mean/pss_kb") <= f64_at(d, "/shims/mean/rss_kb"),
            "{key}: {d:#}"
        );
        assert!(f64_at(d, "/shims/max/threads") >= 1.0, "{key}: {d:#}");
        assert!(f64_at(d, "/daemon_rss_idle_kb") > 0.0, "{key}: {d:#}");
        assert!(f64_at(d, "/daemon_rss_loaded_kb") > 0.0, "{key}: {d:#}");
    }

    for key in ["berth", "containerd"] {
        let r = system(&report["restart"], key, "restart");
        assert_eq!(r["tasks"], 3, "{key}: {r:#}");
        let ready = f64_at(r, "/socket_ready_ms");
        let listed = f64_at(r, "/all_running_ms");
        let exec = f64_at(r, "/exec_served_ms");
        assert!(
            ready > 0.0 && listed >= ready && exec >= listed,
            "{key}: {r:#}"
        );
    }

    let pull = &report["pull"];
    assert_eq!(pull["systems"]["status"], "ok", "{pull:#}");
    for key in ["berth", "containerd"] {
        let p = system(&pull["systems"]["result"], key, "pull");
        clean_summary(&p["pulls"], 3, &format!("{key} pull"));
    }
}
