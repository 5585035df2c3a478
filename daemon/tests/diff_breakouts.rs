//! Layer-apply security table: one row per breakout attempt, as containerd's
//! `archive/tar_test.go` TestBreakouts (its rows keep their names), plus berth's own rows.
//!
//! Each row applies a crafted layer onto `<tmp>/root` next to a sentinel directory
//! `<tmp>/outside` (and the host's `/etc`). A row either expects a refusal of a given class,
//! or, where containerd lets the entry through but confines it, a validator on the result.
//! After every row the sentinel and the host `/etc/passwd` must be byte-for-byte unchanged.

mod diff_support;

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use daemon::diff::compression::{MEDIA_TYPE_LAYER, MEDIA_TYPE_LAYER_GZIP};
use daemon::diff::{apply_layer, ApplyTarget, ErrorKind};
use diff_support::{describe, gzip, sha256, Layer};
use nix::fcntl::{openat2, OFlag, OpenHow, ResolveFlag};
use nix::sys::stat::fstat;
use tar::EntryType;

struct Ctx {
    root: PathBuf,
    outside: PathBuf,
}

impl Ctx {
    fn out(&self, rel: &str) -> String {
        self.outside.join(rel).display().to_string()
    }
}

/// (dev, ino) of `p` resolved inside `root` the way the applier resolves (symlinks followed
/// as if root were `/`): containerd's validators use `fs.RootPath` the same way.
fn inode_in_root(root: &Path, p: &str) -> Result<(u64, u64), String> {
    let rfd = nix::fcntl::open(
        root,
        OFlag::O_PATH | OFlag::O_DIRECTORY,
        nix::sys::stat::Mode::empty(),
    )
    .map_err(|e| e.to_string())?;
    let how = OpenHow::new()
        .flags(OFlag::O_PATH)
        .resolve(ResolveFlag::RESOLVE_IN_ROOT);
    let fd = openat2(&rfd, p.trim_start_matches('/'), how).map_err(|e| format!("{p}: {e}"))?;
    let st = fstat(&fd).map_err(|e| e.to_string())?;
    Ok((st.st_dev, st.st_ino))
}

fn same_file(root: &Path, a: &str, b: &str) -> Result<(), String> {
    if inode_in_root(root, a)? != inode_in_root(root, b)? {
        return Err(format!("{a} and {b} are not the same file"));
    }
    Ok(())
}

fn not_same_file(root: &Path, a: &str, b: &str) -> Result<(), String> {
    if inode_in_root(root, a)? == inode_in_root(root, b)? {
        return Err(format!("{a} and {b} are the same file"));
    }
    Ok(())
}

fn file_value(root: &Path, p: &str, want: &[u8]) -> Result<(), String> {
    let got = fs::read(root.join(p)).map_err(|e| format!("{p}: {e}"))?;
    if got != want {
        return Err(format!(
            "{p}: {:?}, expected {:?}",
            String::from_utf8_lossy(&got),
            String::from_utf8_lossy(want)
        ));
    }
    Ok(())
}

fn not_exists(root: &Path, p: &str) -> Result<(), String> {
    match fs::symlink_metadata(root.join(p)) {
        Err(_) => Ok(()),
        Ok(_) => Err(format!("{p} exists")),
    }
}

fn is_symlink(root: &Path, p: &str, target: &str) -> Result<(), String> {
    let t = fs::read_link(root.join(p)).map_err(|e| format!("{p} is not a symlink: {e}"))?;
    if t != Path::new(target) {
        return Err(format!("{p} -> {}, expected -> {target}", t.display()));
    }
    Ok(())
}

type Setup = fn(&Path);
type Check = Box<dyn Fn(&Ctx) -> Result<(), String>>;
type MakeLayer = Box<dyn Fn(&Ctx) -> Vec<u8>>;

