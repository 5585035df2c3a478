//! The wrapper against the real runc (/usr/sbin/runc) and a busybox bundle.

mod common;

use std::io::Read;
use std::os::fd::OwnedFd;
use std::os::unix::process::ExitStatusExt;
use std::time::Duration;

use common::Env;
use runc_wrapper::{
    ConsoleSocket, ContainerStatus, CreateOpts, DeleteOpts, Error, ExecOpts, KillOpts, ProcessIo,
    RunOpts,
};

const SIGKILL: i32 = 9;
const SIGTERM: i32 = 15;

fn pipe() -> (OwnedFd, OwnedFd) {
    nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).expect("pipe2")
}

#[tokio::test]
async fn create_start_state_kill_delete() {
    let env = Env::new("lifecycle");
    let bundle = env.bundle("b", &["sleep", "30"]);
    let id = env.id("c");
    let pid_file = env.dir.path().join("init.pid");
    env.runc
        .create(
            &id,
            &bundle,
            CreateOpts {
                pid_file: Some(pid_file.clone()),
                ..CreateOpts::default()
            },
        )
        .await
        .expect("create");
    let st = env.runc.state(&id).await.expect("state");
    assert_eq!(st.status, ContainerStatus::Created);
    assert_eq!(st.id, id);
    let pid: i32 = std::fs::read_to_string(&pid_file)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert_eq!(st.pid, pid);
    assert!(st.bundle.ends_with("/b"), "{}", st.bundle);

    env.runc.start(&id).await.expect("start");
    assert_eq!(
        env.runc.state(&id).await.unwrap().status,
        ContainerStatus::Running
    );

    env.runc
        .kill(&id, SIGKILL, &KillOpts::default())
        .await
        .expect("kill");
    assert!(
        common::wait_until(10, || !std::path::Path::new(&format!("/proc/{pid}"))
            .exists()
            || std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .map(|s| s.contains(") Z "))
                .unwrap_or(true))
        .await,
        "init {pid} did not die after SIGKILL"
    );
    let mut stopped = false;
    for _ in 0..100 {
        if env.runc.state(&id).await.unwrap().status == ContainerStatus::Stopped {
            stopped = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(stopped, "container not stopped after kill");
    let err = env
        .runc
        .kill(&id, SIGKILL, &KillOpts::default())
        .await
        .expect_err("kill of a stopped container");
    assert!(err.is_process_gone(), "{err}");
    env.runc
        .delete(&id, &DeleteOpts::default())
        .await
        .expect("delete");
    let err = env.runc.state(&id).await.expect_err("state after delete");
    assert!(err.is_container_not_found(), "unexpected error: {err}");
    assert!(
        err.to_string().contains("does not exist"),
        "unexpected error: {err}"
    );
}

#[tokio::test]
async fn run_foreground_returns_output_and_exit_code() {
    let env = Env::new("runfg");
    let bundle = env.bundle(
        "b",
        &["sh", "-c", "echo out-$((6*7)); echo err >&2; exit 3"],
    );
    let id = env.id("c");
    let out = env
        .runc
        .run(&id, &bundle, RunOpts::default())
        .await
        .expect("run");
    assert_eq!(out.status.code(), Some(3));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "out-42\n");
    assert_eq!(String::from_utf8_lossy(&out.stderr), "err\n");
    // runc run without --keep deletes the container on exit.
    assert!(env.runc.state(&id).await.is_err());
}

#[tokio::test]
async fn run_detached_with_caller_pipes() {
    let env = Env::new("rund");
    let bundle = env.bundle("b", &["sh", "-c", "echo detached-hello; sleep 30"]);
    let id = env.id("c");
    let (r, w) = pipe();
    env.runc
        .run(
            &id,
            &bundle,
            RunOpts {
                detach: true,
                create: CreateOpts {
                    io: ProcessIo {
                        stdout: Some(w),
                        ..ProcessIo::default()
                    },
                    ..CreateOpts::default()
                },
                ..RunOpts::default()
            },
        )
        .await
        .expect("run -d");
    assert_eq!(
        env.runc.state(&id).await.unwrap().status,
        ContainerStatus::Running
    );
    let line = tokio::task::spawn_blocking(move || {
        let mut f = std::fs::File::from(r);
        let mut buf = [0u8; 64];
        let n = f.read(&mut buf).unwrap();
        String::from_utf8_lossy(&buf[..n]).into_owned()
    })
    .await
    .unwrap();
    assert_eq!(line, "detached-hello\n");
    env.runc
        .delete(&id, &DeleteOpts { force: true })
        .await
        .expect("delete --force");
}

#[tokio::test]
async fn exec_captures_output_and_detach_writes_pid_file() {
    let env = Env::new("exec");
    let bundle = env.bundle("b", &["sleep", "30"]);
    let id = env.id("c");
    env.runc
        .run(
            &id,
            &bundle,
            RunOpts {
                detach: true,
                ..RunOpts::default()
            },
        )
        .await
        .expect("run -d");

    let out = env
        .runc
        .exec(
            &id,
            &Env::process(&bundle, &["sh", "-c", "hostname; echo e >&2; exit 5"]),
            ExecOpts::default(),
        )
        .await
        .expect("exec");
    assert_eq!(out.status.code(), Some(5));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "rw\n");
    assert_eq!(String::from_utf8_lossy(&out.stderr), "e\n");

    let pid_file = env.dir.path().join("exec.pid");
    env.runc
        .exec(
            &id,
            &Env::process(&bundle, &["sleep", "30"]),
            ExecOpts {
                detach: true,
                pid_file: Some(pid_file.clone()),
                ..ExecOpts::default()
            },
        )
        .await
        .expect("exec -d");
    let pid: i32 = std::fs::read_to_string(&pid_file)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap();
    assert_eq!(cmdline, b"sleep\x0030\x00");

    let pids = env.runc.ps(&id).await.expect("ps");
    assert!(pids.contains(&pid), "ps {pids:?} lacks exec pid {pid}");
    let init = env.runc.state(&id).await.unwrap().pid;
    assert!(pids.contains(&init), "ps {pids:?} lacks init pid {init}");
    assert_eq!(pids.len(), 2, "{pids:?}");

    env.runc
        .kill(&id, SIGTERM, &KillOpts { all: true })
        .await
        .expect("kill --all");
}

