//! Prometheus text exposition (format 0.0.4) as Go's `client_golang` writes it, so a scrape of
//! berthd reads like one of containerd: families sorted by name, label pairs sorted by name
//! (constant and variable labels merged, as a `prometheus.Desc` does), samples of a family
//! sorted by their label values, and values printed as Go's `strconv.FormatFloat(v, 'g', -1,
//! 64)` (`8.014271e+06`, `9.223372036854772e+18`, `282624`) — see `expfmt.writeFloat`.

use std::fmt::Write as _;

/// A family's `# TYPE`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `gauge`.
    Gauge,
    /// `counter`.
    Counter,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Kind::Gauge => "gauge",
            Kind::Counter => "counter",
        }
    }
}

/// One sample: its label pairs and value.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// (name, value) pairs, in any order (sorted by name when written).
    pub labels: Vec<(String, String)>,
    /// The value.
    pub value: f64,
}

/// A metric family: one name, help and type, many samples.
#[derive(Debug, Clone, PartialEq)]
pub struct Family {
    /// Full metric name (`container_cpu_total_nanoseconds`).
    pub name: String,
    /// `# HELP` text.
    pub help: String,
    /// `# TYPE`.
    pub kind: Kind,
    /// Samples.
    pub samples: Vec<Sample>,
}

/// Writes `families` in the text format: families sorted by name (samples of families with
/// the same name are merged, the first help and type win), families without samples left out
/// (as Go's registry does).
pub fn encode(families: Vec<Family>) -> String {
    let mut merged: std::collections::BTreeMap<String, Family> = std::collections::BTreeMap::new();
    for f in families {
        match merged.get_mut(&f.name) {
            Some(m) => m.samples.extend(f.samples),
            None => {
                merged.insert(f.name.clone(), f);
            }
        }
    }
    let mut out = String::new();
    for (name, mut fam) in merged {
        if fam.samples.is_empty() {
            continue;
        }
        for s in &mut fam.samples {
            s.labels.sort_by(|a, b| a.0.cmp(&b.0));
        }
        // client_golang's metricSorter: label values pairwise, in label-name order.
        fam.samples.sort_by(|a, b| {
            a.labels
                .iter()
                .map(|l| &l.1)
                .cmp(b.labels.iter().map(|l| &l.1))
        });
        let _ = writeln!(out, "# HELP {name} {}", escape_help(&fam.help));
        let _ = writeln!(out, "# TYPE {name} {}", fam.kind.as_str());
        for s in &fam.samples {
            out.push_str(&name);
            if !s.labels.is_empty() {
                out.push('{');
                for (i, (k, v)) in s.labels.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    let _ = write!(out, "{k}=\"{}\"", escape_label(v));
                }
                out.push('}');
            }
            out.push(' ');
            out.push_str(&go_float(s.value));
            out.push('\n');
        }
    }
    out
}

/// `# HELP` escaping: backslash and line feed.
fn escape_help(s: &str) -> String {
    s.replace('\\', r"\\").replace('\n', r"\n")
}

/// Label value escaping: backslash, double quote and line feed.
fn escape_label(s: &str) -> String {
    s.replace('\\', r"\\")
        .replace('"', "\\\"")
        .replace('\n', r"\n")
}

