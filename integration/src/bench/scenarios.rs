//! The five scenarios of issue 7. Latency and throughput start every selected system at once
//! and let them take turns (run by run, point by point) so that load drift on the shared
//! machine hits every column alike; density, restart and pull run each system back to back
//! on a fresh instance (idle memory must be idle, restart kills the daemon). Each returns
//! per-system outcomes: a system that cannot start is `failed` with its
//! error, one whose operations fail has its failures counted (and first errors kept) —
//! never a crash of the bench, never a silently missing number.
//!
//! The client is always Debian's `ctr`, one process per operation:
//! - latency: `ctr run --rm <busybox> <id> true`, one at a time; floors: bare `runc run` of an
//!   equivalent bundle (same rootfs, `runc spec` config running `true`) and `ctr version`
//!   (client start + one RPC) against the same daemon; plus, when berth's CLI is built, the
//!   same run driven by `berth run --rm` (berth's own client; the issue states the latency
//!   target for it);
//! - throughput: the same `run --rm` (create → start → wait → delete) from `c` concurrent
//!   workers for a fixed duration;
//! - density: `ctr run -d <busybox> <id> sleep 3600` × N, then `/proc` readings;
//! - restart: N running tasks, `kill -9` of the daemon, restart, poll `ctr t ls` until all are
//!   RUNNING, then one `ctr t exec`;
//! - pull: `ctr images pull --plain-http` from a local `docker-registry`, `images rm --sync`
//!   between pulls so every pull fetches and unpacks.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;

use super::mem::{self, FootprintStats};
use super::stats::{Samples, Summary};
use super::system::{timed, Bins, Client, Instance, SystemKind};
use super::{BenchError, Options, Scenario};
use crate::image::TestImage;
use crate::registry::Registry;

/// Per-operation timeout: a hung daemon costs one timeout, not the whole run.
const OP_TIMEOUT: Duration = Duration::from_secs(60);
/// A series stops after this many failures in a row (a broken system fails fast).
const MAX_CONSECUTIVE_FAILURES: usize = 5;
/// Workers used to start many containers (density, restart setup).
const SETUP_WORKERS: usize = 4;

/// What happened to one system in one scenario.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "status", content = "result", rename_all = "snake_case")]
pub enum Outcome<T> {
    Ok(T),
    /// The system could not be started or set up for the scenario.
    Failed(String),
    /// Not measured, and why (e.g. not implemented).
    NotApplicable(String),
}

/// One column of a scenario.
#[derive(Debug, Clone, Serialize)]
pub struct SystemResult<T> {
    pub system: SystemKind,
    pub label: &'static str,
    #[serde(flatten)]
    pub outcome: Outcome<T>,
}

impl<T> SystemResult<T> {
    fn new(system: SystemKind, outcome: Outcome<T>) -> Self {
        Self {
            system,
            label: system.label(),
            outcome,
        }
    }

    /// The result when the system ran.
    #[must_use]
    pub fn ok(&self) -> Option<&T> {
        match &self.outcome {
            Outcome::Ok(t) => Some(t),
            _ => None,
        }
    }
}

/// Everything a scenario needs.
pub struct Ctx<'a> {
    pub opts: &'a Options,
    pub bins: &'a Bins,
    /// The busybox test image as an import archive, and its reference.
    pub image_archive: PathBuf,
    pub image: String,
    pub work: &'a Path,
    pub rt: &'a tokio::runtime::Runtime,
}

