//! The bench's output: one [`Report`] serialized as JSON, and rendered as markdown tables
//! (one per scenario, a column per system, the issue's target beside the measurements).
//! Targets are printed, never asserted: benchmarks are not tests.

use std::fmt::Write as _;
use std::process::Command;

use serde::Serialize;

use super::scenarios::{
    Density, Latency, LatencyReport, Outcome, PullReport, Restart, SystemResult, ThroughputReport,
};
use super::stats::Summary;
use super::system::{Bins, SystemKind};

/// Where and with what the bench ran.
#[derive(Debug, Clone, Serialize)]
pub struct Machine {
    pub cpu: String,
    pub cores: usize,
    pub mem_total_mb: u64,
    pub kernel: String,
    pub runc: String,
    pub containerd: String,
    pub berthd: String,
    pub shim: String,
}

impl Machine {
    /// Reads `/proc`, `uname -r` and the binaries' versions.
    #[must_use]
    pub fn detect(bins: &Bins) -> Self {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let cpu = cpuinfo
            .lines()
            .find_map(|l| l.strip_prefix("model name"))
            .and_then(|l| l.split_once(':'))
            .map(|(_, v)| v.trim().to_string())
            .unwrap_or_else(|| "unknown cpu".into());
        let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
        let mem_total_mb = meminfo
            .lines()
            .find_map(|l| l.strip_prefix("MemTotal:"))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse::<u64>().ok())
            .map_or(0, |kb| kb / 1024);
        Self {
            cpu,
            cores: std::thread::available_parallelism().map_or(0, std::num::NonZero::get),
            mem_total_mb,
            kernel: first_line_of("uname", &["-r"]),
            runc: first_line_of(&bins.runc.to_string_lossy(), &["--version"]),
            containerd: first_line_of("containerd", &["--version"]),
            berthd: bins.berthd.display().to_string(),
            shim: bins.shim.display().to_string(),
        }
    }

    /// One line for the report heading.
    #[must_use]
    pub fn one_line(&self) -> String {
        format!(
            "{} ({} cores, {} MB RAM), Linux {}",
            self.cpu, self.cores, self.mem_total_mb, self.kernel
        )
    }
}

fn first_line_of(bin: &str, args: &[&str]) -> String {
    Command::new(bin)
        .args(args)
        .output()
        .ok()
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .next()
                .unwrap_or_default()
                .trim()
                .to_string()
        })
        .unwrap_or_default()
}

/// Everything one bench run measured.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// UTC, `YYYY-MM-DD HH:MM`.
    pub date: String,
    pub machine: Machine,
    pub quick: bool,
    /// Wall time of the whole run.
    pub seconds: f64,
    /// `/proc/loadavg` (1, 5, 15 min) at the start and the end: the machine is shared, and
    /// a busy machine inflates every column (the ratios stay comparable).
    pub loadavg_start: String,
    pub loadavg_end: String,
    pub latency: Option<LatencyReport>,
    pub throughput: Option<ThroughputReport>,
    pub density: Option<Vec<SystemResult<Density>>>,
    pub restart: Option<Vec<SystemResult<Restart>>>,
    pub pull: Option<PullReport>,
}

/// The 1, 5 and 15 minute load averages from `/proc/loadavg`.
#[must_use]
pub fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

/// Current UTC time as `YYYY-MM-DD HH:MM` (from `date`, to avoid a date crate).
#[must_use]
pub fn now_utc() -> String {
    first_line_of("date", &["-u", "+%Y-%m-%d %H:%M UTC"])
}

fn mb(kb: f64) -> String {
    format!("{:.2}", kb / 1024.0)
}

fn opt_ms(v: Option<f64>) -> String {
    v.map_or_else(|| "—".into(), |x| format!("{x:.1}"))
}

/// Picks one CPU figure of a latency result.
type CpuField = fn(&super::scenarios::CpuPerRun) -> Option<f64>;

/// A markdown table.
struct Table {
    head: Vec<String>,
    rows: Vec<Vec<String>>,
}

impl Table {
    fn new(head: Vec<String>) -> Self {
        Self {
            head,
            rows: Vec::new(),
        }
    }

    fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    fn render(&self, out: &mut String) {
        let line = |cells: &[String]| format!("| {} |\n", cells.join(" | "));
        out.push_str(&line(&self.head));
        out.push_str(&line(&vec!["---".to_string(); self.head.len()]));
        for r in &self.rows {
            out.push_str(&line(r));
        }
        out.push('\n');
    }
}

/// Cells of one row over the systems: `f` for systems that ran, "failed" otherwise.
fn cells<T>(systems: &[SystemResult<T>], f: impl Fn(&T) -> String) -> Vec<String> {
    systems
        .iter()
        .map(|s| match &s.outcome {
            Outcome::Ok(t) => f(t),
            Outcome::Failed(_) => "**failed**".into(),
            Outcome::NotApplicable(why) => format!("n/a: {why}"),
        })
        .collect()
}

