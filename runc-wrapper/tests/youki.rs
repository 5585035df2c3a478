//! The same client against an alternate runtime binary (containerd's `BinaryName` option):
//! youki 0.7.0 from /work/shared/interop.

mod common;

use std::path::Path;

use common::{Env, YOUKI};
use runc_wrapper::{ContainerStatus, CreateOpts, DeleteOpts, ExecOpts, KillOpts, RunOpts};

fn youki_env(name: &str) -> Env {
    assert!(
        Path::new(YOUKI).exists(),
        "{YOUKI} is missing: the alternate-runtime tests need youki 0.7.0 there \
         (built with `cargo install youki --locked --features v1`, see \
         /work/shared/interop/youki-0.7.0/README.md)"
    );
    // Bundles are generated with runc spec; runc must exist too.
    common::require(common::RUNC, "runc");
    Env::with_binary(name, Path::new(YOUKI))
}

#[tokio::test]
async fn youki_lifecycle_create_start_exec_kill_delete() {
    let env = youki_env("youki");
    let bundle = env.bundle("b", &["sleep", "30"]);
    let id = env.id("c");
    let v = env.runc.version().await.expect("youki version");
    assert_eq!(v.name, "youki");
    assert_eq!(v.version, "0.7.0");

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
        .expect("youki create");
    let st = env.runc.state(&id).await.expect("youki state");
    assert_eq!(st.status, ContainerStatus::Created);
    let pid: i32 = std::fs::read_to_string(&pid_file)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert_eq!(st.pid, pid);

    env.runc.start(&id).await.expect("youki start");
    assert_eq!(
        env.runc.state(&id).await.unwrap().status,
        ContainerStatus::Running
    );
    let out = env
        .runc
        .exec(
            &id,
            &Env::process(&bundle, &["sh", "-c", "echo from-youki; exit 6"]),
            ExecOpts::default(),
        )
        .await
        .expect("youki exec");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "from-youki\n");
    assert_eq!(out.status.code(), Some(6));

    let listed = env.runc.list().await.expect("youki list");
    assert!(listed.iter().any(|c| c.id == id), "{listed:?}");

    env.runc
        .kill(&id, 9, &KillOpts::default())
        .await
        .expect("youki kill");
    let mut stopped = false;
    for _ in 0..250 {
        if env.runc.state(&id).await.unwrap().status == ContainerStatus::Stopped {
            stopped = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert!(stopped, "youki container not stopped after SIGKILL");
    env.runc
        .delete(&id, &DeleteOpts::default())
        .await
        .expect("youki delete");
    assert!(env.runc.state(&id).await.is_err());
}

#[tokio::test]
async fn youki_run_foreground_and_duplicate_id_error() {
    let env = youki_env("youkirun");
    // The sleep works around a youki 0.7.0 race: in foreground `run` it waits for SIGCHLD
    // with sigtimedwait without blocking the signal first, so a container that exits before
    // youki gets there leaves youki hung forever beside a zombie (seen under parallel load;
    // the wrapper's timeout is what turns that into an error instead of a hang).
    let bundle = env.bundle("b", &["sh", "-c", "sleep 1; echo youki-run; exit 2"]);
    let id = env.id("c");
    let out = env
        .runc
        .run(
            &id,
            &bundle,
            RunOpts {
                keep: false,
                ..RunOpts::default()
            },
        )
        .await
        .expect("youki run");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "youki-run\n");
    assert_eq!(out.status.code(), Some(2));

    let bundle = env.bundle("b2", &["sleep", "30"]);
    let id = env.id("dup");
    env.runc
        .create(&id, &bundle, CreateOpts::default())
        .await
        .expect("create");
    let err = env
        .runc
        .create(&id, &bundle, CreateOpts::default())
        .await
        .expect_err("duplicate id");
    let msg = err.runtime_message().unwrap_or_default().to_string();
    assert!(
        msg.contains("exists"),
        "youki's message should say so: {err}"
    );
}
