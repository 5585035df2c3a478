//! `berth images import/ls/tag/rm/export/check`, `content`, `snapshots` and `leases` against
//! a private Debian containerd 1.6.20 and against berthd: import of both archive forms
//! (client-side, as ctr does it), listings identical to Debian `ctr`'s, the unpacked chain
//! in the snapshotter, export → re-import with the same digests, and the error messages.

mod cli_common;

use cli_common::{busybox_archives, s, stderr, Daemon};

fn images_flow(d: &Daemon) {
    let dir = tempfile::tempdir().expect("tempdir");
    let (img, oci, docker) = busybox_archives(dir.path());
    let name = integration::image::BUSYBOX_NAME;

    // Not a tar at all: a clear error, nothing created.
    let junk = dir.path().join("junk.tar");
    std::fs::write(&junk, vec![0xa5u8; 4096]).expect("write junk");
    let bad = d.berth(&["images", "import", s(&junk)]);
    assert_eq!(bad.status.code(), Some(1));
    assert_eq!(
        stderr(&bad),
        "berth: read archive: invalid tar header: not a tar archive (is it an OCI layout or docker save tar?)\n"
    );
    assert_eq!(d.berth_ok(&["images", "ls", "-q"]), "");

    // OCI layout archive: imported, unpacked into overlayfs.
    let out = d.berth_ok(&["images", "import", s(&oci)]);
    assert_eq!(
        out,
        format!("unpacking {name} ({})...done\n", img.manifest_digest())
    );
    let ls = d.berth_ok(&["images", "ls"]);
    assert_eq!(
        ls,
        d.ctr_ok(&["images", "ls"]),
        "images ls differs from ctr"
    );
    assert!(ls.starts_with("REF "), "{ls}");
    let row = ls.lines().nth(1).expect("one image row");
    let cols: Vec<&str> = row.split_whitespace().collect();
    assert_eq!(cols[0], name);
    assert_eq!(cols[1], "application/vnd.oci.image.manifest.v1+json");
    assert_eq!(cols[2], img.manifest_digest());
    assert_eq!(d.berth_ok(&["images", "ls", "-q"]), format!("{name}\n"));

    // The top layer's chain is a committed snapshot, and the content is labelled for GC.
    let snaps = d.berth_ok(&["snapshots", "ls"]);
    let diff_ids = img.diff_ids();
    assert!(
        snaps
            .lines()
            .any(|l| l.starts_with(&diff_ids[0]) && l.trim_end().ends_with("Committed")),
        "{snaps}"
    );
    let content = d.berth_ok(&["content", "ls"]);
    assert!(
        content.contains(&format!(
            "containerd.io/gc.ref.content.config={}",
            img.config_digest()
        )),
        "{content}"
    );
    let check = d.berth_ok(&["images", "check"]);
    assert!(check.contains("complete (2/2)"), "{check}");
    assert!(
        check.lines().nth(1).is_some_and(|l| l.ends_with("true")),
        "{check}"
    );

    // Tag, and tag over an existing name only with --force.
    assert_eq!(
        d.berth_ok(&["images", "tag", name, "cli/bb:1"]),
        "cli/bb:1\n"
    );
    let again = d.berth(&["images", "tag", name, "cli/bb:1"]);
    assert_eq!(again.status.code(), Some(1));
    assert_eq!(
        stderr(&again),
        "berth: image \"cli/bb:1\": already exists\n"
    );
    assert_eq!(
        d.berth_ok(&["images", "tag", "--force", name, "cli/bb:1"]),
        "cli/bb:1\n"
    );
    let missing = d.berth(&["images", "tag", "no/such:img", "x:1"]);
    assert_eq!(missing.status.code(), Some(1));
    assert_eq!(
        stderr(&missing),
        "berth: image \"no/such:img\": not found\n"
    );

    // Export → remove → re-import gives the same manifest digest.
    let exported = dir.path().join("export.tar");
    d.berth_ok(&["images", "export", s(&exported), "cli/bb:1"]);
    let listing = std::process::Command::new("tar")
        .arg("tf")
        .arg(&exported)
        .output()
        .expect("tar tf");
    let names = String::from_utf8_lossy(&listing.stdout).into_owned();
    for want in ["oci-layout", "index.json", "manifest.json"] {
        assert!(
            names.lines().any(|l| l == want),
            "{want} missing in {names}"
        );
    }
    assert!(names.contains(&format!(
        "blobs/sha256/{}",
        img.manifest_digest().trim_start_matches("sha256:")
    )));
    assert_eq!(d.berth_ok(&["images", "rm", "cli/bb:1"]), "cli/bb:1\n");
    d.berth_ok(&["images", "import", "--no-unpack", s(&exported)]);
    let ls = d.berth_ok(&["images", "ls", "-q"]);
    assert!(ls.lines().any(|l| l == "cli/bb:1"), "{ls}");
    let ls = d.berth_ok(&["images", "ls"]);
    let row = ls
        .lines()
        .find(|l| l.starts_with("cli/bb:1 "))
        .expect("re-imported row");
    assert!(row.contains(img.manifest_digest()), "{row}");

    // Docker archive: a synthesised Docker schema 2 manifest, named from RepoTags.
    d.berth_ok(&["images", "rm", name]);
    d.berth_ok(&["images", "import", s(&docker)]);
    let ls = d.berth_ok(&["images", "ls"]);
    let row = ls
        .lines()
        .find(|l| l.starts_with(name))
        .expect("docker image row");
    assert!(
        row.contains("application/vnd.docker.distribution.manifest.v2+json"),
        "{row}"
    );

    // rm of a missing image warns but succeeds, as ctr.
    let rm = d.berth(&["images", "rm", "no/such:img"]);
    assert!(rm.status.success());
    assert!(
        stderr(&rm).contains("no/such:img: image not found"),
        "{}",
        stderr(&rm)
    );
    let bad = d.berth(&["images", "import", "/nonexistent/archive.tar"]);
    assert_eq!(bad.status.code(), Some(1));
    assert!(
        stderr(&bad).starts_with("berth: open /nonexistent/archive.tar: "),
        "{}",
        stderr(&bad)
    );
}

