//! `berth images pull` and `push` with Debian's `docker-registry` (the harness's local registry, plain
//! HTTP and HTTPS with a test CA, with and without basic auth), against a private containerd 1.6.20 and berthd: the
//! pulled image has the pushed manifest digest, is unpacked and runs; wrong credentials and
//! missing tags fail with clear messages.

mod cli_common;

use cli_common::{stderr, Daemon};
use integration::image::TestImage;
use integration::registry::Registry;

fn pull_flow(d: &Daemon) {
    let img = TestImage::busybox().expect("test image");

    let reg = Registry::http().expect("start registry");
    let reference = reg.push_image(&img, "cli/busybox:pulled").expect("push");
    let out = d.berth_ok(&["images", "pull", "--plain-http", &reference]);
    assert!(
        out.starts_with(&format!("{reference}: resolved\n")),
        "{out}"
    );
    assert!(out.ends_with("done\n"), "{out}");
    let ls = d.berth_ok(&["images", "ls"]);
    let row = ls
        .lines()
        .find(|l| l.starts_with(&format!("{reference} ")))
        .unwrap_or_else(|| panic!("{reference} not listed:\n{ls}"));
    assert!(row.contains(img.manifest_digest()), "{row}");
    // Blobs carry their source, for later cross-repository pushes (containerd's label).
    let content = d.berth_ok(&["content", "ls"]);
    assert!(
        content.contains(&format!(
            "containerd.io/distribution.source.{}=cli/busybox",
            reg.host()
        )),
        "{content}"
    );
    let o = d.berth(&["run", "--rm", &reference, "cli-p1", "echo", "pulled"]);
    assert_eq!(cli_common::stdout(&o), "pulled\n", "{}", stderr(&o));

    // content fetch: the same resolution and transfer, no image record.
    let fetched = d.berth_ok(&["content", "fetch", "--plain-http", &reference]);
    assert!(
        fetched.starts_with(&format!("{reference}: resolved\n")),
        "{fetched}"
    );

    // A second pull finds everything present.
    d.berth_ok(&["images", "pull", "--plain-http", &reference]);

    let missing = d.berth(&[
        "images",
        "pull",
        "--plain-http",
        &reg.reference("cli/none:1"),
    ]);
    assert_eq!(missing.status.code(), Some(1));
    assert!(
        stderr(&missing).contains("not found"),
        "{}",
        stderr(&missing)
    );

    // Basic auth: refused without or with wrong credentials, accepted with the right ones.
    let reg = Registry::builder()
        .auth()
        .start()
        .expect("start auth registry");
    let reference = reg
        .push_image(&img, "cli/private:1")
        .expect("push with auth");
    let (user, password) = reg.credentials().expect("credentials");
    let anon = d.berth(&["images", "pull", "--plain-http", &reference]);
    assert_eq!(anon.status.code(), Some(1));
    assert!(stderr(&anon).contains("access denied"), "{}", stderr(&anon));
    let wrong = d.berth(&[
        "images",
        "pull",
        "--plain-http",
        "--user",
        &format!("{user}:nope"),
        &reference,
    ]);
    assert_eq!(wrong.status.code(), Some(1));
    d.berth_ok(&[
        "images",
        "pull",
        "--plain-http",
        "--user",
        &format!("{user}:{password}"),
        &reference,
    ]);
    assert!(d
        .berth_ok(&["images", "ls", "-q"])
        .lines()
        .any(|l| l == reference));

    // HTTPS with a CA generated for the test: untrusted without --tlscacert, fine with it
    // (and with --skip-verify), credentials still required.
    let reg = Registry::https_with_auth().expect("start TLS registry");
    let reference = reg.push_image(&img, "cli/tls:1").expect("push over TLS");
    let ca = reg
        .ca_pem()
        .expect("CA")
        .to_str()
        .expect("utf-8")
        .to_string();
    let creds = {
        let (u, p) = reg.credentials().expect("credentials");
        format!("{u}:{p}")
    };
    let anonymous = d.berth(&["images", "pull", "-k", &reference]);
    assert_eq!(anonymous.status.code(), Some(1));
    assert!(
        stderr(&anonymous).contains("access denied"),
        "{}",
        stderr(&anonymous)
    );
    assert!(
        std::path::Path::new("/etc/ssl/certs/ca-certificates.crt").exists(),
        "/etc/ssl/certs/ca-certificates.crt is missing: install the Debian package ca-certificates"
    );
    // A CA file that does not hold the test CA: the handshake fails. (Without TLS options a
    // localhost registry is spoken to over plain HTTP, as containerd 1.6 does.)
    let unknown_ca = d.berth(&[
        "images",
        "pull",
        "--user",
        &creds,
        "--tlscacert",
        "/etc/ssl/certs/ca-certificates.crt",
        &reference,
    ]);
    assert_eq!(unknown_ca.status.code(), Some(1));
    assert!(
        stderr(&unknown_ca).contains("TLS connection to"),
        "{}",
        stderr(&unknown_ca)
    );
    let out = d.berth_ok(&[
        "images",
        "pull",
        "--user",
        &creds,
        "--tlscacert",
        &ca,
        &reference,
    ]);
    assert!(out.ends_with("done\n"), "{out}");
    d.berth_ok(&["images", "rm", &reference]);
    d.berth_ok(&["images", "pull", "-k", "--user", &creds, &reference]);
    let o = d.berth(&["run", "--rm", &reference, "cli-p2", "echo", "over tls"]);
    assert_eq!(cli_common::stdout(&o), "over tls\n", "{}", stderr(&o));
}