impl Ctx<'_> {
    /// Runs `f` against a fresh instance of every system selected for `scenario`.
    fn each_system<T>(
        &self,
        scenario: Scenario,
        import: bool,
        mut f: impl FnMut(SystemKind, &mut Instance, &Client) -> Result<T, String>,
    ) -> Vec<SystemResult<T>> {
        let mut out = Vec::new();
        for kind in self.opts.systems_for(scenario) {
            if kind == SystemKind::Containerd2 && self.bins.containerd2.is_none() {
                progress(&format!(
                    "{}: skipping {} ({} is not set)",
                    scenario.key(),
                    kind.key(),
                    crate::bins::CONTAINERD2_ENV
                ));
                continue;
            }
            progress(&format!("{}: {}", scenario.key(), kind.label()));
            let archive = import.then_some(self.image_archive.as_path());
            let outcome = match Instance::start(kind, self.bins, archive) {
                Err(e) => Outcome::Failed(e.to_string()),
                Ok(mut inst) => {
                    let client = inst.client(self.bins);
                    let r = match f(kind, &mut inst, &client) {
                        Ok(t) => Outcome::Ok(t),
                        Err(e) => {
                            Outcome::Failed(format!("{e}\ndaemon log tail:\n{}", inst.log_tail(15)))
                        }
                    };
                    drop(inst);
                    r
                }
            };
            if let Outcome::Failed(e) = &outcome {
                progress(&format!("  FAILED: {}", first_line(e)));
            }
            out.push(SystemResult::new(kind, outcome));
        }
        out
    }
}

impl Ctx<'_> {
    /// Starts every system selected for `scenario` at once, for scenarios that interleave
    /// them so that load drift on the shared machine hits every column alike. Instances are
    /// dropped (and cleaned up) by the caller.
    fn start_all(&self, scenario: Scenario) -> Vec<(SystemKind, Result<Instance, String>)> {
        let mut out = Vec::new();
        for kind in self.opts.systems_for(scenario) {
            if kind == SystemKind::Containerd2 && self.bins.containerd2.is_none() {
                progress(&format!(
                    "{}: skipping {} ({} is not set)",
                    scenario.key(),
                    kind.key(),
                    crate::bins::CONTAINERD2_ENV
                ));
                continue;
            }
            progress(&format!("{}: starting {}", scenario.key(), kind.label()));
            let inst = Instance::start(kind, self.bins, Some(&self.image_archive))
                .map_err(|e| e.to_string());
            if let Err(e) = &inst {
                progress(&format!("  FAILED: {}", first_line(e)));
            }
            out.push((kind, inst));
        }
        out
    }
}

/// Turns per-system results of an interleaved scenario into columns (with the daemon's log
/// tail for a system whose start failed).
fn columns<T>(
    systems: &[(SystemKind, Result<Instance, String>)],
    mut result: impl FnMut(usize) -> Option<T>,
) -> Vec<SystemResult<T>> {
    systems
        .iter()
        .enumerate()
        .map(|(i, (kind, inst))| {
            let outcome = match (inst, result(i)) {
                (Err(e), _) => Outcome::Failed(e.clone()),
                (Ok(_), Some(t)) => Outcome::Ok(t),
                (Ok(inst), None) => Outcome::Failed(format!(
                    "no result\ndaemon log tail:\n{}",
                    inst.log_tail(15)
                )),
            };
            SystemResult::new(*kind, outcome)
        })
        .collect()
}

fn first_line(s: &str) -> &str {
    s.lines().next().unwrap_or_default()
}

/// Progress on stderr (stdout carries the table).
pub fn progress(msg: &str) {
    eprintln!("[berth-bench] {msg}");
}

// ---------------------------------------------------------------------------------------------
// 1. start latency

/// Start latency of one system.
#[derive(Debug, Clone, Serialize)]
pub struct Latency {
    /// `ctr run --rm <busybox> <id> true`.
    pub run_rm: Summary,
    /// `ctr version`: client start + one RPC to this daemon (the client's share).
    pub ctr_version: Summary,
    /// `berth run --rm <busybox> <id> true`: the same run driven by berth's own client
    /// (`None` when berth's CLI was not built).
    pub berth_run_rm: Option<Summary>,
    /// CPU per `ctr run --rm`, split by who spent it.
    pub cpu: CpuPerRun,
}

