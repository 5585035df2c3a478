//! The cgroups task monitor (`io.containerd.monitor.v1 cgroups`) on `[metrics] address`:
//! berthd's per-task `container_*` families against containerd 1.6.20's for the same detached
//! container (same names, help, type and label keys; sane values), the task leaving the output
//! after kill + delete, a SIGSTOPped shim costing a scrape no more than the per-task bound,
//! `no_prometheus`, the plugin row, and the OOM counter + `/tasks/oom` of runtime v1 tasks.

mod runtime_common;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::time::{Duration, Instant};

use integration::containerd::Containerd;
use integration::image::TestImage;
use runtime_common::{Env, Events, Shim};

const V1: &str = "io.containerd.runtime.v1.linux";

/// A port nobody listens on right now.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind an ephemeral port")
        .port()
}

fn metrics_config(port: u16) -> String {
    format!("[metrics]\n  address = \"127.0.0.1:{port}\"\n")
}

/// `GET /v1/metrics`: (status line, body, how long it took).
fn scrape(port: u16) -> (String, String, Duration) {
    let started = Instant::now();
    let mut conn = std::net::TcpStream::connect(("127.0.0.1", port))
        .unwrap_or_else(|e| panic!("connect to metrics port {port}: {e}"));
    conn.set_read_timeout(Some(Duration::from_secs(60)))
        .expect("read timeout");
    // HTTP/1.0: Go's server then sends the body as is (no chunked encoding).
    conn.write_all(b"GET /v1/metrics HTTP/1.0\r\nHost: localhost\r\n\r\n")
        .expect("send request");
    let mut raw = Vec::new();
    conn.read_to_end(&mut raw).expect("read response");
    let elapsed = started.elapsed();
    let raw = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = raw.split_once("\r\n\r\n").unwrap_or((&raw, ""));
    let status = head.lines().next().unwrap_or_default().to_string();
    (status, body.to_string(), elapsed)
}

fn scrape_ok(port: u16) -> String {
    let (status, body, _) = scrape(port);
    assert!(
        status.contains(" 200 "),
        "scrape of :{port}: {status}\n{body}"
    );
    body
}

/// One sample line: name, labels, value.
#[derive(Debug, Clone)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

/// Parses the sample lines of a text exposition (escapes in label values honoured).
fn samples(text: &str) -> Vec<Sample> {
    let mut out = Vec::new();
    for line in text.lines() {
        if line.starts_with('#') || line.trim().is_empty() {
            continue;
        }
        let name_end = line.find(['{', ' ']).unwrap_or(line.len());
        let name = line[..name_end].to_string();
        let mut labels = BTreeMap::new();
        let mut rest = &line[name_end..];
        if let Some(r) = rest.strip_prefix('{') {
            let mut chars = r.char_indices().peekable();
            let mut key = String::new();
            let mut end = r.len();
            while let Some((i, c)) = chars.next() {
                match c {
                    '}' => {
                        end = i + 1;
                        break;
                    }
                    ',' => {}
                    '=' => {
                        assert_eq!(chars.next().map(|x| x.1), Some('"'), "{line}");
                        let mut value = String::new();
                        while let Some((_, c)) = chars.next() {
                            match c {
                                '\\' => match chars.next().map(|x| x.1) {
                                    Some('n') => value.push('\n'),
                                    Some(o) => value.push(o),
                                    None => {}
                                },
                                '"' => break,
                                o => value.push(o),
                            }
                        }
                        labels.insert(std::mem::take(&mut key), value);
                    }
                    o => key.push(o),
                }
            }
            rest = &r[end..];
        }
        let value = rest.trim().parse::<f64>().unwrap_or_else(|e| {
            panic!("value of {line:?}: {e}");
        });
        out.push(Sample {
            name,
            labels,
            value,
        });
    }
    out
}

/// For container `id`: metric name → set of label-key sets.
fn shape(text: &str, id: &str) -> BTreeMap<String, BTreeSet<Vec<String>>> {
    let mut m: BTreeMap<String, BTreeSet<Vec<String>>> = BTreeMap::new();
    for s in samples(text) {
        if s.labels.get("container_id").map(String::as_str) == Some(id) {
            m.entry(s.name)
                .or_default()
                .insert(s.labels.keys().cloned().collect());
        }
    }
    m
}

fn value(text: &str, name: &str, id: &str) -> Option<f64> {
    samples(text)
        .into_iter()
        .find(|s| s.name == name && s.labels.get("container_id").map(String::as_str) == Some(id))
        .map(|s| s.value)
}