fn heads<T>(first: &str, systems: &[SystemResult<T>], last: &[&str]) -> Vec<String> {
    let mut h = vec![first.to_string()];
    h.extend(systems.iter().map(|s| s.label.to_string()));
    h.extend(last.iter().map(|s| (*s).to_string()));
    h
}

fn row(label: &str, mut cells: Vec<String>, target: &str) -> Vec<String> {
    let mut r = vec![label.to_string()];
    r.append(&mut cells);
    r.push(target.to_string());
    r
}

/// Errors of every system that failed or had failures, listed under a table.
fn errors<T>(
    out: &mut String,
    systems: &[SystemResult<T>],
    summaries: impl Fn(&T) -> Vec<&Summary>,
) {
    for s in systems {
        match &s.outcome {
            Outcome::Failed(e) => {
                let _ = writeln!(out, "- {} failed: `{}`", s.label, one_line(e));
            }
            Outcome::Ok(t) => {
                for sum in summaries(t) {
                    for e in &sum.errors {
                        let _ = writeln!(
                            out,
                            "- {} ({} failures): `{}`",
                            s.label,
                            sum.failures,
                            one_line(e)
                        );
                    }
                }
            }
            Outcome::NotApplicable(_) => {}
        }
    }
    out.push('\n');
}

fn one_line(s: &str) -> String {
    let l: String = s.split_whitespace().collect::<Vec<_>>().join(" ");
    if l.chars().count() > 400 {
        l.chars().take(400).collect::<String>() + "…"
    } else {
        l
    }
}

fn summary_cell(s: &Summary, f: impl Fn(&Summary) -> Option<f64>) -> String {
    match f(s) {
        Some(v) if s.failures == 0 => format!("{v:.1}"),
        Some(v) => format!("{v:.1} ({} failed)", s.failures),
        None => format!("— ({} failed)", s.failures),
    }
}

fn find<T>(systems: &[SystemResult<T>], kind: SystemKind) -> Option<&T> {
    systems
        .iter()
        .find(|s| s.system == kind)
        .and_then(SystemResult::ok)
}

