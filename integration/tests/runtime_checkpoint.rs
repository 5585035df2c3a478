//! Checkpoint and restore through berthd (issue 6, Tasks `Checkpoint` and `Create` from a
//! checkpoint), driven by Debian's `ctr`: `ctr c checkpoint --task`, `ctr c restore [--live]`,
//! `ctr t checkpoint [--exit] --image-path`.
//!
//! criu is installed but cannot dump anything on this kernel (it fails in its vDSO setup), so:
//! - with real runc, a checkpoint must fail with criu's own error quoted, keep the task
//!   running and leave no image, content, ingest or scratch directory behind;
//! - the round trip is proven with a *criu stand-in*: the runtime's runc options
//!   `BinaryName` point at a shell script around real runc which replaces only criu's part.
//!   On `checkpoint` it writes a recognisable image (1 MiB of random bytes, a marker file, a
//!   symlink) into `--image-path`, records the payload's sha256 outside the image, and kills
//!   and deletes the container as runc does unless `--leave-running`. On `restore` it checks
//!   that the image arrived byte for byte (so it went through berthd's content store as a
//!   tar and came back through the layer applier), then starts the container with real
//!   `runc run --detach` using the same `--pid-file`, `--console-socket`, `--no-pivot` and
//!   `--bundle` the shim passed. Everything else goes to runc unchanged. The restored
//!   process is a fresh one (no memory is restored), which is all a test without criu can
//!   show; the shim's flags, stdio, pid and state handling are the real ones.
//! - bad input (wrong media type, missing blob, corrupt tar, wrong task options) is sent
//!   with a tonic client: containerd's codes, nothing left behind.

mod runtime_common;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

use protos::containerd::services::tasks::v1::{tasks_client::TasksClient, CreateTaskRequest};
use protos::containerd::types::Descriptor;
use runtime_common::{Env, Shim};

const CRIU_TAR: &str = "application/vnd.containerd.container.criu.checkpoint.criu.tar";
const CHECKPOINT_CONFIG: &str = "application/vnd.containerd.container.checkpoint.config.v1+proto";
const CHECKPOINT_OPTIONS: &str = "application/vnd.containerd.container.checkpoint.options.v1+proto";

/// Writes the criu stand-in (see the module doc) into `dir`; returns (script, call log).
fn fake_criu_runc(dir: &Path) -> (PathBuf, PathBuf) {
    let runc = integration::require_bin("runc", "runc");
    let log = dir.join("fake-criu.log");
    let sums = dir.join("fake-criu-sums");
    std::fs::create_dir_all(&sums).expect("sums dir");
    let script = dir.join("runc-fake-criu.sh");
    let body = format!(
        r#"#!/bin/sh
# Stand-in for criu's half of `runc checkpoint` / `runc restore` (criu cannot run on this
# kernel). Every other command is real runc's.
RUNC='{runc}'
LOG='{log}'
SUMS='{sums}'
globals=""
while [ $# -gt 0 ]; do
  case "$1" in
    --root|--log|--log-format|--criu|--rootless) globals="$globals $1 $2"; shift 2;;
    --debug|--systemd-cgroup) globals="$globals $1"; shift;;
    *) break;;
  esac
done
cmd="$1"
case "$cmd" in
checkpoint)
  shift
  image=""; leave=0
  while [ $# -gt 1 ]; do
    case "$1" in
      --image-path) image="$2"; shift 2;;
      --work-path|--parent-path|--manage-cgroups-mode|--empty-ns|--page-server|--status-fd|--lsm-profile) shift 2;;
      --leave-running) leave=1; shift;;
      *) shift;;
    esac
  done
  id="$1"
  [ -n "$image" ] || {{ echo "fake criu: no --image-path" >&2; exit 1; }}
  mkdir -p "$image/sub" || exit 1
  head -c 1048576 /dev/urandom > "$image/pages-1.img" || exit 1
  echo "$id" > "$image/sub/inventory.img"
  ln -s pages-1.img "$image/pages.link"
  sha256sum "$image/pages-1.img" | cut -d' ' -f1 > "$SUMS/$id"
  echo "checkpoint $id image=$image leave=$leave" >> "$LOG"
  if [ $leave = 0 ]; then
    $RUNC $globals resume "$id" 2>/dev/null
    $RUNC $globals kill "$id" KILL
    i=0
    while [ $i -lt 200 ]; do
      case "$($RUNC $globals state "$id" 2>/dev/null)" in *'"stopped"'*|'') break;; esac
      sleep 0.05; i=$((i+1))
    done
    $RUNC $globals delete --force "$id"
  fi
  exit 0;;
