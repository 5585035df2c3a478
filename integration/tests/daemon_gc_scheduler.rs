//! berthd's GC follows `[plugins."io.containerd.gc.v1.scheduler"]` as containerd's
//! `gc/scheduler` does, observed from outside: after `ctr content rm` (which only drops the
//! namespace's record) the blob file stays on disk until a collection runs.
//!
//! - `deletion_threshold = 1`, `schedule_delay = "1500ms"`: the delete schedules a collection
//!   1.5 s later — the blob is there at 0.5 s and gone soon after 1.5 s.
//! - `deletion_threshold = 0` with a pending check an hour away (`startup_delay = "1h"`): a
//!   delete waits for that check, so the blob stays; a sync delete (`leases rm --sync`)
//!   triggers a collection at once and takes it.
//! - berthd's defaults (containerd's, except `deletion_threshold = 1`): the blob goes within a
//!   second.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use integration::daemon::TestDaemon;
use sha2::{Digest, Sha256};

fn daemon(gc: &str) -> TestDaemon {
    TestDaemon::builder()
        .extra_config(&format!(
            "[plugins]\n  [plugins.\"io.containerd.gc.v1.scheduler\"]\n{gc}"
        ))
        .start()
        .expect("start berthd")
}

/// Ingests a blob, removes its record and returns the blob's path on disk.
fn ingest_and_rm(d: &TestDaemon, tag: &str) -> PathBuf {
    let data = format!("gc scheduler test blob {tag}\n").repeat(50);
    let hex = hex::encode(Sha256::digest(data.as_bytes()));
    let f = tempfile::NamedTempFile::new().expect("tmp");
    std::fs::write(f.path(), &data).expect("write");
    let o = d
        .ctr_command()
        .args([
            "content",
            "ingest",
            "--expected-digest",
            &format!("sha256:{hex}"),
            &format!("ref-{tag}"),
        ])
        .stdin(Stdio::from(std::fs::File::open(f.path()).expect("open")))
        .output()
        .expect("ctr content ingest");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let blob = d
        .root()
        .join("io.containerd.content.v1.content/blobs/sha256")
        .join(&hex);
    assert!(blob.is_file());
    d.ctr_ok(&["content", "rm", &format!("sha256:{hex}")]);
    blob
}

/// How long until `blob` disappears (None if it is still there after `limit`).
fn gone_after(blob: &std::path::Path, since: Instant, limit: Duration) -> Option<Duration> {
    while since.elapsed() < limit {
        if !blob.exists() {
            return Some(since.elapsed());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    None
}

#[test]
fn deletion_threshold_and_schedule_delay_time_the_collection() {
    let d = daemon(
        "    deletion_threshold = 1\n    schedule_delay = \"1500ms\"\n    startup_delay = \"1h\"\n",
    );
    let plugins = d.ctr_ok(&["plugins", "ls", "--detailed", "id==scheduler"]);
    assert!(
        plugins.contains("ScheduleDelay") && plugins.contains("1.5s"),
        "{plugins}"
    );
    let blob = ingest_and_rm(&d, "threshold");
    let t0 = Instant::now();
    std::thread::sleep(Duration::from_millis(500));
    assert!(blob.exists(), "not collected before schedule_delay");
    let took = gone_after(&blob, t0, Duration::from_secs(10)).expect("collected");
    assert!(
        took >= Duration::from_millis(1400),
        "collected after {took:?}"
    );
}

#[test]
fn deletion_threshold_zero_waits_for_the_pending_check_and_sync_triggers() {
    let d = daemon("    deletion_threshold = 0\n    startup_delay = \"1h\"\n");
    let blob = ingest_and_rm(&d, "pending");
    assert_eq!(
        gone_after(&blob, Instant::now(), Duration::from_secs(2)),
        None,
        "a delete waits for the startup check an hour away"
    );
    // A sync delete triggers a collection and waits for it.
    d.ctr_ok(&["leases", "create", "--id", "l1"]);
    d.ctr_ok(&["leases", "rm", "--sync", "l1"]);
    assert!(!blob.exists(), "collected by the triggered run");
}

#[test]
fn defaults_collect_a_delete_within_a_second() {
    let d = daemon("");
    // Past the 100ms startup check: the delete itself schedules the collection.
    std::thread::sleep(Duration::from_millis(300));
    let blob = ingest_and_rm(&d, "defaults");
    let took = gone_after(&blob, Instant::now(), Duration::from_secs(5)).expect("collected");
    assert!(took < Duration::from_secs(1), "took {took:?}");
}