/// CPU time per container run (ms of user + system time).
#[derive(Debug, Clone, Serialize)]
pub struct CpuPerRun {
    /// The daemon process and the processes it reaped (its `shim start` and, for containerd,
    /// `shim delete` invocations): `/proc/<pid>/stat` utime + stime + cutime + cstime.
    pub daemon_ms: Option<f64>,
    /// Everything the bench reaped: the `ctr` client, the shim (re-parented to the bench, a
    /// subreaper) and the runc processes and container it waited for. ctr and runc are the
    /// same binaries in every column, so the difference between columns is the shim's.
    pub client_shim_runc_ms: Option<f64>,
    /// `ctr version` alone (the client's floor).
    pub ctr_version_ms: Option<f64>,
}

/// Scenario 1 results.
#[derive(Debug, Clone, Serialize)]
pub struct LatencyReport {
    pub runs: usize,
    /// Bare `runc run` of the same rootfs, running `true`.
    pub runc_floor: Outcome<Summary>,
    /// CPU (ms) per bare `runc run`.
    pub runc_floor_cpu_ms: Option<f64>,
    pub systems: Vec<SystemResult<Latency>>,
}

/// Runs scenario 1. The systems (and bare runc) take turns run by run, so load drift on the
/// shared machine hits every column alike; CPU is then measured per system in a separate
/// sequential pass (reaped-children accounting cannot be split between interleaved systems).
#[must_use]
pub fn latency(ctx: &Ctx<'_>) -> LatencyReport {
    let n = ctx.opts.latency_runs;
    let floor = match runc_bundle(ctx) {
        Ok(b) => Ok(b),
        Err(e) => {
            progress(&format!("latency: bare runc bundle: {e}"));
            Err(e)
        }
    };
    let systems = ctx.start_all(Scenario::Latency);
    let clients: Vec<Option<Client>> = systems
        .iter()
        .map(|(_, i)| i.as_ref().ok().map(|i| i.client(ctx.bins)))
        .collect();
    progress(&format!(
        "latency: {n} rounds of bare runc, then `ctr version` and `ctr run --rm` on each system"
    ));
    let mut floor_samples = Samples::default();
    let mut floor_time = Duration::ZERO;
    let mut run_rm = vec![(Samples::default(), Duration::ZERO, 0usize); systems.len()];
    let mut version = vec![(Samples::default(), Duration::ZERO, 0usize); systems.len()];
    let mut berth_rm = vec![(Samples::default(), Duration::ZERO, 0usize); systems.len()];
    for round in 0..n {
        if let Ok(b) = &floor {
            record(
                &mut floor_samples,
                &mut floor_time,
                ctx.rt.block_on(b.run(round)),
            );
        }
        for (k, client) in clients.iter().enumerate() {
            let Some(client) = client else { continue };
            let v = &mut version[k];
            if v.2 < MAX_CONSECUTIVE_FAILURES {
                let r = ctx.rt.block_on(client.run(&["version"], OP_TIMEOUT));
                v.2 = if r.is_ok() { 0 } else { v.2 + 1 };
                record(&mut v.0, &mut v.1, r);
            }
            let rr = &mut run_rm[k];
            if rr.2 < MAX_CONSECUTIVE_FAILURES {
                let id = format!("lat-{round}");
                let r = ctx
                    .rt
                    .block_on(client.run(&["run", "--rm", &ctx.image, &id, "true"], OP_TIMEOUT));
                rr.2 = if r.is_ok() { 0 } else { rr.2 + 1 };
                record(&mut rr.0, &mut rr.1, r);
            }
            let br = &mut berth_rm[k];
            if client.has_berth() && br.2 < MAX_CONSECUTIVE_FAILURES {
                let id = format!("latb-{round}");
                let r = ctx.rt.block_on(
                    client.run_berth(&["run", "--rm", &ctx.image, &id, "true"], OP_TIMEOUT),
                );
                br.2 = if r.is_ok() { 0 } else { br.2 + 1 };
                record(&mut br.0, &mut br.1, r);
            }
        }
    }
    let cpu_runs = n.min(CPU_RUNS);
    progress(&format!(
        "latency: CPU per run, {cpu_runs} sequential runs per system"
    ));
    let floor_cpu = floor.as_ref().ok().and_then(|b| {
        let c0 = children_cpu_ms();
        let ok = (0..cpu_runs)
            .filter(|i| ctx.rt.block_on(b.run(n + i)).is_ok())
            .count();
        per_run(c0, children_cpu_ms(), ok)
    });
    let mut cpu: Vec<Option<CpuPerRun>> = Vec::new();
    for ((_, inst), client) in systems.iter().zip(&clients) {
        cpu.push(match (inst, client) {
            (Ok(inst), Some(client)) => Some(cpu_per_run(ctx, inst, client, cpu_runs)),
            _ => None,
        });
    }
    let result = columns(&systems, |k| {
        let (s, t, _) = &run_rm[k];
        let (v, vt, _) = &version[k];
        let (b, bt, _) = &berth_rm[k];
        Some(Latency {
            run_rm: s.summary(*t),
            ctr_version: v.summary(*vt),
            berth_run_rm: clients[k]
                .as_ref()
                .is_some_and(Client::has_berth)
                .then(|| b.summary(*bt)),
            cpu: cpu[k].clone()?,
        })
    });
    drop(systems);
    LatencyReport {
        runs: n,
        runc_floor: match floor {
            Ok(_) => Outcome::Ok(floor_samples.summary(floor_time)),
            Err(e) => Outcome::Failed(e),
        },
        runc_floor_cpu_ms: floor_cpu,
        systems: result,
    }
}