#[tokio::test]
async fn exec_into_missing_container_reports_runc_message() {
    let env = Env::new("execmiss");
    let bundle = env.bundle("b", &["true"]);
    let err = env
        .runc
        .exec(
            "no-such-container",
            &Env::process(&bundle, &["true"]),
            ExecOpts::default(),
        )
        .await
        .expect_err("exec into nothing");
    assert!(
        err.to_string().contains("does not exist"),
        "unexpected: {err}"
    );
    // runc exec exits 255 when it cannot run the process.
    assert_eq!(err.exit_status().and_then(|s| s.code()), Some(255));
}

#[tokio::test]
async fn pause_resume_shows_in_state() {
    let env = Env::new("pause");
    let bundle = env.bundle("b", &["sleep", "30"]);
    let id = env.id("c");
    env.runc
        .run(
            &id,
            &bundle,
            RunOpts {
                detach: true,
                ..RunOpts::default()
            },
        )
        .await
        .expect("run -d");
    env.runc.pause(&id).await.expect("pause");
    assert_eq!(
        env.runc.state(&id).await.unwrap().status,
        ContainerStatus::Paused
    );
    let listed = env.runc.list().await.expect("list");
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].status, ContainerStatus::Paused);
    env.runc.resume(&id).await.expect("resume");
    assert_eq!(
        env.runc.state(&id).await.unwrap().status,
        ContainerStatus::Running
    );
}

#[tokio::test]
async fn update_memory_limit_visible_in_cgroup_and_stats() {
    let env = Env::new("update");
    let bundle = env.bundle("b", &["sleep", "30"]);
    let id = env.id("c");
    env.runc
        .run(
            &id,
            &bundle,
            RunOpts {
                detach: true,
                ..RunOpts::default()
            },
        )
        .await
        .expect("run -d");
    let limit: i64 = 48 * 1024 * 1024;
    let resources: oci_spec::runtime::LinuxResources =
        serde_json::from_value(serde_json::json!({"memory": {"limit": limit, "swap": limit}}))
            .unwrap();
    env.runc.update(&id, &resources).await.expect("update");

    let spec: serde_json::Value =
        serde_json::from_slice(&std::fs::read(bundle.join("config.json")).unwrap()).unwrap();
    let cgroup = spec["linux"]["cgroupsPath"].as_str().unwrap();
    let file = format!("/sys/fs/cgroup/memory{cgroup}/memory.limit_in_bytes");
    let value = std::fs::read_to_string(&file).unwrap_or_else(|e| panic!("{file}: {e}"));
    assert_eq!(value.trim(), limit.to_string());

    let stats = env.runc.stats(&id).await.expect("events --stats");
    assert_eq!(stats.memory.usage.limit, u64::try_from(limit).unwrap());
    assert!(stats.memory.usage.usage > 0);
    assert!(stats.pids.current >= 1);
    assert!(stats.cpu.usage.total > 0);
}

