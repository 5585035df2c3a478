//! `berth-bench`: berth side by side with containerd (issue 7). Prints a markdown table on
//! stdout (progress on stderr) and optionally writes the JSON report.
//!
//! ```text
//! berth-bench [--quick] [--only latency,throughput,density,restart,pull]
//!             [--systems berth,containerd,containerd-berth-shim,containerd2]
//!             [--duration SECS] [--runs N] [--containers N] [--restart-tasks N]
//!             [--json FILE] [--bin-dir DIR]
//! ```
//!
//! Needs root (it runs containers). berth's binaries come from the directory of this
//! executable (so `target/release/berth-bench` uses release `berthd` and shim) unless
//! `--bin-dir` or `$BERTH_BIN_DIR` says otherwise. The containerd 2.3.4 column needs
//! `$BERTH_CONTAINERD2_DIR`. Exit status: 0 when the report was produced (even if systems
//! failed: the report says so), 2 on bad arguments, 1 when the bench could not run at all.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use integration::bench::system::SystemKind;
use integration::bench::{self, BenchError, Options, Scenario};

const USAGE: &str = "usage: berth-bench [--quick] [--only SCENARIO[,..]] [--systems SYSTEM[,..]] \
[--duration SECS] [--runs N] [--containers N] [--restart-tasks N] [--json FILE] [--bin-dir DIR]

scenarios: latency, throughput, density, restart, pull (default: all)
systems:   berth, containerd, containerd-berth-shim, containerd2
           (default per scenario: the extra columns only where cheap)
--quick    3 iterations each, 3 s throughput points, 3 containers (the smoke test)
--duration seconds per throughput point for berth and containerd (default 60)
--runs     latency runs per system (default 50)
--containers    density: idle containers (default 50)
--restart-tasks restart: running tasks (default 100; the target is stated for 300)
--json FILE     also write the JSON report
--bin-dir DIR   berthd and our shim from DIR (default: beside this executable)";

fn count(v: &str, flag: &str) -> Result<usize, BenchError> {
    match v.parse::<usize>() {
        Ok(n) if n > 0 => Ok(n),
        _ => Err(BenchError::Args(format!(
            "{flag} `{v}`: expected a positive whole number"
        ))),
    }
}

fn parse(args: &[String]) -> Result<Option<Options>, BenchError> {
    let quick = args.iter().any(|a| a == "--quick");
    let mut o = if quick {
        Options::quick()
    } else {
        Options::full()
    };
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut value = |flag: &str| {
            it.next()
                .cloned()
                .ok_or_else(|| BenchError::Args(format!("{flag} needs a value")))
        };
        match a.as_str() {
            "--quick" => {}
            "-h" | "--help" => return Ok(None),
            "--only" => {
                o.scenarios = value("--only")?
                    .split(',')
                    .map(Scenario::parse)
                    .collect::<Result<_, _>>()?;
            }
            "--systems" => {
                o.systems = Some(
                    value("--systems")?
                        .split(',')
                        .map(SystemKind::parse)
                        .collect::<Result<_, _>>()?,
                );
            }
            "--duration" => {
                let v = value("--duration")?;
                let secs: u64 = v.parse().map_err(|_| {
                    BenchError::Args(format!("--duration `{v}`: expected whole seconds"))
                })?;
                o.duration = Duration::from_secs(secs.max(1));
            }
            "--runs" => o.latency_runs = count(&value("--runs")?, "--runs")?,
            "--containers" => o.density = count(&value("--containers")?, "--containers")?,
            "--restart-tasks" => {
                o.restart_tasks = count(&value("--restart-tasks")?, "--restart-tasks")?;
            }
            "--json" => o.json = Some(PathBuf::from(value("--json")?)),
            "--bin-dir" => o.bin_dir = Some(PathBuf::from(value("--bin-dir")?)),
            other => return Err(BenchError::Args(format!("unknown argument `{other}`"))),
        }
    }
    Ok(Some(o))
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let opts = match parse(&args) {
        Ok(Some(o)) => o,
        Ok(None) => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("berth-bench: {e}\n\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    if !nix::unistd::geteuid().is_root() {
        eprintln!("berth-bench: must run as root (it starts daemons and containers)");
        return ExitCode::FAILURE;
    }
    let report = match bench::run(&opts) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("berth-bench: {e}");
            return ExitCode::FAILURE;
        }
    };
    print!("{}", report.markdown());
    if let Some(path) = &opts.json {
        let text = match serde_json::to_string_pretty(&report) {
            Ok(t) => t,
            Err(e) => {
                eprintln!("berth-bench: serializing the report: {e}");
                return ExitCode::FAILURE;
            }
        };
        if let Err(e) = std::fs::write(path, text + "\n") {
            eprintln!("berth-bench: writing {}: {e}", path.display());
            return ExitCode::FAILURE;
        }
        eprintln!("[berth-bench] JSON report written to {}", path.display());
    }
    ExitCode::SUCCESS
}
