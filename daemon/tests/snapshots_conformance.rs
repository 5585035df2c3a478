//! The snapshotter conformance suite (port of containerd's `snapshots/testsuite`), run against
//! every backend with real mounts. A backend is done when this whole file passes for it.
//!
//! Needs root and, for the overlayfs backend, the `overlay` filesystem: a missing one fails
//! loudly, it never skips.

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use daemon::snapshots::mount::{mount_all, unmount_all};
use daemon::snapshots::overlay::UPPERDIR_LABEL;
use daemon::snapshots::{
    Backend, ErrorKind, Info, Kind, Labels, NativeSnapshotter, OverlayConfig, OverlaySnapshotter,
    Snapshotter,
};

// ---------------------------------------------------------------------------------------------
// fstest: declarative filesystem changes and a tree comparison (containerd's continuity/fstest)

#[derive(Clone)]
enum Op {
    Dir(&'static str, u32),
    File(String, Vec<u8>, u32),
    RemoveAll(&'static str),
    Chown(&'static str, u32, u32),
    Link(&'static str, &'static str),
    Symlink(&'static str, &'static str),
    Rename(&'static str, &'static str),
}

fn dir(p: &'static str, mode: u32) -> Op {
    Op::Dir(p, mode)
}
fn file(p: impl Into<String>, content: &[u8], mode: u32) -> Op {
    Op::File(p.into(), content.to_vec(), mode)
}

fn rel(root: &Path, p: &str) -> PathBuf {
    root.join(p.trim_start_matches('/'))
}

fn apply(root: &Path, ops: &[Op]) {
    for op in ops {
        match op {
            Op::Dir(p, mode) => {
                let p = rel(root, p);
                fs::create_dir(&p).unwrap_or_else(|e| panic!("mkdir {}: {e}", p.display()));
                fs::set_permissions(&p, fs::Permissions::from_mode(*mode)).expect("chmod dir");
            }
            Op::File(p, content, mode) => {
                let p = rel(root, p);
                fs::write(&p, content).unwrap_or_else(|e| panic!("write {}: {e}", p.display()));
                fs::set_permissions(&p, fs::Permissions::from_mode(*mode)).expect("chmod file");
            }
            Op::RemoveAll(p) => {
                let p = rel(root, p);
                match fs::symlink_metadata(&p) {
                    Ok(m) if m.is_dir() => fs::remove_dir_all(&p).expect("remove dir"),
                    Ok(_) => fs::remove_file(&p).expect("remove file"),
                    Err(_) => {}
                }
            }
            Op::Chown(p, uid, gid) => {
                std::os::unix::fs::lchown(rel(root, p), Some(*uid), Some(*gid)).expect("chown");
            }
            Op::Link(old, new) => fs::hard_link(rel(root, old), rel(root, new)).expect("link"),
            Op::Symlink(target, p) => {
                std::os::unix::fs::symlink(target, rel(root, p)).expect("symlink");
            }
            Op::Rename(old, new) => {
                let (old, new) = (rel(root, old), rel(root, new));
                match fs::rename(&old, &new) {
                    Ok(()) => {}
                    // overlayfs without redirect_dir refuses to rename a directory that lives in
                    // a lower layer; tools (mv) copy and delete instead, and so do we.
                    Err(e) if e.raw_os_error() == Some(libc::EXDEV) => {
                        daemon::snapshots::fsutil::copy_dir(&old, {
                            fs::create_dir(&new).expect("mkdir rename target");
                            &new
                        })
                        .expect("copy for rename");
                        fs::remove_dir_all(&old).expect("remove renamed dir");
                    }
                    Err(e) => panic!("rename {}: {e}", old.display()),
                }
            }
        }
    }
}

/// Everything about a tree that a layer must reproduce: per path its type, permissions,
/// owner, content or link target.
fn describe(root: &Path) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(p) = stack.pop() {
        let md = fs::symlink_metadata(&p).expect("lstat");
        let name = p
            .strip_prefix(root)
            .expect("under root")
            .display()
            .to_string();
        let ft = md.file_type();
        let what = if ft.is_dir() {
            for e in fs::read_dir(&p).expect("readdir") {
                stack.push(e.expect("entry").path());
            }
            "dir".to_string()
        } else if ft.is_symlink() {
            format!(
                "symlink->{}",
                fs::read_link(&p).expect("readlink").display()
            )
        } else if ft.is_file() {
            format!(
                "file:{:?}",
                String::from_utf8_lossy(&fs::read(&p).expect("read"))
            )
        } else {
            format!("special:{:o}:{}", md.mode() & libc::S_IFMT, md.rdev())
        };
        let mode = if ft.is_symlink() {
            0
        } else {
            md.mode() & 0o7777
        };
        out.insert(
            name,
            format!("{what} mode={mode:o} uid={} gid={}", md.uid(), md.gid()),
        );
    }
    out
}

fn assert_same_tree(expected: &Path, actual: &Path, what: &str) {
    let (e, a) = (describe(expected), describe(actual));
    if e != a {
        let mut diff = String::new();
        for (k, v) in &e {
            match a.get(k) {
                None => diff.push_str(&format!("  missing {k}: {v}\n")),
                Some(av) if av != v => diff.push_str(&format!("  {k}: expected {v}, got {av}\n")),
                _ => {}
            }
        }
        for (k, v) in &a {
            if !e.contains_key(k) {
                diff.push_str(&format!("  extra {k}: {v}\n"));
            }
        }
        panic!("{what}: trees differ:\n{diff}");
    }
}

// ---------------------------------------------------------------------------------------------
// harness

struct Env {
    _tmp: tempfile::TempDir,
    root: PathBuf,
    work: PathBuf,
    backend: &'static str,
}

impl Env {
    fn new(backend: &'static str) -> (Env, Backend) {
        let tmp = tempfile::Builder::new()
            .prefix(&format!("snapshot-suite-{backend}-"))
            .tempdir()
            .expect("tempdir");
        let root = tmp.path().join("root");
        let work = tmp.path().join("work");
        fs::create_dir_all(&root).expect("mkdir root");
        fs::create_dir_all(&work).expect("mkdir work");
        let env = Env {
            _tmp: tmp,
            root,
            work,
            backend,
        };
        let sn = env.open();
        (env, sn)
    }

    fn open(&self) -> Backend {
        open_backend(self.backend, &self.root)
    }

    fn dir(&self, name: &str) -> PathBuf {
        let p = self.work.join(name);
        fs::create_dir_all(&p).expect("mkdir under work");
        p
    }
}

fn open_backend(backend: &str, root: &Path) -> Backend {
    match backend {
        "overlayfs" => {
            let fss = fs::read_to_string("/proc/filesystems").expect("read /proc/filesystems");
            assert!(
                fss.contains("\toverlay\n"),
                "overlayfs is missing from /proc/filesystems: load the `overlay` kernel module (modprobe overlay)"
            );
            Backend::Overlay(
                OverlaySnapshotter::open(root, OverlayConfig::default())
                    .expect("open overlayfs snapshotter"),
            )
        }
        "overlayfs-upperdir-label" => Backend::Overlay(
            OverlaySnapshotter::open(
                root,
                OverlayConfig {
                    upperdir_label: true,
                },
            )
            .expect("open overlayfs snapshotter"),
        ),
        "native" => {
            Backend::Native(NativeSnapshotter::open(root).expect("open native snapshotter"))
        }
        other => panic!("unknown backend {other}"),
    }
}

/// A mounted snapshot, unmounted on drop (even when the test panics).
struct Mounted(PathBuf);

impl Mounted {
    fn new(mounts: &[daemon::snapshots::Mount], target: &Path) -> Mounted {
        mount_all(mounts, target)
            .unwrap_or_else(|e| panic!("mount {mounts:?} on {}: {e}", target.display()));
        Mounted(target.to_path_buf())
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        if let Err(e) = unmount_all(&self.0) {
            eprintln!("unmount {}: {e}", self.0.display());
        }
    }
}

fn no_labels() -> Labels {
    Labels::new()
}

fn labels(kv: &[(&str, &str)]) -> Labels {
    kv.iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// Prepare `key` on `parent`, mount it, apply `ops`, unmount, commit as `name`.
fn layer(env: &Env, sn: &Backend, name: &str, parent: &str, ops: &[Op]) {
    let key = format!("{name}-active");
    let mounts = sn.prepare(&key, parent, no_labels()).expect("prepare");
    {
        let _m = Mounted::new(&mounts, &env.dir(&key));
        apply(&env.work.join(&key), ops);
    }
    sn.commit(name, &key, no_labels()).expect("commit");
}

/// containerd's checkSnapshots: a chain of layers, each checked through a view against the
/// same changes applied to one flat directory.
fn check_chain(env: &Env, sn: &Backend, layers: &[Vec<Op>]) {
    check_chain_prefixed(env, sn, "", layers);
}

fn check_chain_prefixed(env: &Env, sn: &Backend, prefix: &str, layers: &[Vec<Op>]) {
    let flat = env.dir(&format!("{prefix}flat"));
    let mut parent = String::new();
    for (i, ops) in layers.iter().enumerate() {
        let name = format!("{prefix}layer-{i}");
        layer(env, sn, &name, &parent, ops);
        apply(&flat, ops);
        let view = format!("{name}-view");
        let mounts = sn.view(&view, &name, no_labels()).expect("view");
        {
            let target = env.dir(&view);
            let _m = Mounted::new(&mounts, &target);
            assert_same_tree(&flat, &target, &format!("{name} seen through a view"));
        }
        sn.remove(&view).expect("remove view");
        parent = name;
    }
}

macro_rules! conformance {
    ($($backend:ident => $name:literal),* $(,)?) => {$(
        mod $backend {
            use daemon::snapshots::Snapshotter as _;
            macro_rules! case {
                ($t:ident) => {
                    #[test]
                    fn $t() {
                        let (env, sn) = super::Env::new($name);
                        super::$t(&env, &sn);
                        sn.close().expect("close");
                    }
                };
            }
            case!(basic);
            case!(stat_active);
            case!(stat_committed);
            case!(transitivity);
            case!(prepare_view_same_key_fails);
            case!(update_labels_and_timestamps);
            case!(remove_and_reuse_keys);
            case!(walk_with_filters);
            case!(layer_file_update);
            case!(remove_directory_in_lower_layer);
            case!(chown);
            case!(directory_permission_on_commit);
            case!(remove_intermediate_snapshot_fails);
            case!(deleted_files_in_child_snapshot);
            case!(move_file_from_lower_layer);
            case!(rename);
            case!(view_is_readonly);
            case!(stat_in_walk);
            case!(close_twice_then_calls_fail);
            case!(root_permission);
            case!(deep_chain_128_layers);
            case!(error_kinds);
            case!(usage_active_and_committed);
            case!(cleanup_removes_unreferenced_dirs);
            case!(metadata_survives_reopen);
            case!(symlinks_hardlinks_and_devices_across_layers);
            case!(concurrent_chains_from_many_threads);
        }
    )*};
}

conformance!(overlayfs => "overlayfs", native => "native");

// ---------------------------------------------------------------------------------------------
// cases (containerd's names in the comments)

/// checkSnapshotterBasic
fn basic(env: &Env, sn: &Backend) {
    let initial = vec![
        file("/foo", b"foo\n", 0o777),
        dir("/a", 0o755),
        dir("/a/b", 0o755),
        dir("/a/b/c", 0o755),
    ];
    let diff = vec![
        file("/bar", b"bar\n", 0o777),
        file("/foo", b"bar\n", 0o777),
        Op::RemoveAll("/a/b"),
    ];

    let preparing = env.dir("preparing");
    let mounts = sn.prepare("preparing", "", no_labels()).expect("prepare");
    assert!(!mounts.is_empty(), "expected mounts");
    {
        let _m = Mounted::new(&mounts, &preparing);
        apply(&preparing, &initial);
    }
    sn.commit("committed", "preparing", no_labels())
        .expect("commit");
    let si = sn.stat("committed").expect("stat committed");
    assert_eq!(si.parent, "");
    assert_eq!(si.kind, Kind::Committed);
    assert_eq!(
        sn.stat("preparing").expect_err("gone after commit").kind(),
        ErrorKind::NotFound
    );

    let next = env.dir("nextlayer");
    let mounts = sn
        .prepare("nextlayer", "committed", no_labels())
        .expect("prepare next");
    {
        let _m = Mounted::new(&mounts, &next);
        let expect = env.dir("expect-initial");
        apply(&expect, &initial);
        assert_same_tree(&expect, &next, "next layer before changes");
        apply(&next, &diff);
    }
    let ni = sn.stat("nextlayer").expect("stat next");
    assert_eq!(ni.parent, "committed");
    assert_eq!(ni.kind, Kind::Active);
    sn.commit("committed-next", "nextlayer", no_labels())
        .expect("commit next");
    let si2 = sn.stat("committed-next").expect("stat committed-next");
    assert_eq!(si2.parent, "committed");
    assert_eq!(si2.kind, Kind::Committed);
    assert!(sn.stat("nextlayer").is_err());

    let mut walked = HashMap::new();
    sn.walk(&mut |i| {
        walked.insert(i.name.clone(), i.clone());
        Ok(())
    })
    .expect("walk");
    assert_eq!(walked.get("committed"), Some(&si));
    assert_eq!(walked.get("committed-next"), Some(&si2));

    let nextnext = env.dir("nextnextlayer");
    let mounts = sn
        .view("nextnextlayer", "committed-next", no_labels())
        .expect("view");
    {
        let _m = Mounted::new(&mounts, &nextnext);
        let expect = env.dir("expect-both");
        apply(&expect, &initial);
        apply(&expect, &diff);
        assert_same_tree(&expect, &nextnext, "view of two layers");
    }
    sn.remove("nextnextlayer").expect("remove view");
    let err = sn
        .remove("committed")
        .expect_err("remove parent of committed-next");
    assert_eq!(err.kind(), ErrorKind::FailedPrecondition);
    assert!(err.to_string().contains("remove"), "{err}");
    sn.remove("committed-next").expect("remove committed-next");
    sn.remove("committed").expect("remove committed");
}

/// checkSnapshotterStatActive
fn stat_active(env: &Env, sn: &Backend) {
    let p = env.dir("preparing");
    let mounts = sn.prepare("preparing", "", no_labels()).expect("prepare");
    let _m = Mounted::new(&mounts, &p);
    fs::write(p.join("foo"), "foo\n").expect("write");
    let si = sn.stat("preparing").expect("stat");
    assert_eq!(si.name, "preparing");
    assert_eq!(si.kind, Kind::Active);
    assert_eq!(si.parent, "");
}

/// checkSnapshotterStatCommitted
fn stat_committed(env: &Env, sn: &Backend) {
    let p = env.dir("preparing");
    let mounts = sn.prepare("preparing", "", no_labels()).expect("prepare");
    {
        let _m = Mounted::new(&mounts, &p);
        fs::write(p.join("foo"), "foo\n").expect("write");
    }
    sn.commit("committed", "preparing", no_labels())
        .expect("commit");
    let si = sn.stat("committed").expect("stat");
    assert_eq!(si.name, "committed");
    assert_eq!(si.kind, Kind::Committed);
    assert_eq!(si.parent, "");
}

/// checkSnapshotterTransitivity
fn transitivity(env: &Env, sn: &Backend) {
    layer(env, sn, "snapA", "", &[file("/foo", b"foo\n", 0o777)]);
    layer(
        env,
        sn,
        "snapB",
        "snapA",
        &[file("/foo", b"foo bar\n", 0o777)],
    );
    let a = sn.stat("snapA").expect("stat A");
    let b = sn.stat("snapB").expect("stat B");
    let pb = sn.stat(&b.parent).expect("stat parent of B");
    assert_eq!(a.parent, "");
    assert_eq!(b.parent, "snapA");
    assert_eq!(pb.parent, "");
}

/// checkSnapshotterPrepareView
fn prepare_view_same_key_fails(env: &Env, sn: &Backend) {
    layer(env, sn, "snapA", "", &[]);
    sn.prepare("newlayer", "snapA", no_labels())
        .expect("prepare");
    assert_eq!(
        sn.view("newlayer", "snapA", no_labels())
            .expect_err("dup")
            .kind(),
        ErrorKind::AlreadyExists
    );
    sn.prepare("prepLayer", "snapA", no_labels())
        .expect("prepare");
    assert_eq!(
        sn.prepare("prepLayer", "snapA", no_labels())
            .expect_err("dup")
            .kind(),
        ErrorKind::AlreadyExists
    );
    sn.view("viewLayer", "snapA", no_labels()).expect("view");
    assert_eq!(
        sn.view("viewLayer", "snapA", no_labels())
            .expect_err("dup")
            .kind(),
        ErrorKind::AlreadyExists
    );
}

/// baseTestSnapshots
fn base_snapshots(sn: &Backend) {
    sn.prepare("c1-a", "", no_labels()).expect("prepare c1-a");
    sn.commit("c1", "c1-a", no_labels()).expect("commit c1");
    sn.prepare("c2-a", "c1", no_labels()).expect("prepare c2-a");
    sn.commit("c2", "c2-a", no_labels()).expect("commit c2");
    sn.prepare("a1", "c2", no_labels()).expect("prepare a1");
    sn.prepare("a2", "", no_labels()).expect("prepare a2");
    sn.view("v1", "c2", no_labels()).expect("view v1");
    sn.view("v2", "", no_labels()).expect("view v2");
}

fn without_upperdir(mut l: Labels) -> Labels {
    l.remove(UPPERDIR_LABEL);
    l
}

/// checkUpdate
fn update_labels_and_timestamps(_env: &Env, sn: &Backend) {
    let t1 = SystemTime::now();
    base_snapshots(sn);
    let t2 = SystemTime::now();
    for (name, kind, parent) in [
        ("c1", Kind::Committed, ""),
        ("c2", Kind::Committed, "c1"),
        ("a1", Kind::Active, "c2"),
        ("a2", Kind::Active, ""),
        ("v1", Kind::View, "c2"),
        ("v2", Kind::View, ""),
    ] {
        let mut st = sn.stat(name).expect("stat");
        assert!(
            st.created >= t1 && st.created <= t2,
            "{name}: created {:?} not in [{t1:?}, {t2:?}]",
            st.created
        );
        assert_eq!(
            st.created, st.updated,
            "{name}: updated must equal created before any update"
        );
        assert_eq!(
            (st.kind, st.parent.as_str(), st.name.as_str()),
            (kind, parent, name)
        );
        let created = st.created;

        let expected = labels(&[
            ("l1", "v1"),
            ("l2", "v2"),
            ("l3", "v3"),
            ("containerd.io/gc.root", "root"),
        ]);
        st.parent = "doesnotexist".into();
        st.labels = expected.clone();
        let u1 = SystemTime::now();
        let st2 = sn.update(&st, &[]).expect("update all labels");
        let u2 = SystemTime::now();
        assert_eq!(st2.created, created, "{name}: created changed");
        assert!(
            st2.updated >= u1 && st2.updated <= u2,
            "{name}: updated not refreshed"
        );
        assert_eq!(
            (st2.kind, st2.parent.as_str(), st2.name.as_str()),
            (kind, parent, name)
        );
        assert_eq!(without_upperdir(st2.labels.clone()), expected);

        let mut st3 = st2.clone();
        st3.labels = labels(&[("l1", "updated"), ("l4", "v4")]);
        let st3 = sn
            .update(&st3, &["labels.l1".into(), "labels.l2".into()])
            .expect("update by fieldpath");
        assert_eq!(
            without_upperdir(st3.labels.clone()),
            labels(&[
                ("l1", "updated"),
                ("l3", "v3"),
                ("containerd.io/gc.root", "root")
            ])
        );

        let mut st4 = st3.clone();
        st4.labels = labels(&[("l4", "v4"), ("containerd.io/gc.root", "root")]);
        let st4 = sn.update(&st4, &["labels".into()]).expect("update labels");
        assert_eq!(
            without_upperdir(st4.labels.clone()),
            labels(&[("l4", "v4"), ("containerd.io/gc.root", "root")])
        );
        assert_eq!(
            without_upperdir(sn.stat(name).expect("stat").labels),
            without_upperdir(st4.labels.clone())
        );

        // An empty value deletes the label (containerd's WriteLabels).
        let mut st4b = st4.clone();
        st4b.labels.insert("l4".into(), String::new());
        let st4b = sn
            .update(&st4b, &["labels.l4".into()])
            .expect("update to empty");
        assert!(
            !st4b.labels.contains_key("l4"),
            "{name}: empty label value removes the label"
        );
        let st4 = sn.update(&st4, &["labels".into()]).expect("restore labels");

        let mut st5 = st4.clone();
        st5.parent = "doesnotexist".into();
        let err = sn
            .update(&st5, &["parent".into()])
            .expect_err("immutable field");
        assert_eq!(err.kind(), ErrorKind::InvalidArgument, "{err}");
    }
    let missing = Info {
        name: "nope".into(),
        ..sn.stat("c1").expect("stat")
    };
    assert_eq!(
        sn.update(&missing, &[]).expect_err("missing").kind(),
        ErrorKind::NotFound
    );
}

/// checkRemove
fn remove_and_reuse_keys(_env: &Env, sn: &Backend) {
    sn.prepare("committed-a", "", no_labels()).expect("prepare");
    sn.commit("committed-1", "committed-a", no_labels())
        .expect("commit");
    sn.prepare("reuse-1", "committed-1", no_labels())
        .expect("prepare reuse-1");
    sn.remove("reuse-1").expect("remove reuse-1");
    sn.view("reuse-1", "committed-1", no_labels())
        .expect("view reuse-1");
    sn.remove("reuse-1").expect("remove view reuse-1");
    sn.prepare("reuse-1", "", no_labels())
        .expect("prepare reuse-1 again");
    sn.remove("committed-1").expect("remove committed-1");
    sn.commit("committed-1", "reuse-1", no_labels())
        .expect("commit under the reused name");
    assert_eq!(
        sn.remove("reuse-1").expect_err("gone").kind(),
        ErrorKind::NotFound
    );
}

/// checkWalk (containerd's filter strings as predicates; the filter parser lives above)
fn walk_with_filters(_env: &Env, sn: &Backend) {
    let root = ("containerd.io/gc.root", "check-walk");
    let opt = || labels(&[root]);
    sn.prepare("a-np", "", opt()).expect("a-np");
    sn.prepare("p-tmp", "", opt()).expect("p-tmp");
    sn.commit("p", "p-tmp", opt()).expect("p");
    sn.prepare("a", "p", opt()).expect("a");
    sn.view("v", "p", opt()).expect("v");
    sn.prepare("p-wl-tmp", "", opt()).expect("p-wl-tmp");
    sn.commit("p-wl", "p-wl-tmp", labels(&[("l", "1"), root]))
        .expect("p-wl");
    sn.prepare("a-wl", "p-wl", labels(&[("l", "2"), root]))
        .expect("a-wl");
    sn.view("v-wl", "p-wl", labels(&[("l", "3"), root]))
        .expect("v-wl");
    sn.prepare("a-np-wl", "", labels(&[("l", "2"), root]))
        .expect("a-np-wl");

    let gc = |i: &Info| i.labels.get(root.0).map(String::as_str) == Some(root.1);
    type Pred = Box<dyn Fn(&Info) -> bool>;
    let cases: Vec<(&[&str], Pred)> = vec![
        (
            &["a-np", "p", "a", "v", "p-wl", "a-wl", "v-wl", "a-np-wl"],
            Box::new(gc),
        ),
        (
            &["a-np", "a", "a-wl", "a-np-wl"],
            Box::new(move |i| i.kind == Kind::Active && gc(i)),
        ),
        (
            &["v", "v-wl"],
            Box::new(move |i| i.kind == Kind::View && gc(i)),
        ),
        (
            &["p", "p-wl"],
            Box::new(move |i| i.kind == Kind::Committed && gc(i)),
        ),
        (
            &["p", "a-np-wl"],
            Box::new(|i| i.name == "p" || i.name == "a-np-wl"),
        ),
        (
            &["a-wl"],
            Box::new(|i| i.name == "a-wl" && i.labels.contains_key("l")),
        ),
        (&["a", "v"], Box::new(|i| i.parent == "p")),
        (
            &["a", "v", "a-wl", "v-wl"],
            Box::new(move |i| !i.parent.is_empty() && gc(i)),
        ),
        (
            &["p-wl", "a-wl", "v-wl", "a-np-wl"],
            Box::new(|i| i.labels.contains_key("l")),
        ),
        (
            &["a-wl", "a-np-wl"],
            Box::new(|i| i.labels.get("l").map(String::as_str) == Some("2")),
        ),
    ];
    for (n, (want, pred)) in cases.iter().enumerate() {
        let mut got: Vec<String> = sn
            .list(pred.as_ref())
            .expect("list")
            .into_iter()
            .map(|i| i.name)
            .collect();
        got.sort();
        let mut want: Vec<String> = want.iter().map(ToString::to_string).collect();
        want.sort();
        assert_eq!(got, want, "walk case {n}");
    }
}

/// checkLayerFileUpdate (docker#21555), run across second boundaries like containerd
fn layer_file_update(env: &Env, sn: &Backend) {
    for i in 0..3 {
        let prefix = format!("r{i}-");
        let l1 = vec![
            dir("/etc", 0o700),
            file("/etc/hosts", b"mydomain 10.0.0.1", 0o644),
            file("/etc/profile", b"PATH=/usr/bin", 0o644),
        ];
        let l2 = vec![
            file("/etc/hosts", b"mydomain 10.0.0.2", 0o644),
            file("/etc/profile", b"PATH=/usr/bin", 0o666),
            dir("/root", 0o700),
            file("/root/.bashrc", b"PATH=/usr/sbin:/usr/bin", 0o644),
        ];
        check_chain_prefixed(env, sn, &prefix, &[l1, l2]);
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock");
        std::thread::sleep(std::time::Duration::from_nanos(u64::from(
            1_000_000_000 - now.subsec_nanos(),
        )));
    }
}

/// checkRemoveDirectoryInLowerLayer (docker#25244)
fn remove_directory_in_lower_layer(env: &Env, sn: &Backend) {
    check_chain(
        env,
        sn,
        &[
            vec![dir("/lib", 0o700), file("/lib/hidden", b"", 0o644)],
            vec![
                Op::RemoveAll("/lib"),
                dir("/lib", 0o700),
                file("/lib/not-hidden", b"", 0o644),
            ],
            vec![file("/lib/newfile", b"", 0o644)],
        ],
    );
}

/// checkChown (docker#20240, #24913, #28391)
fn chown(env: &Env, sn: &Backend) {
    check_chain(
        env,
        sn,
        &[
            vec![
                dir("/opt", 0o700),
                dir("/opt/a", 0o700),
                dir("/opt/a/b", 0o700),
                file("/opt/a/b/file.txt", b"hello", 0o644),
            ],
            vec![
                Op::Chown("/opt", 1, 1),
                Op::Chown("/opt/a", 1, 1),
                Op::Chown("/opt/a/b", 1, 1),
                Op::Chown("/opt/a/b/file.txt", 1, 1),
            ],
        ],
    );
}

/// checkDirectoryPermissionOnCommit (docker#27298)
fn directory_permission_on_commit(env: &Env, sn: &Backend) {
    check_chain(
        env,
        sn,
        &[
            vec![
                dir("/dir1", 0o700),
                dir("/dir2", 0o700),
                dir("/dir3", 0o700),
                dir("/dir4", 0o700),
                file("/dir4/f1", b"...", 0o644),
                dir("/dir5", 0o700),
                file("/dir5/f1", b"...", 0o644),
                Op::Chown("/dir1", 1, 1),
                Op::Chown("/dir2", 1, 1),
                Op::Chown("/dir3", 1, 1),
                Op::Chown("/dir5", 1, 1),
                Op::Chown("/dir5/f1", 1, 1),
            ],
            vec![
                Op::Chown("/dir2", 0, 0),
                Op::RemoveAll("/dir3"),
                Op::Chown("/dir4", 1, 1),
                Op::Chown("/dir4/f1", 1, 1),
            ],
            vec![
                dir("/dir3", 0o700),
                Op::Chown("/dir3", 1, 1),
                Op::RemoveAll("/dir5"),
                dir("/dir5", 0o700),
                Op::Chown("/dir5", 1, 1),
            ],
        ],
    );
}

/// checkRemoveIntermediateSnapshot
fn remove_intermediate_snapshot_fails(env: &Env, sn: &Backend) {
    layer(env, sn, "committed-base", "", &[]);
    sn.prepare("intermediate", "committed-base", no_labels())
        .expect("prepare");
    sn.commit("committed-inter", "intermediate", no_labels())
        .expect("commit");
    sn.prepare("toplayer", "committed-inter", no_labels())
        .expect("prepare top");
    let err = sn
        .remove("committed-inter")
        .expect_err("intermediate removal must fail");
    assert_eq!(err.kind(), ErrorKind::FailedPrecondition);
    assert!(
        err.to_string().contains("toplayer"),
        "error names the child: {err}"
    );
    sn.remove("toplayer").expect("remove top");
    sn.remove("committed-inter").expect("remove inter");
    sn.remove("committed-base").expect("remove base");
}

/// checkDeletedFilesInChildSnapshot
fn deleted_files_in_child_snapshot(env: &Env, sn: &Backend) {
    check_chain(
        env,
        sn,
        &[
            vec![
                file("/foo", b"foo\n", 0o777),
                file("/foobar", b"foobar\n", 0o777),
            ],
            vec![Op::RemoveAll("/foobar")],
            vec![],
        ],
    );
}

/// checkFileFromLowerLayer
fn move_file_from_lower_layer(env: &Env, sn: &Backend) {
    check_chain(
        env,
        sn,
        &[
            vec![
                dir("/dir1", 0o700),
                file("/dir1/f1", b"Hello", 0o644),
                dir("/dir2", 0o700),
                file("/dir2/f2", b"...", 0o644),
            ],
            vec![
                dir("/dir3", 0o700),
                file("/dir3/f1", b"Hello", 0o644),
                Op::RemoveAll("/dir1"),
                Op::Link("/dir2/f2", "/dir3/f2"),
                Op::RemoveAll("/dir2/f2"),
            ],
        ],
    );
}

/// checkRename (containerd skips it on some kernels; this kernel runs it)
fn rename(env: &Env, sn: &Backend) {
    check_chain(
        env,
        sn,
        &[
            vec![
                dir("/dir1", 0o700),
                dir("/somefiles", 0o700),
                file("/somefiles/f1", b"was here first!", 0o644),
                file("/somefiles/f2", b"nothing interesting", 0o644),
            ],
            vec![
                Op::Rename("/dir1", "/dir2"),
                file("/somefiles/f1-overwrite", b"new content 1", 0o644),
                Op::Rename("/somefiles/f1-overwrite", "/somefiles/f1"),
                Op::Rename("/somefiles/f2", "/somefiles/f3"),
            ],
        ],
    );
}

/// checkSnapshotterViewReadonly
fn view_is_readonly(env: &Env, sn: &Backend) {
    layer(env, sn, "committed", "", &[file("/f", b"x", 0o644)]);
    for (view, parent) in [("view", "committed"), ("empty-view", "")] {
        let m = sn.view(view, parent, no_labels()).expect("view");
        let target = env.dir(&format!("{view}-mount"));
        {
            let _m = Mounted::new(&m, &target);
            let err = fs::write(target.join("testfile"), "testcontent")
                .expect_err("write into a view must fail");
            assert_eq!(err.raw_os_error(), Some(libc::EROFS), "{err}");
        }
        sn.remove(view).expect("remove view");
    }
    sn.remove("committed").expect("remove committed");
}

/// checkStatInWalk
fn stat_in_walk(env: &Env, sn: &Backend) {
    layer(env, sn, "siw-c1", "", &[]);
    layer(env, sn, "siw-c2", "siw-c1", &[]);
    sn.prepare("siw-a1", "siw-c2", labels(&[("x", "y")]))
        .expect("prepare");
    sn.view("siw-v1", "siw-c2", no_labels()).expect("view");
    let mut seen = 0;
    sn.walk(&mut |i| {
        let again = sn.stat(&i.name)?;
        assert_eq!(&again, i, "stat during walk differs");
        seen += 1;
        Ok(())
    })
    .expect("walk");
    assert_eq!(seen, 4);
}

/// closeTwice, plus: every call after close fails with a clear error
fn close_twice_then_calls_fail(_env: &Env, sn: &Backend) {
    sn.prepare("closeTwice-prepare", "", no_labels())
        .expect("prepare");
    sn.commit("closeTwice", "closeTwice-prepare", no_labels())
        .expect("commit");
    sn.remove("closeTwice").expect("remove");
    sn.close().expect("first close");
    sn.close().expect("second close");
    let err = sn.stat("anything").expect_err("stat after close");
    assert_eq!(err.kind(), ErrorKind::FailedPrecondition);
    assert!(err.to_string().contains("closed"), "{err}");
}

/// checkRootPermission
fn root_permission(env: &Env, sn: &Backend) {
    let p = env.dir("preparing");
    let mounts = sn.prepare("preparing", "", no_labels()).expect("prepare");
    let _m = Mounted::new(&mounts, &p);
    let mode = fs::metadata(&p).expect("stat").mode() & 0o777;
    assert_eq!(
        mode, 0o755,
        "root of a fresh snapshot must be 0755, got {mode:o}"
    );
}

/// check128LayersMount: 128 layers stacked, compared at each step with a flat directory
fn deep_chain_128_layers(env: &Env, sn: &Backend) {
    let mut appliers = vec![vec![
        file("/bottom", b"way at the bottom\n", 0o777),
        file("/overwriteme", b"FIRST!\n", 0o777),
        dir("/ADDHERE", 0o755),
        dir("/ONLYME", 0o755),
        file("/ONLYME/bottom", b"bye!\n", 0o777),
    ]];
    for i in 1..=127 {
        appliers.push(vec![
            file("/overwriteme", format!("{i} WAS HERE!\n").as_bytes(), 0o777),
            file(format!("/ADDHERE/file-{i}"), b"same\n", 0o755),
            Op::RemoveAll("/ONLYME"),
            dir("/ONLYME", 0o755),
            file(format!("/ONLYME/file-{i}"), b"only me!\n", 0o777),
        ]);
    }
    let flat = env.dir("flat");
    let mut parent = String::new();
    for (i, ops) in appliers.iter().enumerate() {
        let key = format!("prepare-layer-{i}");
        let preparing = env.dir(&key);
        let mounts = sn.prepare(&key, &parent, no_labels()).expect("prepare");
        {
            let _m = Mounted::new(&mounts, &preparing);
            assert_same_tree(&flat, &preparing, &format!("layer {i} before apply"));
            apply(&flat, ops);
            apply(&preparing, ops);
            assert_same_tree(&flat, &preparing, &format!("layer {i} after apply"));
        }
        parent = format!("committed-{i}");
        sn.commit(&parent, &key, no_labels()).expect("commit");
    }
    let view = env.dir("fullview");
    let mounts = sn.view("fullview", &parent, no_labels()).expect("view");
    if env.backend == "overlayfs" {
        let lower = mounts[0]
            .options
            .iter()
            .find(|o| o.starts_with("lowerdir="))
            .expect("lowerdir option");
        assert_eq!(
            lower.split(':').count(),
            128,
            "a 128-layer view stacks 128 lowerdirs"
        );
    }
    let _m = Mounted::new(&mounts, &view);
    assert_same_tree(&flat, &view, "full view of 128 layers");
}

/// berth: the error classes the gRPC layer maps, one per precondition
fn error_kinds(env: &Env, sn: &Backend) {
    layer(env, sn, "base", "", &[]);
    sn.prepare("active", "base", no_labels()).expect("prepare");
    sn.view("view", "base", no_labels()).expect("view");

    let cases: Vec<(&str, daemon::snapshots::Error, ErrorKind)> = vec![
        (
            "stat missing",
            sn.stat("missing").unwrap_err(),
            ErrorKind::NotFound,
        ),
        (
            "usage missing",
            sn.usage("missing").unwrap_err(),
            ErrorKind::NotFound,
        ),
        (
            "mounts missing",
            sn.mounts("missing").unwrap_err(),
            ErrorKind::NotFound,
        ),
        (
            "remove missing",
            sn.remove("missing").unwrap_err(),
            ErrorKind::NotFound,
        ),
        (
            "prepare on missing parent",
            sn.prepare("x", "missing", no_labels()).unwrap_err(),
            ErrorKind::NotFound,
        ),
        (
            "prepare on active parent",
            sn.prepare("x", "active", no_labels()).unwrap_err(),
            ErrorKind::InvalidArgument,
        ),
        (
            "view of active",
            sn.view("x", "active", no_labels()).unwrap_err(),
            ErrorKind::InvalidArgument,
        ),
        (
            "prepare existing key",
            sn.prepare("base", "", no_labels()).unwrap_err(),
            ErrorKind::AlreadyExists,
        ),
        (
            "commit a view",
            sn.commit("c", "view", no_labels()).unwrap_err(),
            ErrorKind::FailedPrecondition,
        ),
        (
            "commit a committed",
            sn.commit("c", "base", no_labels()).unwrap_err(),
            ErrorKind::FailedPrecondition,
        ),
        (
            "commit onto existing name",
            sn.commit("base", "active", no_labels()).unwrap_err(),
            ErrorKind::AlreadyExists,
        ),
        (
            "mounts of committed",
            sn.mounts("base").unwrap_err(),
            ErrorKind::FailedPrecondition,
        ),
        (
            "remove with children",
            sn.remove("base").unwrap_err(),
            ErrorKind::FailedPrecondition,
        ),
        (
            "empty key",
            sn.prepare("", "", no_labels()).unwrap_err(),
            ErrorKind::InvalidArgument,
        ),
    ];
    for (what, err, kind) in cases {
        assert_eq!(err.kind(), kind, "{what}: {err}");
    }
    // Failed creates leave nothing behind: the key is free and no stray directory exists.
    sn.prepare("x", "", no_labels())
        .expect("x is free after the failed attempts");
    // Commit twice: the second finds the key gone.
    sn.commit("c1", "active", no_labels()).expect("commit");
    assert_eq!(
        sn.commit("c2", "active", no_labels()).unwrap_err().kind(),
        ErrorKind::NotFound
    );
    let snaps = env.root.join("snapshots");
    let entries: Vec<String> = fs::read_dir(&snaps)
        .expect("read")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        entries.iter().all(|e| !e.starts_with("new-")),
        "temporary dirs left: {entries:?}"
    );
}

/// berth: usage is walked for active snapshots and cached at commit
fn usage_active_and_committed(env: &Env, sn: &Backend) {
    let p = env.dir("u");
    let mounts = sn.prepare("u", "", no_labels()).expect("prepare");
    {
        let _m = Mounted::new(&mounts, &p);
        fs::write(p.join("big"), vec![7u8; 256 * 1024]).expect("write");
        fs::create_dir(p.join("d")).expect("mkdir");
        fs::write(p.join("d/small"), b"x").expect("write");
        fs::hard_link(p.join("big"), p.join("big-link")).expect("link");
    }
    let active = sn.usage("u").expect("usage active");
    // root dir, big (hard-linked once), d, d/small
    assert_eq!(active.inodes, 4, "{active:?}");
    assert!(active.size >= 256 * 1024, "{active:?}");
    sn.commit("uc", "u", no_labels()).expect("commit");
    let committed = sn.usage("uc").expect("usage committed");
    assert_eq!(
        committed, active,
        "commit caches the usage measured at commit"
    );

    let q = env.dir("u2");
    let mounts = sn.prepare("u2", "uc", no_labels()).expect("prepare child");
    {
        let _m = Mounted::new(&mounts, &q);
        fs::write(q.join("new"), vec![1u8; 64 * 1024]).expect("write");
    }
    let child = sn.usage("u2").expect("usage child");
    if env.backend == "overlayfs" {
        // Only the upper layer counts: root + new.
        assert_eq!(child.inodes, 2, "{child:?}");
    } else {
        assert_eq!(child.inodes, 5, "native copies the parent: {child:?}");
    }
}

/// berth: cleanup reclaims directories no metadata refers to (crash leftovers)
fn cleanup_removes_unreferenced_dirs(env: &Env, sn: &Backend) {
    layer(env, sn, "keep", "", &[file("/f", b"kept", 0o644)]);
    let snaps = env.root.join("snapshots");
    for stray in ["999", "new-123", "rm-9"] {
        fs::create_dir_all(snaps.join(stray).join("fs")).expect("stray dir");
    }
    sn.cleanup().expect("cleanup");
    let left: Vec<String> = fs::read_dir(&snaps)
        .expect("read")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        left.len(),
        1,
        "only the kept snapshot's dir survives: {left:?}"
    );
    let v = env.dir("v");
    let m = sn.view("v", "keep", no_labels()).expect("view");
    let _m = Mounted::new(&m, &v);
    assert_eq!(fs::read(v.join("f")).expect("read"), b"kept");
}

/// berth: metadata and content persist across close and reopen
fn metadata_survives_reopen(env: &Env, sn: &Backend) {
    layer(env, sn, "persist", "", &[file("/f", b"persisted", 0o600)]);
    sn.prepare("persist-active", "persist", labels(&[("k", "v")]))
        .expect("prepare");
    let before = sn.stat("persist-active").expect("stat");
    sn.close().expect("close");
    let sn2 = env.open();
    assert_eq!(
        sn2.stat("persist-active").expect("stat after reopen"),
        before
    );
    let m = sn2.mounts("persist-active").expect("mounts after reopen");
    let t = env.dir("reopened");
    {
        let _m = Mounted::new(&m, &t);
        assert_eq!(fs::read(t.join("f")).expect("read"), b"persisted");
    }
    // Ids keep increasing after reopen: a new snapshot never reuses a directory.
    layer(env, &sn2, "after", "persist", &[file("/g", b"g", 0o644)]);
    sn2.close().expect("close reopened");
}

/// berth: symlinks, hard links, fifos and device nodes survive commit and stacking
fn symlinks_hardlinks_and_devices_across_layers(env: &Env, sn: &Backend) {
    check_chain(
        env,
        sn,
        &[
            vec![
                dir("/bin", 0o755),
                file("/bin/busybox", b"#!fake", 0o755),
                Op::Symlink("busybox", "/bin/sh"),
                Op::Link("/bin/busybox", "/bin/ls"),
                Op::Symlink("/does/not/exist", "/dangling"),
            ],
            // Replace (not write through) the hard link: overlayfs with index=off breaks hard
            // links on copy-up, as containerd's overlay snapshotter does too.
            vec![
                Op::RemoveAll("/bin/sh"),
                Op::Symlink("/bin/busybox", "/bin/sh"),
                Op::RemoveAll("/bin/ls"),
                file("/bin/ls", b"replaced", 0o700),
            ],
        ],
    );
    // Device nodes and fifos (created with mknod through the mount).
    let p = env.dir("dev");
    let mounts = sn.prepare("devs", "", no_labels()).expect("prepare");
    {
        let _m = Mounted::new(&mounts, &p);
        nix::sys::stat::mknod(
            &p.join("null"),
            nix::sys::stat::SFlag::S_IFCHR,
            nix::sys::stat::Mode::from_bits_truncate(0o666),
            nix::sys::stat::makedev(1, 3),
        )
        .expect("mknod");
        nix::unistd::mkfifo(
            &p.join("fifo"),
            nix::sys::stat::Mode::from_bits_truncate(0o600),
        )
        .expect("mkfifo");
    }
    sn.commit("devs-c", "devs", no_labels()).expect("commit");
    let v = env.dir("devs-v");
    let m = sn.view("devs-v", "devs-c", no_labels()).expect("view");
    let _m = Mounted::new(&m, &v);
    let null = fs::symlink_metadata(v.join("null")).expect("stat null");
    assert_eq!(null.mode() & libc::S_IFMT, libc::S_IFCHR);
    assert_eq!(null.rdev(), nix::sys::stat::makedev(1, 3));
    let fifo = fs::symlink_metadata(v.join("fifo")).expect("stat fifo");
    assert_eq!(fifo.mode() & libc::S_IFMT, libc::S_IFIFO);
}

/// overlayfs only: mount shapes match containerd's, and the upperdir label option works
#[test]
fn overlay_mount_shapes_and_upperdir_label() {
    let (env, sn) = Env::new("overlayfs-upperdir-label");
    let Backend::Overlay(ov) = &sn else {
        panic!("expected overlay backend")
    };
    let m = sn.prepare("a", "", no_labels()).expect("prepare");
    assert_eq!(m.len(), 1);
    assert_eq!(
        (m[0].fs_type.as_str(), m[0].options.clone()),
        ("bind", vec!["rw".to_string(), "rbind".to_string()])
    );
    sn.commit("c", "a", no_labels()).expect("commit");
    let v = sn.view("v", "c", no_labels()).expect("view");
    assert_eq!(
        (v[0].fs_type.as_str(), v[0].options.clone()),
        ("bind", vec!["ro".to_string(), "rbind".to_string()])
    );
    let p = sn
        .prepare("p", "c", no_labels())
        .expect("prepare on parent");
    assert_eq!(p[0].fs_type, "overlay");
    let opts = &p[0].options;
    assert!(
        opts.iter()
            .any(|o| o.starts_with("upperdir=") && o.ends_with("/fs")),
        "{opts:?}"
    );
    assert!(
        opts.iter()
            .any(|o| o.starts_with("workdir=") && o.ends_with("/work")),
        "{opts:?}"
    );
    assert!(opts.iter().any(|o| o.starts_with("lowerdir=")), "{opts:?}");
    if Path::new("/sys/module/overlay/parameters/index").exists() {
        assert_eq!(opts[0], "index=off", "{opts:?}");
    }
    let st = sn.stat("p").expect("stat");
    let upper = st
        .labels
        .get(UPPERDIR_LABEL)
        .expect("upperdir label present");
    assert!(
        upper.starts_with(&ov.root().join("snapshots").display().to_string())
            && upper.ends_with("/fs"),
        "{upper}"
    );
    assert!(Path::new(upper).is_dir());
    let listed = sn.list(&|i| i.name == "c").expect("list");
    assert!(listed[0].labels.contains_key(UPPERDIR_LABEL));
    let _ = env;
}

/// berth: the daemon calls a snapshotter from many blocking threads at once; 8 threads each
/// build, mount, check and tear down their own 5-layer chain on one snapshotter.
fn concurrent_chains_from_many_threads(env: &Env, sn: &Backend) {
    std::thread::scope(|scope| {
        for t in 0..8 {
            scope.spawn(move || {
                let mut parent = String::new();
                for i in 0..5 {
                    let name = format!("t{t}-c{i}");
                    layer(
                        env,
                        sn,
                        &name,
                        &parent,
                        &[file(
                            format!("/t{t}-{i}"),
                            format!("{t}:{i}").as_bytes(),
                            0o644,
                        )],
                    );
                    parent = name;
                }
                let v = format!("t{t}-view");
                let m = sn.view(&v, &parent, no_labels()).expect("view");
                let target = env.dir(&v);
                {
                    let _m = Mounted::new(&m, &target);
                    for i in 0..5 {
                        assert_eq!(
                            fs::read(target.join(format!("t{t}-{i}"))).expect("read"),
                            format!("{t}:{i}").as_bytes()
                        );
                    }
                }
                sn.remove(&v).expect("remove view");
                for i in (0..5).rev() {
                    sn.remove(&format!("t{t}-c{i}"))
                        .expect("remove chain top-down");
                }
            });
        }
    });
    let left = sn.list(&|_| true).expect("list");
    assert!(left.is_empty(), "all snapshots removed: {left:?}");
    sn.cleanup().expect("cleanup");
    let dirs = fs::read_dir(env.root.join("snapshots"))
        .expect("read")
        .count();
    assert_eq!(dirs, 0, "no directories left");
}
