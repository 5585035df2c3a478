//! The local registry harness serves the test image over HTTP, TLS (test CA) and basic auth,
//! checked with skopeo as the reference client.

use std::fs;

use integration::image::TestImage;
use integration::registry::{Registry, DEFAULT_PASSWORD, DEFAULT_USER};

/// Push, inspect and pull back; the registry must serve exactly our manifest and blobs.
fn push_pull_roundtrip(reg: &Registry) {
    let img = TestImage::busybox().expect("image");
    let reference = reg.push_image(&img, "library/busybox:test").expect("push");
    assert_eq!(reference, format!("{}/library/busybox:test", reg.host()));

    let info = reg.inspect("library/busybox:test").expect("inspect");
    assert_eq!(info["Digest"], img.manifest_digest(), "{info}");
    assert_eq!(info["Layers"], serde_json::json!(img.layer_digests()));

    let out = tempfile::tempdir().expect("tmp");
    reg.pull("library/busybox:test", out.path(), "pulled")
        .expect("pull");
    let index: serde_json::Value =
        serde_json::from_slice(&fs::read(out.path().join("index.json")).expect("index.json"))
            .expect("json");
    assert_eq!(index["manifests"][0]["digest"], img.manifest_digest());
    for blob in img.blobs() {
        let path = out.path().join("blobs/sha256").join(blob.hex());
        assert_eq!(
            fs::read(&path).expect("pulled blob"),
            blob.data,
            "blob {}",
            blob.digest
        );
    }
}

#[test]
fn push_and_pull_over_plain_http() {
    let reg = Registry::http().expect("registry");
    assert!(reg.url().starts_with("http://127.0.0.1:"));
    assert!(reg.ca_pem().is_none() && reg.credentials().is_none());
    push_pull_roundtrip(&reg);
}

#[test]
fn push_and_pull_over_tls_trusting_the_test_ca() {
    let reg = Registry::https().expect("registry");
    assert!(reg.url().starts_with("https://"));
    let ca = fs::read_to_string(reg.ca_pem().expect("ca")).expect("read ca");
    assert!(ca.contains("BEGIN CERTIFICATE"));
    push_pull_roundtrip(&reg);
}

#[test]
fn tls_registry_is_rejected_without_the_ca() {
    let reg = Registry::https().expect("registry");
    let img = TestImage::busybox().expect("image");
    let layout = tempfile::tempdir().expect("tmp");
    img.write_oci_layout(layout.path()).expect("layout");
    let out = std::process::Command::new("skopeo")
        .args(["--insecure-policy", "copy", "--dest-no-creds"])
        .arg(format!("oci:{}:test", layout.path().display()))
        .arg(format!("docker://{}/library/busybox:test", reg.host()))
        .output()
        .expect("run skopeo");
    assert!(
        !out.status.success(),
        "push without trusting the CA must fail"
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("certificate") || err.contains("x509"), "{err}");
}

#[test]
fn basic_auth_rejects_anonymous_and_wrong_password_and_accepts_credentials() {
    let reg = Registry::https_with_auth().expect("registry");
    assert_eq!(reg.credentials(), Some((DEFAULT_USER, DEFAULT_PASSWORD)));
    let img = TestImage::busybox().expect("image");

    let anon = reg.push_image_as(&img, "library/busybox:test", None);
    let err = anon.expect_err("anonymous push must fail").to_string();
    assert!(
        err.to_lowercase().contains("unauthorized") || err.contains("401"),
        "{err}"
    );

    let wrong = reg.push_image_as(&img, "library/busybox:test", Some((DEFAULT_USER, "wrong")));
    let err = wrong.expect_err("wrong password must fail").to_string();
    assert!(
        err.to_lowercase().contains("unauthorized") || err.contains("401"),
        "{err}"
    );
    assert!(
        !err.contains(":wrong"),
        "password must be redacted from errors: {err}"
    );

    push_pull_roundtrip(&reg);
}

#[test]
fn basic_auth_over_plain_http() {
    let reg = Registry::builder()
        .auth_as("u1", "p1")
        .start()
        .expect("registry");
    let img = TestImage::busybox().expect("image");
    assert!(reg.push_image_as(&img, "x/y:z", None).is_err());
    reg.push_image(&img, "x/y:z")
        .expect("push with credentials");
    assert_eq!(
        reg.inspect("x/y:z").expect("inspect")["Digest"],
        img.manifest_digest()
    );
}