/// Runs used for CPU accounting per system.
const CPU_RUNS: usize = 10;

fn record(s: &mut Samples, total: &mut Duration, r: Result<(Duration, String), String>) {
    match r {
        Ok((d, _)) => {
            s.ok(d);
            *total += d;
        }
        Err(e) => s.fail(&e),
    }
}

fn per_run(a: Option<f64>, b: Option<f64>, k: usize) -> Option<f64> {
    match (a, b) {
        (Some(a), Some(b)) if k > 0 => Some(((b - a) / k as f64 * 10.0).round() / 10.0),
        _ => None,
    }
}

/// CPU of `runs` sequential `ctr run --rm` (and `ctr version`) against one system.
fn cpu_per_run(ctx: &Ctx<'_>, inst: &Instance, client: &Client, runs: usize) -> CpuPerRun {
    let daemon = inst.daemon_pid();
    let c0 = children_cpu_ms();
    let v_ok = (0..runs)
        .filter(|_| {
            ctx.rt
                .block_on(client.run(&["version"], OP_TIMEOUT))
                .is_ok()
        })
        .count();
    let c1 = children_cpu_ms();
    let d0 = daemon.and_then(mem::cpu_ms);
    let ok = (0..runs)
        .filter(|i| {
            let id = format!("cpu-{i}");
            ctx.rt
                .block_on(client.run(&["run", "--rm", &ctx.image, &id, "true"], OP_TIMEOUT))
                .is_ok()
        })
        .count();
    let d1 = daemon.and_then(mem::cpu_ms);
    // Shims exit at the end of each run; the harness's reaper collects them every 100 ms.
    std::thread::sleep(Duration::from_millis(500));
    let c2 = children_cpu_ms();
    CpuPerRun {
        daemon_ms: per_run(d0, d1, ok),
        client_shim_runc_ms: per_run(c1, c2, ok),
        ctr_version_ms: per_run(c0, c1, v_ok),
    }
}

/// User + system CPU of every reaped descendant of the bench so far (ms).
fn children_cpu_ms() -> Option<f64> {
    use nix::sys::resource::{getrusage, UsageWho};
    let u = getrusage(UsageWho::RUSAGE_CHILDREN).ok()?;
    let ms = |t: nix::sys::time::TimeVal| t.tv_sec() as f64 * 1e3 + t.tv_usec() as f64 / 1e3;
    Some(ms(u.user_time()) + ms(u.system_time()))
}

