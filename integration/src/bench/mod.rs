//! `berth-bench`: berth measured side by side with containerd, in one run on one machine.
//!
//! Timings on the test machines drift ±20 % between runs, so only ratios from the same run
//! count: every scenario runs each system back to back, on private roots started through the
//! harness builders, driven by the same client (Debian's `ctr`, one process per operation).
//!
//! - [`system`]: the systems (berth, containerd 1.6.20, containerd 1.6.20 + our shim,
//!   containerd 2.3.4), starting them with the test image imported, the `ctr` client.
//! - [`scenarios`]: start latency (against bare `runc run`), throughput, density, restart,
//!   pull; each returns a serializable result with failures recorded per system.
//! - [`report`]: the markdown table (with the targets beside the measurements) and JSON.
//! - [`stats`], [`mem`]: percentiles, and memory/thread readings from `/proc`.
//!
//! Each scenario starts fresh instances and drops them at the end, so "daemon idle" really is
//! idle and a broken system cannot poison the next scenario; latency and throughput keep all
//! systems up and interleave them (see [`scenarios`]). A system that fails
//! to start or to run containers is reported (with its error) and the bench goes on.

pub mod mem;
pub mod report;
pub mod scenarios;
pub mod stats;
pub mod system;

use std::path::PathBuf;
use std::time::Duration;

use system::SystemKind;

/// Errors of the bench itself (a failing system is a result, not an error).
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error("bad arguments: {0} (see --help)")]
    Args(String),
    #[error("missing binary {bin}: {fix}")]
    MissingBin { bin: PathBuf, fix: String },
    #[error("starting {system}: {msg}")]
    Start { system: &'static str, msg: String },
    #[error("test image: {0}")]
    Image(String),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("local registry for the pull scenario: {0}")]
    Registry(String),
    #[error("tokio runtime: {0}")]
    Runtime(std::io::Error),
}

/// The scenarios, in run order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Scenario {
    Latency,
    Throughput,
    Density,
    Restart,
    Pull,
}

impl Scenario {
    pub const ALL: [Scenario; 5] = [
        Scenario::Latency,
        Scenario::Throughput,
        Scenario::Density,
        Scenario::Restart,
        Scenario::Pull,
    ];

    #[must_use]
    pub fn key(self) -> &'static str {
        match self {
            Scenario::Latency => "latency",
            Scenario::Throughput => "throughput",
            Scenario::Density => "density",
            Scenario::Restart => "restart",
            Scenario::Pull => "pull",
        }
    }

    /// Parses a scenario key.
    ///
    /// # Errors
    /// Unknown key.
    pub fn parse(s: &str) -> Result<Self, BenchError> {
        Self::ALL.into_iter().find(|k| k.key() == s).ok_or_else(|| {
            BenchError::Args(format!(
                "unknown scenario `{s}`: expected latency, throughput, density, restart or pull"
            ))
        })
    }

    /// Systems measured by default. The main comparison (berth vs containerd 1.6.20) runs
    /// everywhere; the extra columns only where they are cheap or tell something new, to
    /// keep the full run under 15 minutes on 2 cores.
    #[must_use]
    pub fn default_systems(self) -> &'static [SystemKind] {
        match self {
            Scenario::Latency | Scenario::Throughput => &SystemKind::ALL,
            Scenario::Density => &[
                SystemKind::Berth,
                SystemKind::Containerd,
                SystemKind::Containerd2,
            ],
            Scenario::Restart | Scenario::Pull => &[SystemKind::Berth, SystemKind::Containerd],
        }
    }
}