#[tokio::test]
async fn list_shows_every_container_of_the_root() {
    let env = Env::new("list");
    assert!(env.runc.list().await.expect("empty list").is_empty());
    let bundle = env.bundle("b", &["sleep", "30"]);
    let a = env.id("a");
    let b = env.id("b");
    for id in [&a, &b] {
        env.runc
            .create(id, &bundle, CreateOpts::default())
            .await
            .expect("create");
    }
    let mut ids: Vec<String> = env
        .runc
        .list()
        .await
        .expect("list")
        .into_iter()
        .map(|c| c.id)
        .collect();
    ids.sort();
    assert_eq!(ids, [a, b]);
}

#[tokio::test]
async fn features_and_version() {
    let env = Env::new("features");
    let v = env.runc.version().await.expect("version");
    assert_eq!(v.name, "runc");
    assert!(v.version.starts_with("1."), "{v:?}");
    assert!(v.spec.is_some());
    let f = env.runc.features().await.expect("features");
    let json = serde_json::to_value(&f).unwrap();
    assert!(
        json["ociVersionMin"]
            .as_str()
            .unwrap_or("")
            .starts_with("1."),
        "{json}"
    );
    let hooks = json["hooks"].as_array().expect("hooks list");
    assert!(hooks.iter().any(|h| h == "prestart"), "{json}");
}

#[tokio::test]
async fn console_socket_receives_pty_master() {
    let env = Env::new("console");
    let bundle = env.bundle_with(
        "b",
        &["sh", "-c", "tty; echo tty-says-hi; sleep 30"],
        |spec| spec["process"]["terminal"] = serde_json::json!(true),
    );
    let id = env.id("c");
    let socket = ConsoleSocket::new().expect("console socket");
    let dir = socket.dir().to_path_buf();
    env.runc
        .create(
            &id,
            &bundle,
            CreateOpts {
                console_socket: Some(socket.path().to_path_buf()),
                ..CreateOpts::default()
            },
        )
        .await
        .expect("create with console socket");
    let master = tokio::time::timeout(Duration::from_secs(10), socket.receive_master())
        .await
        .expect("no pty master within 10s")
        .expect("receive pty master");
    let flags = nix::fcntl::fcntl(&master, nix::fcntl::FcntlArg::F_GETFD).unwrap();
    assert_ne!(flags & libc::FD_CLOEXEC, 0, "received fd must be CLOEXEC");
    env.runc.start(&id).await.expect("start");
    let text = tokio::task::spawn_blocking(move || {
        let mut f = std::fs::File::from(master);
        let mut all = Vec::new();
        let mut buf = [0u8; 256];
        while !String::from_utf8_lossy(&all).contains("tty-says-hi") {
            match f.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => all.extend_from_slice(&buf[..n]),
            }
        }
        String::from_utf8_lossy(&all).into_owned()
    });
    let text = tokio::time::timeout(Duration::from_secs(10), text)
        .await
        .expect("no output on the pty within 10s")
        .unwrap();
    assert!(text.contains("/dev/pts/"), "{text:?}");
    assert!(text.contains("tty-says-hi\r\n"), "{text:?}");
    drop(socket);
    assert!(
        !dir.exists(),
        "console socket dir {} left behind",
        dir.display()
    );
}

#[tokio::test]
async fn create_with_missing_bundle_reports_chdir_error() {
    let env = Env::new("nobundle");
    let id = env.id("c");
    let missing = env.dir.path().join("no-such-bundle");
    let err = env
        .runc
        .create(&id, &missing, CreateOpts::default())
        .await
        .expect_err("create without bundle");
    let Error::CommandFailed {
        command,
        status,
        message,
        ..
    } = &err
    else {
        panic!("expected CommandFailed, got {err:?}")
    };
    assert!(message.contains("no such file or directory"), "{message}");
    assert!(
        message.contains(missing.to_str().unwrap()),
        "message should name the bundle: {message}"
    );
    assert_eq!(status.code(), Some(1));
    assert!(command.contains(" create --bundle "), "{command}");
    assert!(err.to_string().contains(&id));
}