/// `n` operations one after the other; stops early after repeated failures.
fn sequential<F, Fut>(rt: &tokio::runtime::Runtime, n: usize, mut op: F) -> Summary
where
    F: FnMut(usize) -> Fut,
    Fut: std::future::Future<Output = Result<(Duration, String), String>>,
{
    let start = Instant::now();
    let mut s = Samples::default();
    let mut in_a_row = 0;
    for i in 0..n {
        match rt.block_on(op(i)) {
            Ok((d, _)) => {
                s.ok(d);
                in_a_row = 0;
            }
            Err(e) => {
                s.fail(&e);
                in_a_row += 1;
                if in_a_row >= MAX_CONSECUTIVE_FAILURES {
                    s.fail(&format!(
                        "stopped after {in_a_row} failures in a row ({} of {n} runs done)",
                        i + 1
                    ));
                    break;
                }
            }
        }
    }
    s.summary(start.elapsed())
}

/// The bare-runc floor: a bundle with the busybox rootfs and `runc spec`'s config running
/// `true`, run with `runc run` (create, start, wait, delete in one process).
struct RuncBundle {
    runc: PathBuf,
    root: PathBuf,
    bundle: PathBuf,
}

impl RuncBundle {
    async fn run(&self, i: usize) -> Result<(Duration, String), String> {
        let mut c = Command::new(&self.runc);
        c.arg("--root")
            .arg(&self.root)
            .arg("run")
            .arg("--bundle")
            .arg(&self.bundle)
            .arg(format!("berth-bench-floor-{}-{i}", std::process::id()))
            .stdin(Stdio::null());
        timed(c, OP_TIMEOUT, "runc run").await
    }
}

fn runc_bundle(ctx: &Ctx<'_>) -> Result<RuncBundle, String> {
    let bundle = ctx.work.join("runc-bundle");
    let root = ctx.work.join("runc-root");
    let rootfs = bundle.join("rootfs");
    std::fs::create_dir_all(&rootfs).map_err(|e| format!("{}: {e}", rootfs.display()))?;
    std::fs::create_dir_all(&root).map_err(|e| format!("{}: {e}", root.display()))?;
    TestImage::busybox()
        .and_then(|img| img.unpack_to(&rootfs))
        .map_err(|e| format!("unpacking busybox into {}: {e}", rootfs.display()))?;
    let o = Command::new(&ctx.bins.runc)
        .arg("spec")
        .arg("--bundle")
        .arg(&bundle)
        .output()
        .map_err(|e| format!("runc spec: {e}"))?;
    if !o.status.success() {
        return Err(format!(
            "runc spec failed: {}",
            String::from_utf8_lossy(&o.stderr)
        ));
    }
    let cfg_path = bundle.join("config.json");
    let text = std::fs::read_to_string(&cfg_path).map_err(|e| format!("{e}"))?;
    let mut cfg: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| format!("runc spec output: {e}"))?;
    cfg["process"]["terminal"] = serde_json::Value::Bool(false);
    cfg["process"]["args"] = serde_json::json!(["true"]);
    std::fs::write(&cfg_path, cfg.to_string()).map_err(|e| format!("{e}"))?;
    Ok(RuncBundle {
        runc: ctx.bins.runc.clone(),
        root,
        bundle,
    })
}

// ---------------------------------------------------------------------------------------------
// 2. throughput

/// Throughput at one concurrency.
#[derive(Debug, Clone, Serialize)]
pub struct ThroughputPoint {
    pub concurrency: usize,
    pub summary: Summary,
}

/// Scenario 2 results (per system: one point per concurrency).
#[derive(Debug, Clone, Serialize)]
pub struct ThroughputReport {
    pub seconds_main: f64,
    pub seconds_extra: f64,
    pub systems: Vec<SystemResult<Vec<ThroughputPoint>>>,
}