fn snapshots_content_leases(d: &Daemon) {
    let dir = tempfile::tempdir().expect("tempdir");
    let (img, oci, _) = busybox_archives(dir.path());
    d.berth_ok(&["images", "import", s(&oci)]);
    let parent = img.diff_ids()[0].clone();

    d.berth_ok(&["snapshots", "prepare", "cli-active", &parent]);
    let mounts = d.berth_ok(&["snapshots", "mounts", "/mnt/x", "cli-active"]);
    assert!(
        mounts.starts_with("mount -t overlay overlay /mnt/x -o "),
        "{mounts}"
    );
    let info = d.berth_ok(&["snapshots", "info", "cli-active"]);
    let v: serde_json::Value = serde_json::from_str(&info).expect("info is JSON");
    assert_eq!(v["Kind"], "Active");
    assert_eq!(v["Parent"], parent.as_str());
    // Write a file into the active snapshot; `snapshots diff` returns it as a layer.
    let mnt = dir.path().join("active");
    std::fs::create_dir(&mnt).expect("mkdir");
    let cmd = d.berth_ok(&["snapshots", "mounts", s(&mnt), "cli-active"]);
    let mounted = std::process::Command::new("sh")
        .arg("-c")
        .arg(cmd.trim())
        .status()
        .expect("mount");
    assert!(mounted.success(), "{cmd}");
    std::fs::write(mnt.join("cli-diff-file"), "diffed\n").expect("write");
    let _ = std::process::Command::new("umount").arg(&mnt).status();
    let layer = d
        .berth_command()
        .args([
            "snapshots",
            "diff",
            "--media-type",
            "application/vnd.oci.image.layer.v1.tar",
            "cli-active",
        ])
        .output()
        .expect("snapshots diff");
    assert!(layer.status.success(), "{}", stderr(&layer));
    let mut archive = tar::Archive::new(layer.stdout.as_slice());
    let names: Vec<String> = archive
        .entries()
        .expect("tar")
        .map(|e| {
            e.expect("entry")
                .path()
                .expect("path")
                .display()
                .to_string()
        })
        .collect();
    assert_eq!(names, ["cli-diff-file"]);

    d.berth_ok(&["snapshots", "commit", "cli-committed", "cli-active"]);
    let tree = d.berth_ok(&["snapshots", "tree"]);
    assert!(
        tree.contains(&format!(" {parent}\n  \\_ cli-committed\n")),
        "{tree}"
    );
    let usage = d.berth_ok(&["snapshots", "usage", "cli-committed"]);
    assert!(usage.starts_with("KEY "), "{usage}");
    d.berth_ok(&["snapshots", "rm", "cli-committed"]);
    let gone = d.berth(&["snapshots", "rm", "cli-committed"]);
    assert_eq!(gone.status.code(), Some(1));
    assert!(
        stderr(&gone).starts_with("berth: failed to remove \"cli-committed\": "),
        "{}",
        stderr(&gone)
    );

    // images mount: read-only view on a directory, then unmount --rm removes it all.
    let target = dir.path().join("mnt");
    std::fs::create_dir(&target).expect("mkdir");
    let out = d.berth_ok(&[
        "images",
        "mount",
        integration::image::BUSYBOX_NAME,
        s(&target),
    ]);
    assert_eq!(out, format!("{parent}\n{}\n", target.display()));
    assert!(target.join("bin/busybox").exists());
    assert!(
        std::fs::write(target.join("new-file"), "x").is_err(),
        "read-only image mount accepted a write"
    );
    assert_eq!(
        d.berth_ok(&["images", "unmount", "--rm", s(&target)]),
        format!("{}\n", target.display())
    );
    assert!(!target.join("bin").exists(), "still mounted");
    assert!(!d.berth_ok(&["snapshots", "ls"]).contains(s(&target)));
    assert!(!d.berth_ok(&["leases", "ls", "-q"]).contains(s(&target)));

    // content get returns the exact blob; label sets and clears.
    let config = img.config_digest();
    let blob = d
        .berth_command()
        .args(["content", "get", config])
        .output()
        .expect("content get");
    assert!(blob.status.success());
    assert_eq!(integration::image::sha256_digest(&blob.stdout), config);
    let labels = d.berth_ok(&["content", "label", config, "cli=yes"]);
    assert!(labels.contains("cli=yes"), "{labels}");
    let labels = d.berth_ok(&["content", "label", config, "cli="]);
    assert!(!labels.contains("cli=yes"), "{labels}");
    let bad = d.berth(&["content", "get", "sha256:nothex"]);
    assert_eq!(bad.status.code(), Some(1));
    assert!(stderr(&bad).contains("invalid digest"), "{}", stderr(&bad));

    // leases: create with labels, list (same table as ctr), remove.
    assert_eq!(
        d.berth_ok(&["leases", "create", "--id", "cli-lease", "who=cli"]),
        "cli-lease\n"
    );
    let ls = d.berth_ok(&["leases", "ls"]);
    assert_eq!(
        ls,
        d.ctr_ok(&["leases", "ls"]),
        "leases ls differs from ctr"
    );
    assert!(ls.contains("cli-lease") && ls.contains("who=cli"), "{ls}");
    assert_eq!(d.berth_ok(&["leases", "rm", "cli-lease"]), "cli-lease\n");
    assert!(!d.berth_ok(&["leases", "ls", "-q"]).contains("cli-lease"));
}

#[test]
fn images_import_ls_tag_rm_export_against_containerd() {
    images_flow(&Daemon::containerd());
}

/// containerd 2.x's own `ctr` prints the same tables (checked against it).
#[test]
fn images_and_snapshots_against_containerd2() {
    let Some(d) = Daemon::containerd2("images_and_snapshots_against_containerd2") else {
        return;
    };
    images_flow(&d);
    snapshots_content_leases(&d);
}

#[test]
fn images_import_ls_tag_rm_export_against_berthd() {
    images_flow(&Daemon::berthd());
}

#[test]
fn snapshots_content_leases_against_containerd() {
    snapshots_content_leases(&Daemon::containerd());
}

#[test]
fn snapshots_content_leases_against_berthd() {
    snapshots_content_leases(&Daemon::berthd());
}
