//! The event publisher's fallback: with no ttrpc address it runs the publish binary the way
//! containerd's v1 shim did (`<bin> --address A publish --topic T --namespace NS`, the
//! marshalled `Any` on stdin), in order, without blocking the caller.

use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use containerd_shim_protos::events::task::TaskExit;
use containerd_shim_protos::protobuf::well_known_types::any::Any;
use containerd_shim_protos::protobuf::Message;
use shim::publisher::{Publisher, PublisherConfig};
use shim::reaper::{set_subreaper, Reaper};

#[test]
fn publish_binary_fallback_gets_topic_namespace_and_any_on_stdin() {
    set_subreaper().expect("subreaper");
    let dir = tempfile::tempdir().expect("tmp");
    let script = dir.path().join("fake-containerd");
    let calls = dir.path().join("calls");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\necho \"$*\" >> '{c}'\ncat > '{c}.stdin.'\"$$\"\n",
            c = calls.display()
        ),
    )
    .expect("script");
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).expect("chmod");

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let reaper = Reaper::global();
        let _others = reaper.take_unsubscribed();
        tokio::spawn(reaper.run());
        let (publisher, drain) = Publisher::new(PublisherConfig {
            namespace: "ns1".into(),
            ttrpc_address: String::new(),
            grpc_address: "/run/fake.sock".into(),
            publish_binary: script.display().to_string(),
        });
        tokio::spawn(drain);
        for i in 0..3 {
            let mut ev = TaskExit::new();
            ev.container_id = format!("c{i}");
            ev.exit_status = 7;
            publisher.publish("/tasks/exit", "containerd.events.TaskExit", "c", &ev);
        }
        assert!(
            publisher.flush(Duration::from_secs(10)).await,
            "queue drained"
        );
    });

    let text = std::fs::read_to_string(&calls).expect("publish binary called");
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 3, "{text}");
    for l in lines {
        assert_eq!(
            l,
            "--address /run/fake.sock publish --topic /tasks/exit --namespace ns1"
        );
    }
    let mut ids = Vec::new();
    for e in std::fs::read_dir(dir.path()).expect("dir").flatten() {
        if e.file_name().to_string_lossy().starts_with("calls.stdin.") {
            let any =
                Any::parse_from_bytes(&std::fs::read(e.path()).expect("stdin")).expect("an Any");
            assert_eq!(any.type_url, "containerd.events.TaskExit");
            let ev = TaskExit::parse_from_bytes(&any.value).expect("TaskExit");
            assert_eq!(ev.exit_status, 7);
            ids.push(ev.container_id);
        }
    }
    ids.sort();
    assert_eq!(ids, ["c0", "c1", "c2"]);
}