/// Runs scenario 2. All systems are started first; for each concurrency every system runs
/// its point in turn, so each concurrency level is measured under similar load everywhere.
#[must_use]
pub fn throughput(ctx: &Ctx<'_>) -> ThroughputReport {
    let main = ctx.opts.duration;
    let extra = main / ctx.opts.aux_divisor.max(1);
    let systems = ctx.start_all(Scenario::Throughput);
    let mut points: Vec<Vec<ThroughputPoint>> = vec![Vec::new(); systems.len()];
    for &c in &ctx.opts.concurrency {
        for (k, (kind, inst)) in systems.iter().enumerate() {
            let Ok(inst) = inst else { continue };
            // The two main columns get the full duration; the extra columns a fraction.
            let duration = if matches!(kind, SystemKind::Berth | SystemKind::Containerd) {
                main
            } else {
                extra
            };
            progress(&format!(
                "throughput: {} at concurrency {c} for {:.0}s",
                kind.label(),
                duration.as_secs_f64()
            ));
            let client = inst.client(ctx.bins);
            let summary = ctx
                .rt
                .block_on(throughput_at(&client, &ctx.image, c, duration));
            points[k].push(ThroughputPoint {
                concurrency: c,
                summary,
            });
        }
    }
    let result = columns(&systems, |k| Some(points[k].clone()));
    drop(systems);
    ThroughputReport {
        seconds_main: main.as_secs_f64(),
        seconds_extra: extra.as_secs_f64(),
        systems: result,
    }
}

async fn throughput_at(client: &Client, image: &str, workers: usize, dur: Duration) -> Summary {
    let start = Instant::now();
    let deadline = start + dur;
    let stop = Arc::new(AtomicBool::new(false));
    let mut handles = Vec::new();
    for w in 0..workers {
        let client = client.clone();
        let image = image.to_string();
        let stop = stop.clone();
        handles.push(tokio::spawn(async move {
            let mut s = Samples::default();
            let mut in_a_row = 0;
            let mut n = 0usize;
            while Instant::now() < deadline && !stop.load(Ordering::Relaxed) {
                let id = format!("tp{workers}-{w}-{n}");
                n += 1;
                match client
                    .run(&["run", "--rm", &image, &id, "true"], OP_TIMEOUT)
                    .await
                {
                    Ok((d, _)) => {
                        s.ok(d);
                        in_a_row = 0;
                    }
                    Err(e) => {
                        s.fail(&e);
                        in_a_row += 1;
                        if in_a_row >= MAX_CONSECUTIVE_FAILURES {
                            s.fail(&format!(
                                "worker {w} stopped after {in_a_row} failures in a row"
                            ));
                            stop.store(true, Ordering::Relaxed);
                        }
                    }
                }
            }
            s
        }));
    }
    let mut all = Samples::default();
    for h in handles {
        match h.await {
            Ok(s) => all.merge(s),
            Err(e) => all.fail(&format!("worker task: {e}")),
        }
    }
    all.summary(start.elapsed())
}

// ---------------------------------------------------------------------------------------------
// 3. density

/// Density of one system.
#[derive(Debug, Clone, Serialize)]
pub struct Density {
    pub containers: usize,
    /// `ctr run -d` of each container.
    pub start: Summary,
    /// Tasks listed RUNNING after starting.
    pub running: usize,
    /// Shim processes found (argv names this daemon's address).
    pub shims: FootprintStats,
    pub daemon_rss_idle_kb: Option<u64>,
    pub daemon_rss_loaded_kb: Option<u64>,
}

