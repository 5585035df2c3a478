//! Memory and thread counts of a process as the density scenario reports them:
//! `Rss`, `Pss` and `Anonymous` from `/proc/<pid>/smaps_rollup` (kB), `Threads` and `VmRSS`
//! from `/proc/<pid>/status`.

use std::fs;

use serde::Serialize;

/// One process's footprint (kB, except threads).
#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq, Eq)]
pub struct Footprint {
    pub rss_kb: u64,
    pub pss_kb: u64,
    pub anon_kb: u64,
    pub threads: u64,
}

/// Reads a process's footprint; `None` when it is gone or a file is unreadable.
#[must_use]
pub fn footprint(pid: i32) -> Option<Footprint> {
    let rollup = fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).ok()?;
    let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    Some(Footprint {
        rss_kb: field_kb(&rollup, "Rss:")?,
        pss_kb: field_kb(&rollup, "Pss:")?,
        anon_kb: field_kb(&rollup, "Anonymous:")?,
        threads: field_kb(&status, "Threads:")?,
    })
}

/// `VmRSS` of a process in kB.
#[must_use]
pub fn vm_rss_kb(pid: i32) -> Option<u64> {
    field_kb(
        &fs::read_to_string(format!("/proc/{pid}/status")).ok()?,
        "VmRSS:",
    )
}

/// User + system CPU time of a process and of the children it has reaped, in ms
/// (`/proc/<pid>/stat` fields 14–17, in clock ticks of 10 ms: `USER_HZ` is 100 on Linux).
/// A daemon reaps the `shim start` / `shim delete` invocations it runs, so they count.
#[must_use]
pub fn cpu_ms(pid: i32) -> Option<f64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name, which may contain spaces: state is field 3.
    let rest = &stat[stat.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let utime: u64 = f.get(11)?.parse().ok()?;
    let stime: u64 = f.get(12)?.parse().ok()?;
    let cutime: u64 = f.get(13)?.parse().ok()?;
    let cstime: u64 = f.get(14)?.parse().ok()?;
    Some((utime + stime + cutime + cstime) as f64 * 10.0)
}

/// The number after `key` on its line (`Rss:   1234 kB` → 1234).
fn field_kb(text: &str, key: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
}

/// Mean and max of a footprint series.
#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq)]
pub struct FootprintStats {
    pub count: usize,
    pub mean: FootprintF,
    pub max: Footprint,
}

/// Mean footprint (fractional kB).
#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq)]
pub struct FootprintF {
    pub rss_kb: f64,
    pub pss_kb: f64,
    pub anon_kb: f64,
    pub threads: f64,
}

/// Mean and max over processes.
#[must_use]
pub fn stats(all: &[Footprint]) -> FootprintStats {
    let n = all.len();
    let mean = |f: fn(&Footprint) -> u64| {
        if n == 0 {
            0.0
        } else {
            all.iter().map(f).sum::<u64>() as f64 / n as f64
        }
    };
    let max = |f: fn(&Footprint) -> u64| all.iter().map(f).max().unwrap_or(0);
    FootprintStats {
        count: n,
        mean: FootprintF {
            rss_kb: mean(|f| f.rss_kb),
            pss_kb: mean(|f| f.pss_kb),
            anon_kb: mean(|f| f.anon_kb),
            threads: mean(|f| f.threads),
        },
        max: Footprint {
            rss_kb: max(|f| f.rss_kb),
            pss_kb: max(|f| f.pss_kb),
            anon_kb: max(|f| f.anon_kb),
            threads: max(|f| f.threads),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_footprint_is_plausible() {
        let me = i32::try_from(std::process::id()).expect("pid");
        let f = footprint(me).expect("own smaps_rollup");
        assert!(f.rss_kb > 0 && f.pss_kb > 0 && f.threads >= 1, "{f:?}");
        assert!(f.anon_kb <= f.rss_kb, "{f:?}");
        assert!(vm_rss_kb(me).expect("VmRSS") > 0);
        let spin = std::time::Instant::now();
        while spin.elapsed() < std::time::Duration::from_millis(50) {
            std::hint::black_box(0u64);
        }
        assert!(cpu_ms(me).expect("own stat") >= 10.0);
    }

    #[test]
    fn parses_fields_and_stats() {
        assert_eq!(field_kb("Rss:   1234 kB\nPss: 5 kB\n", "Pss:"), Some(5));
        assert_eq!(field_kb("Threads:\t3\n", "Threads:"), Some(3));
        let s = stats(&[
            Footprint {
                rss_kb: 10,
                pss_kb: 4,
                anon_kb: 2,
                threads: 1,
            },
            Footprint {
                rss_kb: 20,
                pss_kb: 6,
                anon_kb: 4,
                threads: 3,
            },
        ]);
        assert_eq!(s.count, 2);
        assert!((s.mean.anon_kb - 3.0).abs() < 1e-9);
        assert_eq!(s.max.threads, 3);
    }
}
