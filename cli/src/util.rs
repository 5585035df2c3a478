//! Small helpers shared by the commands: ctr's `key=value` label arguments, Go-style
//! durations for `--timeout`, human sizes and ages as ctr prints them, and label rendering.

use std::collections::HashMap;
use std::time::{Duration, SystemTime};

/// What went wrong parsing a command-line value.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid duration {0:?}: expected a Go duration such as 10s, 1m30s or 500ms")]
    Duration(String),
}

/// Parses a Go `time.ParseDuration` string (`300ms`, `1m30s`, `2h`); a bare `0` is zero.
pub fn parse_duration(s: &str) -> Result<Duration, Error> {
    let bad = || Error::Duration(s.to_string());
    if s == "0" {
        return Ok(Duration::ZERO);
    }
    if s.is_empty() {
        return Err(bad());
    }
    let mut total = 0f64;
    let mut rest = s;
    while !rest.is_empty() {
        let num_end = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(bad)?;
        let value: f64 = rest[..num_end].parse().map_err(|_| bad())?;
        rest = &rest[num_end..];
        let unit_end = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let scale = match &rest[..unit_end] {
            "ns" => 1e-9,
            "us" | "µs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return Err(bad()),
        };
        total += value * scale;
        rest = &rest[unit_end..];
    }
    Ok(Duration::from_secs_f64(total))
}

/// ctr's `ObjectWithLabelArgs`: the first argument is the object, the rest `key=value`
/// labels (a missing `=` means an empty value, which clears the label on update).
pub fn labels_from_args(args: &[String]) -> HashMap<String, String> {
    args.iter()
        .map(|kv| match kv.split_once('=') {
            Some((k, v)) => (k.to_string(), v.to_string()),
            None => (kv.clone(), String::new()),
        })
        .collect()
}

/// Sorted `k=v` pairs joined with commas (how ctr prints labels).
pub fn format_labels(labels: &HashMap<String, String>) -> String {
    let mut pairs: Vec<String> = labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
    pairs.sort();
    pairs.join(",")
}

/// containerd `progress.Bytes`: go-units `CustomSize("%02.1f %s", …, 1024, {B, KiB, …})`.
pub fn human_bytes(size: i64) -> String {
    const UNITS: [&str; 9] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB", "ZiB", "YiB"];
    #[allow(clippy::cast_precision_loss)]
    let mut value = size as f64;
    let mut i = 0;
    while value >= 1024.0 && i < UNITS.len() - 1 {
        value /= 1024.0;
        i += 1;
    }
    format!("{value:.1} {}", UNITS[i])
}

/// go-units `HumanSize`: decimal units with 4 significant digits (`10.24kB`, `2.13MB`).
pub fn human_size_decimal(size: i64) -> String {
    const UNITS: [&str; 9] = ["B", "kB", "MB", "GB", "TB", "PB", "EB", "ZB", "YB"];
    #[allow(clippy::cast_precision_loss)]
    let mut value = size as f64;
    let mut i = 0;
    while value >= 1000.0 && i < UNITS.len() - 1 {
        value /= 1000.0;
        i += 1;
    }
    format!("{}{}", format_g4(value), UNITS[i])
}

/// Go's `%.4g` for values in [0, 1000): four significant digits, trailing zeros dropped.
fn format_g4(v: f64) -> String {
    if v == 0.0 {
        return "0".to_string();
    }
    #[allow(clippy::cast_possible_truncation)]
    let int_digits = (v.abs().log10().floor() as i32 + 1).max(1);
    let decimals = usize::try_from((4 - int_digits).max(0)).unwrap_or(0);
    let s = format!("{v:.decimals$}");
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        s
    }
}

/// go-units `HumanDuration` of the time since `ts` (ctr's AGE column: "About an hour").
pub fn time_ago(ts: Option<&prost_types::Timestamp>) -> String {
    let Some(ts) = ts else {
        return "-".to_string();
    };
    let then = SystemTime::UNIX_EPOCH
        + Duration::from_secs(u64::try_from(ts.seconds).unwrap_or(0))
        + Duration::from_nanos(u64::try_from(ts.nanos).unwrap_or(0));
    let d = SystemTime::now()
        .duration_since(then)
        .unwrap_or(Duration::ZERO);
    human_duration(d)
}

