//! The OCI runtime spec `berth run` / `containers create` generate client-side, as ctr does:
//! containerd's `oci.populateDefaultUnixSpec` + `WithDefaultUnixDevices`, then the image
//! config (`WithImageConfig`: env, args, cwd, user and additional GIDs), then the flags
//! (`--env`, `--mount`, `--net-host`, `--cwd`, `--user`, `-t`, …).
//!
//! User and group names are resolved from the container's rootfs `/etc/passwd` and
//! `/etc/group` (the caller mounts the snapshot read-only and passes its path), the same
//! lookups containerd's `WithUser`/`WithAdditionalGIDs` perform.

use std::path::Path;

use serde_json::{json, Value};

use crate::image::RunConfig;

/// The runtime-spec version containerd 1.6 writes.
pub const OCI_VERSION: &str = "1.0.2-dev";
/// The `Any` type URL containerd uses for a runtime spec.
pub const SPEC_TYPE_URL: &str = "types.containerd.io/opencontainers/runtime-spec/1/Spec";
const DEFAULT_PATH_ENV: &str = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid mount specification {0:?}: expected key=val")]
    MountSyntax(String),
    #[error("mount option {0:?} not supported")]
    MountKey(String),
    #[error("unable to find user {user}: no matching entries in passwd file")]
    NoUser { user: String },
    #[error("unable to find group {group}: no matching entries in group file")]
    NoGroup { group: String },
    #[error(
        "error gathering device information while adding custom device {0:?}: not a device node"
    )]
    NotADevice(String),
    #[error("invalid user {0:?}: expected user, uid, user:group or uid:gid")]
    BadUser(String),
}

fn default_caps() -> Value {
    json!([
        "CAP_CHOWN",
        "CAP_DAC_OVERRIDE",
        "CAP_FSETID",
        "CAP_FOWNER",
        "CAP_MKNOD",
        "CAP_NET_RAW",
        "CAP_SETGID",
        "CAP_SETUID",
        "CAP_SETFCAP",
        "CAP_SETPCAP",
        "CAP_NET_BIND_SERVICE",
        "CAP_SYS_CHROOT",
        "CAP_KILL",
        "CAP_AUDIT_WRITE"
    ])
}

fn device(major: i64, minor: Option<i64>) -> Value {
    let mut d = json!({"allow": true, "type": "c", "major": major, "access": "rwm"});
    if let Some(m) = minor {
        d["minor"] = m.into();
    }
    d
}