/// Sizes of one bench run.
#[derive(Debug, Clone)]
pub struct Options {
    pub quick: bool,
    pub scenarios: Vec<Scenario>,
    /// `Some` when given with `--systems`: exactly these, in every scenario.
    pub systems: Option<Vec<SystemKind>>,
    /// Latency: runs per system (and of bare runc).
    pub latency_runs: usize,
    /// Throughput: duration per (system, concurrency) for berth and containerd 1.6.20.
    pub duration: Duration,
    /// Throughput: the extra columns run for `duration / aux_divisor`.
    pub aux_divisor: u32,
    pub concurrency: Vec<usize>,
    /// Density: idle containers.
    pub density: usize,
    /// Restart: running tasks.
    pub restart_tasks: usize,
    /// Pull: pulls per system.
    pub pulls: usize,
    /// Where berth's binaries are (default: beside the running executable).
    pub bin_dir: Option<PathBuf>,
    pub json: Option<PathBuf>,
}

impl Options {
    /// The full run (under 15 minutes on 2 cores).
    #[must_use]
    pub fn full() -> Self {
        Self {
            quick: false,
            scenarios: Scenario::ALL.to_vec(),
            systems: None,
            latency_runs: 50,
            duration: Duration::from_secs(60),
            aux_divisor: 4,
            concurrency: vec![1, 4, 8],
            density: 50,
            restart_tasks: 100,
            pulls: 10,
            bin_dir: None,
            json: None,
        }
    }

    /// `--quick`: 3 iterations each, short durations, few containers (the smoke test).
    #[must_use]
    pub fn quick() -> Self {
        Self {
            quick: true,
            latency_runs: 3,
            duration: Duration::from_secs(3),
            aux_divisor: 3,
            density: 3,
            restart_tasks: 3,
            pulls: 3,
            ..Self::full()
        }
    }

    /// The systems to measure in `scenario`.
    #[must_use]
    pub fn systems_for(&self, scenario: Scenario) -> Vec<SystemKind> {
        match &self.systems {
            Some(s) => s.clone(),
            None => scenario.default_systems().to_vec(),
        }
    }
}

/// Runs the selected scenarios and returns the report.
///
/// # Errors
/// Setup of the bench itself (binaries, subreaper, test image, runtime); a failing system is
/// reported inside the report instead.
pub fn run(opts: &Options) -> Result<report::Report, BenchError> {
    let started = std::time::Instant::now();
    crate::subreaper::ensure().map_err(|e| BenchError::Start {
        system: "subreaper",
        msg: e.to_string(),
    })?;
    let bins = system::Bins::resolve(opts.bin_dir.as_deref())?;
    scenarios::progress(&format!(
        "berthd {} | shim {} | client {}",
        bins.berthd.display(),
        bins.shim.display(),
        bins.ctr.display()
    ));
    let work = tempfile::Builder::new()
        .prefix("berth-bench-")
        .tempdir()
        .map_err(|source| BenchError::Io {
            path: std::env::temp_dir(),
            source,
        })?;
    let (image_archive, image) = system::write_image(work.path())?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(BenchError::Runtime)?;
    let ctx = scenarios::Ctx {
        opts,
        bins: &bins,
        image_archive,
        image,
        work: work.path(),
        rt: &rt,
    };
    let loadavg_start = report::loadavg();
    let want = |s: Scenario| opts.scenarios.contains(&s);
    let mut report = report::Report {
        date: report::now_utc(),
        machine: report::Machine::detect(&bins),
        quick: opts.quick,
        seconds: 0.0,
        loadavg_start,
        loadavg_end: String::new(),
        latency: want(Scenario::Latency).then(|| scenarios::latency(&ctx)),
        throughput: want(Scenario::Throughput).then(|| scenarios::throughput(&ctx)),
        density: want(Scenario::Density).then(|| scenarios::density(&ctx)),
        restart: want(Scenario::Restart).then(|| scenarios::restart(&ctx)),
        pull: want(Scenario::Pull).then(|| scenarios::pull(&ctx)),
    };
    report.loadavg_end = report::loadavg();
    report.seconds = (started.elapsed().as_secs_f64() * 10.0).round() / 10.0;
    // The bare-runc bundle's rootfs may hold a leftover mount if a run was killed.
    let _ = crate::procs::remove_tree(work.path());
    Ok(report)
}
