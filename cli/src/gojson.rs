//! JSON printed the way Go's `json.MarshalIndent(v, "", "    ")` prints containerd's
//! structs, for output that must match ctr's byte for byte (`oci spec`, `containers
//! info`): object keys in the Go struct's field order (unknown keys after, sorted), 4-space
//! indentation, `<`, `>` and `&` escaped as Go does.

use serde_json::Value;

/// Field order of the Go structs, by the path of the object (`[]` marks array items).
fn order(path: &str) -> &'static [&'static str] {
    match path {
        "" => &[
            "ociVersion",
            "process",
            "root",
            "hostname",
            "mounts",
            "hooks",
            "annotations",
            "linux",
        ],
        "process" => &[
            "terminal",
            "consoleSize",
            "user",
            "args",
            "commandLine",
            "env",
            "cwd",
            "capabilities",
            "rlimits",
            "noNewPrivileges",
            "apparmorProfile",
            "oomScoreAdj",
            "selinuxLabel",
        ],
        "process.consoleSize" => &["height", "width"],
        "process.user" => &["uid", "gid", "umask", "additionalGids", "username"],
        "process.capabilities" => &[
            "bounding",
            "effective",
            "inheritable",
            "permitted",
            "ambient",
        ],
        "process.rlimits[]" => &["type", "hard", "soft"],
        "root" => &["path", "readonly"],
        "mounts[]" => &["destination", "type", "source", "options"],
        "linux" => &[
            "uidMappings",
            "gidMappings",
            "sysctl",
            "resources",
            "cgroupsPath",
            "namespaces",
            "devices",
            "seccomp",
            "rootfsPropagation",
            "maskedPaths",
            "readonlyPaths",
            "mountLabel",
            "intelRdt",
            "personality",
        ],
        "linux.resources" => &[
            "devices",
            "memory",
            "cpu",
            "pids",
            "blockIO",
            "hugepageLimits",
            "network",
            "rdma",
            "unified",
        ],
        "linux.resources.devices[]" => &["allow", "type", "major", "minor", "access"],
        "linux.resources.memory" => &[
            "limit",
            "reservation",
            "swap",
            "kernel",
            "kernelTCP",
            "swappiness",
            "disableOOMKiller",
            "useHierarchy",
        ],
        "linux.resources.cpu" => &[
            "shares",
            "quota",
            "period",
            "realtimeRuntime",
            "realtimePeriod",
            "cpus",
            "mems",
        ],
        "linux.namespaces[]" => &["type", "path"],
        "linux.devices[]" => &["path", "type", "major", "minor", "fileMode", "uid", "gid"],
        "Container" => &[
            "ID",
            "Labels",
            "Image",
            "Runtime",
            "SnapshotKey",
            "Snapshotter",
            "CreatedAt",
            "UpdatedAt",
            "Extensions",
            "Spec",
        ],
        "Container.Runtime" => &["Name", "Options"],
        "Container.Runtime.Options" => &["type_url", "value"],
        _ => &[],
    }
}

/// Renders `v` as Go would, `root` naming the struct at the top (`""` for a runtime spec).
pub fn render(v: &Value, root: &str) -> String {
    let mut out = String::new();
    write(v, root, 0, &mut out);
    out
}

fn child_path(path: &str, key: &str) -> String {
    // `ctr containers info` embeds the runtime spec under "Spec": it orders as a spec.
    if path == "Container" && key == "Spec" {
        return String::new();
    }
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

fn go_string(s: &str) -> String {
    Value::from(s)
        .to_string()
        .replace('<', "\\u003c")
        .replace('>', "\\u003e")
        .replace('&', "\\u0026")
}

fn write(v: &Value, path: &str, depth: usize, out: &mut String) {
    let pad = |d: usize| "    ".repeat(d);
    match v {
        Value::Object(map) if map.is_empty() => out.push_str("{}"),
        Value::Object(map) => {
            let known = order(path);
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort_by_key(|k| {
                (
                    known.iter().position(|x| x == k).unwrap_or(usize::MAX),
                    (*k).clone(),
                )
            });
            out.push_str("{\n");
            for (i, k) in keys.iter().enumerate() {
                out.push_str(&pad(depth + 1));
                out.push_str(&go_string(k));
                out.push_str(": ");
                write(&map[*k], &child_path(path, k), depth + 1, out);
                if i + 1 < keys.len() {
                    out.push(',');
                }
                out.push('\n');
            }
            out.push_str(&pad(depth));
            out.push('}');
        }
        Value::Array(items) if items.is_empty() => out.push_str("[]"),
        Value::Array(items) => {
            out.push_str("[\n");
            let item_path = format!("{path}[]");
            for (i, item) in items.iter().enumerate() {
                out.push_str(&pad(depth + 1));
                write(item, &item_path, depth + 1, out);
                if i + 1 < items.len() {
                    out.push(',');
                }
                out.push('\n');
            }
            out.push_str(&pad(depth));
            out.push(']');
        }
        Value::String(s) => out.push_str(&go_string(s)),
        other => out.push_str(&other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_follow_go_struct_order_with_four_space_indent() {
        let v = serde_json::json!({"root": {"readonly": true, "path": "rootfs"},
                                   "ociVersion": "1.0.2-dev", "mounts": []});
        assert_eq!(
            render(&v, ""),
            "{\n    \"ociVersion\": \"1.0.2-dev\",\n    \"root\": {\n        \"path\": \"rootfs\",\n        \"readonly\": true\n    },\n    \"mounts\": []\n}"
        );
        assert_eq!(render(&serde_json::json!("a<b"), ""), "\"a\\u003cb\"");
    }
}
