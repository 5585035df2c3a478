//! Where a process's cgroups are: parsing `/proc/<pid>/cgroup` and `/proc/self/mountinfo`.
//!
//! Text in, paths out, so every case is testable with fixture strings.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// One cgroup mount from mountinfo.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CgroupMount {
    /// Root of the mount inside the hierarchy (field 4; `/` unless bind-mounted or namespaced).
    pub root: String,
    pub mountpoint: PathBuf,
    /// `true` for cgroup2, `false` for a v1 hierarchy.
    pub v2: bool,
    /// v1: the controllers (and `name=...`) of the hierarchy, from the super options.
    pub controllers: Vec<String>,
}

/// All cgroup and cgroup2 mounts in a mountinfo text.
pub fn parse_mountinfo(text: &str) -> Vec<CgroupMount> {
    let mut out = Vec::new();
    for line in text.lines() {
        let Some((pre, post)) = line.split_once(" - ") else {
            continue;
        };
        let pre: Vec<&str> = pre.split(' ').collect();
        let post: Vec<&str> = post.split(' ').collect();
        if pre.len() < 5 || post.len() < 3 {
            continue;
        }
        let v2 = match post[0] {
            "cgroup2" => true,
            "cgroup" => false,
            _ => continue,
        };
        let controllers = if v2 {
            Vec::new()
        } else {
            post[2]
                .split(',')
                .filter(|o| !matches!(*o, "rw" | "ro") && !o.starts_with("release_agent="))
                .filter(|o| {
                    // Keep controller names and `name=`; drop mount flags such as
                    // `clone_children`, `noprefix`, `xattr`, `cpuset_v2_mode`.
                    o.starts_with("name=")
                        || !matches!(
                            *o,
                            "clone_children" | "noprefix" | "xattr" | "cpuset_v2_mode" | "none"
                        )
                })
                .map(str::to_string)
                .collect()
        };
        out.push(CgroupMount {
            root: unescape(pre[3]),
            mountpoint: PathBuf::from(unescape(pre[4])),
            v2,
            controllers,
        });
    }
    out
}

