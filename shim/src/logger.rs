//! Shim logging: slog records formatted like containerd's logrus text lines, written to stderr.
//!
//! The long-running shim points stderr at the `log` fifo in the bundle, which containerd reads
//! and copies into its own log (`runtime/v2/shim/shim_unix.go` `openLog`). The fd is made
//! non-blocking, and a line that cannot be written at once is dropped: a daemon that stops
//! reading must never stall exit handling. Libraries log through the `log` crate; `init`
//! installs a bridge that forwards those records into the same slog drain.

use std::fmt::Write as _;
use std::io::Write as _;
use std::sync::OnceLock;
use std::time::{SystemTime, UNIX_EPOCH};

use slog::{Drain, Key, Level, OwnedKVList, Record, KV};

/// A drain that writes one logrus-style line per record to stderr.
pub struct StderrDrain {
    min: Level,
}

impl StderrDrain {
    pub fn new(debug: bool) -> StderrDrain {
        StderrDrain {
            min: if debug { Level::Debug } else { Level::Info },
        }
    }
}

struct LineSerializer<'a>(&'a mut String);

impl slog::Serializer for LineSerializer<'_> {
    fn emit_arguments(&mut self, key: Key, val: &std::fmt::Arguments<'_>) -> slog::Result {
        let v = val.to_string();
        if v.is_empty() || v.contains([' ', '"', '=']) {
            let _ = write!(self.0, " {key}={v:?}");
        } else {
            let _ = write!(self.0, " {key}={v}");
        }
        Ok(())
    }
}

fn level_name(l: Level) -> &'static str {
    match l {
        Level::Critical => "fatal",
        Level::Error => "error",
        Level::Warning => "warning",
        Level::Info => "info",
        Level::Debug => "debug",
        Level::Trace => "trace",
    }
}

impl Drain for StderrDrain {
    type Ok = ();
    type Err = slog::Never;

    fn log(&self, record: &Record<'_>, values: &OwnedKVList) -> Result<(), slog::Never> {
        if !record.level().is_at_least(self.min) {
            return Ok(());
        }
        let mut line = String::with_capacity(128);
        let _ = write!(
            line,
            "time=\"{}\" level={} msg={:?}",
            rfc3339_now(),
            level_name(record.level()),
            record.msg().to_string()
        );
        let _ = record
            .kv()
            .serialize(record, &mut LineSerializer(&mut line));
        let _ = values.serialize(record, &mut LineSerializer(&mut line));
        line.push('\n');
        // One write(2) per line so concurrent writers never interleave inside a line; errors
        // (EAGAIN with a stalled reader, EPIPE with no reader) drop the line.
        let _ = std::io::stderr().lock().write(line.as_bytes());
        Ok(())
    }
}

/// `2006-01-02T15:04:05.000000000Z` for the current time (UTC), without a date crate.
pub fn rfc3339_now() -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let secs = now.as_secs() as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:09}Z",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60,
        now.subsec_nanos()
    )
}

/// Howard Hinnant's days-to-civil algorithm.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

static ROOT: OnceLock<slog::Logger> = OnceLock::new();

/// The process-wide logger (a discarding one before `init`).
pub fn root() -> slog::Logger {
    ROOT.get()
        .cloned()
        .unwrap_or_else(|| slog::Logger::root(slog::Discard, slog::o!()))
}

struct Bridge;

impl log::Log for Bridge {
    fn enabled(&self, _: &log::Metadata<'_>) -> bool {
        true
    }

    fn log(&self, r: &log::Record<'_>) {
        let logger = root();
        let target = r.target();
        match r.level() {
            log::Level::Error => slog::error!(logger, "{}", r.args(); "module" => target),
            log::Level::Warn => slog::warn!(logger, "{}", r.args(); "module" => target),
            log::Level::Info => slog::info!(logger, "{}", r.args(); "module" => target),
            log::Level::Debug => slog::debug!(logger, "{}", r.args(); "module" => target),
            log::Level::Trace => slog::trace!(logger, "{}", r.args(); "module" => target),
        }
    }

    fn flush(&self) {}
}

static BRIDGE: Bridge = Bridge;

/// Installs the root logger (fields `runtime`, `namespace`, `id`) and the `log` bridge.
pub fn init(debug: bool, namespace: &str, id: &str) -> slog::Logger {
    let drain = std::sync::Mutex::new(StderrDrain::new(debug)).fuse();
    let logger = slog::Logger::root(
        drain,
        slog::o!("runtime" => "io.containerd.runc.v2", "namespace" => namespace.to_string(), "id" => id.to_string()),
    );
    let _ = ROOT.set(logger.clone());
    if log::set_logger(&BRIDGE).is_ok() {
        log::set_max_level(if debug {
            log::LevelFilter::Debug
        } else {
            log::LevelFilter::Info
        });
    }
    logger
}

/// Makes stderr non-blocking so a stalled log reader cannot block the shim.
pub fn set_stderr_nonblocking() {
    use nix::fcntl::{fcntl, FcntlArg, OFlag};
    if let Ok(flags) = fcntl(std::io::stderr(), FcntlArg::F_GETFL) {
        let mut flags = OFlag::from_bits_truncate(flags);
        flags.insert(OFlag::O_NONBLOCK);
        let _ = fcntl(std::io::stderr(), FcntlArg::F_SETFL(flags));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn civil_dates() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(19_723), (2024, 1, 1));
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
    }

    #[test]
    fn timestamp_shape() {
        let t = rfc3339_now();
        assert_eq!(t.len(), 30, "{t}");
        assert!(t.ends_with('Z'));
    }
}