/// go-units `HumanDuration`.
pub fn human_duration(d: Duration) -> String {
    let secs = d.as_secs();
    let (minutes, hours) = (secs / 60, secs / 3600);
    if secs < 1 {
        "Less than a second".to_string()
    } else if secs == 1 {
        "1 second".to_string()
    } else if secs < 60 {
        format!("{secs} seconds")
    } else if minutes == 1 {
        "About a minute".to_string()
    } else if minutes < 60 {
        format!("{minutes} minutes")
    } else if hours == 1 {
        "About an hour".to_string()
    } else if hours < 48 {
        format!("{hours} hours")
    } else if hours < 24 * 7 * 2 {
        format!("{} days", hours / 24)
    } else if hours < 24 * 30 * 2 {
        format!("{} weeks", hours / 24 / 7)
    } else if hours < 24 * 365 * 2 {
        format!("{} months", hours / 24 / 30)
    } else {
        format!("{} years", hours / 24 / 365)
    }
}

/// RFC 3339 rendering of a protobuf timestamp (UTC), as Go prints `time.Time` in tables.
pub fn rfc3339(ts: Option<&prost_types::Timestamp>) -> String {
    let Some(ts) = ts else {
        return "-".to_string();
    };
    let secs = ts.seconds;
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60
    )
}

/// Go's `time.RFC3339Nano` (fraction without trailing zeros), UTC.
pub fn rfc3339_nano(ts: Option<&prost_types::Timestamp>) -> String {
    let Some(t) = ts else {
        return "0001-01-01T00:00:00Z".to_string();
    };
    let base = rfc3339(Some(t));
    if t.nanos == 0 {
        return base;
    }
    let frac = format!("{:09}", t.nanos);
    format!(
        "{}.{}Z",
        base.trim_end_matches('Z'),
        frac.trim_end_matches('0')
    )
}

/// JSON with Go's `json.MarshalIndent(v, "", "    ")` layout (ctr's `PrintAsJSON`).
pub fn go_json<T: serde::Serialize>(v: &T) -> String {
    let mut out = Vec::new();
    let fmt = serde_json::ser::PrettyFormatter::with_indent(b"    ");
    let mut ser = serde_json::Serializer::with_formatter(&mut out, fmt);
    if v.serialize(&mut ser).is_err() {
        return String::new();
    }
    String::from_utf8(out).unwrap_or_default()
}

/// Standard base64 with padding (Go's JSON encoding of `[]byte`); berthd's.
pub use berthd::remotes::auth::base64;

/// Howard Hinnant's days-to-civil conversion.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = u32::try_from(doy - (153 * mp + 2) / 5 + 1).unwrap_or(1);
    let m = u32::try_from(if mp < 10 { mp + 3 } else { mp - 9 }).unwrap_or(1);
    (if m <= 2 { y + 1 } else { y }, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_durations_parse() {
        assert_eq!(parse_duration("1m30s").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(parse_duration("0").unwrap(), Duration::ZERO);
        assert!(parse_duration("10").is_err());
        assert!(parse_duration("5x").is_err());
    }

    #[test]
    fn sizes_print_like_go_units() {
        assert_eq!(human_bytes(512), "512.0 B");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_bytes(3 * 1024 * 1024), "3.0 MiB");
    }

    #[test]
    fn decimal_sizes_match_go_units_human_size() {
        assert_eq!(human_size_decimal(867), "867B");
        assert_eq!(human_size_decimal(10240), "10.24kB");
        assert_eq!(human_size_decimal(2_129_920), "2.13MB");
        assert_eq!(human_size_decimal(1_183_173), "1.183MB");
    }

    #[test]
    fn base64_matches_rfc4648() {
        assert_eq!(base64(b"foobar"), "Zm9vYmFy");
        assert_eq!(base64(b"fooba"), "Zm9vYmE=");
        assert_eq!(base64(b"f"), "Zg==");
    }

    #[test]
    fn timestamps_render_rfc3339() {
        let ts = prost_types::Timestamp {
            seconds: 1_700_000_000,
            nanos: 0,
        };
        assert_eq!(rfc3339(Some(&ts)), "2023-11-14T22:13:20Z");
    }

    #[test]
    fn label_args_split_on_first_equals() {
        let l = labels_from_args(&["a=b=c".into(), "d".into()]);
        assert_eq!(l["a"], "b=c");
        assert_eq!(l["d"], "");
    }
}
