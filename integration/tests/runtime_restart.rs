//! Live restore (issue 6 "Done when" 4): 20 detached containers, `kill -9` berthd, the
//! containers keep running; some exit and one shim dies while berthd is down; after the
//! restart every live task is listed with its real status, exec and kill work, and each
//! container that ended meanwhile reports exactly one exit with its status. With our shim
//! and both Go shims.

mod runtime_common;

use std::time::{Duration, Instant};

use integration::procs;
use runtime_common::{Env, Events, Shim};

const LONG: usize = 14;
const EXITING: usize = 5;

fn restart_keeps_tasks(shim_kind: Shim, test: &str) {
    let Some(mut env) = Env::start(shim_kind, test, "") else {
        return;
    };
    let img = env.image.clone();
    for i in 0..LONG {
        env.ctr_ok(&["run", "-d", &img, &format!("long{i}"), "sleep", "1000"]);
    }
    env.ctr_ok(&["run", "-d", &img, "doomed", "sleep", "1000"]);
    // Started last, these exit while berthd is down.
    for i in 0..EXITING {
        env.ctr_ok(&[
            "run",
            "-d",
            &img,
            &format!("exits{i}"),
            "sh",
            "-c",
            &format!("sleep 2; exit {}", 10 + i),
        ]);
    }
    let mut pids = Vec::new();
    for i in 0..LONG {
        let (pid, _) = env.wait_status(&format!("long{i}"), "RUNNING", Duration::from_secs(10));
        pids.push(pid.parse::<i32>().expect("pid"));
    }
    let doomed_shim = env.shim_pid("doomed");
    // Shims are outside berthd's process group: signals to berthd's group
    // (systemd KillMode=process, ^C) do not reach them.
    let berthd =
        nix::unistd::Pid::from_raw(i32::try_from(env.d.pid().expect("berthd pid")).expect("pid"));
    let shim = nix::unistd::Pid::from_raw(doomed_shim);
    assert_ne!(
        nix::unistd::getpgid(Some(shim)).expect("pgid"),
        nix::unistd::getpgid(Some(berthd)).expect("pgid")
    );
    if shim_kind == Shim::Ours {
        // Ours also starts a new session (Go shims only a new process group).
        assert_ne!(
            nix::unistd::getsid(Some(shim)).expect("sid"),
            nix::unistd::getsid(Some(berthd)).expect("sid")
        );
    }

    env.d.kill9();
    // While berthd is down: the containers keep running, five exit, one shim is killed.
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(doomed_shim),
        nix::sys::signal::SIGKILL,
    )
    .expect("kill shim");
    std::thread::sleep(Duration::from_secs(4));
    for pid in &pids {
        assert!(
            procs::is_alive(*pid),
            "container process {pid} died with berthd"
        );
    }

    let started = Instant::now();
    env.d.restart().expect("berthd restarts");
    let events = Events::start(&env);
    eprintln!(
        "restart with {} tasks took {:?} (until the socket answered)",
        LONG + EXITING + 1,
        started.elapsed()
    );

    let ls = env.ctr_ok(&["t", "ls"]);
    for (i, expected) in pids.iter().enumerate() {
        let (pid, status) = env
            .task_status(&format!("long{i}"))
            .unwrap_or_else(|| panic!("long{i} not listed: {ls}"));
        assert_eq!(
            (pid.parse::<i32>().ok(), status.as_str()),
            (Some(*expected), "RUNNING"),
            "long{i}: {ls}"
        );
    }
    for i in 0..EXITING {
        let (_, status) = env
            .task_status(&format!("exits{i}"))
            .unwrap_or_else(|| panic!("exits{i} not listed: {ls}"));
        assert_eq!(status, "STOPPED", "exits{i}: {ls}");
    }
    assert!(
        env.task_status("doomed").is_none(),
        "the task of the dead shim is cleaned up: {ls}"
    );
    env.assert_task_gone("doomed");

    // exec and kill work on re-adopted tasks.
    assert_eq!(
        env.ctr_ok(&[
            "t",
            "exec",
            "--exec-id",
            "after",
            "long0",
            "echo",
            "still-here"
        ]),
        "still-here\n"
    );
    env.ctr_ok(&["t", "kill", "-s", "9", "long1"]);
    env.wait_status("long1", "STOPPED", Duration::from_secs(10));

    // One exit per container that ended while berthd was down, with its status.
    for i in 0..EXITING {
        let id = format!("\"exits{i}\"");
        let status = format!("\"exit_status\":{}", 10 + i);
        events.wait_for("/tasks/exit", &[&id, &status], 1, Duration::from_secs(20));
    }
    events.wait_for(
        "/tasks/exit",
        &["\"doomed\"", "\"exit_status\":137"],
        1,
        Duration::from_secs(20),
    );
    // Shims retry undelivered events for a while: give duplicates the chance to show up.
    std::thread::sleep(Duration::from_secs(6));
    for i in 0..EXITING {
        assert_eq!(
            events.count("/tasks/exit", &[&format!("\"exits{i}\"")]),
            1,
            "exits{i}:\n{}",
            events.text()
        );
    }
    assert_eq!(
        events.count("/tasks/exit", &["\"doomed\""]),
        1,
        "doomed:\n{}",
        events.text()
    );
    assert_eq!(
        events.count("/tasks/delete", &["\"doomed\""]),
        1,
        "doomed:\n{}",
        events.text()
    );
    assert_eq!(
        events.count("/tasks/exit", &["\"long1\""]),
        1,
        "long1:\n{}",
        events.text()
    );

    drop(events);
    for id in env
        .ctr_ok(&["c", "ls", "-q"])
        .split_whitespace()
        .map(str::to_string)
        .collect::<Vec<_>>()
    {
        let _ = env.ctr(&["t", "kill", "-s", "9", &id]);
    }
    for id in env
        .ctr_ok(&["c", "ls", "-q"])
        .split_whitespace()
        .map(str::to_string)
        .collect::<Vec<_>>()
    {
        if env.task_status(&id).is_some() {
            env.wait_status(&id, "STOPPED", Duration::from_secs(10));
            env.ctr_ok(&["t", "rm", &id]);
        }
        env.ctr_ok(&["c", "rm", &id]);
    }
    env.assert_nothing_left();
}

#[test]
fn kill_9_of_berthd_keeps_tasks_with_our_shim() {
    restart_keeps_tasks(Shim::Ours, "kill_9_of_berthd_keeps_tasks_with_our_shim");
}

#[test]
fn kill_9_of_berthd_keeps_tasks_with_debian_go_shim() {
    restart_keeps_tasks(
        Shim::DebianGo,
        "kill_9_of_berthd_keeps_tasks_with_debian_go_shim",
    );
}

#[test]
fn kill_9_of_berthd_keeps_tasks_with_containerd_2_3_go_shim() {
    restart_keeps_tasks(
        Shim::Go23,
        "kill_9_of_berthd_keeps_tasks_with_containerd_2_3_go_shim",
    );
}