/// Go's `strconv.FormatFloat(v, 'g', -1, 64)` with expfmt's special cases: the shortest
/// digits that round-trip, in `%e` form (two-digit exponent at least) when the decimal
/// exponent is below -4 or at least 6, else in `%f` form.
pub fn go_float(v: f64) -> String {
    if v.is_nan() {
        return "NaN".into();
    }
    if v.is_infinite() {
        return if v > 0.0 { "+Inf" } else { "-Inf" }.into();
    }
    if v == 0.0 {
        return "0".into();
    }
    // Rust's `{:e}` prints the same shortest round-trip digits: `8.014271e6`.
    let e = format!("{v:e}");
    let (mantissa, exp) = e.split_once('e').unwrap_or((&e, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    if (-4..6).contains(&exp) {
        // `{}` never uses an exponent and prints the same shortest digits.
        return format!("{v}");
    }
    let sign = if exp < 0 { '-' } else { '+' };
    format!("{mantissa}e{sign}{:02}", exp.unsigned_abs())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn floats_print_as_go_formats_them() {
        for (v, want) in [
            (0.0, "0"),
            (1.0, "1"),
            (-1.0, "-1"),
            (282_624.0, "282624"),
            (999_999.0, "999999"),
            (1_000_000.0, "1e+06"),
            (8_014_271.0, "8.014271e+06"),
            (2_269_184.0, "2.269184e+06"),
            (9_223_372_036_854_771_712.0, "9.223372036854772e+18"),
            (0.5, "0.5"),
            (0.0001, "0.0001"),
            (0.000_012_5, "1.25e-05"),
            (1e100, "1e+100"),
            (f64::NAN, "NaN"),
            (f64::INFINITY, "+Inf"),
            (f64::NEG_INFINITY, "-Inf"),
        ] {
            assert_eq!(go_float(v), want, "{v}");
        }
    }

    fn sample(labels: &[(&str, &str)], value: f64) -> Sample {
        Sample {
            labels: labels
                .iter()
                .map(|(k, v)| ((*k).to_string(), (*v).to_string()))
                .collect(),
            value,
        }
    }

    #[test]
    fn families_are_sorted_and_labels_ordered_by_name() {
        let text = encode(vec![
            Family {
                name: "container_per_cpu_nanoseconds".into(),
                help: "The total cpu time per cpu".into(),
                kind: Kind::Gauge,
                samples: vec![
                    sample(
                        &[
                            ("container_id", "c"),
                            ("namespace", "n"),
                            ("runtime", "io.containerd.runc.v2"),
                            ("cpu", "1"),
                        ],
                        7_680_549.0,
                    ),
                    sample(
                        &[
                            ("container_id", "c"),
                            ("namespace", "n"),
                            ("runtime", "io.containerd.runc.v2"),
                            ("cpu", "0"),
                        ],
                        333_722.0,
                    ),
                ],
            },
            Family {
                name: "container_memory_oom_total".into(),
                help: "The number of times a container has received an oom event".into(),
                kind: Kind::Counter,
                samples: vec![sample(&[("namespace", "n"), ("container_id", "c")], 0.0)],
            },
            Family {
                name: "container_empty".into(),
                help: "no samples".into(),
                kind: Kind::Gauge,
                samples: vec![],
            },
        ]);
        assert_eq!(
            text,
            "# HELP container_memory_oom_total The number of times a container has received an oom event\n\
             # TYPE container_memory_oom_total counter\n\
             container_memory_oom_total{container_id=\"c\",namespace=\"n\"} 0\n\
             # HELP container_per_cpu_nanoseconds The total cpu time per cpu\n\
             # TYPE container_per_cpu_nanoseconds gauge\n\
             container_per_cpu_nanoseconds{container_id=\"c\",cpu=\"0\",namespace=\"n\",runtime=\"io.containerd.runc.v2\"} 333722\n\
             container_per_cpu_nanoseconds{container_id=\"c\",cpu=\"1\",namespace=\"n\",runtime=\"io.containerd.runc.v2\"} 7.680549e+06\n"
        );
    }

    #[test]
    fn samples_of_one_name_merge_and_sort_by_label_values() {
        let fam = |id: &str, v: f64| Family {
            name: "container_pids_current".into(),
            help: "The current number of pids".into(),
            kind: Kind::Gauge,
            samples: vec![sample(&[("container_id", id), ("namespace", "n")], v)],
        };
        let text = encode(vec![fam("b", 2.0), fam("a", 1.0)]);
        assert_eq!(
            text,
            "# HELP container_pids_current The current number of pids\n\
             # TYPE container_pids_current gauge\n\
             container_pids_current{container_id=\"a\",namespace=\"n\"} 1\n\
             container_pids_current{container_id=\"b\",namespace=\"n\"} 2\n"
        );
    }

    #[test]
    fn help_and_label_values_are_escaped() {
        let text = encode(vec![Family {
            name: "x".into(),
            help: "a\\b\nc".into(),
            kind: Kind::Gauge,
            samples: vec![sample(&[("device", "/dev/\"q\"\\\n")], 1.0)],
        }]);
        assert_eq!(
            text,
            "# HELP x a\\\\b\\nc\n# TYPE x gauge\nx{device=\"/dev/\\\"q\\\"\\\\\\n\"} 1\n"
        );
    }
}
