//! berthd's gRPC error codes, checked with tonic clients against the codes containerd's
//! `errdefs.ToGRPC` gives for the same failures (clients such as ctr and nerdctl branch on
//! them): NotFound, AlreadyExists, InvalidArgument, FailedPrecondition, OutOfRange,
//! Unavailable, Unimplemented.

use integration::daemon::TestDaemon;
use protos::containerd::services::content::v1::{
    content_client::ContentClient, InfoRequest, ReadContentRequest, WriteAction,
    WriteContentRequest,
};
use protos::containerd::services::events::v1::{events_client::EventsClient, PublishRequest};
use protos::containerd::services::images::v1::{
    images_client::ImagesClient, CreateImageRequest, GetImageRequest, Image, UpdateImageRequest,
};
use protos::containerd::services::leases::v1::{
    leases_client::LeasesClient, AddResourceRequest, CreateRequest, Resource,
};
use protos::containerd::services::namespaces::v1::{
    namespaces_client::NamespacesClient, GetNamespaceRequest,
};
use protos::containerd::services::snapshots::v1::{
    snapshots_client::SnapshotsClient, PrepareSnapshotRequest,
};
use protos::containerd::types::Descriptor;
use sha2::{Digest, Sha256};
use tonic::transport::Channel;
use tonic::Code;

async fn channel(d: &TestDaemon) -> Channel {
    let path = d.address();
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

fn req<T>(msg: T) -> tonic::Request<T> {
    let mut r = tonic::Request::new(msg);
    r.metadata_mut()
        .insert("containerd-namespace", "codes".parse().expect("ascii"));
    r
}

fn code<T: std::fmt::Debug>(r: Result<T, tonic::Status>) -> Code {
    match r {
        Ok(v) => panic!("expected an error, got {v:?}"),
        Err(s) => s.code(),
    }
}

fn digest(data: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(data)))
}

fn write_msg(
    action: WriteAction,
    r#ref: &str,
    offset: i64,
    data: &[u8],
    expected: &str,
) -> WriteContentRequest {
    WriteContentRequest {
        action: action as i32,
        r#ref: r#ref.into(),
        total: 0,
        expected: expected.into(),
        offset,
        data: data.to_vec(),
        labels: Default::default(),
    }
}

/// Sends `msgs` on one Write stream; returns the first error (or the number of replies).
async fn write(ch: &Channel, msgs: Vec<WriteContentRequest>) -> Result<usize, tonic::Status> {
    let mut c = ContentClient::new(ch.clone());
    let mut stream = c
        .write(req(tonic::codegen::tokio_stream::iter(msgs)))
        .await?
        .into_inner();
    let mut n = 0;
    while let Some(_reply) = stream.message().await? {
        n += 1;
    }
    Ok(n)
}

#[tokio::test(flavor = "current_thread")]
async fn content_codes() {
    let d = TestDaemon::start().expect("start berthd");
    let ch = channel(&d).await;
    let mut c = ContentClient::new(ch.clone());
    assert_eq!(
        code(
            c.info(req(InfoRequest {
                digest: "sha256:nothex".into()
            }))
            .await
        ),
        Code::InvalidArgument
    );
    let absent = digest(b"absent");
    assert_eq!(
        code(
            c.info(req(InfoRequest {
                digest: absent.clone()
            }))
            .await
        ),
        Code::NotFound
    );
    // No namespace header at all.
    assert_eq!(
        code(
            c.info(tonic::Request::new(InfoRequest { digest: absent }))
                .await
        ),
        Code::FailedPrecondition
    );

    // Write at the wrong offset.
    let r = write(
        &ch,
        vec![
            write_msg(WriteAction::Stat, "w1", 0, b"", ""),
            write_msg(WriteAction::Write, "w1", 7, b"abc", ""),
        ],
    )
    .await;
    assert_eq!(code(r), Code::OutOfRange);
    // Commit with a digest the bytes do not have.
    let r = write(
        &ch,
        vec![write_msg(
            WriteAction::Commit,
            "w2",
            0,
            b"abc",
            &digest(b"xyz"),
        )],
    )
    .await;
    assert_eq!(code(r), Code::FailedPrecondition);
    // A good write, then the same blob again: AlreadyExists.
    let good = digest(b"abc");
    assert_eq!(
        write(
            &ch,
            vec![write_msg(WriteAction::Commit, "w3", 0, b"abc", &good)]
        )
        .await
        .expect("commit"),
        1
    );
    let r = write(&ch, vec![write_msg(WriteAction::Stat, "w4", 0, b"", &good)]).await;
    assert_eq!(code(r), Code::AlreadyExists);
    // Reading past the end.
    let r = c
        .read(req(ReadContentRequest {
            digest: good,
            offset: 100,
            size: 0,
        }))
        .await;
    assert_eq!(code(r.map(|_| ())), Code::OutOfRange);

    // Two writers on one ref: the second is Unavailable while the first holds it.
    let mut first = ContentClient::new(ch.clone());
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    tx.send(write_msg(WriteAction::Stat, "locked", 0, b"", ""))
        .await
        .expect("send");
    let mut held = first
        .write(req(
            tonic::codegen::tokio_stream::wrappers::ReceiverStream::new(rx),
        ))
        .await
        .expect("first writer")
        .into_inner();
    held.message()
        .await
        .expect("stat reply")
        .expect("one reply");
    let r = write(
        &ch,
        vec![write_msg(WriteAction::Stat, "locked", 0, b"", "")],
    )
    .await;
    assert_eq!(code(r), Code::Unavailable);
    drop(tx);
}