restore)
  shift
  image=""; pidfile=""; console=""; bundle=""; nopivot=""; detach=0
  while [ $# -gt 1 ]; do
    case "$1" in
      --image-path) image="$2"; shift 2;;
      --pid-file) pidfile="$2"; shift 2;;
      --console-socket) console="$2"; shift 2;;
      --bundle|-b) bundle="$2"; shift 2;;
      --work-path|--manage-cgroups-mode|--empty-ns|--lsm-profile|--lsm-mount-context) shift 2;;
      --no-pivot) nopivot="--no-pivot"; shift;;
      --detach|-d) detach=1; shift;;
      *) shift;;
    esac
  done
  id="$1"
  orig="$(cat "$image/sub/inventory.img")" || {{ echo "fake criu: no inventory in $image" >&2; exit 1; }}
  want="$(cat "$SUMS/$orig")" || {{ echo "fake criu: $orig was never checkpointed" >&2; exit 1; }}
  got="$(sha256sum "$image/pages-1.img" | cut -d' ' -f1)"
  [ "$want" = "$got" ] || {{ echo "fake criu: pages of $orig changed: $got != $want" >&2; exit 1; }}
  [ "$(readlink "$image/pages.link")" = "pages-1.img" ] || {{ echo "fake criu: symlink lost" >&2; exit 1; }}
  [ $detach = 1 ] || {{ echo "fake criu: restore without --detach" >&2; exit 1; }}
  echo "restore $id from $orig ok pidfile=$pidfile bundle=$bundle console=$console" >> "$LOG"
  if [ -n "$console" ]; then
    exec $RUNC $globals run --detach --pid-file "$pidfile" --console-socket "$console" $nopivot --bundle "$bundle" "$id"
  fi
  exec $RUNC $globals run --detach --pid-file "$pidfile" $nopivot --bundle "$bundle" "$id"
  ;;
*)
  exec $RUNC $globals "$@";;
esac
"#,
        runc = runc.display(),
        log = log.display(),
        sums = sums.display(),
    );
    std::fs::write(&script, body).expect("write fake criu runc");
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    (script, log)
}

/// Where berthd makes its checkpoint scratch directories.
fn scratch_dir(env: &Env) -> PathBuf {
    env.d.state().join("checkpoints")
}

/// No scratch directory is left. berthd removes a restored task's unpacked checkpoint on a
/// blocking thread after Start/Delete answered, so this waits (bounded) for it to go.
fn assert_no_scratch_left(env: &Env) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let left: Vec<PathBuf> = std::fs::read_dir(scratch_dir(env))
            .map(|rd| rd.flatten().map(|e| e.path()).collect())
            .unwrap_or_default();
        if left.is_empty() {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "checkpoint scratch dirs left: {left:?}"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// `ctr content ls` digests.
fn content_digests(env: &Env) -> Vec<String> {
    env.ctr_ok(&["content", "ls", "-q"])
        .lines()
        .map(|l| l.trim().to_string())
        .filter(|l| !l.is_empty())
        .collect()
}

/// The `ctr i ls` row of `name`: (type, digest).
fn image_row(env: &Env, name: &str) -> Option<(String, String)> {
    env.ctr_ok(&["i", "ls"]).lines().skip(1).find_map(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        (f.first() == Some(&name) && f.len() >= 3).then(|| (f[1].to_string(), f[2].to_string()))
    })
}

