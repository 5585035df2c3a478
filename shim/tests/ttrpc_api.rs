//! The task API over ttrpc without containerd: our binary is started with `start` on a real
//! runc bundle (busybox rootfs), then driven with the generated v3 client and with raw
//! `containerd.task.v2.Task` requests on the same socket. Checks the error codes containerd
//! branches on, Update and Checkpoint (whose criu failure must come back as an error), and
//! that Shutdown removes the socket.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use containerd_shim_protos::protobuf::well_known_types::any::Any;
use containerd_shim_protos::protobuf::Message;
use containerd_shim_protos::shim::shim::{
    CheckpointTaskRequest, CreateTaskRequest, DeleteRequest, ExecProcessRequest, KillRequest,
    ShutdownRequest, StartRequest, StateRequest, StateResponse, UpdateTaskRequest, WaitRequest,
};
use containerd_shim_protos::shim_async::TaskClient;
use containerd_shim_protos::types::task::Status;
use shim::reaper::{set_subreaper, Reaper};
use ttrpc::Code;

const NS: &str = "berth-shim-api";

fn bundle(dir: &Path, id: &str) -> std::path::PathBuf {
    let b = dir.join(id);
    let bin = b.join("rootfs/bin");
    std::fs::create_dir_all(&bin).expect("mkdir");
    std::fs::copy("/bin/busybox", bin.join("busybox"))
        .expect("busybox-static is needed (apt install busybox-static)");
    for applet in ["sh", "sleep", "true"] {
        std::os::unix::fs::symlink("busybox", bin.join(applet)).expect("symlink");
    }
    let st = Command::new("runc")
        .arg("spec")
        .current_dir(&b)
        .status()
        .expect("runc spec (apt install runc)");
    assert!(st.success());
    let mut spec: serde_json::Value =
        serde_json::from_slice(&std::fs::read(b.join("config.json")).expect("spec")).expect("json");
    spec["process"]["terminal"] = false.into();
    spec["process"]["args"] = serde_json::json!(["sleep", "1000"]);
    spec["root"]["readonly"] = false.into();
    std::fs::write(
        b.join("config.json"),
        serde_json::to_vec(&spec).expect("json"),
    )
    .expect("write");
    b
}

/// Kills the shim and removes the runc container even when the test panics.
struct Cleanup {
    id: String,
    bundle: std::path::PathBuf,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        if let Ok(pid) = std::fs::read_to_string(self.bundle.join("shim.pid")) {
            if let Ok(pid) = pid.trim().parse::<i32>() {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
        }
        let _ = Command::new("runc")
            .args([
                "--root",
                &format!("/run/containerd/runc/{NS}"),
                "delete",
                "--force",
                &self.id,
            ])
            .stderr(Stdio::null())
            .status();
        if let Ok(a) = std::fs::read_to_string(self.bundle.join("address")) {
            let _ = std::fs::remove_file(a.trim_start_matches("unix://"));
        }
    }
}

fn code<T: std::fmt::Debug>(r: ttrpc::Result<T>) -> (Code, String) {
    match r {
        Err(ttrpc::Error::RpcStatus(s)) => (s.code(), s.message),
        other => panic!("expected an RPC status, got {other:?}"),
    }
}

fn ctx() -> ttrpc::context::Context {
    ttrpc::context::with_duration(Duration::from_secs(30))
}