/// The `# HELP` and `# TYPE` lines of family `name`.
fn meta(text: &str, name: &str) -> Vec<String> {
    text.lines()
        .filter(|l| {
            l.strip_prefix("# HELP ")
                .or_else(|| l.strip_prefix("# TYPE "))
                .is_some_and(|r| r.split(' ').next() == Some(name))
        })
        .map(str::to_string)
        .collect()
}

/// The `ctr plugins ls` row of the cgroups monitor, whitespace-normalised.
fn monitor_row(plugins_ls: &str) -> Option<String> {
    plugins_ls
        .lines()
        .find(|l| l.starts_with("io.containerd.monitor.v1 "))
        .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
}

fn wait_for<T>(what: &str, timeout: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Runs `id` detached, scrapes, kills and deletes it, scrapes again: (shape while running,
/// text while running, text after delete).
fn lifecycle(
    ctr_ok: &dyn Fn(&[&str]) -> String,
    port: u16,
    image: &str,
    id: &str,
    runtime: Option<&str>,
) -> (BTreeMap<String, BTreeSet<Vec<String>>>, String, String) {
    let mut args = vec!["run", "-d"];
    if let Some(r) = runtime {
        args.extend(["--runtime", r]);
    }
    args.extend([image, id, "sleep", "1000"]);
    ctr_ok(&args);
    // Scrape until the task's memory reads non-zero (the first scrape may race the start).
    let running = wait_for(&format!("metrics of {id}"), Duration::from_secs(15), || {
        let text = scrape_ok(port);
        (value(&text, "container_memory_usage_usage_bytes", id).unwrap_or(0.0) > 0.0)
            .then_some(text)
    });
    let shape = shape(&running, id);
    ctr_ok(&["t", "kill", "-s", "KILL", id]);
    wait_for(&format!("{id} stopped"), Duration::from_secs(15), || {
        ctr_ok(&["t", "ls"])
            .lines()
            .any(|l| l.starts_with(id) && l.contains("STOPPED"))
            .then_some(())
    });
    ctr_ok(&["t", "rm", id]);
    let after = scrape_ok(port);
    ctr_ok(&["c", "rm", id]);
    (shape, running, after)
}

#[test]
fn cgroup_metrics_match_containerd_and_leave_with_the_task() {
    let port = free_port();
    let Some(env) = Env::start(
        Shim::Ours,
        "cgroup_metrics_match_containerd_and_leave_with_the_task",
        &metrics_config(port),
    ) else {
        return;
    };
    let cport = free_port();
    let c = Containerd::v1()
        .extra_config(&metrics_config(cport))
        .start()
        .expect("containerd 1.6 starts");
    let archive = env.work.path().join("busybox.oci.tar");
    TestImage::busybox()
        .expect("busybox image")
        .write_oci_archive(&archive)
        .expect("write archive");
    c.import(&archive);

    let (ours, ours_text, ours_after) =
        lifecycle(&|a| env.ctr_ok(a), port, &env.image, "mc1", None);
    let (theirs, theirs_text, theirs_after) =
        lifecycle(&|a| c.ctr_ok(a), cport, &env.image, "mc1", None);
    eprintln!("berthd:\n{ours:#?}\ncontainerd:\n{theirs:#?}");

    assert!(
        !theirs.is_empty(),
        "containerd exported nothing for mc1:\n{theirs_text}"
    );
    assert_eq!(
        ours, theirs,
        "metric names and label keys of mc1 differ (berthd left, containerd right)"
    );
    for name in theirs.keys() {
        assert_eq!(
            meta(&ours_text, name),
            meta(&theirs_text, name),
            "HELP/TYPE of {name}"
        );
    }
    // The runtime label carries the container's runtime, as containerd's Monitor labels it.
    let runtime = samples(&ours_text)
        .into_iter()
        .find(|s| s.labels.get("container_id").map(String::as_str) == Some("mc1"))
        .and_then(|s| s.labels.get("runtime").cloned());
    assert_eq!(runtime.as_deref(), Some("io.containerd.runc.v2"));
    assert_eq!(
        samples(&ours_text)
            .iter()
            .find(|s| s.labels.get("container_id").map(String::as_str) == Some("mc1"))
            .and_then(|s| s.labels.get("namespace").cloned())
            .as_deref(),
        Some(env.d.namespace())
    );
    // Sane values.
    let usage = value(&ours_text, "container_memory_usage_usage_bytes", "mc1").expect("usage");
    assert!(usage > 0.0, "memory usage {usage}");
    let pids = value(&ours_text, "container_pids_current", "mc1").expect("pids");
    assert!(pids >= 1.0, "pids {pids}");
    let cpu = value(&ours_text, "container_cpu_total_nanoseconds", "mc1").expect("cpu");
    assert!(cpu > 0.0, "cpu {cpu}");
    // Gone after kill + delete, from both.
    assert!(
        shape(&ours_after, "mc1").is_empty(),
        "berthd still exports mc1 after delete:\n{ours_after}"
    );
    assert!(shape(&theirs_after, "mc1").is_empty());
    // Both list the plugin the same way.
    assert_eq!(
        monitor_row(&env.ctr_ok(&["plugins", "ls"])),
        monitor_row(&c.ctr_ok(&["plugins", "ls"])),
    );
    assert!(monitor_row(&env.ctr_ok(&["plugins", "ls"])).is_some_and(|r| r.ends_with(" ok")));
    env.assert_nothing_left();
}

#[test]
fn scrape_is_bounded_when_a_shim_is_stopped() {
    let port = free_port();
    let Some(env) = Env::start(
        Shim::Ours,
        "scrape_is_bounded_when_a_shim_is_stopped",
        &metrics_config(port),
    ) else {
        return;
    };
    for id in ["hung", "fine"] {
        env.ctr_ok(&["run", "-d", &env.image, id, "sleep", "1000"]);
    }
    wait_for("both tasks in the scrape", Duration::from_secs(15), || {
        let t = scrape_ok(port);
        (!shape(&t, "hung").is_empty() && !shape(&t, "fine").is_empty()).then_some(())
    });
    let shim = env.shim_pid("hung");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(shim),
        nix::sys::signal::Signal::SIGSTOP,
    )
    .expect("SIGSTOP the shim");
    // Resume the shim even if an assertion fails, so cleanup can talk to it.
    struct Cont(i32);
    impl Drop for Cont {
        fn drop(&mut self) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(self.0),
                nix::sys::signal::Signal::SIGCONT,
            );
        }
    }
    let cont = Cont(shim);
    let (status, text, took) = scrape(port);
    assert!(status.contains(" 200 "), "{status}");
    // The per-task bound is 2 s; the whole scrape may not wait much longer than that.
    assert!(
        took < Duration::from_secs(6),
        "scrape with a stopped shim took {took:?}"
    );
    assert!(
        shape(&text, "hung").is_empty(),
        "the stopped shim's task is left out"
    );
    assert!(
        value(&text, "container_pids_current", "fine").is_some_and(|v| v >= 1.0),
        "the other task is still exported:\n{text}"
    );
    assert!(
        env.d.logs().contains("hung") && env.d.logs().contains("no answer from its shim"),
        "the timeout is logged naming the task:\n{}",
        env.d.log_tail(20)
    );
    drop(cont);
    wait_for(
        "the resumed shim's task back",
        Duration::from_secs(15),
        || (!shape(&scrape_ok(port), "hung").is_empty()).then_some(()),
    );
    for id in ["hung", "fine"] {
        env.ctr_ok(&["t", "kill", "-s", "KILL", id]);
    }
    for id in ["hung", "fine"] {
        wait_for(&format!("{id} stopped"), Duration::from_secs(15), || {
            env.task_status(id)
                .is_some_and(|s| s.1 == "STOPPED")
                .then_some(())
        });
        env.ctr_ok(&["t", "rm", id]);
        env.ctr_ok(&["c", "rm", id]);
    }
    env.assert_nothing_left();
}