/// Runs scenario 3.
#[must_use]
pub fn density(ctx: &Ctx<'_>) -> Vec<SystemResult<Density>> {
    let n = ctx.opts.density;
    ctx.each_system(Scenario::Density, true, |_, inst, client| {
        std::thread::sleep(Duration::from_secs(1));
        let daemon = inst.daemon_pid().ok_or("daemon not running")?;
        let idle = mem::vm_rss_kb(daemon);
        let start = ctx
            .rt
            .block_on(start_detached(client, &ctx.image, "dens", n));
        // Let shims and daemon settle (lazy allocations, GC) before reading /proc.
        std::thread::sleep(Duration::from_secs(2));
        let running = ctx.rt.block_on(running_tasks(client, "dens-"))?;
        let shims: Vec<_> = inst
            .shim_pids()
            .into_iter()
            .filter_map(mem::footprint)
            .collect();
        Ok(Density {
            containers: n,
            start,
            running,
            shims: mem::stats(&shims),
            daemon_rss_idle_kb: idle,
            daemon_rss_loaded_kb: mem::vm_rss_kb(daemon),
        })
    })
}

/// Starts `n` detached `sleep 3600` containers `<prefix>-<i>` with a few parallel workers.
async fn start_detached(client: &Client, image: &str, prefix: &str, n: usize) -> Summary {
    let start = Instant::now();
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut handles = Vec::new();
    for _ in 0..SETUP_WORKERS.min(n.max(1)) {
        let (client, image, prefix, next) = (
            client.clone(),
            image.to_string(),
            prefix.to_string(),
            next.clone(),
        );
        handles.push(tokio::spawn(async move {
            let mut s = Samples::default();
            let mut in_a_row = 0;
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= n || in_a_row >= MAX_CONSECUTIVE_FAILURES {
                    break;
                }
                let id = format!("{prefix}-{i}");
                match client
                    .run(&["run", "-d", &image, &id, "sleep", "3600"], OP_TIMEOUT)
                    .await
                {
                    Ok((d, _)) => {
                        s.ok(d);
                        in_a_row = 0;
                    }
                    Err(e) => {
                        s.fail(&e);
                        in_a_row += 1;
                    }
                }
            }
            s
        }));
    }
    let mut all = Samples::default();
    for h in handles {
        match h.await {
            Ok(s) => all.merge(s),
            Err(e) => all.fail(&format!("worker task: {e}")),
        }
    }
    all.summary(start.elapsed())
}

/// Number of tasks whose id starts with `prefix` listed RUNNING by `ctr t ls`.
async fn running_tasks(client: &Client, prefix: &str) -> Result<usize, String> {
    let (_, out) = client.run(&["tasks", "ls"], OP_TIMEOUT).await?;
    Ok(out
        .lines()
        .skip(1)
        .filter(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            f.first().is_some_and(|id| id.starts_with(prefix)) && f.get(2) == Some(&"RUNNING")
        })
        .count())
}

// ---------------------------------------------------------------------------------------------
// 4. restart

/// Restart of one system.
#[derive(Debug, Clone, Serialize)]
pub struct Restart {
    pub tasks: usize,
    pub start: Summary,
    /// From spawning the daemon to its socket answering.
    pub socket_ready_ms: f64,
    /// From spawning the daemon to `ctr t ls` listing every task RUNNING.
    pub all_running_ms: Option<f64>,
    /// From spawning the daemon to the first `ctr t exec` served after that.
    pub exec_served_ms: Option<f64>,
    pub errors: Vec<String>,
}