/// The tests of this binary run one at a time: the first runs the shim's reaper
/// (`waitpid(-1)`), which would reap the other's `shim start` child before its own `wait`.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[test]
fn task_api_v2_and_v3_on_one_socket_with_containerds_error_codes() {
    let _serial = serial();
    set_subreaper().expect("subreaper");
    let dir = tempfile::tempdir().expect("tmp");
    let id = "api1";
    let b = bundle(dir.path(), id);
    let _cleanup = Cleanup {
        id: id.to_string(),
        bundle: b.clone(),
    };
    // A per-run address: the socket name hashes it, so no shim of an earlier run is reused.
    let fake_address = dir.path().join("containerd.sock").display().to_string();
    let out = Command::new(env!("CARGO_BIN_EXE_containerd-shim-runc-v2"))
        .args([
            "-namespace",
            NS,
            "-id",
            id,
            "-address",
            &fake_address,
            "-publish-binary",
            "/bin/true",
            "start",
        ])
        .current_dir(&b)
        .env_remove("TTRPC_ADDRESS")
        .env_remove("MAX_SHIM_VERSION")
        .stdin(Stdio::null())
        .output()
        .expect("shim start");
    assert!(out.status.success(), "{out:?}");
    let address = String::from_utf8(out.stdout).expect("utf8");
    assert!(
        address.starts_with("unix:///run/containerd/s/"),
        "{address}"
    );
    let sock = address.trim_start_matches("unix://").to_string();

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("rt");
    rt.block_on(async {
        let reaper = Reaper::global();
        let _others = reaper.take_unsubscribed();
        tokio::spawn(reaper.run());
        let conn = ttrpc::r#async::Client::connect(&address).await.expect("connect");
        let v3 = TaskClient::new(conn.clone());

        let mut st = StateRequest::new();
        st.id = "nope".into();
        let (c, m) = code(v3.state(ctx(), &st).await);
        assert_eq!(c, Code::NOT_FOUND, "{m}");
        assert!(m.contains("nope"), "{m}");

        let mut create = CreateTaskRequest::new();
        create.id = id.into();
        create.bundle = b.display().to_string();
        let pid = v3.create(ctx(), &create).await.expect("create").pid;
        assert!(pid > 0);
        let (c, m) = code(v3.create(ctx(), &create).await);
        assert_eq!(c, Code::ALREADY_EXISTS, "{m}");
        let mut start = StartRequest::new();
        start.id = id.into();
        assert_eq!(v3.start(ctx(), &start).await.expect("start").pid, pid);

        // The same State through the v2 service name, raw.
        let mut st = StateRequest::new();
        st.id = id.into();
        let req = ttrpc::Request {
            service: "containerd.task.v2.Task".into(),
            method: "State".into(),
            payload: st.write_to_bytes().expect("encode"),
            timeout_nano: 10_000_000_000,
            ..Default::default()
        };
        let resp = conn.request(req).await.expect("v2 State");
        let v2_state = StateResponse::parse_from_bytes(&resp.payload).expect("decode");
        assert_eq!(v2_state.status.enum_value(), Ok(Status::RUNNING));
        assert_eq!(v2_state.pid, pid);

        // Exec: malformed spec, then a good one, then a duplicate id.
        let mut ex = ExecProcessRequest::new();
        ex.id = id.into();
        ex.exec_id = "e1".into();
        let mut spec = Any::new();
        spec.type_url = "types.containerd.io/opencontainers/runtime-spec/1/Process".into();
        spec.value = b"{not json".to_vec();
        ex.spec = Some(spec.clone()).into();
        let (c, m) = code(v3.exec(ctx(), &ex).await);
        assert_eq!(c, Code::INVALID_ARGUMENT, "{m}");
        assert!(m.contains("e1"), "{m}");
        spec.value = br#"{"args":["sh","-c","exit 3"],"cwd":"/","env":["PATH=/bin"],"user":{"uid":0,"gid":0}}"#.to_vec();
        ex.spec = Some(spec).into();
        v3.exec(ctx(), &ex).await.expect("exec");
        let (c, _) = code(v3.exec(ctx(), &ex).await);
        assert_eq!(c, Code::ALREADY_EXISTS);
        let mut se = StartRequest::new();
        se.id = id.into();
        se.exec_id = "e1".into();
        v3.start(ctx(), &se).await.expect("start exec");
        let mut w = WaitRequest::new();
        w.id = id.into();
        w.exec_id = "e1".into();
        assert_eq!(v3.wait(ctx(), &w).await.expect("wait exec").exit_status, 3);
        let mut k = KillRequest::new();
        k.id = id.into();
        k.exec_id = "missing".into();
        k.signal = 9;
        let (c, m) = code(v3.kill(ctx(), &k).await);
        assert_eq!(c, Code::NOT_FOUND, "{m}");

        // Update with LinuxResources JSON (what containerd sends), and a malformed one.
        let mut up = UpdateTaskRequest::new();
        up.id = id.into();
        let mut res = Any::new();
        res.type_url = "types.containerd.io/opencontainers/runtime-spec/1/LinuxResources".into();
        res.value = br#"{"pids":{"limit":77}}"#.to_vec();
        up.resources = Some(res.clone()).into();
        v3.update(ctx(), &up).await.expect("update");
        let cg = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).expect("cgroup");
        if let Some(line) = cg.lines().find(|l| l.split(':').nth(1) == Some("pids")) {
            let path = line.splitn(3, ':').nth(2).expect("path");
            let max = std::fs::read_to_string(format!("/sys/fs/cgroup/pids{path}/pids.max")).expect("pids.max");
            assert_eq!(max.trim(), "77", "update reached the cgroup");
        }
        res.value = br#"{"pids":{"limit":"many"}}"#.to_vec();
        up.resources = Some(res).into();
        let (c, _) = code(v3.update(ctx(), &up).await);
        assert_eq!(c, Code::INVALID_ARGUMENT);

        // Checkpoint: criu fails on this host; the error is reported, the task keeps running.
        let mut cp = CheckpointTaskRequest::new();
        cp.id = id.into();
        cp.path = dir.path().join("cp").display().to_string();
        let (c, m) = code(v3.checkpoint(ctx(), &cp).await);
        assert_ne!(c, Code::OK);
        assert!(m.contains("checkpoint"), "{m}");
        let mut st = StateRequest::new();
        st.id = id.into();
        assert_eq!(v3.state(ctx(), &st).await.expect("state").status.enum_value(), Ok(Status::RUNNING));

        // Delete of a running init is refused; kill, wait, delete, shutdown.
        let mut d = DeleteRequest::new();
        d.id = id.into();
        let (c, _) = code(v3.delete(ctx(), &d).await);
        assert_eq!(c, Code::FAILED_PRECONDITION);
        let mut k = KillRequest::new();
        k.id = id.into();
        k.signal = 9;
        v3.kill(ctx(), &k).await.expect("kill");
        let mut w = WaitRequest::new();
        w.id = id.into();
        assert_eq!(v3.wait(ctx(), &w).await.expect("wait").exit_status, 137);
        assert_eq!(v3.delete(ctx(), &d).await.expect("delete").exit_status, 137);
        let _ = v3.shutdown(ctx(), &ShutdownRequest::new()).await;
    });
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while Path::new(&sock).exists() && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        !Path::new(&sock).exists(),
        "socket {sock} left after Shutdown"
    );
    assert!(
        !Path::new("/run/containerd/runc").join(NS).join(id).exists(),
        "runc state left"
    );
}