#[test]
fn no_prometheus_exports_no_task_metrics() {
    let port = free_port();
    let extra = format!(
        "{}\n[plugins.\"io.containerd.monitor.v1.cgroups\"]\n  no_prometheus = true\n",
        metrics_config(port)
    );
    let Some(env) = Env::start(Shim::Ours, "no_prometheus_exports_no_task_metrics", &extra) else {
        return;
    };
    env.ctr_ok(&["run", "-d", &env.image, "np", "sleep", "1000"]);
    env.wait_status("np", "RUNNING", Duration::from_secs(10));
    let text = scrape_ok(port);
    assert!(
        text.contains("berth_grpc_requests_total"),
        "the daemon's own metrics stay:\n{text}"
    );
    assert!(
        !text.lines().any(|l| l.starts_with("container_")),
        "no per-task metrics with no_prometheus:\n{text}"
    );
    assert!(
        !env.d.logs().contains("no_prometheus"),
        "the key is known (no unknown-key warning):\n{}",
        env.d.log_tail(30)
    );
    env.ctr_ok(&["t", "kill", "-s", "KILL", "np"]);
    env.wait_status("np", "STOPPED", Duration::from_secs(10));
    env.ctr_ok(&["t", "rm", "np"]);
    env.ctr_ok(&["c", "rm", "np"]);
}