impl Report {
    /// The markdown rendering (what the README shows).
    #[must_use]
    pub fn markdown(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "berth-bench{} — {} — {}\n",
            if self.quick { " --quick" } else { "" },
            self.date,
            self.machine.one_line()
        );
        let _ = writeln!(
            out,
            "runc: {}; containerd: {}; client: Debian `ctr` 1.6.20 for every column. Whole run: {:.0} s; \
             load average {} at the start, {} at the end.\n",
            self.machine.runc,
            self.machine.containerd,
            self.seconds,
            self.loadavg_start,
            self.loadavg_end
        );
        if let Some(l) = &self.latency {
            self.latency_md(&mut out, l);
        }
        if let Some(t) = &self.throughput {
            Self::throughput_md(&mut out, t);
        }
        if let Some(d) = &self.density {
            Self::density_md(&mut out, d);
        }
        if let Some(r) = &self.restart {
            Self::restart_md(&mut out, r);
        }
        if let Some(p) = &self.pull {
            Self::pull_md(&mut out, p);
        }
        out
    }

    fn latency_md(&self, out: &mut String, l: &LatencyReport) {
        let _ = writeln!(
            out,
            "### 1. Start latency: `ctr run --rm busybox true`, {} runs each (ms)\n",
            l.runs
        );
        let mut h = vec!["".to_string(), "bare `runc run`".to_string()];
        h.extend(heads("", &l.systems, &["target"]).into_iter().skip(1));
        let mut t = Table::new(h);
        let floor = match &l.runc_floor {
            Outcome::Ok(s) => Some(s),
            _ => None,
        };
        let floor_cell = |f: fn(&Summary) -> Option<f64>| {
            floor.map_or_else(|| "**failed**".into(), |s| summary_cell(s, f))
        };
        let mut r = vec!["p50".to_string(), floor_cell(|s| s.p50_ms)];
        r.extend(cells(&l.systems, |x| summary_cell(&x.run_rm, |s| s.p50_ms)));
        r.push(String::new());
        t.row(r);
        let mut r = vec!["p95".to_string(), floor_cell(|s| s.p95_ms)];
        r.extend(cells(&l.systems, |x| summary_cell(&x.run_rm, |s| s.p95_ms)));
        r.push(String::new());
        t.row(r);
        let floor_p50 = floor.and_then(|s| s.p50_ms);
        let mut r = vec!["p50 over bare runc".to_string(), "—".to_string()];
        r.extend(cells(&l.systems, |x| match (x.run_rm.p50_ms, floor_p50) {
            (Some(a), Some(b)) => format!("+{:.1}", a - b),
            _ => "—".into(),
        }));
        r.push("≤ +10".into());
        t.row(r);
        let berth_cell = |x: &Latency, f: fn(&Summary) -> Option<f64>| {
            x.berth_run_rm
                .as_ref()
                .map_or_else(|| "—".to_string(), |s| summary_cell(s, f))
        };
        let mut r = vec![
            "`berth run --rm` p50 (berth's client)".to_string(),
            "—".to_string(),
        ];
        r.extend(cells(&l.systems, |x| berth_cell(x, |s| s.p50_ms)));
        r.push(String::new());
        t.row(r);
        let mut r = vec![
            "`berth run --rm` p95 (berth's client)".to_string(),
            "—".to_string(),
        ];
        r.extend(cells(&l.systems, |x| berth_cell(x, |s| s.p95_ms)));
        r.push(String::new());
        t.row(r);
        let mut r = vec![
            "`berth run --rm` p50 over bare runc".to_string(),
            "—".to_string(),
        ];
        r.extend(cells(&l.systems, |x| {
            match (x.berth_run_rm.as_ref().and_then(|s| s.p50_ms), floor_p50) {
                (Some(a), Some(b)) => format!("+{:.1}", a - b),
                _ => "—".into(),
            }
        }));
        r.push("≤ +10".into());
        t.row(r);
        let mut r = vec![
            "`ctr version` p50 (client floor)".to_string(),
            "—".to_string(),
        ];
        r.extend(cells(&l.systems, |x| {
            summary_cell(&x.ctr_version, |s| s.p50_ms)
        }));
        r.push(String::new());
        t.row(r);
        let cpu_rows: [(&str, CpuField); 3] = [
            (
                "CPU ms per run: daemon (+ shim invocations it reaps)",
                |c| c.daemon_ms,
            ),
            ("CPU ms per run: ctr + shim + runc", |c| {
                c.client_shim_runc_ms
            }),
            ("CPU ms: `ctr version` alone", |c| c.ctr_version_ms),
        ];
        for (i, (label, f)) in cpu_rows.into_iter().enumerate() {
            let floor = if i == 1 {
                opt_ms(l.runc_floor_cpu_ms)
            } else {
                "—".to_string()
            };
            let mut r = vec![label.to_string(), floor];
            r.extend(cells(&l.systems, |x| opt_ms(f(&x.cpu))));
            r.push(String::new());
            t.row(r);
        }
        t.render(out);
        if let Outcome::Failed(e) = &l.runc_floor {
            let _ = writeln!(out, "- bare runc failed: `{}`", one_line(e));
        }
        errors(out, &l.systems, |x| {
            let mut v = vec![&x.run_rm, &x.ctr_version];
            v.extend(x.berth_run_rm.as_ref());
            v
        });
        let _ = self;
    }

    fn throughput_md(out: &mut String, t: &ThroughputReport) {
        let _ = writeln!(
            out,
            "### 2. Throughput: `ctr run --rm` cycles (create → start → wait → delete), containers/s; \
             {:.0} s per point for berth and containerd 1.6.20, {:.0} s for the other columns\n",
            t.seconds_main, t.seconds_extra
        );
        let mut tab = Table::new(heads(
            "concurrency",
            &t.systems,
            &["berth ÷ containerd", "target"],
        ));
        let concurrencies: Vec<usize> = t
            .systems
            .iter()
            .find_map(|s| s.ok().map(|p| p.iter().map(|x| x.concurrency).collect()))
            .unwrap_or_default();
        for c in concurrencies {
            let at = |pts: &Vec<super::scenarios::ThroughputPoint>| {
                pts.iter()
                    .find(|p| p.concurrency == c)
                    .map(|p| p.summary.clone())
            };
            let mut r = vec![c.to_string()];
            r.extend(cells(&t.systems, |pts| match at(pts) {
                Some(s) if s.failures == 0 => {
                    format!("{:.2} (p50 {} ms)", s.per_second, opt_ms(s.p50_ms))
                }
                Some(s) => format!("{:.2} ({} failed)", s.per_second, s.failures),
                None => "—".into(),
            }));
            let b = find(&t.systems, SystemKind::Berth).and_then(at);
            let c1 = find(&t.systems, SystemKind::Containerd).and_then(at);
            r.push(match (b, c1) {
                (Some(b), Some(c)) if c.per_second > 0.0 => {
                    format!("{:.2}×", b.per_second / c.per_second)
                }
                _ => "—".into(),
            });
            r.push("≥ 2×".into());
            tab.row(r);
        }
        tab.render(out);
        errors(out, &t.systems, |pts| {
            pts.iter().map(|p| &p.summary).collect()
        });
    }

    fn density_md(out: &mut String, d: &[SystemResult<Density>]) {
        let n = d
            .iter()
            .find_map(|s| s.ok().map(|x| x.containers))
            .unwrap_or(0);
        let _ = writeln!(
            out,
            "### 3. Density: {n} idle detached containers (`sleep 3600`); per-shim memory from \
             `/proc/<pid>/smaps_rollup`, threads from `/proc/<pid>/status` (MB = 1024 kB)\n"
        );
        let mut t = Table::new(heads("", d, &["target"]));
        t.row(row(
            "tasks RUNNING",
            cells(d, |x| format!("{}/{}", x.running, x.containers)),
            "",
        ));
        t.row(row(
            "shims found",
            cells(d, |x| x.shims.count.to_string()),
            "",
        ));
        t.row(row(
            "shim anon MB, mean (max)",
            cells(d, |x| {
                format!(
                    "{} ({})",
                    mb(x.shims.mean.anon_kb),
                    mb(x.shims.max.anon_kb as f64)
                )
            }),
            "≤ 1.0",
        ));
        t.row(row(
            "shim PSS MB, mean",
            cells(d, |x| mb(x.shims.mean.pss_kb)),
            "",
        ));
        t.row(row(
            "shim RSS MB, mean",
            cells(d, |x| mb(x.shims.mean.rss_kb)),
            "",
        ));
        t.row(row(
            "shim threads, mean (max)",
            cells(d, |x| {
                format!("{:.1} ({})", x.shims.mean.threads, x.shims.max.threads)
            }),
            "≤ 2",
        ));
        t.row(row(
            "daemon RSS idle MB",
            cells(d, |x| {
                x.daemon_rss_idle_kb.map_or("—".into(), |k| mb(k as f64))
            }),
            "≤ 10",
        ));
        t.row(row(
            &format!("daemon RSS with {n} tasks MB"),
            cells(d, |x| {
                x.daemon_rss_loaded_kb.map_or("—".into(), |k| mb(k as f64))
            }),
            "≤ 15 (50 tasks)",
        ));
        t.render(out);
        errors(out, d, |x| vec![&x.start]);
    }

    fn restart_md(out: &mut String, r: &[SystemResult<Restart>]) {
        let n = r.iter().find_map(|s| s.ok().map(|x| x.tasks)).unwrap_or(0);
        let _ = writeln!(
            out,
            "### 4. Restart: {n} running tasks, `kill -9` of the daemon, time from spawning it again (ms)\n"
        );
        let mut t = Table::new(heads("", r, &["target"]));
        t.row(row(
            "socket answers",
            cells(r, |x| format!("{:.1}", x.socket_ready_ms)),
            "",
        ));
        t.row(row(
            "all tasks listed RUNNING",
            cells(r, |x| opt_ms(x.all_running_ms)),
            "",
        ));
        t.row(row(
            "+ one `ctr t exec` served",
            cells(r, |x| opt_ms(x.exec_served_ms)),
            "≤ 1000 (300 tasks)",
        ));
        t.render(out);
        for s in r {
            match &s.outcome {
                Outcome::Ok(x) => {
                    for e in &x.errors {
                        let _ = writeln!(out, "- {}: `{}`", s.label, one_line(e));
                    }
                }
                Outcome::Failed(e) => {
                    let _ = writeln!(out, "- {} failed: `{}`", s.label, one_line(e));
                }
                Outcome::NotApplicable(_) => {}
            }
        }
        out.push('\n');
    }

    fn pull_md(out: &mut String, p: &PullReport) {
        let _ = writeln!(
            out,
            "### 5. Pull + unpack: `ctr images pull --plain-http` of the busybox test image from a local \
             `docker-registry` (`images rm --sync` between pulls) (ms)\n"
        );
        match &p.systems {
            Outcome::Ok(systems) => {
                let mut t = Table::new(heads("", systems, &[]));
                t.row(
                    std::iter::once("p50".to_string())
                        .chain(cells(systems, |x| summary_cell(&x.pulls, |s| s.p50_ms)))
                        .collect(),
                );
                t.row(
                    std::iter::once("p95".to_string())
                        .chain(cells(systems, |x| summary_cell(&x.pulls, |s| s.p95_ms)))
                        .collect(),
                );
                t.row(
                    std::iter::once("content blobs left after `rm --sync`".to_string())
                        .chain(cells(systems, |x| {
                            x.content_left_after_rm
                                .map_or("—".into(), |n| n.to_string())
                        }))
                        .collect(),
                );
                t.render(out);
                errors(out, systems, |x| vec![&x.pulls]);
            }
            Outcome::Failed(e) => {
                let _ = writeln!(out, "**failed**: `{}`\n", one_line(e));
            }
            Outcome::NotApplicable(why) => {
                let _ = writeln!(out, "n/a: {why}\n");
            }
        }
    }
}