#[tokio::test(flavor = "current_thread")]
async fn images_namespaces_leases_snapshots_events_codes() {
    let d = TestDaemon::start().expect("start berthd");
    let ch = channel(&d).await;
    let mut images = ImagesClient::new(ch.clone());
    let image = |name: &str| Image {
        name: name.into(),
        labels: Default::default(),
        target: Some(Descriptor {
            media_type: "application/vnd.oci.image.manifest.v1+json".into(),
            digest: digest(b"m"),
            size: 1,
            annotations: Default::default(),
        }),
        created_at: None,
        updated_at: None,
    };
    assert_eq!(
        code(
            images
                .create(req(CreateImageRequest {
                    image: Some(image("")),
                    source_date_epoch: None
                }))
                .await
        ),
        Code::InvalidArgument
    );
    images
        .create(req(CreateImageRequest {
            image: Some(image("a:1")),
            source_date_epoch: None,
        }))
        .await
        .expect("create");
    assert_eq!(
        code(
            images
                .create(req(CreateImageRequest {
                    image: Some(image("a:1")),
                    source_date_epoch: None
                }))
                .await
        ),
        Code::AlreadyExists
    );
    assert_eq!(
        code(
            images
                .get(req(GetImageRequest { name: "b:1".into() }))
                .await
        ),
        Code::NotFound
    );
    let bad_mask = UpdateImageRequest {
        image: Some(image("a:1")),
        update_mask: Some(prost_types_mask(&["createdat"])),
        source_date_epoch: None,
    };
    assert_eq!(
        code(images.update(req(bad_mask)).await),
        Code::InvalidArgument
    );

    let mut ns = NamespacesClient::new(ch.clone());
    assert_eq!(
        code(
            ns.get(req(GetNamespaceRequest {
                name: "missing".into()
            }))
            .await
        ),
        Code::NotFound
    );
    assert_eq!(
        code(
            ns.get(req(GetNamespaceRequest {
                name: "bad name".into()
            }))
            .await
        ),
        Code::InvalidArgument
    );

    let mut leases = LeasesClient::new(ch.clone());
    leases
        .create(req(CreateRequest {
            id: "l".into(),
            labels: Default::default(),
        }))
        .await
        .expect("lease");
    assert_eq!(
        code(
            leases
                .create(req(CreateRequest {
                    id: "l".into(),
                    labels: Default::default()
                }))
                .await
        ),
        Code::AlreadyExists
    );
    let add = |t: &str, id: &str| AddResourceRequest {
        id: "l".into(),
        resource: Some(Resource {
            id: id.into(),
            r#type: t.into(),
        }),
    };
    assert_eq!(
        code(leases.add_resource(req(add("bogus", "x"))).await),
        Code::Unimplemented
    );
    assert_eq!(
        code(
            leases
                .add_resource(req(add("content", "not-a-digest")))
                .await
        ),
        Code::InvalidArgument
    );

    let mut snaps = SnapshotsClient::new(ch.clone());
    let prep = |sn: &str, key: &str, parent: &str| PrepareSnapshotRequest {
        snapshotter: sn.into(),
        key: key.into(),
        parent: parent.into(),
        labels: Default::default(),
    };
    assert_eq!(
        code(snaps.prepare(req(prep("", "k", ""))).await),
        Code::InvalidArgument
    );
    assert_eq!(
        code(snaps.prepare(req(prep("nosuch", "k", ""))).await),
        Code::InvalidArgument
    );
    assert_eq!(
        code(
            snaps
                .prepare(req(prep("overlayfs", "k", "missing-parent")))
                .await
        ),
        Code::NotFound
    );
    snaps
        .prepare(req(prep("overlayfs", "k", "")))
        .await
        .expect("prepare");
    assert_eq!(
        code(snaps.prepare(req(prep("overlayfs", "k", ""))).await),
        Code::AlreadyExists
    );

    let mut events = EventsClient::new(ch);
    let publish = PublishRequest {
        topic: "no-slash".into(),
        event: Some(prost_types_any()),
    };
    assert_eq!(
        code(events.publish(req(publish)).await),
        Code::InvalidArgument
    );
}

fn prost_types_mask(paths: &[&str]) -> prost_types::FieldMask {
    prost_types::FieldMask {
        paths: paths.iter().map(|p| (*p).to_string()).collect(),
    }
}

fn prost_types_any() -> prost_types::Any {
    prost_types::Any {
        type_url: "containerd.events.TaskOOM".into(),
        value: vec![],
    }
}