/// containerd's default Unix spec for container `id` in namespace `ns`, with the default
/// devices allowed.
pub fn default_spec(ns: &str, id: &str) -> Value {
    json!({
        "ociVersion": OCI_VERSION,
        "process": {
            "user": {"uid": 0, "gid": 0},
            "args": [],
            "env": [DEFAULT_PATH_ENV],
            "cwd": "/",
            "capabilities": {
                "bounding": default_caps(),
                "effective": default_caps(),
                "permitted": default_caps(),
            },
            "rlimits": [{"type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024}],
            "noNewPrivileges": true,
        },
        "root": {"path": "rootfs"},
        "mounts": [
            {"destination": "/proc", "type": "proc", "source": "proc",
             "options": ["nosuid", "noexec", "nodev"]},
            {"destination": "/dev", "type": "tmpfs", "source": "tmpfs",
             "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]},
            {"destination": "/dev/pts", "type": "devpts", "source": "devpts",
             "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"]},
            {"destination": "/dev/shm", "type": "tmpfs", "source": "shm",
             "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]},
            {"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue",
             "options": ["nosuid", "noexec", "nodev"]},
            {"destination": "/sys", "type": "sysfs", "source": "sysfs",
             "options": ["nosuid", "noexec", "nodev", "ro"]},
            {"destination": "/run", "type": "tmpfs", "source": "tmpfs",
             "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]},
        ],
        "linux": {
            "resources": {
                "devices": [
                    {"allow": false, "access": "rwm"},
                    device(1, Some(3)),
                    device(1, Some(8)),
                    device(1, Some(7)),
                    device(5, Some(0)),
                    device(1, Some(5)),
                    device(1, Some(9)),
                    device(5, Some(1)),
                    device(136, None),
                    device(5, Some(2)),
                ]
            },
            "cgroupsPath": format!("/{ns}/{id}"),
            "namespaces": [
                {"type": "pid"}, {"type": "ipc"}, {"type": "uts"}, {"type": "mount"},
                {"type": "network"},
            ],
            "maskedPaths": [
                "/proc/acpi", "/proc/asound", "/proc/kcore", "/proc/keys",
                "/proc/latency_stats", "/proc/timer_list", "/proc/timer_stats",
                "/proc/sched_debug", "/sys/firmware", "/proc/scsi",
            ],
            "readonlyPaths": [
                "/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger",
            ],
        },
    })
}

/// containerd's `populateDefaultUnixSpec` exactly, for a container without an id (what
/// `ctr oci spec` prints): no env, only the deny-all device rule.
pub fn bare_default_spec(ns: &str) -> Value {
    let mut s = default_spec(ns, "");
    s["linux"]["cgroupsPath"] = json!(format!("/{ns}"));
    s["linux"]["resources"]["devices"] = json!([{"allow": false, "access": "rwm"}]);
    if let Some(p) = s["process"].as_object_mut() {
        p.remove("env");
        p.remove("args");
    }
    s
}

/// containerd `replaceOrAppendEnvValues`: overrides replace by key or append; a bare
/// `KEY` (no `=`) removes it.
pub fn merge_env(defaults: &[String], overrides: &[String]) -> Vec<String> {
    let mut out: Vec<Option<String>> = defaults.iter().cloned().map(Some).collect();
    let key = |e: &str| e.split_once('=').map_or(e, |(k, _)| k).to_string();
    for o in overrides {
        let k = key(o);
        let pos = out
            .iter()
            .position(|e| e.as_deref().is_some_and(|e| key(e) == k));
        match (o.contains('='), pos) {
            (false, Some(i)) => out[i] = None,
            (false, None) => {}
            (true, Some(i)) => out[i] = Some(o.clone()),
            (true, None) => out.push(Some(o.clone())),
        }
    }
    out.into_iter().flatten().collect()
}

fn env_of(spec: &Value) -> Vec<String> {
    spec["process"]["env"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

/// `oci.WithEnv`.
pub fn with_env(spec: &mut Value, env: &[String]) {
    if env.is_empty() {
        return;
    }
    let merged = merge_env(&env_of(spec), env);
    spec["process"]["env"] = json!(merged);
}

/// `WithImageConfigArgs(image, nil)` without the user part (see [`with_user`]): env is the
/// image's (or the default PATH) with the spec's overrides, args entrypoint+cmd, cwd.
pub fn with_image_config(spec: &mut Value, config: &RunConfig) {
    let image_env = config
        .env
        .clone()
        .filter(|e| !e.is_empty())
        .unwrap_or_else(|| vec![DEFAULT_PATH_ENV.to_string()]);
    let merged = merge_env(&image_env, &env_of(spec));
    spec["process"]["env"] = json!(merged);
    let mut args = config.entrypoint.clone().unwrap_or_default();
    args.extend(config.cmd.clone().unwrap_or_default());
    spec["process"]["args"] = json!(args);
    let cwd = config
        .working_dir
        .clone()
        .filter(|c| !c.is_empty())
        .unwrap_or_else(|| "/".to_string());
    spec["process"]["cwd"] = json!(cwd);
}

/// ctr's `--mount` flag: CSV `type=bind,src=/a,dst=/b,options=rbind:ro`.
pub fn parse_mount(flag: &str) -> Result<Value, Error> {
    let mut m = json!({"destination": "", "type": "", "source": ""});
    for field in flag.split(',') {
        let (k, v) = field
            .split_once('=')
            .ok_or_else(|| Error::MountSyntax(flag.to_string()))?;
        match k {
            "type" => m["type"] = v.into(),
            "source" | "src" => m["source"] = v.into(),
            "destination" | "dst" => m["destination"] = v.into(),
            "options" => m["options"] = json!(v.split(':').collect::<Vec<_>>()),
            other => return Err(Error::MountKey(other.to_string())),
        }
    }
    Ok(m)
}

/// `oci.WithMounts`: appended after the defaults; a mount replaces a default at the same
/// destination (containerd removes duplicates from the default set).
pub fn with_mounts(spec: &mut Value, mounts: Vec<Value>) {
    if mounts.is_empty() {
        return;
    }
    let Some(list) = spec["mounts"].as_array_mut() else {
        return;
    };
    for m in mounts {
        let dest = m["destination"].clone();
        list.retain(|x| x["destination"] != dest);
        list.push(m);
    }
}

/// `--net-host`: the host network namespace, the host's hosts and resolv.conf, HOSTNAME.
pub fn with_host_network(spec: &mut Value, hostname: &str) {
    if let Some(ns) = spec["linux"]["namespaces"].as_array_mut() {
        ns.retain(|n| n["type"] != "network");
    }
    if let Some(list) = spec["mounts"].as_array_mut() {
        for f in ["/etc/hosts", "/etc/resolv.conf"] {
            list.push(json!({"destination": f, "type": "bind", "source": f,
                             "options": ["rbind", "ro"]}));
        }
    }
    with_env(spec, &[format!("HOSTNAME={hostname}")]);
}

/// `oci.WithTTY`: a terminal, and `TERM=xterm` unless set.
pub fn with_tty(spec: &mut Value) {
    spec["process"]["terminal"] = json!(true);
    let env = env_of(spec);
    if !env.iter().any(|e| e.starts_with("TERM=")) {
        with_env(spec, &["TERM=xterm".to_string()]);
    }
}

/// Capability names by number, as containerd's `pkg/cap` knows them (kernel 5.9).
const CAP_NAMES: [&str; 41] = [
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_DAC_READ_SEARCH",
    "CAP_FOWNER",
    "CAP_FSETID",
    "CAP_KILL",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETPCAP",
    "CAP_LINUX_IMMUTABLE",
    "CAP_NET_BIND_SERVICE",
    "CAP_NET_BROADCAST",
    "CAP_NET_ADMIN",
    "CAP_NET_RAW",
    "CAP_IPC_LOCK",
    "CAP_IPC_OWNER",
    "CAP_SYS_MODULE",
    "CAP_SYS_RAWIO",
    "CAP_SYS_CHROOT",
    "CAP_SYS_PTRACE",
    "CAP_SYS_PACCT",
    "CAP_SYS_ADMIN",
    "CAP_SYS_BOOT",
    "CAP_SYS_NICE",
    "CAP_SYS_RESOURCE",
    "CAP_SYS_TIME",
    "CAP_SYS_TTY_CONFIG",
    "CAP_MKNOD",
    "CAP_LEASE",
    "CAP_AUDIT_WRITE",
    "CAP_AUDIT_CONTROL",
    "CAP_SETFCAP",
    "CAP_MAC_OVERRIDE",
    "CAP_MAC_ADMIN",
    "CAP_SYSLOG",
    "CAP_WAKE_ALARM",
    "CAP_BLOCK_SUSPEND",
    "CAP_AUDIT_READ",
    "CAP_PERFMON",
    "CAP_BPF",
    "CAP_CHECKPOINT_RESTORE",
];

/// Our effective capabilities (containerd `cap.Current`: `CapEff` of /proc/self/status).
pub fn current_capabilities() -> Vec<String> {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let bits = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        .unwrap_or(0);
    CAP_NAMES
        .iter()
        .enumerate()
        .filter(|(i, _)| (bits >> i) & 1 == 1)
        .map(|(_, n)| (*n).to_string())
        .collect()
}

/// One device node as a runtime-spec `LinuxDevice` (containerd `oci.DeviceFromPath`:
/// `lstat`, so symlinks are not devices); `None` for anything but char/block devices.
fn device_from_path(path: &Path) -> Option<Value> {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    let md = std::fs::symlink_metadata(path).ok()?;
    let ft = md.file_type();
    let kind = if ft.is_char_device() {
        "c"
    } else if ft.is_block_device() {
        "b"
    } else {
        return None;
    };
    let rdev = md.rdev();
    Some(json!({
        "path": path.display().to_string(),
        "type": kind,
        "major": libc::major(rdev),
        "minor": libc::minor(rdev),
        "fileMode": md.mode() & 0o7777,
        "uid": md.uid(),
        "gid": md.gid(),
    }))
}

/// containerd `getDevices`: the device at `path`, or every device below a directory
/// (sorted walk, skipping pts, shm, fd, mqueue, .lxc, .lxd-mounts, .udev and console).
pub fn devices_at(path: &Path) -> Result<Vec<Value>, Error> {
    fn walk(dir: &Path, out: &mut Vec<Value>) {
        let Ok(rd) = std::fs::read_dir(dir) else {
            return;
        };
        let mut entries: Vec<_> = rd.filter_map(Result::ok).collect();
        entries.sort_by_key(std::fs::DirEntry::file_name);
        for e in entries {
            let name = e.file_name();
            let Ok(ft) = e.file_type() else { continue };
            if ft.is_dir() {
                let skip = ["pts", "shm", "fd", "mqueue", ".lxc", ".lxd-mounts", ".udev"];
                if !skip.iter().any(|s| name == *s) {
                    walk(&e.path(), out);
                }
            } else if name != "console" {
                out.extend(device_from_path(&e.path()));
            }
        }
    }
    if std::fs::metadata(path).is_ok_and(|m| m.is_dir()) {
        let mut out = Vec::new();
        walk(path, &mut out);
        return Ok(out);
    }
    device_from_path(path)
        .map(|d| vec![d])
        .ok_or_else(|| Error::NotADevice(path.display().to_string()))
}

/// containerd `oci.HostDevices`: every device under /dev.
pub fn host_devices() -> Vec<Value> {
    devices_at(Path::new("/dev")).unwrap_or_default()
}

/// ctr's `--device <path>` (containerd `WithDevices(path, "", "rwm")`): the devices and a
/// cgroup rule allowing each.
pub fn with_devices(spec: &mut Value, path: &Path) -> Result<(), Error> {
    for d in devices_at(path)? {
        let rule = json!({"allow": true, "type": d["type"], "major": d["major"],
                          "minor": d["minor"], "access": "rwm"});
        let mut devs = spec["linux"]["devices"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        devs.push(d);
        spec["linux"]["devices"] = Value::Array(devs);
        let mut rules = spec["linux"]["resources"]["devices"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        rules.push(rule);
        spec["linux"]["resources"]["devices"] = Value::Array(rules);
    }
    Ok(())
}

/// ctr's `--privileged`: containerd `WithPrivileged` (all current capabilities, no masked
/// or read-only paths, writable sysfs and cgroupfs, no seccomp/AppArmor/SELinux), then
/// `WithAllDevicesAllowed` and `WithHostDevices`.
pub fn with_privileged(spec: &mut Value, caps: &[String], devices: Vec<Value>) {
    for set in ["bounding", "effective", "permitted"] {
        spec["process"]["capabilities"][set] = json!(caps);
    }
    if let Some(linux) = spec["linux"].as_object_mut() {
        linux.remove("maskedPaths");
        linux.remove("readonlyPaths");
        linux.remove("seccomp");
        linux.remove("mountLabel");
    }
    if let Some(p) = spec["process"].as_object_mut() {
        p.remove("selinuxLabel");
        p.remove("apparmorProfile");
    }
    if let Some(mounts) = spec["mounts"].as_array_mut() {
        for m in mounts {
            if m["type"] == "sysfs" || m["type"] == "cgroup" {
                if let Some(opts) = m["options"].as_array_mut() {
                    for o in opts.iter_mut() {
                        if o == "ro" {
                            *o = json!("rw");
                        }
                    }
                }
            }
        }
    }
    spec["linux"]["resources"]["devices"] = json!([{"allow": true, "access": "rwm"}]);
    if !devices.is_empty() {
        let mut all = spec["linux"]["devices"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        all.extend(devices);
        spec["linux"]["devices"] = Value::Array(all);
    }
}

#[derive(Debug, Clone)]
struct PasswdEntry {
    name: String,
    uid: u32,
    gid: u32,
}

fn read_passwd(rootfs: &Path) -> Vec<PasswdEntry> {
    let text = std::fs::read_to_string(rootfs.join("etc/passwd")).unwrap_or_default();
    text.lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            Some(PasswdEntry {
                name: (*f.first()?).to_string(),
                uid: f.get(2)?.parse().ok()?,
                gid: f.get(3)?.parse().ok()?,
            })
        })
        .collect()
}

/// (name, gid, members) per `/etc/group` line.
fn read_group(rootfs: &Path) -> Vec<(String, u32, Vec<String>)> {
    let text = std::fs::read_to_string(rootfs.join("etc/group")).unwrap_or_default();
    text.lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            let members = f
                .get(3)
                .map(|m| {
                    m.split(',')
                        .filter(|s| !s.is_empty())
                        .map(str::to_string)
                        .collect()
                })
                .unwrap_or_default();
            Some(((*f.first()?).to_string(), f.get(2)?.parse().ok()?, members))
        })
        .collect()
}

/// `oci.WithUser` followed by `WithAdditionalGIDs` (+ `ensureAdditionalGids`), resolving
/// names in `rootfs` (the container's mounted root; `None` when it could not be mounted,
/// then only numeric users work).
pub fn with_user(spec: &mut Value, user: &str, rootfs: Option<&Path>) -> Result<(), Error> {
    let passwd = rootfs.map(read_passwd).unwrap_or_default();
    let groups = rootfs.map(read_group).unwrap_or_default();
    let parts: Vec<&str> = user.split(':').collect();
    let (uid, gid) = match parts.as_slice() {
        [u] => match u.parse::<u32>() {
            Ok(uid) => {
                let gid = passwd.iter().find(|p| p.uid == uid).map_or(0, |p| p.gid);
                (uid, gid)
            }
            Err(_) => {
                let p = passwd
                    .iter()
                    .find(|p| p.name == *u)
                    .ok_or_else(|| Error::NoUser {
                        user: (*u).to_string(),
                    })?;
                (p.uid, p.gid)
            }
        },
        [u, g] => {
            let uid = match u.parse::<u32>() {
                Ok(uid) => uid,
                Err(_) => {
                    passwd
                        .iter()
                        .find(|p| p.name == *u)
                        .ok_or_else(|| Error::NoUser {
                            user: (*u).to_string(),
                        })?
                        .uid
                }
            };
            let gid = match g.parse::<u32>() {
                Ok(gid) => gid,
                Err(_) => {
                    groups
                        .iter()
                        .find(|(n, _, _)| n == g)
                        .ok_or_else(|| Error::NoGroup {
                            group: (*g).to_string(),
                        })?
                        .1
                }
            };
            (uid, gid)
        }
        _ => return Err(Error::BadUser(user.to_string())),
    };
    spec["process"]["user"]["uid"] = json!(uid);
    spec["process"]["user"]["gid"] = json!(gid);
    // Supplementary groups: every group listing the user's name as a member, except the
    // user's own group; then the primary GID first (containerd's ensureAdditionalGids).
    let username = passwd
        .iter()
        .find(|p| p.uid == uid)
        .map(|p| p.name.clone())
        .unwrap_or_else(|| parts[0].to_string());
    let mut gids: Vec<u32> = vec![gid];
    for (name, g, members) in &groups {
        if *name != username && members.contains(&username) && !gids.contains(g) {
            gids.push(*g);
        }
    }
    spec["process"]["user"]["additionalGids"] = json!(gids);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_merge_replaces_appends_and_unsets() {
        let d = vec!["PATH=/bin".to_string(), "A=1".to_string()];
        let o = vec!["A=2".to_string(), "B=3".to_string(), "PATH".to_string()];
        assert_eq!(merge_env(&d, &o), vec!["A=2", "B=3"]);
    }

    #[test]
    fn mount_flag_parses_like_ctr() {
        let m = parse_mount("type=bind,src=/tmp,dst=/data,options=rbind:ro").unwrap();
        assert_eq!(m["source"], "/tmp");
        assert_eq!(m["destination"], "/data");
        assert_eq!(m["options"], json!(["rbind", "ro"]));
        assert!(parse_mount("type=bind,bogus=1").is_err());
        assert!(parse_mount("nokey").is_err());
    }

    #[test]
    fn user_resolves_from_rootfs_files() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("etc")).unwrap();
        std::fs::write(
            dir.path().join("etc/passwd"),
            "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n",
        )
        .unwrap();
        std::fs::write(
            dir.path().join("etc/group"),
            "root:x:0:\nnogroup:x:65534:\nwheel:x:10:nobody\n",
        )
        .unwrap();
        let mut s = default_spec("default", "c1");
        with_user(&mut s, "nobody", Some(dir.path())).unwrap();
        assert_eq!(s["process"]["user"]["uid"], 65534);
        assert_eq!(s["process"]["user"]["additionalGids"], json!([65534, 10]));
        assert!(with_user(&mut s, "ghost", Some(dir.path())).is_err());
        with_user(&mut s, "1000:1000", None).unwrap();
        assert_eq!(s["process"]["user"]["gid"], 1000);
    }

    #[test]
    fn net_host_drops_network_namespace() {
        let mut s = default_spec("default", "c1");
        with_host_network(&mut s, "h");
        let ns = s["linux"]["namespaces"].as_array().unwrap();
        assert!(!ns.iter().any(|n| n["type"] == "network"));
        assert!(env_of(&s).contains(&"HOSTNAME=h".to_string()));
    }
}