/// `[plugins.linux]` with Debian's `containerd-shim`.
fn linux_v1_config(runc_root: &std::path::Path) -> String {
    let _ = integration::bins::require_bin("containerd-shim", "containerd");
    format!(
        "[plugins.linux]\n  shim = \"containerd-shim\"\n  runtime = \"runc\"\n  runtime_root = \"{}\"\n",
        runc_root.display()
    )
}

#[test]
fn runtime_v1_task_counts_ooms_and_publishes_them() {
    let port = free_port();
    let runc_root = tempfile::tempdir().expect("tempdir");
    let extra = format!(
        "{}{}",
        metrics_config(port),
        linux_v1_config(runc_root.path())
    );
    let Some(env) = Env::start(
        Shim::Ours,
        "runtime_v1_task_counts_ooms_and_publishes_them",
        &extra,
    ) else {
        return;
    };
    let events = Events::start(&env);
    // `tail` keeps all of a newline-free input in memory: 64 MiB under an 8 MiB limit is
    // killed by the OOM killer; the shell goes on sleeping, so the task stays.
    env.ctr_ok(&[
        "run",
        "-d",
        "--runtime",
        V1,
        "--memory-limit",
        "8388608",
        &env.image,
        "oomy",
        "sh",
        "-c",
        "sleep 1; head -c 67108864 /dev/zero | tail; sleep 1000",
    ]);
    env.ctr_ok(&[
        "run",
        "-d",
        "--runtime",
        V1,
        &env.image,
        "calm",
        "sleep",
        "1000",
    ]);
    let text = wait_for("an OOM counted", Duration::from_secs(20), || {
        let t = scrape_ok(port);
        (value(&t, "container_memory_oom_total", "oomy").unwrap_or(0.0) >= 1.0).then_some(t)
    });
    assert_eq!(
        value(&text, "container_memory_oom_total", "calm"),
        Some(0.0),
        "a v1 task without OOMs reads 0:\n{text}"
    );
    assert_eq!(
        meta(&text, "container_memory_oom_total"),
        [
            "# HELP container_memory_oom_total The number of times a container has received an oom event",
            "# TYPE container_memory_oom_total counter"
        ]
    );
    // Labelled as containerd labels it: no runtime label on this family.
    let s = samples(&text)
        .into_iter()
        .find(|s| s.name == "container_memory_oom_total" && s.labels["container_id"] == "oomy")
        .expect("oom sample");
    assert_eq!(
        s.labels.keys().map(String::as_str).collect::<Vec<_>>(),
        ["container_id", "namespace"]
    );
    events.wait_for("/tasks/oom", &["\"oomy\""], 1, Duration::from_secs(10));
    // One event per OOM counted, none for the calm task (the v1 shim publishes none itself).
    std::thread::sleep(Duration::from_millis(500));
    let counted = value(&scrape_ok(port), "container_memory_oom_total", "oomy").expect("counter");
    assert_eq!(
        events.count("/tasks/oom", &["\"oomy\""]) as f64,
        counted,
        "events:\n{}",
        events.text()
    );
    assert_eq!(events.count("/tasks/oom", &["\"calm\""]), 0);
    for id in ["oomy", "calm"] {
        env.ctr_ok(&["t", "kill", "-s", "KILL", id]);
        env.wait_status(id, "STOPPED", Duration::from_secs(10));
        env.ctr_ok(&["t", "rm", id]);
        env.ctr_ok(&["c", "rm", id]);
    }
    let after = scrape_ok(port);
    assert!(
        shape(&after, "oomy").is_empty() && shape(&after, "calm").is_empty(),
        "{after}"
    );
}