/// (media type, digest) of the manifests of a checkpoint image's index.
fn index_manifests(env: &Env, index_digest: &str) -> Vec<(String, String)> {
    let raw = env.ctr_ok(&["content", "get", index_digest]);
    let v: serde_json::Value = serde_json::from_str(&raw).expect("index JSON");
    v["manifests"]
        .as_array()
        .expect("manifests")
        .iter()
        .map(|m| {
            (
                m["mediaType"].as_str().unwrap_or_default().to_string(),
                m["digest"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect()
}

fn blob(env: &Env, digest: &str) -> Vec<u8> {
    let o = env.ctr(&["content", "get", digest]);
    assert!(o.status.success(), "content get {digest}");
    o.stdout
}

fn stop_and_remove(env: &Env, id: &str) {
    let _ = env.ctr(&["t", "kill", "-s", "9", id]);
    env.wait_status(id, "STOPPED", Duration::from_secs(10));
    env.ctr_ok(&["t", "rm", id]);
    env.ctr_ok(&["c", "rm", id]);
    env.assert_task_gone(id);
}

/// Runs `id` through the criu stand-in `runc`, checkpoints it as image `image`, removes the
/// container, and returns the digest and size of the criu tar in the checkpoint's index.
fn checkpoint_and_remove(env: &Env, runc: &str, id: &str, image: &str) -> (String, i64) {
    let img = env.image.clone();
    env.ctr_ok(&[
        "run",
        "-d",
        "--runc-binary",
        runc,
        &img,
        id,
        "sleep",
        "1000",
    ]);
    env.wait_status(id, "RUNNING", Duration::from_secs(10));
    env.ctr_ok(&["c", "checkpoint", "--task", id, image]);
    stop_and_remove(env, id);
    let (_, index) = image_row(env, image).unwrap_or_else(|| panic!("{image} listed"));
    let (_, criu_tar) = index_manifests(env, &index)
        .into_iter()
        .find(|(m, _)| m == CRIU_TAR)
        .expect("criu tar in the index");
    let size = i64::try_from(blob(env, &criu_tar).len()).expect("size");
    (criu_tar, size)
}

fn round_trip(shim: Shim, test: &str) {
    let Some(env) = Env::start(shim, test, "") else {
        return;
    };
    let (runc, calls) = fake_criu_runc(env.work.path());
    let runc = runc.to_string_lossy().into_owned();
    let img = env.image.clone();
    let events = runtime_common::Events::start(&env);

    env.ctr_ok(&[
        "run",
        "-d",
        "--runc-binary",
        &runc,
        &img,
        "c1",
        "sleep",
        "1000",
    ]);
    env.wait_status("c1", "RUNNING", Duration::from_secs(10));

    // ctr c checkpoint --task: pause, Tasks.Checkpoint into the content store, index, resume.
    env.ctr_ok(&["c", "checkpoint", "--task", "c1", "ckpt1"]);
    let log = std::fs::read_to_string(&calls).expect("fake criu was called");
    assert!(
        log.contains("checkpoint c1 ") && log.contains("leave=1"),
        "checkpoint leaves the task running: {log}"
    );
    env.wait_status("c1", "RUNNING", Duration::from_secs(5));
    assert_no_scratch_left(&env);
    if shim == Shim::Ours {
        events.wait_for("/tasks/checkpointed", &["c1"], 1, Duration::from_secs(5));
    }

    let (kind, index) = image_row(&env, "ckpt1").expect("ctr i ls lists ckpt1");
    assert!(
        kind.contains("image.index"),
        "checkpoint is an index: {kind}"
    );
    let manifests = index_manifests(&env, &index);
    let find = |mt: &str| {
        manifests
            .iter()
            .find(|(m, _)| m == mt)
            .map(|(_, d)| d.clone())
            .unwrap_or_else(|| panic!("no {mt} in the index: {manifests:?}"))
    };
    let (tar_digest, spec_digest) = (find(CRIU_TAR), find(CHECKPOINT_CONFIG));
    find(CHECKPOINT_OPTIONS);
    let listed = content_digests(&env);
    for d in [&index, &tar_digest, &spec_digest] {
        assert!(listed.contains(d), "ctr content ls lacks {d}: {listed:?}");
    }
    // The criu tar holds what the checkpoint wrote; the config is the container's spec Any.
    let tar = blob(&env, &tar_digest);
    let mut names: Vec<String> = tar::Archive::new(tar.as_slice())
        .entries()
        .expect("criu tar")
        .map(|e| {
            e.expect("tar entry")
                .path()
                .expect("path")
                .display()
                .to_string()
        })
        .collect();
    names.sort();
    for want in ["pages-1.img", "pages.link", "sub/inventory.img"] {
        assert!(
            names.iter().any(|n| n.trim_start_matches("./") == want),
            "criu tar lacks {want}: {names:?}"
        );
    }
    let spec = blob(&env, &spec_digest);
    let spec = String::from_utf8_lossy(&spec);
    assert!(
        spec.contains("runtime-spec") && spec.contains("sleep"),
        "checkpoint config is the spec Any: {spec}"
    );
    assert!(
        env.ctr_ok(&["content", "active"]).lines().count() <= 1,
        "no ingest left open"
    );

    // Restore without --live: a new container from the checkpoint's image, spec and runtime.
    stop_and_remove(&env, "c1");
    env.ctr_ok(&["c", "restore", "c1", "ckpt1"]);
    env.wait_status("c1", "RUNNING", Duration::from_secs(10));
    assert!(
        !std::fs::read_to_string(&calls)
            .unwrap_or_default()
            .contains("restore c1"),
        "restore without --live does not restore the task"
    );
    stop_and_remove(&env, "c1");

    // --live: Tasks.Create with the criu tar → unpacked → shim → runc restore at Start.
    env.ctr_ok(&["c", "restore", "--live", "c1", "ckpt1"]);
    let (pid, _) = env.wait_status("c1", "RUNNING", Duration::from_secs(10));
    assert!(
        pid.parse::<u32>().is_ok_and(|p| p > 0),
        "restored pid {pid}"
    );
    let log = std::fs::read_to_string(&calls).expect("calls");
    assert!(
        log.contains("restore c1 from c1 ok"),
        "the image arrived intact at runc restore: {log}"
    );
    let restore_line = log
        .lines()
        .find(|l| l.starts_with("restore c1"))
        .unwrap_or_default();
    assert!(
        restore_line.contains("pidfile=/") && restore_line.contains("bundle=/"),
        "restore gets the shim's pid file and bundle: {restore_line}"
    );
    assert_no_scratch_left(&env);
    assert_eq!(
        env.ctr_ok(&[
            "t",
            "exec",
            "--exec-id",
            "e1",
            "c1",
            "echo",
            "after-restore"
        ]),
        "after-restore\n"
    );
    let ps = env.ctr_ok(&["t", "ps", "c1"]);
    assert!(
        ps.contains(&pid),
        "ctr t ps shows the restored init {pid}: {ps}"
    );

    // A restored task checkpoints again, now with its rw layer (the diff service) and image:
    // `c restore --rw --live` brings back the file written inside the container.
    env.ctr_ok(&[
        "t",
        "exec",
        "--exec-id",
        "w1",
        "c1",
        "sh",
        "-c",
        "echo rw-data > /rw.txt",
    ]);
    env.ctr_ok(&[
        "c",
        "checkpoint",
        "--rw",
        "--image",
        "--task",
        "c1",
        "ckpt2",
    ]);
    let (_, index2) = image_row(&env, "ckpt2").expect("ckpt2 listed");
    let kinds: Vec<String> = index_manifests(&env, &index2)
        .into_iter()
        .map(|(m, _)| m)
        .collect();
    assert!(
        kinds.iter().any(|k| k.contains("layer")) && kinds.iter().any(|k| k == CRIU_TAR),
        "--rw adds the rw layer, --task the criu tar: {kinds:?}"
    );
    stop_and_remove(&env, "c1");
    env.ctr_ok(&["c", "restore", "--rw", "--live", "c1", "ckpt2"]);
    env.wait_status("c1", "RUNNING", Duration::from_secs(10));
    assert_eq!(
        env.ctr_ok(&["t", "exec", "--exec-id", "r1", "c1", "cat", "/rw.txt"]),
        "rw-data\n"
    );
    assert_no_scratch_left(&env);
    stop_and_remove(&env, "c1");

    // ctr t checkpoint --image-path: the checkpoint stays in that directory, no content.
    env.ctr_ok(&[
        "run",
        "-d",
        "--runc-binary",
        &runc,
        &img,
        "c2",
        "sleep",
        "1000",
    ]);
    env.wait_status("c2", "RUNNING", Duration::from_secs(10));
    let before = content_digests(&env);
    let dir = env.work.path().join("c2-image");
    let dir_s = dir.to_string_lossy().into_owned();
    let out = env.ctr_ok(&["t", "checkpoint", "--image-path", &dir_s, "c2"]);
    assert!(
        out.trim().is_empty(),
        "nothing printed with --image-path: {out}"
    );
    assert!(dir.join("pages-1.img").is_file() && dir.join("sub/inventory.img").is_file());
    assert_eq!(
        content_digests(&env),
        before,
        "no content written for --image-path"
    );
    env.wait_status("c2", "RUNNING", Duration::from_secs(5));
    // --exit: the task stops after the checkpoint.
    let dir2 = env.work.path().join("c2-exit");
    env.ctr_ok(&[
        "t",
        "checkpoint",
        "--exit",
        "--image-path",
        &dir2.to_string_lossy(),
        "c2",
    ]);
    assert!(
        std::fs::read_to_string(&calls)
            .expect("calls")
            .contains("checkpoint c2 image=")
            && dir2.join("pages-1.img").is_file()
    );
    env.wait_status("c2", "STOPPED", Duration::from_secs(10));
    env.ctr_ok(&["t", "rm", "c2"]);
    env.ctr_ok(&["c", "rm", "c2"]);

    // ctr t checkpoint without a path: an image in the content store, its name printed.
    env.ctr_ok(&[
        "run",
        "-d",
        "--runc-binary",
        &runc,
        &img,
        "c3",
        "sleep",
        "1000",
    ]);
    env.wait_status("c3", "RUNNING", Duration::from_secs(10));
    let name = env.ctr_ok(&["t", "checkpoint", "c3"]);
    let name = name.trim();
    assert!(
        !name.is_empty(),
        "ctr t checkpoint prints the checkpoint's name"
    );
    assert!(image_row(&env, name).is_some(), "{name} listed by ctr i ls");
    stop_and_remove(&env, "c3");
    assert_no_scratch_left(&env);

    // Created from a checkpoint but deleted before Start: the unpacked checkpoint is kept
    // while the task waits for Start, and removed with the task.
    env.ctr_ok(&["c", "create", &img, "c4", "sleep", "1000"]);
    let criu_tar = find(CRIU_TAR);
    let size = i64::try_from(tar.len()).expect("size");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let ns = env.d.namespace().to_string();
    rt.block_on(async {
        let mut c = tasks_client(&env).await;
        let mut r = tonic::Request::new(CreateTaskRequest {
            container_id: "c4".into(),
            checkpoint: Some(Descriptor {
                media_type: CRIU_TAR.into(),
                digest: criu_tar.clone(),
                size,
                annotations: Default::default(),
            }),
            ..Default::default()
        });
        r.metadata_mut()
            .insert("containerd-namespace", ns.parse().expect("ascii"));
        c.create(r).await
    })
    .expect("Tasks.Create from the checkpoint");
    let (pid, status) = env.task_status("c4").expect("c4 listed");
    assert_eq!(
        (pid.as_str(), status.as_str()),
        ("0", "CREATED"),
        "restore waits for Start"
    );
    let kept: Vec<PathBuf> = std::fs::read_dir(scratch_dir(&env))
        .map(|rd| rd.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    assert_eq!(
        kept.len(),
        1,
        "the unpacked checkpoint waits for Start: {kept:?}"
    );
    assert!(kept[0].join("pages-1.img").is_file(), "unpacked: {kept:?}");
    if shim == Shim::Ours {
        let o = env.ctr(&["t", "exec", "--exec-id", "x", "c4", "true"]);
        assert!(
            !o.status.success()
                && String::from_utf8_lossy(&o.stderr).contains("cannot exec in a created state"),
            "no exec before the restore: {}",
            String::from_utf8_lossy(&o.stderr)
        );
    }
    env.ctr_ok(&["t", "rm", "c4"]);
    assert_no_scratch_left(&env);
    env.assert_task_gone("c4");
    env.ctr_ok(&["c", "rm", "c4"]);

    env.ctr_ok(&["i", "rm", "ckpt1", "ckpt2", name]);
    drop(events);
    env.assert_nothing_left();
}

#[test]
fn checkpoint_and_live_restore_round_trip_with_our_shim() {
    round_trip(
        Shim::Ours,
        "checkpoint_and_live_restore_round_trip_with_our_shim",
    );
}

#[test]
fn checkpoint_and_live_restore_round_trip_with_debian_go_shim() {
    round_trip(
        Shim::DebianGo,
        "checkpoint_and_live_restore_round_trip_with_debian_go_shim",
    );
}

#[test]
fn checkpoint_and_live_restore_round_trip_with_containerd_2_3_go_shim() {
    round_trip(
        Shim::Go23,
        "checkpoint_and_live_restore_round_trip_with_containerd_2_3_go_shim",
    );
}

#[test]
fn real_criu_failure_is_reported_and_the_task_keeps_running() {
    let Some(env) = Env::start(
        Shim::Ours,
        "real_criu_failure_is_reported_and_the_task_keeps_running",
        "",
    ) else {
        return;
    };
    let _criu = integration::require_bin("criu", "criu");
    let img = env.image.clone();
    env.ctr_ok(&["run", "-d", &img, "r1", "sleep", "1000"]);
    let (pid, _) = env.wait_status("r1", "RUNNING", Duration::from_secs(10));
    let content_before = content_digests(&env);
    let images_before = env.ctr_ok(&["i", "ls", "-q"]);

    let o = env.ctr(&["c", "checkpoint", "--task", "r1", "ck-real"]);
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    assert!(!o.status.success(), "criu cannot work here: {}", stdout(&o));
    eprintln!("ctr c checkpoint with real criu: {err}");
    assert!(
        err.contains("criu failed") && err.contains("criu: ") && err.contains("path= "),
        "the error quotes runc's and criu's messages and the kept log: {err}"
    );
    let log_path = err
        .split("path= ")
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .map(|s| s.trim_end_matches(':'))
        .expect("dump log path");
    assert!(
        log_path.ends_with("criu-dump.log") && Path::new(log_path).is_file(),
        "criu's log kept at {log_path}"
    );
    // ctr resumes the task it paused; criu (--leave-running) left it alone.
    assert_eq!(
        env.wait_status("r1", "RUNNING", Duration::from_secs(5)).0,
        pid
    );
    assert_eq!(
        env.ctr_ok(&["t", "exec", "--exec-id", "x", "r1", "echo", "alive"]),
        "alive\n"
    );
    assert_eq!(
        env.ctr_ok(&["i", "ls", "-q"]),
        images_before,
        "no image made"
    );
    // ctr itself wrote the runtime options blob under its lease before the task failed;
    // the lease is gone, so garbage collection takes it.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while content_digests(&env) != content_before && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(content_digests(&env), content_before, "no content left");
    assert!(
        env.ctr_ok(&["content", "active"]).lines().count() <= 1,
        "no ingest left open"
    );
    assert_no_scratch_left(&env);
    let work = env.bundle_dir("r1").join("work").join("criu-work");
    assert!(!work.exists(), "the shim's criu work dir is removed");

    // --image-path mode fails the same way, and the directory is the caller's.
    // A caller's --work-path is kept, with criu's log in it.
    let dir = env.work.path().join("r1-image");
    let work_dir = env.work.path().join("r1-work");
    let o = env.ctr(&[
        "t",
        "checkpoint",
        "--image-path",
        &dir.to_string_lossy(),
        "--work-path",
        &work_dir.to_string_lossy(),
        "r1",
    ]);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("criu failed"));
    assert!(
        work_dir.join("dump.log").is_file(),
        "criu's log stays in the caller's work path"
    );
    env.wait_status("r1", "RUNNING", Duration::from_secs(5));

    stop_and_remove(&env, "r1");
    env.assert_nothing_left();
}

async fn tasks_client(env: &Env) -> TasksClient<tonic::transport::Channel> {
    TasksClient::new(channel(env).await)
}

async fn channel(env: &Env) -> tonic::transport::Channel {
    let path = env.d.address();
    tonic::transport::Endpoint::try_from("http://[::]:50051")
        .expect("endpoint")
        .connect_with_connector(tower::service_fn(move |_| {
            let path = path.clone();
            async move {
                Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(
                    tokio::net::UnixStream::connect(path).await?,
                ))
            }
        }))
        .await
        .expect("connect to berthd")
}

#[test]
fn restore_from_bad_checkpoints_fails_with_containerd_codes_and_leaves_nothing() {
    let Some(env) = Env::start(
        Shim::Ours,
        "restore_from_bad_checkpoints_fails_with_containerd_codes_and_leaves_nothing",
        "",
    ) else {
        return;
    };
    let img = env.image.clone();
    env.ctr_ok(&["c", "create", &img, "bad1", "sleep", "1000"]);

    // A corrupt "tar" in the content store.
    let junk = vec![0x55u8; 1536];
    let junk_digest = {
        use sha2::Digest as _;
        format!("sha256:{}", hex::encode(sha2::Sha256::digest(&junk)))
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    // Committed with a gc.root label: berthd collects unreferenced content at once.
    rt.block_on(async {
        use protos::containerd::services::content::v1::{
            content_client::ContentClient, WriteAction, WriteContentRequest,
        };
        let msg = |action: WriteAction, offset: i64, data: &[u8]| WriteContentRequest {
            action: action as i32,
            r#ref: "junk-ref".into(),
            total: 1536,
            expected: junk_digest.clone(),
            offset,
            data: data.to_vec(),
            labels: [("containerd.io/gc.root".to_string(), "test".to_string())].into(),
        };
        let msgs = vec![
            msg(WriteAction::Write, 0, &junk),
            msg(WriteAction::Commit, 1536, &[]),
        ];
        let mut c = ContentClient::new(channel(&env).await);
        let mut r = tonic::Request::new(tonic::codegen::tokio_stream::iter(msgs));
        r.metadata_mut().insert(
            "containerd-namespace",
            env.d.namespace().parse().expect("ascii"),
        );
        let mut replies = c.write(r).await.expect("content write").into_inner();
        while replies.message().await.expect("write reply").is_some() {}
    });
    assert!(
        content_digests(&env).contains(&junk_digest),
        "junk blob stored"
    );

    let ns = env.d.namespace().to_string();
    let create = |checkpoint: Descriptor, options: Option<prost_types::Any>| {
        let env = &env;
        let ns = ns.clone();
        rt.block_on(async move {
            let mut c = tasks_client(env).await;
            let mut r = tonic::Request::new(CreateTaskRequest {
                container_id: "bad1".into(),
                checkpoint: Some(checkpoint),
                options,
                ..Default::default()
            });
            r.metadata_mut()
                .insert("containerd-namespace", ns.parse().expect("ascii"));
            c.create(r).await
        })
    };
    let desc = |media_type: &str, digest: &str, size: i64| Descriptor {
        media_type: media_type.into(),
        digest: digest.into(),
        size,
        annotations: Default::default(),
    };
    let cases: Vec<(
        &str,
        Descriptor,
        Option<prost_types::Any>,
        tonic::Code,
        &str,
    )> = vec![
        (
            "wrong media type",
            desc(CHECKPOINT_CONFIG, &junk_digest, 1536),
            None,
            tonic::Code::InvalidArgument,
            "unsupported checkpoint type",
        ),
        (
            "missing blob",
            desc(
                CRIU_TAR,
                "sha256:0000000000000000000000000000000000000000000000000000000000000000",
                10,
            ),
            None,
            tonic::Code::NotFound,
            "not found",
        ),
        (
            "corrupt tar",
            desc(CRIU_TAR, &junk_digest, 1536),
            None,
            tonic::Code::InvalidArgument,
            &junk_digest,
        ),
        (
            "bad digest",
            desc(CRIU_TAR, "sha256:xyz", 10),
            None,
            tonic::Code::InvalidArgument,
            "sha256:xyz",
        ),
        (
            "checkpoint options as create options",
            desc(CRIU_TAR, &junk_digest, 1536),
            Some(prost_types::Any {
                type_url: "containerd.runc.v1.CheckpointOptions".into(),
                value: Vec::new(),
            }),
            tonic::Code::InvalidArgument,
            "invalid task create option",
        ),
    ];
    for (what, d, options, want, needle) in cases {
        let e = create(d, options).expect_err(what);
        assert_eq!(e.code(), want, "{what}: {e:?}");
        assert!(e.message().contains(needle), "{what}: {}", e.message());
        assert!(env.task_status("bad1").is_none(), "{what}: no task made");
        assert!(!env.bundle_dir("bad1").exists(), "{what}: no bundle left");
        assert_no_scratch_left(&env);
    }
    assert!(env.ctr_ok(&["t", "ls", "-q"]).trim().is_empty(), "no task");
    env.ctr_ok(&["c", "rm", "bad1"]);
    env.assert_nothing_left();
}

/// `ctr t ls` status of a task under a private containerd.
fn containerd_task_status(c: &integration::containerd::Containerd, id: &str) -> Option<String> {
    c.ctr_ok(&["t", "ls"]).lines().skip(1).find_map(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        (f.first() == Some(&id) && f.len() >= 3).then(|| f[2].to_string())
    })
}

fn containerd_wait_status(c: &integration::containerd::Containerd, id: &str, want: &str) {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let s = containerd_task_status(c, id);
        if s.as_deref() == Some(want) {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "task {id} not {want} under containerd: {s:?}\n{}",
            c.log_tail(40)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// containerd itself checkpoints into its content store and restores through our shim
/// (the same criu stand-in): the shim's restore is what containerd's Go shim does.
fn containerd_round_trip_through_our_shim(builder: integration::containerd::Builder, id: &str) {
    let ckpt = format!("{id}-ckpt");
    let work = tempfile::tempdir().expect("tmp");
    let img = integration::image::TestImage::busybox().expect("image");
    let archive = work.path().join("busybox.oci.tar");
    img.write_oci_archive(&archive).expect("archive");
    let (runc, calls) = fake_criu_runc(work.path());
    let runc = runc.to_string_lossy().into_owned();
    let mut c = builder
        .shim_dir(integration::bins::our_shim_dir())
        .start()
        .expect("containerd starts");
    c.import(&archive);
    c.ctr_ok(&[
        "run",
        "-d",
        "--runc-binary",
        &runc,
        &img.name,
        id,
        "sleep",
        "1000",
    ]);
    containerd_wait_status(&c, id, "RUNNING");
    c.ctr_ok(&["c", "checkpoint", "--task", id, &ckpt]);
    containerd_wait_status(&c, id, "RUNNING");
    let _ = c.ctr(&["t", "kill", "-s", "9", id]);
    containerd_wait_status(&c, id, "STOPPED");
    c.ctr_ok(&["t", "rm", id]);
    c.ctr_ok(&["c", "rm", id]);

    c.ctr_ok(&["c", "restore", "--live", id, &ckpt]);
    containerd_wait_status(&c, id, "RUNNING");
    let log = std::fs::read_to_string(&calls).expect("calls");
    assert!(
        log.contains(&format!("restore {id} from {id} ok")),
        "containerd's unpacked checkpoint reached runc restore intact: {log}"
    );
    assert_eq!(
        c.ctr_ok(&["t", "exec", "--exec-id", "e1", id, "echo", "restored"]),
        "restored\n"
    );
    let _ = c.ctr(&["t", "kill", "-s", "9", id]);
    containerd_wait_status(&c, id, "STOPPED");
    c.ctr_ok(&["t", "rm", id]);
    c.ctr_ok(&["c", "rm", id]);
    let problems = c.stop();
    assert!(problems.is_empty(), "cleanup problems: {problems:?}");
    // containerd (services/tasks/local.go Create) never removes the directory it unpacked a
    // checkpoint into ($XDG_RUNTIME_DIR or /tmp/ctrd-checkpoint*); berthd does. Remove ours.
    for d in std::fs::read_dir(std::env::temp_dir())
        .map(|rd| rd.flatten().map(|e| e.path()).collect::<Vec<_>>())
        .unwrap_or_default()
    {
        let name = d
            .file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .into_owned();
        let mine =
            std::fs::read_to_string(d.join("sub/inventory.img")).is_ok_and(|s| s.trim() == id);
        if name.starts_with("ctrd-checkpoint") && mine {
            let _ = std::fs::remove_dir_all(&d);
        }
    }
}

/// A task restored with a terminal gets its console from the restore (`--console-socket`):
/// Tasks.Create with the checkpoint, `terminal`, a stdout fifo and the container's rootfs
/// mounts, then Start; the shell's prompt arrives through the pty on the fifo.
fn terminal_restore(shim: Shim, test: &str) {
    use protos::containerd::services::snapshots::v1::{
        snapshots_client::SnapshotsClient, MountsRequest,
    };
    use protos::containerd::services::tasks::v1::StartRequest;
    let Some(env) = Env::start(shim, test, "") else {
        return;
    };
    let (runc, calls) = fake_criu_runc(env.work.path());
    let runc_s = runc.to_string_lossy().into_owned();
    let img = env.image.clone();
    // The checkpoint: any task checkpointed through the stand-in.
    let (criu_tar, size) = checkpoint_and_remove(&env, &runc_s, "t0", "tck");

    // The container to restore into: a shell with a terminal.
    env.ctr_ok(&["c", "create", "-t", &img, "t1", "sh"]);
    let fifo = env.work.path().join("t1.stdout");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).expect("mkfifo");
    let reader = {
        let fifo = fifo.clone();
        std::thread::spawn(move || {
            use std::io::Read as _;
            let mut f = std::fs::File::open(&fifo).expect("open stdout fifo");
            let mut got = Vec::new();
            let mut buf = [0u8; 256];
            while !String::from_utf8_lossy(&got).contains("# ") {
                match f.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => got.extend_from_slice(&buf[..n]),
                }
            }
            String::from_utf8_lossy(&got).into_owned()
        })
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let ns = env.d.namespace().to_string();
    let with_ns = |r: &mut tonic::metadata::MetadataMap| {
        r.insert("containerd-namespace", ns.parse().expect("ascii"));
    };
    let pid = rt.block_on(async {
        let ch = channel(&env).await;
        let mut mreq = tonic::Request::new(MountsRequest {
            snapshotter: "overlayfs".into(),
            key: "t1".into(),
        });
        with_ns(mreq.metadata_mut());
        let mounts = SnapshotsClient::new(ch.clone())
            .mounts(mreq)
            .await
            .expect("snapshot mounts of t1")
            .into_inner()
            .mounts;
        // runc Options { binary_name (field 6) } in protobuf wire form.
        let name = runc_s.as_bytes();
        let mut options = vec![0x32, u8::try_from(name.len()).expect("short path")];
        options.extend_from_slice(name);
        let mut r = tonic::Request::new(CreateTaskRequest {
            container_id: "t1".into(),
            rootfs: mounts,
            terminal: true,
            stdout: fifo.to_string_lossy().into_owned(),
            checkpoint: Some(Descriptor {
                media_type: CRIU_TAR.into(),
                digest: criu_tar.clone(),
                size,
                annotations: Default::default(),
            }),
            options: Some(prost_types::Any {
                type_url: "containerd.runc.v1.Options".into(),
                value: options,
            }),
            ..Default::default()
        });
        with_ns(r.metadata_mut());
        let mut tasks = TasksClient::new(ch);
        tasks
            .create(r)
            .await
            .expect("Tasks.Create from the checkpoint");
        let mut s = tonic::Request::new(StartRequest {
            container_id: "t1".into(),
            exec_id: String::new(),
        });
        with_ns(s.metadata_mut());
        tasks
            .start(s)
            .await
            .expect("Start restores")
            .into_inner()
            .pid
    });
    assert!(pid > 0, "restored pid");
    let log = std::fs::read_to_string(&calls).expect("calls");
    let line = log
        .lines()
        .find(|l| l.starts_with("restore t1 from t0 ok"))
        .unwrap_or_else(|| panic!("restore of t1 ran: {log}"));
    assert!(
        !line.ends_with("console="),
        "a terminal restore passes --console-socket: {line}"
    );
    let out = reader.join().expect("reader");
    assert!(
        out.contains("# "),
        "the shell's prompt came through the pty: {out:?}"
    );
    env.wait_status("t1", "RUNNING", Duration::from_secs(5));
    stop_and_remove(&env, "t1");
    assert_no_scratch_left(&env);
    env.ctr_ok(&["i", "rm", "tck"]);
    env.assert_nothing_left();
}

#[test]
fn restored_task_with_a_terminal_gets_its_console_with_our_shim() {
    terminal_restore(
        Shim::Ours,
        "restored_task_with_a_terminal_gets_its_console_with_our_shim",
    );
}

#[test]
fn restored_task_with_a_terminal_gets_its_console_with_debian_go_shim() {
    terminal_restore(
        Shim::DebianGo,
        "restored_task_with_a_terminal_gets_its_console_with_debian_go_shim",
    );
}

#[test]
fn containerd_1_6_checkpoints_and_restores_through_our_shim() {
    containerd_round_trip_through_our_shim(integration::containerd::Containerd::v1(), "k16");
}

#[test]
fn containerd_2_3_checkpoints_and_restores_through_our_shim() {
    let Some(builder) = integration::containerd::Containerd::v2(
        "containerd_2_3_checkpoints_and_restores_through_our_shim",
    ) else {
        return;
    };
    containerd_round_trip_through_our_shim(builder, "k23");
}

/// berthd is SIGKILLed between a restore's Create and its Start: the restarted berthd
/// re-adopts the task and keeps its unpacked checkpoint, so the Start still restores.
#[test]
fn restore_started_after_a_berthd_restart_still_finds_its_checkpoint() {
    use protos::containerd::services::snapshots::v1::{
        snapshots_client::SnapshotsClient, MountsRequest,
    };
    use protos::containerd::services::tasks::v1::StartRequest;
    let test = "restore_started_after_a_berthd_restart_still_finds_its_checkpoint";
    let Some(mut env) = Env::start(Shim::Ours, test, "") else {
        return;
    };
    let (runc, calls) = fake_criu_runc(env.work.path());
    let runc_s = runc.to_string_lossy().into_owned();
    let img = env.image.clone();
    let (criu_tar, size) = checkpoint_and_remove(&env, &runc_s, "s0", "sck");
    env.ctr_ok(&["c", "create", &img, "s1", "sleep", "1000"]);

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let ns = env.d.namespace().to_string();
    let with_ns = |r: &mut tonic::metadata::MetadataMap| {
        r.insert("containerd-namespace", ns.parse().expect("ascii"));
    };
    rt.block_on(async {
        let ch = channel(&env).await;
        let mut mreq = tonic::Request::new(MountsRequest {
            snapshotter: "overlayfs".into(),
            key: "s1".into(),
        });
        with_ns(mreq.metadata_mut());
        let mounts = SnapshotsClient::new(ch.clone())
            .mounts(mreq)
            .await
            .expect("snapshot mounts of s1")
            .into_inner()
            .mounts;
        // runc Options { binary_name (field 6) } in protobuf wire form.
        let name = runc_s.as_bytes();
        let mut options = vec![0x32, u8::try_from(name.len()).expect("short path")];
        options.extend_from_slice(name);
        let mut r = tonic::Request::new(CreateTaskRequest {
            container_id: "s1".into(),
            rootfs: mounts,
            checkpoint: Some(Descriptor {
                media_type: CRIU_TAR.into(),
                digest: criu_tar.clone(),
                size,
                annotations: Default::default(),
            }),
            options: Some(prost_types::Any {
                type_url: "containerd.runc.v1.Options".into(),
                value: options,
            }),
            ..Default::default()
        });
        with_ns(r.metadata_mut());
        TasksClient::new(ch)
            .create(r)
            .await
            .expect("Tasks.Create from the checkpoint");
    });
    let count = |env: &Env| {
        std::fs::read_dir(scratch_dir(env))
            .map(Iterator::count)
            .unwrap_or(0)
    };
    assert_eq!(count(&env), 1, "the unpacked checkpoint waits for Start");

    env.d.kill9();
    env.d.restart().expect("berthd restarts");
    env.wait_status("s1", "CREATED", Duration::from_secs(10));
    assert_eq!(
        count(&env),
        1,
        "the restarted berthd kept the re-adopted task's checkpoint"
    );

    let pid = rt.block_on(async {
        let mut s = tonic::Request::new(StartRequest {
            container_id: "s1".into(),
            exec_id: String::new(),
        });
        with_ns(s.metadata_mut());
        tasks_client(&env)
            .await
            .start(s)
            .await
            .expect("Start restores after the restart")
            .into_inner()
            .pid
    });
    assert!(pid > 0);
    let log = std::fs::read_to_string(&calls).expect("calls");
    assert!(log.contains("restore s1 from s0 ok"), "restored: {log}");
    // Removed after the Start (on a blocking thread: wait, bounded).
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while count(&env) != 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "checkpoint not removed after the Start"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    env.wait_status("s1", "RUNNING", Duration::from_secs(5));
    assert_eq!(
        env.ctr_ok(&["t", "exec", "--exec-id", "e", "s1", "echo", "ok"]),
        "ok\n"
    );
    stop_and_remove(&env, "s1");
    env.ctr_ok(&["i", "rm", "sck"]);
    env.assert_nothing_left();
}
