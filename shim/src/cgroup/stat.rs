//! Readers of cgroup stat files, shared by the v1 and v2 formats: one number, `key value`
//! lines, `key=value` fields, and the per-page-size hugetlb files.
//!
//! Each reader returns `None` for a file that does not exist (see [`read_opt`]), so a missing
//! controller or a removed cgroup reads as empty, as containerd/cgroups' `IgnoreNotExist`.

use std::collections::BTreeMap;
use std::path::Path;

use super::{read_opt, CgroupError};

/// containerd/cgroups `parseUint`: negative numbers (e.g. `-1` for "unlimited") read as 0.
pub(crate) fn parse_u64(path: &Path, s: &str) -> Result<u64, CgroupError> {
    if let Ok(v) = s.parse::<u64>() {
        return Ok(v);
    }
    if s.starts_with('-') && s[1..].bytes().all(|b| b.is_ascii_digit()) && s.len() > 1 {
        return Ok(0);
    }
    Err(CgroupError::Parse {
        path: path.to_path_buf(),
        reason: format!("{s:?} is not a number"),
    })
}

/// `key value` lines; a value that is not a number is an error naming the file.
pub(crate) fn parse_kv(path: &Path, text: &str) -> Result<BTreeMap<String, u64>, CgroupError> {
    let mut out = BTreeMap::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let mut it = line.split_whitespace();
        let (Some(k), Some(v), None) = (it.next(), it.next(), it.next()) else {
            return Err(CgroupError::Parse {
                path: path.to_path_buf(),
                reason: format!("expected \"key value\", got {line:?}"),
            });
        };
        out.insert(k.to_string(), parse_u64(path, v)?);
    }
    Ok(out)
}

/// A file holding one number (`pids.current`, `memory.usage_in_bytes`...).
pub(crate) fn read_u64(path: &Path) -> Result<Option<u64>, CgroupError> {
    read_opt(path)?
        .map(|text| parse_u64(path, text.trim()))
        .transpose()
}

/// A file of `key value` lines (`memory.stat`, `cpu.stat`, `memory.events`...).
pub(crate) fn read_kv(path: &Path) -> Result<Option<BTreeMap<String, u64>>, CgroupError> {
    read_opt(path)?
        .map(|text| parse_kv(path, &text))
        .transpose()
}

/// The `key=value` fields of a line (`io.stat`, PSI files); fields without `=` are skipped.
pub(crate) fn key_values<'a>(
    fields: impl Iterator<Item = &'a str>,
) -> impl Iterator<Item = (&'a str, &'a str)> {
    fields.filter_map(|f| f.split_once('='))
}

/// Page sizes with hugetlb files in `dir`: `hugetlb.<size><suffix>` (v1 `.usage_in_bytes`,
/// v2 `.current`), sorted; none when `dir` cannot be read.
pub(crate) fn hugetlb_sizes(dir: &Path, suffix: &str) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut sizes: Vec<String> = entries
        .filter_map(Result::ok)
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            let size = name.strip_prefix("hugetlb.")?.strip_suffix(suffix)?;
            Some(size.to_string())
        })
        .collect();
    sizes.sort();
    sizes
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_files_read_as_none() {
        let d = tempfile::tempdir().unwrap();
        assert_eq!(read_u64(&d.path().join("nope")).unwrap(), None);
        assert_eq!(read_kv(&d.path().join("nope")).unwrap(), None);
        assert!(hugetlb_sizes(&d.path().join("nope"), ".current").is_empty());
    }

    #[test]
    fn numbers_and_key_value_lines() {
        let d = tempfile::tempdir().unwrap();
        let one = d.path().join("one");
        std::fs::write(&one, "42\n").unwrap();
        assert_eq!(read_u64(&one).unwrap(), Some(42));
        let kv = d.path().join("kv");
        std::fs::write(&kv, "a 1\n\nb -1\n").unwrap();
        let m = read_kv(&kv).unwrap().unwrap();
        assert_eq!((m["a"], m["b"]), (1, 0));
        std::fs::write(&kv, "a 1 2\n").unwrap();
        let err = read_kv(&kv).unwrap_err();
        assert!(err.to_string().contains("kv"), "{err}");
    }

    #[test]
    fn key_value_fields_skip_bare_words() {
        let f: Vec<_> = key_values("some avg10=1.5 total=3".split_whitespace()).collect();
        assert_eq!(f, [("avg10", "1.5"), ("total", "3")]);
    }

    #[test]
    fn hugetlb_sizes_sorted_by_suffix() {
        let d = tempfile::tempdir().unwrap();
        for f in [
            "hugetlb.2MB.current",
            "hugetlb.1GB.current",
            "hugetlb.2MB.max",
        ] {
            std::fs::write(d.path().join(f), "0\n").unwrap();
        }
        assert_eq!(hugetlb_sizes(d.path(), ".current"), ["1GB", "2MB"]);
        assert!(hugetlb_sizes(d.path(), ".usage_in_bytes").is_empty());
    }
}
