//! Shim memory benchmark: one idle container per shim implementation, measured from /proc.
//!
//! For each row a private containerd (Debian's 1.6.20, or v2.3.4 from `BERTH_CONTAINERD2_DIR`)
//! runs `sleep` in the busybox test image through the chosen `containerd-shim-runc-v2`; once
//! idle, the shim's `/proc/<pid>/smaps_rollup` (Anonymous, Pss, Rss) and `/proc/<pid>/status`
//! (Threads) are printed side by side. Budget for ours: ≤ 1.0 MB anonymous, ≤ 2 threads.
//!
//! Run: `BERTH_CONTAINERD2_DIR=/work/shared/interop/containerd-v2.3.4 cargo bench -p shim --bench membench`

use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use integration::bins::{self, ShimDir};
use integration::containerd::{Builder, Containerd};
use integration::image::TestImage;

struct Row {
    label: String,
    anon_kb: u64,
    pss_kb: u64,
    rss_kb: u64,
    threads: u64,
    pid: i32,
    /// Anonymous memory after 20 `ctr t exec` round trips (growth would mean a leak).
    anon_after_kb: u64,
}

fn kb(text: &str, key: &str) -> u64 {
    text.lines()
        .find(|l| l.starts_with(key))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// The long-running shim serving task `id` (not a `start`/`delete` invocation).
fn find_shim(id: &str, bundle: &Path) -> Option<i32> {
    for e in fs::read_dir("/proc").ok()?.flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(cmd) = fs::read(format!("/proc/{pid}/cmdline")) else {
            continue;
        };
        let args: Vec<String> = cmd
            .split(|b| *b == 0)
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        let is_shim = args.first().is_some_and(|a| a.contains("containerd-shim"));
        let serves = args.windows(2).any(|w| w[0] == "-id" && w[1] == id);
        let action = args.iter().any(|a| a == "start" || a == "delete");
        let cwd = fs::read_link(format!("/proc/{pid}/cwd")).ok();
        if is_shim && serves && !action && cwd.as_deref() == Some(bundle) {
            return Some(pid);
        }
    }
    None
}

fn measure(label: &str, builder: Builder, shim: &Path, archive: &Path, image: &str) -> Row {
    let mut c: Containerd = builder
        .shim_dir(ShimDir::new(shim))
        .start()
        .expect("containerd starts");
    c.import(archive);
    c.ctr_ok(&["run", "-d", image, "idle1", "sleep", "100000"]);
    // Let the Go runtimes settle (GC, FreeOSMemory every 30 s is not awaited) and ours idle.
    std::thread::sleep(Duration::from_secs(3));
    let bundle = c.bundle_dir("idle1");
    let pid = find_shim("idle1", &bundle)
        .unwrap_or_else(|| panic!("{label}: no shim process found for idle1"));
    let rollup = fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).expect("smaps_rollup");
    let status = fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    let exe = fs::read_link(format!("/proc/{pid}/exe")).unwrap_or_default();
    assert_eq!(
        fs::canonicalize(shim).unwrap_or_default(),
        fs::canonicalize(&exe).unwrap_or(exe.clone()),
        "{label}: pid {pid} runs {} instead of the shim under test",
        exe.display()
    );
    let row = Row {
        label: label.to_string(),
        anon_kb: kb(&rollup, "Anonymous:"),
        pss_kb: kb(&rollup, "Pss:"),
        rss_kb: kb(&rollup, "Rss:"),
        threads: kb(&status, "Threads:"),
        pid,
        anon_after_kb: 0,
    };
    let mut row = row;
    for i in 0..20 {
        c.ctr_ok(&["t", "exec", "--exec-id", &format!("b{i}"), "idle1", "true"]);
    }
    std::thread::sleep(Duration::from_secs(1));
    let rollup = fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).expect("smaps_rollup");
    row.anon_after_kb = kb(&rollup, "Anonymous:");
    let _ = c.ctr(&["t", "kill", "-s", "9", "idle1"]);
    std::thread::sleep(Duration::from_millis(300));
    let _ = c.ctr(&["t", "rm", "idle1"]);
    let _ = c.ctr(&["c", "rm", "idle1"]);
    let problems = c.stop();
    assert!(
        problems.is_empty(),
        "{label}: cleanup problems {problems:?}"
    );
    row
}

fn main() {
    // `cargo bench` passes `--bench`; any other argument filters nothing here.
    let ours: PathBuf = bins::our_shim_bin();
    let debian_go = bins::require_bin("containerd-shim-runc-v2", "containerd");
    let work = tempfile::tempdir().expect("tempdir");
    let img = TestImage::busybox().expect("busybox test image");
    let archive = work.path().join("busybox.oci.tar");
    img.write_oci_archive(&archive).expect("archive");

    let mut rows = vec![
        measure(
            "ours (Rust) under containerd 1.6.20",
            Containerd::v1(),
            &ours,
            &archive,
            &img.name,
        ),
        measure(
            "Debian Go shim 1.6.20",
            Containerd::v1(),
            &debian_go,
            &archive,
            &img.name,
        ),
    ];
    if let Some(dir) = bins::containerd2_dir("membench rows for containerd 2.3.4") {
        let go2 = dir.join("containerd-shim-runc-v2");
        if let Some(b) = Containerd::v2("membench ours under 2.3.4") {
            rows.push(measure(
                "ours (Rust) under containerd 2.3.4",
                b,
                &ours,
                &archive,
                &img.name,
            ));
        }
        if let Some(b) = Containerd::v2("membench Go shim 2.3.4") {
            rows.push(measure(
                "containerd 2.3.4 Go shim",
                b,
                &go2,
                &archive,
                &img.name,
            ));
        }
    }

    println!();
    println!("shim memory, one idle container each ({}):", ours.display());
    println!(
        "{:<40} {:>10} {:>10} {:>10} {:>8} {:>8} {:>22}",
        "shim", "anon KiB", "PSS KiB", "RSS KiB", "threads", "pid", "anon after 20 execs"
    );
    for r in &rows {
        println!(
            "{:<40} {:>10} {:>10} {:>10} {:>8} {:>8} {:>22}",
            r.label, r.anon_kb, r.pss_kb, r.rss_kb, r.threads, r.pid, r.anon_after_kb
        );
    }
    let worst_ours = rows
        .iter()
        .filter(|r| r.label.starts_with("ours"))
        .map(|r| (r.anon_kb, r.threads))
        .max();
    if let Some((anon, threads)) = worst_ours {
        println!(
            "\nbudget (ours): anon {anon} KiB {} 1024 KiB, threads {threads} {} 2",
            if anon <= 1024 { "<=" } else { "EXCEEDS" },
            if threads <= 2 { "<=" } else { "EXCEEDS" }
        );
    }
}