/// Runs scenario 4.
#[must_use]
pub fn restart(ctx: &Ctx<'_>) -> Vec<SystemResult<Restart>> {
    let n = ctx.opts.restart_tasks;
    ctx.each_system(Scenario::Restart, true, |_, inst, client| {
        let start = ctx
            .rt
            .block_on(start_detached(client, &ctx.image, "rst", n));
        let before = ctx.rt.block_on(running_tasks(client, "rst-"))?;
        if before == 0 {
            return Err(format!(
                "no task running before the restart; start errors: {:?}",
                start.errors
            ));
        }
        inst.kill9();
        let t0 = Instant::now();
        inst.restart()
            .map_err(|e| format!("daemon did not come back: {e}"))?;
        let socket_ready_ms = ms(t0.elapsed());
        let mut errors = Vec::new();
        let mut all_running_ms = None;
        let deadline = t0 + OP_TIMEOUT;
        while Instant::now() < deadline {
            match ctx.rt.block_on(running_tasks(client, "rst-")) {
                Ok(k) if k >= before => {
                    all_running_ms = Some(ms(t0.elapsed()));
                    break;
                }
                Ok(_) => {}
                Err(e) if errors.len() < 3 => errors.push(e),
                Err(_) => {}
            }
        }
        if all_running_ms.is_none() {
            errors.push(format!(
                "not all {before} tasks listed RUNNING within {}s",
                OP_TIMEOUT.as_secs()
            ));
        }
        let mut exec_served_ms = None;
        let mut k = 0;
        while Instant::now() < deadline {
            k += 1;
            let exec_id = format!("bench-exec-{k}");
            match ctx.rt.block_on(client.run(
                &["tasks", "exec", "--exec-id", &exec_id, "rst-0", "true"],
                OP_TIMEOUT,
            )) {
                Ok(_) => {
                    exec_served_ms = Some(ms(t0.elapsed()));
                    break;
                }
                Err(e) => {
                    if errors.len() < 3 {
                        errors.push(e);
                    }
                    std::thread::sleep(Duration::from_millis(20));
                }
            }
        }
        Ok(Restart {
            tasks: before,
            start,
            socket_ready_ms,
            all_running_ms,
            exec_served_ms,
            errors,
        })
    })
}

fn ms(d: Duration) -> f64 {
    (d.as_secs_f64() * 1e6).round() / 1e3
}

// ---------------------------------------------------------------------------------------------
// 5. pull

/// Pulls of one system.
#[derive(Debug, Clone, Serialize)]
pub struct Pull {
    pub reference: String,
    pub pulls: Summary,
    /// Content blobs still listed after the last `images rm --sync` (0: every pull fetched).
    pub content_left_after_rm: Option<usize>,
}

/// Scenario 5 results.
#[derive(Debug, Clone, Serialize)]
pub struct PullReport {
    pub image: String,
    pub systems: Outcome<Vec<SystemResult<Pull>>>,
}

/// Runs scenario 5: the busybox test image pushed to a local `docker-registry` (HTTP).
#[must_use]
pub fn pull(ctx: &Ctx<'_>) -> PullReport {
    progress("pull: starting docker-registry and pushing the busybox test image");
    let pushed = (|| -> Result<(Registry, String), BenchError> {
        let reg = Registry::http().map_err(|e| BenchError::Registry(e.to_string()))?;
        let img = TestImage::busybox().map_err(|e| BenchError::Image(e.to_string()))?;
        let reference = reg
            .push_image(&img, "bench/busybox:test")
            .map_err(|e| BenchError::Registry(e.to_string()))?;
        Ok((reg, reference))
    })();
    let (registry, reference) = match pushed {
        Ok(x) => x,
        Err(e) => {
            return PullReport {
                image: ctx.image.clone(),
                systems: Outcome::Failed(e.to_string()),
            }
        }
    };
    let n = ctx.opts.pulls;
    // No import: the blobs must not be in the content store already.
    let systems = ctx.each_system(Scenario::Pull, false, |_, _, client| {
        let pulls = sequential(ctx.rt, n, |_| {
            let client = client.clone();
            let reference = reference.clone();
            async move {
                let r = client
                    .run(&["images", "pull", "--plain-http", &reference], OP_TIMEOUT)
                    .await;
                // Not timed: remove the image and (synchronously) its content and snapshots.
                let _ = client
                    .run(&["images", "rm", "--sync", &reference], OP_TIMEOUT)
                    .await;
                r
            }
        });
        let left = ctx
            .rt
            .block_on(client.run(&["content", "ls", "-q"], OP_TIMEOUT))
            .ok()
            .map(|(_, out)| out.lines().filter(|l| !l.trim().is_empty()).count());
        Ok(Pull {
            reference: reference.clone(),
            pulls,
            content_left_after_rm: left,
        })
    });
    drop(registry);
    PullReport {
        image: reference,
        systems: Outcome::Ok(systems),
    }
}