#[tokio::test]
async fn duplicate_id_is_rejected_with_runc_message() {
    let env = Env::new("dup");
    let bundle = env.bundle("b", &["sleep", "30"]);
    let id = env.id("c");
    env.runc
        .create(&id, &bundle, CreateOpts::default())
        .await
        .expect("first create");
    let err = env
        .runc
        .create(&id, &bundle, CreateOpts::default())
        .await
        .expect_err("second create");
    assert!(
        err.runtime_message()
            .unwrap_or_default()
            .contains("container with given ID already exists"),
        "{err}"
    );
    // The first container is untouched.
    assert_eq!(
        env.runc.state(&id).await.unwrap().status,
        ContainerStatus::Created
    );
}

#[tokio::test]
async fn bad_spec_json_reports_parse_error() {
    let env = Env::new("badspec");
    let bundle = env.bundle("b", &["true"]);
    std::fs::write(bundle.join("config.json"), b"{bad json").unwrap();
    let id = env.id("c");
    let err = env
        .runc
        .create(&id, &bundle, CreateOpts::default())
        .await
        .expect_err("create with bad spec");
    let msg = err.runtime_message().unwrap_or_default();
    assert!(msg.contains("invalid character 'b'"), "{err}");
    assert_ne!(msg, "exit status 1");
}

#[tokio::test]
async fn failing_container_start_is_an_error_not_an_exit_code() {
    let env = Env::new("noexe");
    let bundle = env.bundle("b", &["/no/such/binary"]);
    let id = env.id("c");
    let err = env
        .runc
        .run(&id, &bundle, RunOpts::default())
        .await
        .expect_err("run of a missing executable");
    assert!(
        err.runtime_message()
            .unwrap_or_default()
            .contains("no such file or directory"),
        "{err}"
    );
}

