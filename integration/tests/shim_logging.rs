//! Done-when item 4 of issue 4: `--log-uri file://` and `binary://` receive the container's
//! output, and `--null-io` works, under containerd 1.6.20 and 2.3.4.

mod shim_common;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::time::{Duration, Instant};

use shim_common::{assert_task_gone, Env, Gen};

fn wait_file_contains(path: &std::path::Path, needle: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let text = fs::read_to_string(path).unwrap_or_default();
        if text.contains(needle) {
            return text;
        }
        assert!(
            Instant::now() < deadline,
            "{} never got {needle:?}; has {text:?}",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn logging(gen: Gen, test: &str) {
    let Some(env) = Env::start(gen, test) else {
        return;
    };
    let dir = env.work.path();

    // file:// — created with its parents, appended to.
    let log = dir.join("nested/dir/x.log");
    let uri = format!("file://{}", log.display());
    env.run_ok(&[
        "--rm",
        "--log-uri",
        &uri,
        &env.image,
        "l1",
        "sh",
        "-c",
        "echo to-file; echo err-to-file >&2",
    ]);
    let text = wait_file_contains(&log, "err-to-file");
    assert!(text.contains("to-file\n"), "{text:?}");
    env.run_ok(&[
        "--rm",
        "--log-uri",
        &uri,
        &env.image,
        "l1b",
        "echo",
        "appended",
    ]);
    let text = wait_file_contains(&log, "appended");
    assert!(
        text.contains("err-to-file"),
        "file:// must append, got {text:?}"
    );
    assert_task_gone(&env, "l1");

    // binary:// — the logging-binary protocol (fds 3/4, readiness on 5, CONTAINER_* env).
    let out = dir.join("bin-out");
    let err = dir.join("bin-err");
    let envf = dir.join("bin-env");
    let logger = dir.join("logger.sh");
    fs::write(
        &logger,
        format!(
            "#!/bin/sh\necho \"$CONTAINER_ID $CONTAINER_NAMESPACE $1\" > '{env}'\nexec 5>&-\ncat <&3 > '{out}' &\ncat <&4 > '{err}' &\nwait\n",
            env = envf.display(),
            out = out.display(),
            err = err.display()
        ),
    )
    .expect("write logger");
    fs::set_permissions(&logger, fs::Permissions::from_mode(0o755)).expect("chmod");
    let uri = format!("binary://{}?first-arg", logger.display());
    env.run_ok(&[
        "--rm",
        "--log-uri",
        &uri,
        &env.image,
        "l2",
        "sh",
        "-c",
        "echo to-binary; echo err-to-binary >&2",
    ]);
    wait_file_contains(&out, "to-binary");
    wait_file_contains(&err, "err-to-binary");
    let e = wait_file_contains(&envf, "l2");
    assert!(e.contains(env.c.namespace()), "logger env: {e:?}");
    assert_task_gone(&env, "l2");

    // --null-io: nothing attached, the task still runs and exits.
    let o = env.ctr(&[
        "run",
        "--rm",
        "--null-io",
        &env.image,
        "l3",
        "sh",
        "-c",
        "echo invisible; exit 0",
    ]);
    assert!(o.status.success(), "{o:?}");
    assert!(!String::from_utf8_lossy(&o.stdout).contains("invisible"));
    assert_task_gone(&env, "l3");

    // A bad log URI is refused with a message naming it, and leaves nothing behind.
    let o = env.ctr(&[
        "run",
        "--rm",
        "--log-uri",
        "bogus://x",
        &env.image,
        "l4",
        "true",
    ]);
    assert!(!o.status.success());
    let msg = String::from_utf8_lossy(&o.stderr);
    assert!(msg.contains("bogus"), "error should name the URI: {msg}");
    let _ = env.ctr(&["c", "rm", "l4"]);
    assert_task_gone(&env, "l4");
}

#[test]
fn containerd_1_6_log_uri_file_binary_and_null_io_with_our_shim() {
    logging(Gen::V1, "logging_1_6");
}

#[test]
fn containerd_2_3_log_uri_file_binary_and_null_io_with_our_shim() {
    logging(Gen::V2, "containerd_2_3_logging");
}