#[test]
fn runtime_v1_task_metrics_match_containerd() {
    let port = free_port();
    let runc_root = tempfile::tempdir().expect("tempdir");
    let extra = format!(
        "{}{}",
        metrics_config(port),
        linux_v1_config(runc_root.path())
    );
    let Some(env) = Env::start(
        Shim::Ours,
        "runtime_v1_task_metrics_match_containerd",
        &extra,
    ) else {
        return;
    };
    let cport = free_port();
    let c = Containerd::v1()
        .extra_config(&metrics_config(cport))
        .start()
        .expect("containerd 1.6 starts");
    let archive = env.work.path().join("busybox.oci.tar");
    TestImage::busybox()
        .expect("busybox image")
        .write_oci_archive(&archive)
        .expect("write archive");
    c.import(&archive);

    let (ours, ours_text, ours_after) =
        lifecycle(&|a| env.ctr_ok(a), port, &env.image, "mv1", Some(V1));
    let (theirs, theirs_text, _) = lifecycle(&|a| c.ctr_ok(a), cport, &env.image, "mv1", Some(V1));
    eprintln!("berthd:\n{ours:#?}\ncontainerd:\n{theirs:#?}");
    // containerd's v1 monitor adds the OOM counter for these tasks.
    assert!(
        theirs.contains_key("container_memory_oom_total"),
        "{theirs_text}"
    );
    assert_eq!(
        ours, theirs,
        "metric names and label keys of a runtime v1 task differ (berthd left)"
    );
    for name in theirs.keys() {
        assert_eq!(
            meta(&ours_text, name),
            meta(&theirs_text, name),
            "HELP/TYPE of {name}"
        );
    }
    assert_eq!(
        value(&ours_text, "container_memory_oom_total", "mv1"),
        Some(0.0)
    );
    assert!(shape(&ours_after, "mv1").is_empty(), "{ours_after}");
}

/// After `kill -9` and a restart, re-adopted tasks are monitored again — without the
/// `runtime` label (containerd's `Monitor(t, nil)` on restore) — and a runtime v1 task gets
/// its OOM counter back; same shapes as containerd 1.6 after its own restart.
#[test]
fn restored_tasks_are_monitored_as_containerd_does() {
    let port = free_port();
    let runc_root = tempfile::tempdir().expect("tempdir");
    let extra = format!(
        "{}{}",
        metrics_config(port),
        linux_v1_config(runc_root.path())
    );
    let Some(mut env) = Env::start(
        Shim::Ours,
        "restored_tasks_are_monitored_as_containerd_does",
        &extra,
    ) else {
        return;
    };
    let cport = free_port();
    let mut c = Containerd::v1()
        .extra_config(&metrics_config(cport))
        .start()
        .expect("containerd 1.6 starts");
    let archive = env.work.path().join("busybox.oci.tar");
    TestImage::busybox()
        .expect("busybox image")
        .write_oci_archive(&archive)
        .expect("write archive");
    c.import(&archive);
    let img = env.image.clone();
    for ctr_ok in [
        &(|a: &[&str]| env.ctr_ok(a)) as &dyn Fn(&[&str]) -> String,
        &|a: &[&str]| c.ctr_ok(a),
    ] {
        ctr_ok(&["run", "-d", &img, "r2", "sleep", "1000"]);
        ctr_ok(&["run", "-d", "--runtime", V1, &img, "r1", "sleep", "1000"]);
    }
    env.d.restart().expect("berthd restarts");
    c.restart().expect("containerd restarts");
    let both = |port: u16| {
        wait_for(
            "restored tasks in the scrape",
            Duration::from_secs(15),
            || {
                let t = scrape_ok(port);
                (value(&t, "container_memory_usage_usage_bytes", "r1").is_some()
                    && value(&t, "container_memory_usage_usage_bytes", "r2").is_some()
                    && value(&t, "container_memory_oom_total", "r1").is_some())
                .then_some(t)
            },
        )
    };
    let (ours, theirs) = (both(port), both(cport));
    for id in ["r1", "r2"] {
        let (o, t) = (shape(&ours, id), shape(&theirs, id));
        assert_eq!(o, t, "{id} after restart (berthd left)");
        assert!(
            o.values()
                .flatten()
                .all(|keys| !keys.contains(&"runtime".to_string())),
            "no runtime label after restore: {o:?}"
        );
    }
    for ctr_ok in [
        &(|a: &[&str]| env.ctr_ok(a)) as &dyn Fn(&[&str]) -> String,
        &|a: &[&str]| c.ctr_ok(a),
    ] {
        for id in ["r1", "r2"] {
            ctr_ok(&["t", "kill", "-s", "KILL", id]);
        }
        for id in ["r1", "r2"] {
            wait_for(&format!("{id} stopped"), Duration::from_secs(15), || {
                ctr_ok(&["t", "ls"])
                    .lines()
                    .any(|l| l.starts_with(id) && l.contains("STOPPED"))
                    .then_some(())
            });
            ctr_ok(&["t", "rm", id]);
            ctr_ok(&["c", "rm", id]);
        }
    }
    let after = scrape_ok(port);
    assert!(
        shape(&after, "r1").is_empty() && shape(&after, "r2").is_empty(),
        "{after}"
    );
}