#[tokio::test]
async fn foreground_run_killed_from_outside_reports_128_plus_signal() {
    let env = Env::new("sig");
    let bundle = env.bundle("b", &["sleep", "30"]);
    let id = env.id("c");
    let runc = env.runc.clone();
    let (id2, bundle2) = (id.clone(), bundle.clone());
    let run = tokio::spawn(async move { runc.run(&id2, &bundle2, RunOpts::default()).await });
    let mut running = false;
    for _ in 0..250 {
        if let Ok(c) = env.runc.state(&id).await {
            if c.status == ContainerStatus::Running {
                running = true;
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(running, "foreground container never reached running");
    env.runc
        .kill(&id, SIGKILL, &KillOpts::default())
        .await
        .expect("kill");
    let out = tokio::time::timeout(Duration::from_secs(10), run)
        .await
        .expect("foreground run did not return after SIGKILL")
        .unwrap()
        .expect("run");
    // runc reports a signalled container as exit code 128+signal.
    assert_eq!(out.status.code(), Some(128 + SIGKILL), "{:?}", out.status);
    assert_eq!(out.status.signal(), None);
}

#[tokio::test]
async fn extra_files_reach_the_container_and_other_fds_do_not() {
    let env = Env::new("fds");
    let bundle = env.bundle("b", &["sh", "-c", "ls /proc/self/fd; echo via-fd3 >&3"]);
    let id = env.id("c");
    let (r, w) = pipe();
    // A descriptor deliberately left without CLOEXEC must not reach the container.
    let leaky = std::fs::File::open("/dev/null").unwrap();
    nix::fcntl::fcntl(
        &leaky,
        nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::empty()),
    )
    .unwrap();
    let out = env
        .runc
        .run(
            &id,
            &bundle,
            RunOpts {
                create: CreateOpts {
                    extra_files: vec![w],
                    ..CreateOpts::default()
                },
                ..RunOpts::default()
            },
        )
        .await
        .expect("run with preserve-fds");
    assert!(out.status.success(), "{out:?}");
    let mut fds: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .map(str::to_string)
        .collect();
    fds.sort();
    // 0-2 stdio, 3 the passed pipe, 4 the directory `ls` opened.
    assert_eq!(fds, ["0", "1", "2", "3", "4"], "container saw fds {fds:?}");
    let mut got = String::new();
    std::fs::File::from(r).read_to_string(&mut got).unwrap();
    assert_eq!(got, "via-fd3\n");
    drop(leaky);
}

#[tokio::test]
async fn exec_with_terminal_sends_pty_master_to_console_socket() {
    let env = Env::new("exectty");
    let bundle = env.bundle("b", &["sleep", "30"]);
    let id = env.id("c");
    env.runc
        .run(
            &id,
            &bundle,
            RunOpts {
                detach: true,
                ..RunOpts::default()
            },
        )
        .await
        .expect("run -d");
    let mut process = Env::process(&bundle, &["sh", "-c", "echo exec-tty-$((1+1)); sleep 30"]);
    process.set_terminal(Some(true));
    let socket = ConsoleSocket::new().expect("console socket");
    let pid_file = env.dir.path().join("exec.pid");
    env.runc
        .exec(
            &id,
            &process,
            ExecOpts {
                detach: true,
                pid_file: Some(pid_file.clone()),
                console_socket: Some(socket.path().to_path_buf()),
                ..ExecOpts::default()
            },
        )
        .await
        .expect("exec -t -d");
    assert!(pid_file.exists());
    let master = tokio::time::timeout(Duration::from_secs(10), socket.receive_master())
        .await
        .expect("no pty master within 10s")
        .expect("receive");
    let text = tokio::task::spawn_blocking(move || {
        let mut f = std::fs::File::from(master);
        let mut all = Vec::new();
        let mut buf = [0u8; 256];
        while !String::from_utf8_lossy(&all).contains("exec-tty-2") {
            match f.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => all.extend_from_slice(&buf[..n]),
            }
        }
        String::from_utf8_lossy(&all).into_owned()
    });
    let text = tokio::time::timeout(Duration::from_secs(10), text)
        .await
        .expect("no output on the exec pty within 10s")
        .unwrap();
    assert!(text.contains("exec-tty-2"), "{text:?}");
}

#[tokio::test]
async fn checkpoint_and_restore_render_criu_paths_and_report_criu_errors() {
    common::require("/usr/sbin/criu", "criu");
    let env = Env::new("criu");
    let bundle = env.bundle("b", &["sleep", "30"]);
    let id = env.id("c");
    env.runc
        .run(
            &id,
            &bundle,
            RunOpts {
                detach: true,
                ..RunOpts::default()
            },
        )
        .await
        .expect("run -d");
    let image = env.dir.path().join("image");
    let work = env.dir.path().join("work");
    let opts = runc_wrapper::CheckpointOpts {
        criu: runc_wrapper::CriuOpts {
            image_path: Some(image.clone()),
            work_path: Some(work.clone()),
            ..runc_wrapper::CriuOpts::default()
        },
        leave_running: true,
        ..runc_wrapper::CheckpointOpts::default()
    };
    match env.runc.checkpoint(&id, &opts).await {
        Ok(()) => {
            // criu works on this kernel: the image must be there and the container still up.
            assert!(image.join("inventory.img").exists(), "no criu image");
            assert_eq!(
                env.runc.state(&id).await.unwrap().status,
                ContainerStatus::Running
            );
        }
        Err(err) => {
            // criu 3.17 cannot run on every kernel (e.g. "Unexpected rt vDSO area bounds");
            // then the error must carry criu's message and point at the work dir's log.
            let msg = err.runtime_message().unwrap_or_default();
            assert!(msg.contains("criu failed: type DUMP"), "{err}");
            assert!(
                work.join("dump.log").exists(),
                "--work-path not passed: {err}"
            );
            let restore = env
                .runc
                .restore(
                    &env.id("r"),
                    runc_wrapper::RestoreOpts {
                        criu: runc_wrapper::CriuOpts {
                            image_path: Some(image.clone()),
                            work_path: Some(work.clone()),
                            ..runc_wrapper::CriuOpts::default()
                        },
                        bundle: Some(bundle.clone()),
                        detach: true,
                        ..runc_wrapper::RestoreOpts::default()
                    },
                )
                .await
                .expect_err("restore from an empty image");
            assert!(
                restore
                    .runtime_message()
                    .unwrap_or_default()
                    .contains("criu failed"),
                "{restore}"
            );
        }
    }
}