/// mountinfo escapes space, tab, newline and backslash as `\ooo`.
fn unescape(s: &str) -> String {
    if !s.contains('\\') {
        return s.to_string();
    }
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 3 < b.len() && b[i + 1..i + 4].iter().all(u8::is_ascii_digit) {
            let v = (b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0');
            out.push(v);
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// One line of `/proc/<pid>/cgroup`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProcCgroup {
    /// Controllers of a v1 hierarchy (`["cpu", "cpuacct"]`, `["name=systemd"]`); empty for the
    /// cgroup2 line `0::/path`.
    pub controllers: Vec<String>,
    pub path: String,
}

/// Parses `/proc/<pid>/cgroup`. `None` on a malformed line.
pub fn parse_proc_cgroup(text: &str) -> Option<Vec<ProcCgroup>> {
    let mut out = Vec::new();
    for line in text.lines().filter(|l| !l.is_empty()) {
        let mut parts = line.splitn(3, ':');
        let (_id, ctrls, path) = (parts.next()?, parts.next()?, parts.next()?);
        out.push(ProcCgroup {
            controllers: ctrls
                .split(',')
                .filter(|c| !c.is_empty())
                .map(str::to_string)
                .collect(),
            path: path.to_string(),
        });
    }
    Some(out)
}

/// Joins a cgroup path seen in `/proc/<pid>/cgroup` onto the mount that shows it, taking the
/// mount's root into account (containerd/cgroups `getCgroupDestination`).
pub fn join_mount(mount: &CgroupMount, cgroup_path: &str) -> PathBuf {
    let rel = Path::new(cgroup_path)
        .strip_prefix(&mount.root)
        .unwrap_or_else(|_| Path::new(cgroup_path.trim_start_matches('/')));
    let rel = rel.strip_prefix("/").unwrap_or(rel);
    if rel.as_os_str().is_empty() {
        mount.mountpoint.clone()
    } else {
        mount.mountpoint.join(rel)
    }
}

/// v1: controller name → cgroup directory of the process, for every mounted hierarchy.
pub fn v1_paths(proc_cgroup: &[ProcCgroup], mounts: &[CgroupMount]) -> BTreeMap<String, PathBuf> {
    let mut out = BTreeMap::new();
    for pc in proc_cgroup.iter().filter(|pc| !pc.controllers.is_empty()) {
        let mount = mounts.iter().find(|m| {
            !m.v2
                && pc
                    .controllers
                    .iter()
                    .all(|c| m.controllers.iter().any(|mc| mc == c))
        });
        if let Some(m) = mount {
            let dir = join_mount(m, &pc.path);
            for c in &pc.controllers {
                out.insert(c.clone(), dir.clone());
            }
        }
    }
    out
}

/// v2: the unified cgroup directory of the process, if a cgroup2 mount exists.
pub fn v2_path(proc_cgroup: &[ProcCgroup], mounts: &[CgroupMount]) -> Option<PathBuf> {
    let line = proc_cgroup.iter().find(|pc| pc.controllers.is_empty())?;
    let mount = mounts.iter().find(|m| m.v2)?;
    Some(join_mount(mount, &line.path))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// This machine's layout: v1 hybrid with an empty cgroup2 at /sys/fs/cgroup/unified.
    const HYBRID_MOUNTINFO: &str = "\
23 1 0:21 / /sys rw,nosuid - sysfs sysfs rw
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu,cpuacct rw,relatime shared:9 - cgroup cgroup rw,cpu,cpuacct
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
39 31 0:36 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,xattr,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw,nsdelegate
50 31 0:40 /docker/abc /mnt/with\\040space rw - cgroup cgroup rw,blkio
";

    const PROC_CGROUP: &str = "\
9:name=systemd:/system.slice/x.service
8:pids:/berth/ctr1
4:memory:/berth/ctr1
2:cpu,cpuacct:/berth/ctr1
5:blkio:/docker/abc/inner
0::/berth/ctr1
";

    #[test]
    fn mountinfo_lists_cgroup_mounts_with_controllers() {
        let m = parse_mountinfo(HYBRID_MOUNTINFO);
        assert_eq!(m.len(), 6);
        assert_eq!(m[0].controllers, vec!["cpu", "cpuacct"]);
        assert_eq!(m[3].controllers, vec!["name=systemd"]);
        assert!(m[4].v2);
        assert_eq!(m[4].mountpoint, Path::new("/sys/fs/cgroup/unified"));
        assert_eq!(m[5].mountpoint, Path::new("/mnt/with space"));
        assert_eq!(m[5].root, "/docker/abc");
    }

    #[test]
    fn v1_paths_per_controller_and_mount_root() {
        let pc = parse_proc_cgroup(PROC_CGROUP).unwrap();
        let p = v1_paths(&pc, &parse_mountinfo(HYBRID_MOUNTINFO));
        assert_eq!(p["memory"], Path::new("/sys/fs/cgroup/memory/berth/ctr1"));
        assert_eq!(p["cpu"], Path::new("/sys/fs/cgroup/cpu,cpuacct/berth/ctr1"));
        assert_eq!(p["cpuacct"], p["cpu"]);
        assert_eq!(
            p["name=systemd"],
            Path::new("/sys/fs/cgroup/systemd/system.slice/x.service")
        );
        // Mount root /docker/abc is stripped from /docker/abc/inner.
        assert_eq!(p["blkio"], Path::new("/mnt/with space/inner"));
        assert!(!p.contains_key("freezer"));
    }

    #[test]
    fn v2_path_uses_the_cgroup2_mount() {
        let pc = parse_proc_cgroup(PROC_CGROUP).unwrap();
        let p = v2_path(&pc, &parse_mountinfo(HYBRID_MOUNTINFO)).unwrap();
        assert_eq!(p, Path::new("/sys/fs/cgroup/unified/berth/ctr1"));
        let unified = "30 23 0:26 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n";
        let pc = parse_proc_cgroup("0::/\n").unwrap();
        assert_eq!(
            v2_path(&pc, &parse_mountinfo(unified)).unwrap(),
            Path::new("/sys/fs/cgroup")
        );
    }

    #[test]
    fn malformed_proc_cgroup_is_rejected() {
        assert!(parse_proc_cgroup("garbage\n").is_none());
    }
}