enum Expect {
    /// Applied, confined inside the root; the check must hold.
    Confined(Check),
    /// Refused with this error class and a message containing the text.
    Refused(ErrorKind, &'static str),
}

struct Row {
    name: &'static str,
    setup: Option<Setup>,
    layer: MakeLayer,
    media_type: &'static str,
    diff_id: Option<&'static str>,
    expect: Expect,
}

fn row(name: &'static str, layer: impl Fn(&Ctx) -> Vec<u8> + 'static, expect: Expect) -> Row {
    Row {
        name,
        setup: None,
        layer: Box::new(layer),
        media_type: MEDIA_TYPE_LAYER,
        diff_id: None,
        expect,
    }
}

fn confined(f: impl Fn(&Ctx) -> Result<(), String> + 'static) -> Expect {
    Expect::Confined(Box::new(f))
}

fn etc_passwd_inside(r: &Path) {
    fs::create_dir(r.join("etc")).expect("mkdir etc");
    fs::write(r.join("etc/passwd"), "inside").expect("write passwd");
}

fn etc_all_users_with_link(r: &Path) {
    fs::create_dir(r.join("etc")).expect("mkdir etc");
    fs::write(r.join("etc/passwd"), "all users").expect("write passwd");
    fs::write(r.join("etc/whitedout"), "ahhhh whiteout").expect("write whitedout");
    std::os::unix::fs::symlink("/etc", r.join("localetc")).expect("symlink");
}

fn rows() -> Vec<Row> {
    use ErrorKind::{InvalidArgument, NotImplemented};
    let unbroken = |c: &Ctx| {
        file_value(&c.root, "etc/unbroken", b"unbroken")?;
        not_exists(Path::new("/"), "etc/unbroken")
    };
    let mut rows = vec![
        // ---- containerd TestBreakouts ----
        row(
            "SymlinkAbsolute",
            |_| {
                Layer::new()
                    .dir("etc", 0o755)
                    .symlink("/etc", "localetc")
                    .file("/localetc/unbroken", b"unbroken", 0o644)
                    .tar()
            },
            confined(unbroken),
        ),
        row(
            "SymlinkUpAndOut",
            |_| {
                Layer::new()
                    .dir("etc", 0o755)
                    .dir("dummy", 0o755)
                    .symlink("/dummy/../etc", "localetc")
                    .file("/localetc/unbroken", b"unbroken", 0o644)
                    .tar()
            },
            confined(unbroken),
        ),
        row(
            "SymlinkMultipleAbsolute",
            |_| {
                Layer::new()
                    .dir("etc", 0o755)
                    .dir("dummy", 0o755)
                    .symlink("/etc", "/dummy/etc")
                    .symlink("/dummy/etc", "localetc")
                    .file("/dummy/etc/unbroken", b"unbroken", 0o644)
                    .tar()
            },
            confined(unbroken),
        ),
        row(
            "SymlinkMultipleRelative",
            |_| {
                Layer::new()
                    .dir("etc", 0o755)
                    .dir("dummy", 0o755)
                    .symlink("/etc", "/dummy/etc")
                    .symlink("./dummy/etc", "localetc")
                    .file("/dummy/etc/unbroken", b"unbroken", 0o644)
                    .tar()
            },
            confined(unbroken),
        ),
        row(
            "SymlinkEmptyFile",
            |_| {
                Layer::new()
                    .dir("etc", 0o755)
                    .file("etc/emptied", b"notempty", 0o644)
                    .symlink("/etc", "localetc")
                    .file("/localetc/emptied", b"", 0o644)
                    .tar()
            },
            confined(|c| file_value(&c.root, "etc/emptied", b"")),
        ),
        row(
            "HardlinkRelative",
            |_| {
                Layer::new()
                    .dir("etc", 0o770)
                    .file("/etc/passwd", b"inside", 0o644)
                    .dir("breakouts", 0o755)
                    .symlink("../../etc", "breakouts/d1")
                    .link("/breakouts/d1/passwd", "breakouts/mypasswd")
                    .tar()
            },
            confined(|c| same_file(&c.root, "/breakouts/mypasswd", "/etc/passwd")),
        ),
        row(
            "HardlinkDownAndOut",
            |_| {
                Layer::new()
                    .dir("etc", 0o770)
                    .file("/etc/passwd", b"inside", 0o644)
                    .dir("breakouts", 0o755)
                    .dir("downandout", 0o755)
                    .symlink("../downandout/../../etc", "breakouts/d1")
                    .link("/breakouts/d1/passwd", "breakouts/mypasswd")
                    .tar()
            },
            confined(|c| same_file(&c.root, "/breakouts/mypasswd", "/etc/passwd")),
        ),
        row(
            "HardlinkAbsolute",
            |_| {
                Layer::new()
                    .dir("etc", 0o770)
                    .file("/etc/passwd", b"inside", 0o644)
                    .symlink("/etc", "localetc")
                    .link("/localetc/passwd", "localpasswd")
                    .tar()
            },
            confined(|c| same_file(&c.root, "localpasswd", "/etc/passwd")),
        ),
        row(
            "HardlinkRelativeLong",
            |_| {
                Layer::new()
                    .dir("etc", 0o770)
                    .file("/etc/passwd", b"inside", 0o644)
                    .symlink("../../../../../../../etc", "localetc")
                    .link("/localetc/passwd", "localpasswd")
                    .tar()
            },
            confined(|c| same_file(&c.root, "localpasswd", "/etc/passwd")),
        ),
        row(
            "HardlinkRelativeUpAndOut",
            |_| {
                Layer::new()
                    .dir("etc", 0o770)
                    .file("/etc/passwd", b"inside", 0o644)
                    .symlink("upandout/../../../etc", "localetc")
                    .link("/localetc/passwd", "localpasswd")
                    .tar()
            },
            confined(|c| same_file(&c.root, "localpasswd", "/etc/passwd")),
        ),
        row(
            "HardlinkDirectRelative",
            |_| {
                Layer::new()
                    .dir("etc", 0o770)
                    .file("/etc/passwd", b"inside", 0o644)
                    .link("../../../../../etc/passwd", "localpasswd")
                    .tar()
            },
            confined(|c| same_file(&c.root, "localpasswd", "/etc/passwd")),
        ),
        row(
            "HardlinkDirectAbsolute",
            |_| {
                Layer::new()
                    .dir("etc", 0o770)
                    .file("/etc/passwd", b"inside", 0o644)
                    .link("/etc/passwd", "localpasswd")
                    .tar()
            },
            confined(|c| same_file(&c.root, "localpasswd", "/etc/passwd")),
        ),
        row(
            "HardlinkSymlinkBeforeCreateTarget",
            |_| {
                Layer::new()
                    .dir("etc", 0o770)
                    .symlink("/etc/passwd", "localpasswd")
                    .link("localpasswd", "localpasswd-dup")
                    .file("/etc/passwd", b"after", 0o644)
                    .tar()
            },
            confined(|c| {
                same_file(&c.root, "localpasswd-dup", "/etc/passwd")?;
                is_symlink(&c.root, "localpasswd-dup", "/etc/passwd")
            }),
        ),
        row(
            "HardlinkSymlinkRelative",
            |_| {
                Layer::new()
                    .dir("etc", 0o770)
                    .file("/etc/passwd", b"inside", 0o644)
                    .symlink("../../../../../etc/passwd", "passwdlink")
                    .link("/passwdlink", "localpasswd")
                    .tar()
            },
            confined(|c| {
                is_symlink(&c.root, "localpasswd", "../../../../../etc/passwd")?;
                same_file(&c.root, "/localpasswd", "/etc/passwd")
            }),
        ),
        row(
            "HardlinkSymlinkAbsolute",
            |_| {
                Layer::new()
                    .dir("etc", 0o770)
                    .file("/etc/passwd", b"inside", 0o644)
                    .symlink("/etc/passwd", "passwdlink")
                    .link("/passwdlink", "localpasswd")
                    .tar()
            },
            confined(|c| {
                is_symlink(&c.root, "localpasswd", "/etc/passwd")?;
                same_file(&c.root, "/localpasswd", "/etc/passwd")
            }),
        ),
        row(
            "SymlinkParentDirectory",
            |_| {
                Layer::new()
                    .dir("etc", 0o770)
                    .file("/etc/passwd", b"inside", 0o644)
                    .symlink("/etc/", "..")
                    .link("/etc/passwd", "localpasswd")
                    .tar()
            },
            confined(|c| same_file(&c.root, "/localpasswd", "/etc/passwd")),
        ),
        row(
            "SymlinkEmptyFilename",
            |_| {
                Layer::new()
                    .dir("etc", 0o770)
                    .file("/etc/passwd", b"inside", 0o644)
                    .symlink("/etc/", "")
                    .link("/etc/passwd", "localpasswd")
                    .tar()
            },
            confined(|c| same_file(&c.root, "/localpasswd", "/etc/passwd")),
        ),
        row(
            "SymlinkParentRelative",
            |_| {
                Layer::new()
                    .dir("etc", 0o770)
                    .file("/etc/passwd", b"inside", 0o644)
                    .symlink("/etc/", "localetc/sub/..")
                    .link("/etc/passwd", "/localetc/localpasswd")
                    .tar()
            },
            confined(|c| same_file(&c.root, "/localetc/localpasswd", "/etc/passwd")),
        ),
        row(
            "SymlinkSlashEnded",
            |_| {
                Layer::new()
                    .dir("etc", 0o770)
                    .file("/etc/passwd", b"inside", 0o644)
                    .dir("localetc/", 0o770)
                    .link("/etc/passwd", "/localetc/localpasswd")
                    .tar()
            },
            confined(|c| same_file(&c.root, "/localetc/localpasswd", "/etc/passwd")),
        ),
        Row {
            setup: Some(|r| {
                etc_passwd_inside(r);
                fs::create_dir(r.join("localetc")).expect("mkdir");
            }),
            ..row(
                "SymlinkOverrideDirectory",
                |_| {
                    Layer::new()
                        .symlink("/etc", "localetc")
                        .link("/etc/passwd", "/localetc/localpasswd")
                        .tar()
                },
                confined(|c| same_file(&c.root, "/localetc/localpasswd", "/etc/passwd")),
            )
        },
        Row {
            setup: Some(|r| {
                etc_passwd_inside(r);
                fs::create_dir(r.join("localetc")).expect("mkdir");
            }),
            ..row(
                "SymlinkOverrideDirectoryRelative",
                |_| {
                    Layer::new()
                        .symlink("../../etc", "localetc")
                        .link("/etc/passwd", "/localetc/localpasswd")
                        .tar()
                },
                confined(|c| same_file(&c.root, "/localetc/localpasswd", "/etc/passwd")),
            )
        },
        Row {
            setup: Some(|r| {
                etc_passwd_inside(r);
                std::os::unix::fs::symlink("/etc", r.join("localetc")).expect("symlink");
            }),
            ..row(
                "DirectoryOverrideSymlink",
                |_| {
                    Layer::new()
                        .dir("/localetc/", 0o755)
                        .link("/etc/passwd", "/localetc/localpasswd")
                        .tar()
                },
                confined(|c| same_file(&c.root, "/localetc/localpasswd", "/etc/passwd")),
            )
        },
        Row {
            setup: Some(|r| {
                etc_passwd_inside(r);
                std::os::unix::fs::symlink("etc", r.join("localetc")).expect("symlink");
                fs::hard_link(r.join("etc/passwd"), r.join("etc/localpasswd")).expect("link");
            }),
            ..row(
                "DirectoryOverrideSymlinkAndHardlink",
                |_| {
                    Layer::new()
                        .dir("/localetc/", 0o755)
                        .file("/localetc/localpasswd", b"different", 0o644)
                        .tar()
                },
                confined(|c| {
                    not_same_file(&c.root, "/localetc/localpasswd", "/etc/passwd")?;
                    file_value(&c.root, "etc/passwd", b"inside")
                }),
            )
        },
        Row {
            setup: Some(etc_passwd_inside),
            ..row(
                "WhiteoutRootParent",
                |_| Layer::new().whiteout(".wh...").tar(),
                Expect::Refused(InvalidArgument, "whiteout"),
            )
        },
        Row {
            setup: Some(etc_passwd_inside),
            ..row(
                "WhiteoutParent",
                |_| Layer::new().whiteout("etc/.wh...").tar(),
                Expect::Refused(InvalidArgument, "whiteout"),
            )
        },
        Row {
            setup: Some(etc_passwd_inside),
            ..row(
                "WhiteoutRoot",
                |_| Layer::new().whiteout(".wh..").tar(),
                Expect::Refused(InvalidArgument, "whiteout"),
            )
        },
        Row {
            setup: Some(etc_passwd_inside),
            ..row(
                "WhiteoutCurrentDirectory",
                |_| Layer::new().whiteout("etc/.wh..").tar(),
                Expect::Refused(InvalidArgument, "whiteout"),
            )
        },
        Row {
            setup: Some(etc_all_users_with_link),
            ..row(
                "WhiteoutSymlink",
                |_| Layer::new().whiteout(".wh.localetc").tar(),
                confined(|c| {
                    file_value(&c.root, "etc/passwd", b"all users")?;
                    not_exists(&c.root, "localetc")
                }),
            )
        },
        Row {
            setup: Some(etc_all_users_with_link),
            ..row(
                "WhiteoutSymlinkPath",
                |_| Layer::new().whiteout("localetc/.wh.whitedout").tar(),
                confined(|c| {
                    file_value(&c.root, "etc/passwd", b"all users")?;
                    not_exists(&c.root, "etc/whitedout")
                }),
            )
        },
        Row {
            setup: Some(etc_all_users_with_link),
            ..row(
                "WhiteoutDirectoryName",
                |_| {
                    Layer::new()
                        .file(".wh.etc/somefile", b"non-empty", 0o644)
                        .tar()
                },
                confined(|c| {
                    file_value(&c.root, "etc/passwd", b"all users")?;
                    file_value(&c.root, ".wh.etc/somefile", b"non-empty")
                }),
            )
        },
        Row {
            setup: Some(|r| {
                fs::create_dir(r.join("etc")).expect("mkdir");
                fs::write(r.join("etc/passwd"), "all users").expect("write");
                std::os::unix::fs::symlink("/dne", r.join("localetc")).expect("symlink");
            }),
            ..row(
                "WhiteoutDeadSymlinkParent",
                |_| Layer::new().whiteout("localetc/.wh.etc").tar(),
                confined(|c| file_value(&c.root, "etc/passwd", b"all users")),
            )
        },
        Row {
            setup: Some(|r| {
                fs::create_dir(r.join("etc")).expect("mkdir");
                fs::write(r.join("etc/passwd"), "all users").expect("write");
                std::os::unix::fs::symlink("/dne", r.join("localetc")).expect("symlink");
            }),
            ..row(
                "WhiteoutRelativePath",
                |_| Layer::new().whiteout("dne/../.wh.etc").tar(),
                confined(|c| not_exists(&c.root, "etc/passwd")),
            )
        },
        row(
            "HardlinkSymlinkChmod",
            // A symlink created at the sentinel's absolute path (inside the root), hard-linked,
            // then chmod-ed through the link by the entry mode: CVE-2021-32760.
            |c| {
                Layer::new()
                    .symlink(&c.out("perm400"), &c.out("also-exists-outside-root"))
                    .link(&c.out("also-exists-outside-root"), "sketchylink")
                    .tar()
            },
            confined(|c| {
                let perm = fs::metadata(c.outside.join("perm400"))
                    .map_err(|e| e.to_string())?
                    .mode()
                    & 0o7777;
                if perm != 0o400 {
                    return Err(format!("perm400 changed to {perm:o}"));
                }
                Ok(())
            }),
        ),
        // ---- berth's own rows ----
        row(
            "DotDotTraversal",
            |_| Layer::new().file("../../../escaped", b"x", 0o644).tar(),
            confined(|c| {
                file_value(&c.root, "escaped", b"x")?;
                not_exists(c.root.parent().expect("parent"), "escaped")
            }),
        ),
        row(
            "DotDotIntoSentinel",
            |_| {
                Layer::new()
                    .file("../outside/passwd", b"pwned", 0o644)
                    .tar()
            },
            confined(|c| file_value(&c.root, "outside/passwd", b"pwned")),
        ),
        row(
            "AbsolutePath",
            |c| Layer::new().file(&c.out("passwd"), b"pwned", 0o644).tar(),
            confined(|c| file_value(&c.root, c.out("passwd").trim_start_matches('/'), b"pwned")),
        ),
        row(
            "SymlinkToSentinelThenWrite",
            |c| {
                Layer::new()
                    .symlink(&c.out(""), "out")
                    .file("out/passwd", b"pwned", 0o644)
                    .tar()
            },
            confined(|c| file_value(&c.root, c.out("passwd").trim_start_matches('/'), b"pwned")),
        ),
        row(
            "SymlinkThenFileReplacesLink",
            |c| {
                Layer::new()
                    .symlink(&c.out("passwd"), "x")
                    .file("x", b"pwned", 0o644)
                    .tar()
            },
            confined(|c| file_value(&c.root, "x", b"pwned")),
        ),
        row(
            "SymlinkThenDirectoryReplacesLink",
            |c| {
                Layer::new()
                    .symlink(&c.out(""), "d")
                    .dir("d", 0o777)
                    .file("d/f", b"pwned", 0o644)
                    .tar()
            },
            confined(|c| {
                file_value(&c.root, "d/f", b"pwned")?;
                let m = fs::symlink_metadata(c.root.join("d")).map_err(|e| e.to_string())?;
                if !m.is_dir() {
                    return Err("d is not a real directory".into());
                }
                Ok(())
            }),
        ),
        row(
            "HardlinkToOutsideAbsolute",
            |c| Layer::new().link(&c.out("passwd"), "lp").tar(),
            Expect::Refused(ErrorKind::Internal, "hard link"),
        ),
        row(
            "HardlinkToOutsideViaDotDot",
            |_| Layer::new().link("../outside/passwd", "lp").tar(),
            Expect::Refused(ErrorKind::Internal, "hard link"),
        ),
        row(
            "ChmodThroughSymlinkEntryMode",
            |c| {
                Layer::new()
                    .raw(
                        EntryType::Symlink,
                        b"s",
                        c.out("passwd").as_bytes(),
                        0o777,
                        b"",
                    )
                    .tar()
            },
            confined(|c| is_symlink(&c.root, "s", &c.out("passwd"))),
        ),
        row(
            "ChownThroughSymlink",
            |c| {
                Layer::new()
                    .owner(4321, 4321)
                    .symlink(&c.out("passwd"), "s")
                    .tar()
            },
            confined(|c| {
                let m = fs::symlink_metadata(c.root.join("s")).map_err(|e| e.to_string())?;
                if m.uid() != 4321 {
                    return Err(format!(
                        "the symlink itself should be owned by 4321, is {}",
                        m.uid()
                    ));
                }
                Ok(())
            }),
        ),
        row(
            "ChmodThroughHardlinkedSymlink",
            |c| {
                Layer::new()
                    .symlink(&c.out("passwd"), "s")
                    .raw(EntryType::Link, b"h", b"s", 0o777, b"")
                    .tar()
            },
            confined(|c| is_symlink(&c.root, "h", &c.out("passwd"))),
        ),
        row(
            "WhiteoutDotDotToSentinel",
            |_| Layer::new().whiteout("../.wh.outside").tar(),
            confined(|_| Ok(())),
        ),
        row(
            "WhiteoutThroughSymlinkToSentinel",
            |c| {
                Layer::new()
                    .symlink(&c.out(""), "o")
                    .whiteout("o/.wh.passwd")
                    .tar()
            },
            confined(|_| Ok(())),
        ),
        row(
            "OpaqueThroughSymlinkToSentinel",
            |c| {
                Layer::new()
                    .symlink(&c.out(""), "o")
                    .whiteout("o/.wh..wh..opq")
                    .tar()
            },
            confined(|_| Ok(())),
        ),
        row(
            "AbsoluteSymlinkChain",
            |c| {
                Layer::new()
                    .symlink("/b", "a")
                    .symlink("/c", "b")
                    .symlink(&c.out(""), "c")
                    .file("a/pwned", b"pwned", 0o644)
                    .tar()
            },
            confined(|c| file_value(&c.root, c.out("pwned").trim_start_matches('/'), b"pwned")),
        ),
        row(
            "SymlinkLoop",
            |_| {
                Layer::new()
                    .symlink("b", "a")
                    .symlink("a", "b")
                    .file("a/x", b"x", 0o644)
                    .tar()
            },
            Expect::Refused(ErrorKind::Internal, "parent"),
        ),
        row(
            "LongName255",
            |_| Layer::new().file(&"n".repeat(255), b"ok", 0o644).tar(),
            confined(|c| file_value(&c.root, &"n".repeat(255), b"ok")),
        ),
        row(
            "LongPathGnuLongName",
            |_| {
                Layer::new()
                    .file(
                        &format!("{}/{}/f", "d".repeat(200), "e".repeat(200)),
                        b"deep",
                        0o644,
                    )
                    .tar()
            },
            confined(|c| {
                file_value(
                    &c.root,
                    &format!("{}/{}/f", "d".repeat(200), "e".repeat(200)),
                    b"deep",
                )
            }),
        ),
        row(
            "OverlongComponent256",
            |_| Layer::new().file(&"n".repeat(256), b"x", 0o644).tar(),
            Expect::Refused(InvalidArgument, "NAME_MAX"),
        ),
        row(
            "NulInPaxPath",
            |_| {
                Layer::new()
                    .pax(&[("path", b"a\0b")])
                    .file("placeholder", b"x", 0o644)
                    .tar()
            },
            Expect::Refused(InvalidArgument, "NUL"),
        ),
        row(
            "DeviceMajorOutOfRange",
            |_| Layer::new().device(EntryType::Char, "dev", 4096, 0).tar(),
            Expect::Refused(InvalidArgument, "out of range"),
        ),
        row(
            "DeviceMinorOutOfRange",
            |_| {
                Layer::new()
                    .device(EntryType::Block, "dev", 8, 1 << 20)
                    .tar()
            },
            Expect::Refused(InvalidArgument, "out of range"),
        ),
        row(
            "DeviceInRangeIsCreatedInside",
            |_| Layer::new().device(EntryType::Char, "null", 1, 3).tar(),
            confined(|c| {
                let m = fs::symlink_metadata(c.root.join("null")).map_err(|e| e.to_string())?;
                if m.rdev() != nix::sys::stat::makedev(1, 3) {
                    return Err(format!("rdev {}", m.rdev()));
                }
                Ok(())
            }),
        ),
        row(
            "PaxHeaderTooLarge",
            |_| {
                let mut body = format!("{} comment=", 2 * 1024 * 1024 + 20).into_bytes();
                body.resize(2 * 1024 * 1024 + 20, b'a');
                Layer::new().raw_pax(&body).file("f", b"x", 0o644).tar()
            },
            Expect::Refused(InvalidArgument, "limit"),
        ),
        row(
            "TrustedXattrIgnored",
            |_| {
                Layer::new()
                    .pax(&[("SCHILY.xattr.trusted.overlay.opaque", b"y")])
                    .dir("d", 0o755)
                    .tar()
            },
            confined(|c| {
                let v = daemon::snapshots::fsutil::lgetxattr(
                    &c.root.join("d"),
                    std::ffi::OsStr::new("trusted.overlay.opaque"),
                )
                .map_err(|e| e.to_string())?;
                if v.is_some() {
                    return Err("trusted.* xattr from the archive was applied".into());
                }
                Ok(())
            }),
        ),
        row(
            "HardlinkToRootDirectory",
            |_| Layer::new().link("/", "rootlink").tar(),
            Expect::Refused(InvalidArgument, "root"),
        ),
        row(
            "GarbageIsNotATar",
            |_| vec![0x42; 4096],
            Expect::Refused(InvalidArgument, "corrupt"),
        ),
        row(
            "TruncatedTarMidFile",
            |_| {
                let t = Layer::new().file("big", &vec![7u8; 64 * 1024], 0o644).tar();
                t[..512 + 10_000].to_vec()
            },
            Expect::Refused(InvalidArgument, "big"),
        ),
        Row {
            media_type: MEDIA_TYPE_LAYER_GZIP,
            ..row(
                "TruncatedGzip",
                |_| {
                    let g = Layer::new()
                        .file(
                            "big",
                            &(0..200_000u32).map(|i| (i % 251) as u8).collect::<Vec<_>>(),
                            0o644,
                        )
                        .gzip();
                    g[..g.len() / 2].to_vec()
                },
                Expect::Refused(InvalidArgument, "corrupt"),
            )
        },
        Row {
            media_type: MEDIA_TYPE_LAYER_GZIP,
            ..row(
                "GzipTrailerCorrupt",
                |_| {
                    let mut g = Layer::new().file("f", b"hello", 0o644).gzip();
                    let n = g.len();
                    g[n - 6] ^= 0xff; // CRC32 of the gzip trailer
                    g
                },
                Expect::Refused(InvalidArgument, "corrupt"),
            )
        },
        // Hostile GNU sparse maps (PAX 0.1 and 1.0 encodings).
        row(
            "SparseMapOverlapping",
            |_| {
                Layer::new()
                    .pax(&[
                        ("GNU.sparse.size", b"100"),
                        ("GNU.sparse.map", b"0,10,5,10"),
                    ])
                    .file("s", &[1u8; 20], 0o644)
                    .tar()
            },
            Expect::Refused(InvalidArgument, "overlap"),
        ),
        row(
            "SparseMapBeyondRealSize",
            |_| {
                Layer::new()
                    .pax(&[("GNU.sparse.size", b"5"), ("GNU.sparse.map", b"0,10")])
                    .file("s", &[1u8; 10], 0o644)
                    .tar()
            },
            Expect::Refused(InvalidArgument, "real size"),
        ),
        row(
            "SparseMapStoredMismatch",
            |_| {
                Layer::new()
                    .pax(&[("GNU.sparse.size", b"100"), ("GNU.sparse.map", b"0,10")])
                    .file("s", &[1u8; 20], 0o644)
                    .tar()
            },
            Expect::Refused(InvalidArgument, "covers"),
        ),
        row(
            "SparseMap1_0Unbounded",
            |_| {
                let mut data = b"3000000\n".to_vec();
                for i in 0..300_000u32 {
                    data.extend_from_slice(format!("{i}\n").as_bytes());
                }
                Layer::new()
                    .pax(&[
                        ("GNU.sparse.major", b"1"),
                        ("GNU.sparse.minor", b"0"),
                        ("GNU.sparse.name", b"s"),
                        ("GNU.sparse.realsize", b"100"),
                    ])
                    .file("GNUSparseFile.0/s", &data, 0o644)
                    .tar()
            },
            Expect::Refused(InvalidArgument, "1 MiB"),
        ),
        row(
            "SparseEmptyMapStringRefusedAsGo",
            |_| {
                Layer::new()
                    .pax(&[("GNU.sparse.size", b"1048576"), ("GNU.sparse.map", b"")])
                    .file("s", b"", 0o644)
                    .tar()
            },
            Expect::Refused(InvalidArgument, "GNU.sparse.map"),
        ),
        // A plain OCI tar type is read as is (containerd's stdProcessor): gzip bytes are junk.
        row(
            "GzipUnderPlainTarMediaType",
            |_| Layer::new().file("f", b"x", 0o644).gzip(),
            Expect::Refused(InvalidArgument, "corrupt"),
        ),
        Row {
            diff_id: Some(
                "sha256:0000000000000000000000000000000000000000000000000000000000000000",
            ),
            ..row(
                "BadDiffId",
                |_| Layer::new().file("f", b"x", 0o644).tar(),
                Expect::Refused(InvalidArgument, "diff_id"),
            )
        },
        Row {
            media_type: "application/vnd.oci.image.layer.v1.tar+bzip2",
            ..row(
                "UnsupportedMediaType",
                |_| Layer::new().file("f", b"x", 0o644).tar(),
                Expect::Refused(NotImplemented, "media type"),
            )
        },
    ];
    // A correct diff_id passes (the control row for BadDiffId).
    rows.push(Row {
        diff_id: Some(Box::leak(
            sha256(&Layer::new().file("f", b"x", 0o644).tar()).into_boxed_str(),
        )),
        ..row(
            "GoodDiffId",
            |_| Layer::new().file("f", b"x", 0o644).tar(),
            confined(|c| file_value(&c.root, "f", b"x")),
        )
    });
    rows
}

fn sentinel(outside: &Path) {
    fs::create_dir(outside).expect("mkdir outside");
    fs::write(outside.join("passwd"), "outside").expect("write");
    fs::set_permissions(outside.join("passwd"), fs::Permissions::from_mode(0o644)).expect("chmod");
    fs::write(outside.join("perm400"), "...").expect("write");
    fs::set_permissions(outside.join("perm400"), fs::Permissions::from_mode(0o400)).expect("chmod");
    fs::write(outside.join("also-exists-outside-root"), "...").expect("write");
    fs::set_permissions(
        outside.join("also-exists-outside-root"),
        fs::Permissions::from_mode(0o640),
    )
    .expect("chmod");
}

fn host_etc_state() -> (Vec<u8>, u32, bool) {
    let passwd = fs::read("/etc/passwd").expect("read /etc/passwd");
    let mode = fs::metadata("/etc/passwd")
        .expect("stat /etc/passwd")
        .mode();
    (passwd, mode, Path::new("/etc/unbroken").exists())
}

#[test]
fn layer_apply_breakouts_table() {
    let host_before = host_etc_state();
    let mut failures = Vec::new();
    let rows = rows();
    for r in &rows {
        let tmp = tempfile::Builder::new()
            .prefix("berth-breakout-")
            .tempdir()
            .expect("tempdir");
        let ctx = Ctx {
            root: tmp.path().join("root"),
            outside: tmp.path().join("outside"),
        };
        fs::create_dir(&ctx.root).expect("mkdir root");
        sentinel(&ctx.outside);
        if let Some(setup) = r.setup {
            setup(&ctx.root);
        }
        let sentinel_before = describe(&ctx.outside, true);
        let blob = (r.layer)(&ctx);
        let result = apply_layer(
            blob.as_slice(),
            r.media_type,
            &ApplyTarget::Dir(&ctx.root),
            r.diff_id,
        );
        let verdict = match (&r.expect, result) {
            (Expect::Confined(check), Ok(_)) => {
                check(&ctx).map_err(|e| format!("applied but check failed: {e}"))
            }
            (Expect::Confined(_), Err(e)) => {
                Err(format!("expected to apply (confined), got error: {e}"))
            }
            (Expect::Refused(kind, text), Err(e)) => {
                let msg = e.to_string();
                if e.kind() != *kind {
                    Err(format!(
                        "refused with {:?} ({msg}), expected {kind:?}",
                        e.kind()
                    ))
                } else if !msg.to_lowercase().contains(&text.to_lowercase()) {
                    Err(format!(
                        "refused, but the message {msg:?} does not mention {text:?}"
                    ))
                } else {
                    eprintln!("{:<36} refused: {msg}", r.name);
                    Ok(())
                }
            }
            (Expect::Refused(..), Ok(d)) => {
                Err(format!("expected a refusal, but it applied ({})", d.digest))
            }
        };
        let sentinel_after = describe(&ctx.outside, true);
        let verdict = verdict.and_then(|()| {
            if sentinel_before == sentinel_after {
                Ok(())
            } else {
                Err(format!(
                    "SENTINEL CHANGED: before {sentinel_before:?} after {sentinel_after:?}"
                ))
            }
        });
        if let Err(e) = verdict {
            failures.push(format!("{}: {e}", r.name));
        }
    }
    assert_eq!(host_etc_state(), host_before, "the host /etc changed");
    assert!(
        failures.is_empty(),
        "{} of {} rows failed:\n{}",
        failures.len(),
        rows.len(),
        failures.join("\n")
    );
    eprintln!("{} breakout rows passed", rows.len());
}

/// Keeps `gzip` referenced for rows built from raw tars in other files.
#[test]
fn gzip_helper_round_trips() {
    let t = Layer::new().file("f", b"x", 0o644).tar();
    let gz = gzip(&t);
    let mut d = flate2::read::GzDecoder::new(gz.as_slice());
    let mut out = Vec::new();
    std::io::Read::read_to_end(&mut d, &mut out).expect("gunzip");
    assert_eq!(out, t);
}

/// Random corruption of a hostile-but-valid layer (symlinks out, hard links, whiteouts,
/// devices, PAX and GNU long names): whatever the bytes, apply either succeeds or fails with
/// an error; it never panics and never writes outside the root.
#[test]
fn corrupted_layers_never_escape_or_panic() {
    let tmp = tempfile::Builder::new()
        .prefix("berth-fuzz-")
        .tempdir()
        .expect("tempdir");
    let outside = tmp.path().join("outside");
    sentinel(&outside);
    let out = outside.display().to_string();
    let layer = Layer::new()
        .dir("etc", 0o755)
        .symlink(&out, "o")
        .symlink("../../../..", "up")
        .file("o/passwd", b"pwned", 0o644)
        .file("up/outside/passwd", b"pwned", 0o644)
        .link("o/passwd", "hl")
        .whiteout("o/.wh.passwd")
        .whiteout("up/.wh.outside")
        .pax(&[
            ("path", b"p/../../outside/perm400"),
            ("SCHILY.xattr.user.x", b"1"),
        ])
        .file("ignored", b"pwned", 0o777)
        .file(
            &format!("{}/{}", "d".repeat(120), "f".repeat(120)),
            b"long",
            0o644,
        )
        .device(EntryType::Char, "null", 1, 3)
        .whiteout("etc/.wh..wh..opq")
        .tar();
    let before = describe(&outside, true);
    let control = tmp.path().join("control");
    fs::create_dir(&control).expect("mkdir");
    apply_layer(
        layer.as_slice(),
        MEDIA_TYPE_LAYER,
        &ApplyTarget::Dir(&control),
        None,
    )
    .expect("the uncorrupted layer applies (confined)");
    assert_eq!(
        describe(&outside, true),
        before,
        "the uncorrupted layer changed the sentinel"
    );
    // xorshift: deterministic, no extra crate.
    let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let (mut ok, mut refused) = (0, 0);
    for i in 0..300 {
        let mut blob = layer.clone();
        for _ in 0..(1 + next() % 4) {
            let pos = (next() % blob.len() as u64) as usize;
            blob[pos] = (next() & 0xff) as u8;
        }
        if i % 3 == 0 {
            blob.truncate((next() % blob.len() as u64) as usize);
        }
        let root = tmp.path().join(format!("root-{i}"));
        fs::create_dir(&root).expect("mkdir");
        let r = std::panic::catch_unwind(|| {
            apply_layer(
                blob.as_slice(),
                MEDIA_TYPE_LAYER,
                &ApplyTarget::Dir(&root),
                None,
            )
        });
        match r {
            Err(_) => panic!("iteration {i}: apply panicked"),
            Ok(Ok(_)) => ok += 1,
            Ok(Err(_)) => refused += 1,
        }
        assert_eq!(
            describe(&outside, true),
            before,
            "iteration {i}: the sentinel changed"
        );
        fs::remove_dir_all(&root).expect("cleanup root");
    }
    eprintln!("300 corrupted layers: {ok} applied (confined), {refused} refused");
    assert!(
        refused > 0 && ok > 0,
        "the corruption should produce both outcomes"
    );
}