/// `berth images push` of an imported image to a registry needing auth; skopeo (an
/// independent client) sees the same manifest digest, and berth pulls it back.
fn push_flow(d: &Daemon) {
    let dir = tempfile::tempdir().expect("tempdir");
    let (img, oci, _) = cli_common::busybox_archives(dir.path());
    d.berth_ok(&["images", "import", cli_common::s(&oci)]);
    let reg = Registry::builder()
        .auth()
        .start()
        .expect("start auth registry");
    let (user, password) = reg.credentials().expect("credentials");
    let remote = reg.reference("cli/pushed:1");
    let denied = d.berth(&["images", "push", &remote, integration::image::BUSYBOX_NAME]);
    assert_eq!(denied.status.code(), Some(1));
    assert!(
        stderr(&denied).contains("access denied"),
        "{}",
        stderr(&denied)
    );
    let out = d.berth_ok(&[
        "images",
        "push",
        "--user",
        &format!("{user}:{password}"),
        &remote,
        integration::image::BUSYBOX_NAME,
    ]);
    assert!(out.ends_with(&format!("{remote}: pushed\n")), "{out}");
    let inspect = reg.inspect("cli/pushed:1").expect("skopeo inspect");
    assert_eq!(inspect["Digest"], img.manifest_digest());
    // Pushing again finds every blob present.
    let again = d.berth_ok(&[
        "images",
        "push",
        "--user",
        &format!("{user}:{password}"),
        &remote,
        integration::image::BUSYBOX_NAME,
    ]);
    assert!(again.contains(": exists"), "{again}");
    d.berth_ok(&["images", "rm", integration::image::BUSYBOX_NAME]);
    d.berth_ok(&[
        "images",
        "pull",
        "--user",
        &format!("{user}:{password}"),
        &remote,
    ]);
    let ls = d.berth_ok(&["images", "ls"]);
    assert!(
        ls.lines()
            .any(|l| l.starts_with(&format!("{remote} ")) && l.contains(img.manifest_digest())),
        "{ls}"
    );
}

#[test]
fn push_to_local_registry_against_containerd() {
    push_flow(&Daemon::containerd());
}

#[test]
fn push_to_local_registry_against_berthd() {
    push_flow(&Daemon::berthd());
}

#[test]
fn pull_from_local_registry_against_containerd() {
    pull_flow(&Daemon::containerd());
}

#[test]
fn pull_from_local_registry_against_berthd() {
    pull_flow(&Daemon::berthd());
}