/// `start` with `Options.ShimCgroup` on stdin (containerd < 2.3 sends the bare Any) moves the
/// long-running shim into that cgroup, and gives it our oom_score_adj + 1.
#[test]
fn start_honours_shim_cgroup_and_adjusts_oom_score() {
    use containerd_shim_protos::shim::oci::Options;
    use std::io::Write;
    let _serial = serial();
    set_subreaper().expect("subreaper");
    let dir = tempfile::tempdir().expect("tmp");
    let id = "cgshim1";
    let b = bundle(dir.path(), id);
    let _cleanup = Cleanup {
        id: id.to_string(),
        bundle: b.clone(),
    };
    let cg = format!("berth-shimcg-{}", std::process::id());
    // cgroup v1 hybrid here: make the cgroup in every v1 hierarchy that can take pids.
    let mut made = Vec::new();
    for ctrl in ["memory", "pids", "cpu,cpuacct"] {
        let d = Path::new("/sys/fs/cgroup").join(ctrl).join(&cg);
        if Path::new("/sys/fs/cgroup").join(ctrl).is_dir() && std::fs::create_dir(&d).is_ok() {
            made.push(d);
        }
    }
    assert!(
        !made.is_empty(),
        "no cgroup v1 hierarchy to test ShimCgroup with"
    );

    let mut o = Options::new();
    o.shim_cgroup = format!("/{cg}");
    let mut any = Any::new();
    any.type_url = "containerd.runc.v1.Options".into();
    any.value = o.write_to_bytes().expect("encode");
    let fake_address = dir.path().join("containerd.sock").display().to_string();
    let mut child = Command::new(env!("CARGO_BIN_EXE_containerd-shim-runc-v2"))
        .args([
            "-namespace",
            NS,
            "-id",
            id,
            "-address",
            &fake_address,
            "start",
        ])
        .current_dir(&b)
        .env_remove("TTRPC_ADDRESS")
        .env_remove("MAX_SHIM_VERSION")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("shim start");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(&any.write_to_bytes().expect("encode"))
        .expect("write options");
    let out = child.wait_with_output().expect("start output");
    assert!(out.status.success(), "{out:?}");
    let pid: i32 = std::fs::read_to_string(b.join("shim.pid"))
        .expect("shim.pid")
        .trim()
        .parse()
        .expect("pid");
    let cgroups = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).expect("cgroup");
    assert!(
        cgroups.contains(&format!(":/{cg}\n")),
        "shim not moved into /{cg}:\n{cgroups}"
    );
    let ours: i32 = std::fs::read_to_string("/proc/self/oom_score_adj")
        .expect("score")
        .trim()
        .parse()
        .expect("int");
    let shim: i32 = std::fs::read_to_string(format!("/proc/{pid}/oom_score_adj"))
        .expect("score")
        .trim()
        .parse()
        .expect("int");
    assert_eq!(shim, (ours + 1).min(1000));

    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGKILL,
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    for d in made {
        while std::fs::remove_dir(&d).is_err() && std::time::Instant::now() < deadline {
            // The killed shim leaves the cgroup once it is reaped.
            let _ = nix::sys::wait::waitpid(
                nix::unistd::Pid::from_raw(pid),
                Some(nix::sys::wait::WaitPidFlag::WNOHANG),
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}
