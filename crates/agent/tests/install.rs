//! Integration tests of the app installer and packer: hostile packages are refused with a
//! clear reason, leave no trace outside the staging directory and keep the installed version;
//! installs, upgrades, removals, crash recovery and `pack` round trips work.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Cursor, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use elves_agent::install::{
    self, InstallError, Limits, cleanup_staging, extract_to_staging, install, installed_version,
    prescan, remove, verify_digest,
};
use elves_agent::pack::{PackError, pack, package_file_name};
use sha2::{Digest, Sha256};
use zip::write::SimpleFileOptions;
use zip::{CompressionMethod, ZipWriter};

const APP: &str = "demo";

// ----------------------------------------------------------------------------------------
// Building packages.

/// A file of a good package: name (ending with `/` for a directory), content, mode.
type Spec<'a> = (&'a str, &'a [u8], u32);

/// Builds a well-formed deflated zip with the `zip` crate's writer.
fn good_zip(files: &[Spec<'_>]) -> Vec<u8> {
    let mut zip = ZipWriter::new(Cursor::new(Vec::new()));
    for (name, content, mode) in files {
        let options = SimpleFileOptions::default()
            .compression_method(CompressionMethod::Deflated)
            .unix_permissions(*mode);
        if name.ends_with('/') {
            zip.add_directory(*name, options).expect("add dir");
        } else {
            zip.start_file(*name, options).expect("start file");
            zip.write_all(content).expect("write");
        }
    }
    zip.finish().expect("finish").into_inner()
}

/// Version 1 of the demo app.
fn v1() -> Vec<u8> {
    good_zip(&[
        ("app-worker", b"#!/bin/sh\necho v1\n", 0o755),
        ("data.txt", b"one", 0o644),
        ("lib/", b"", 0o755),
        ("lib/helper.txt", b"h1", 0o600),
        ("empty/", b"", 0o700),
    ])
}

/// Version 2 of the demo app: `lib/` is gone, `new.txt` appears.
fn v2() -> Vec<u8> {
    good_zip(&[
        ("app-worker", b"#!/bin/sh\necho v2\n", 0o700),
        ("data.txt", b"two", 0o644),
        ("new.txt", b"new", 0o444),
    ])
}

/// What `apps/demo` must hold after installing [`v1`].
fn v1_tree() -> Tree {
    tree_of(&[
        (".elves-version", "f644 1.0\n"),
        ("app-worker", "f755 #!/bin/sh\necho v1\n"),
        ("data.txt", "f644 one"),
        ("empty", "d755"),
        ("lib", "d755"),
        ("lib/helper.txt", "f644 h1"),
    ])
}

/// What `apps/demo` must hold after installing [`v2`].
fn v2_tree() -> Tree {
    tree_of(&[
        (".elves-version", "f644 2.0\n"),
        ("app-worker", "f755 #!/bin/sh\necho v2\n"),
        ("data.txt", "f644 two"),
        ("new.txt", "f644 new"),
    ])
}

/// CRC-32 (IEEE), bit by bit.
fn crc32(data: &[u8]) -> u32 {
    let mut crc = 0xFFFF_FFFFu32;
    for &byte in data {
        crc ^= u32::from(byte);
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

/// One entry of a hand-crafted zip.
#[derive(Clone)]
struct Raw {
    name: Vec<u8>,
    data: Vec<u8>,
    /// The Unix mode put in the external attributes (made by Unix), or none (made by DOS).
    mode: Option<u32>,
    method: u16,
    flags: u16,
    /// The uncompressed size to declare instead of the data's length.
    declared: Option<u32>,
    /// Reuse the local header and data of an earlier entry (overlapping entries).
    alias_of: Option<usize>,
    /// Say "made by MS-DOS" even though `mode` is set.
    dos: bool,
}

/// A stored regular file with mode 0644.
fn raw(name: &[u8], data: &[u8]) -> Raw {
    Raw {
        name: name.to_vec(),
        data: data.to_vec(),
        mode: Some(0o100_644),
        method: 0,
        flags: 0,
        declared: None,
        alias_of: None,
        dos: false,
    }
}

/// A stored entry with an explicit Unix mode.
fn raw_mode(name: &[u8], data: &[u8], mode: u32) -> Raw {
    Raw {
        mode: Some(mode),
        ..raw(name, data)
    }
}

/// Hand-crafts a zip (no data descriptors, no ZIP64) exactly as described by `entries`.
fn raw_zip(entries: &[Raw]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut central = Vec::new();
    let mut offsets: Vec<u32> = Vec::new();
    let le16 = |v: &mut Vec<u8>, x: u16| v.extend_from_slice(&x.to_le_bytes());
    let le32 = |v: &mut Vec<u8>, x: u32| v.extend_from_slice(&x.to_le_bytes());
    for e in entries {
        let crc = crc32(&e.data);
        let csize = e.data.len() as u32;
        let usize_ = e.declared.unwrap_or(csize);
        let offset = match e.alias_of {
            Some(i) => offsets[i],
            None => {
                let offset = out.len() as u32;
                le32(&mut out, 0x0403_4b50);
                le16(&mut out, 20);
                le16(&mut out, e.flags);
                le16(&mut out, e.method);
                le16(&mut out, 0);
                le16(&mut out, 0x21);
                le32(&mut out, crc);
                le32(&mut out, csize);
                le32(&mut out, usize_);
                le16(&mut out, e.name.len() as u16);
                le16(&mut out, 0);
                out.extend_from_slice(&e.name);
                out.extend_from_slice(&e.data);
                offset
            }
        };
        offsets.push(offset);
        le32(&mut central, 0x0201_4b50);
        le16(
            &mut central,
            if e.mode.is_some() && !e.dos {
                (3 << 8) | 20
            } else {
                20
            },
        );
        le16(&mut central, 20);
        le16(&mut central, e.flags);
        le16(&mut central, e.method);
        le16(&mut central, 0);
        le16(&mut central, 0x21);
        le32(&mut central, crc);
        le32(&mut central, csize);
        le32(&mut central, usize_);
        le16(&mut central, e.name.len() as u16);
        le16(&mut central, 0);
        le16(&mut central, 0);
        le16(&mut central, 0);
        le16(&mut central, 0);
        le32(&mut central, e.mode.map_or(0, |m| m << 16));
        le32(&mut central, offset);
        central.extend_from_slice(&e.name);
    }
    let cd_offset = out.len() as u32;
    out.extend_from_slice(&central);
    le32(&mut out, 0x0605_4b50);
    le16(&mut out, 0);
    le16(&mut out, 0);
    le16(&mut out, entries.len() as u16);
    le16(&mut out, entries.len() as u16);
    le32(&mut out, central.len() as u32);
    le32(&mut out, cd_offset);
    le16(&mut out, 0);
    out
}

/// `size` zero bytes deflated into a one-entry zip named `zeros.bin`.
fn zeros_zip(size: usize) -> Vec<u8> {
    let mut zip = ZipWriter::new(Cursor::new(Vec::new()));
    let options = SimpleFileOptions::default()
        .compression_method(CompressionMethod::Deflated)
        .unix_permissions(0o644);
    zip.start_file("zeros.bin", options).expect("start");
    let chunk = vec![0u8; 64 * 1024];
    let mut left = size;
    while left > 0 {
        let n = left.min(chunk.len());
        zip.write_all(&chunk[..n]).expect("write");
        left -= n;
    }
    zip.finish().expect("finish").into_inner()
}

/// Rewrites the declared uncompressed size of the only entry of a zip made by the writer, in
/// both its local and its central header: the headers then lie about the size.
fn lie_about_size(mut bytes: Vec<u8>, declared: u32) -> Vec<u8> {
    assert_eq!(&bytes[..4], b"PK\x03\x04");
    assert_eq!(
        u16::from_le_bytes([bytes[6], bytes[7]]) & 8,
        0,
        "data descriptor"
    );
    bytes[22..26].copy_from_slice(&declared.to_le_bytes());
    let eocd = bytes.len() - 22;
    assert_eq!(&bytes[eocd..eocd + 4], b"PK\x05\x06");
    let cd = u32::from_le_bytes(bytes[eocd + 16..eocd + 20].try_into().unwrap()) as usize;
    assert_eq!(&bytes[cd..cd + 4], b"PK\x01\x02");
    bytes[cd + 24..cd + 28].copy_from_slice(&declared.to_le_bytes());
    bytes
}

// ----------------------------------------------------------------------------------------
// The test environment.

/// A temporary root with `apps/` (maybe not created yet) and `pkgs/`.
struct Env {
    tmp: tempfile::TempDir,
    apps: PathBuf,
    pkgs: PathBuf,
}

impl Env {
    fn new() -> Env {
        let tmp = tempfile::tempdir().expect("tempdir");
        let apps = tmp.path().join("apps");
        let pkgs = tmp.path().join("pkgs");
        std::fs::create_dir(&pkgs).expect("mkdir pkgs");
        Env { tmp, apps, pkgs }
    }

    /// An environment with version 1.0 of the demo app installed.
    fn with_v1() -> Env {
        let env = Env::new();
        env.install("1.0", &v1()).expect("install v1");
        assert_eq!(tree(&env.apps.join(APP)), v1_tree());
        env
    }

    /// Stores a package and returns its path, SHA-256 and size.
    fn put(&self, name: &str, bytes: &[u8]) -> (PathBuf, String, u64) {
        let path = self.pkgs.join(name);
        std::fs::write(&path, bytes).expect("write package");
        (path, hex::encode(Sha256::digest(bytes)), bytes.len() as u64)
    }

    /// Installs `bytes` as `version` of the demo app under the default limits.
    fn install(&self, version: &str, bytes: &[u8]) -> Result<(), InstallError> {
        self.install_with(version, bytes, &Limits::default())
    }

    fn install_with(
        &self,
        version: &str,
        bytes: &[u8],
        limits: &Limits,
    ) -> Result<(), InstallError> {
        let (path, sha, size) = self.put(&format!("{APP}_{version}.zip"), bytes);
        install(&self.apps, APP, version, &path, &sha, size, limits)
    }

    fn root(&self) -> &Path {
        self.tmp.path()
    }

    /// The names in `apps/`.
    fn apps_listing(&self) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(&self.apps)
            .expect("list apps")
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        names
    }
}

/// A directory tree: relative path → `d{mode}`, `l{target}` or `f{mode} {content}`.
type Tree = BTreeMap<String, String>;

fn tree_of(items: &[(&str, &str)]) -> Tree {
    items
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

/// Walks a directory without following links. File contents are shown in full when short
/// and as a SHA-256 otherwise.
fn tree(root: &Path) -> Tree {
    fn walk(dir: &Path, prefix: &str, out: &mut Tree) {
        let Ok(listing) = std::fs::read_dir(dir) else {
            return;
        };
        for entry in listing {
            let entry = entry.unwrap();
            let name = entry.file_name().into_string().unwrap();
            let rel = if prefix.is_empty() {
                name.clone()
            } else {
                format!("{prefix}/{name}")
            };
            let path = entry.path();
            let meta = std::fs::symlink_metadata(&path).unwrap();
            let mode = meta.permissions().mode() & 0o7777;
            if meta.file_type().is_symlink() {
                let target = std::fs::read_link(&path).unwrap();
                out.insert(rel, format!("l{}", target.display()));
            } else if meta.is_dir() {
                out.insert(rel.clone(), format!("d{mode:o}"));
                walk(&path, &rel, out);
            } else {
                let content = std::fs::read(&path).unwrap();
                let shown = if content.len() <= 64 {
                    String::from_utf8_lossy(&content).into_owned()
                } else {
                    hex::encode(Sha256::digest(&content))
                };
                out.insert(rel, format!("f{mode:o} {shown}"));
            }
        }
    }
    let mut out = Tree::new();
    walk(root, "", &mut out);
    out
}

// ----------------------------------------------------------------------------------------
// Hostile packages.

/// A package that must be refused, the limits to use, and a part of the expected message.
struct Hostile {
    what: &'static str,
    bytes: Vec<u8>,
    limits: Limits,
    expect: &'static str,
}

const MIB: u64 = 1024 * 1024;

/// Limits of 1 MiB per entry and in total.
fn small_limits() -> Limits {
    Limits {
        max_entry_uncompressed: MIB,
        max_total_uncompressed: MIB,
        ..Limits::default()
    }
}

fn hostile_cases() -> Vec<Hostile> {
    let d = Limits::default;
    let h = |what, bytes, limits, expect| Hostile {
        what,
        bytes,
        limits,
        expect,
    };
    let ok = || raw(b"ok.txt", b"fine");
    let dir = |name: &[u8]| raw_mode(name, b"", 0o040_755);
    let good = v2();
    vec![
        h(
            "dotdot",
            raw_zip(&[ok(), raw(b"../evil.txt", b"x")]),
            d(),
            "`..` component",
        ),
        h(
            "nested dotdot",
            raw_zip(&[raw(b"a/../../evil.txt", b"x")]),
            d(),
            "`..` component",
        ),
        h(
            "dot",
            raw_zip(&[raw(b"./evil.txt", b"x")]),
            d(),
            "`.` component",
        ),
        h(
            "absolute",
            raw_zip(&[raw(b"/tmp/evil.txt", b"x")]),
            d(),
            "absolute path",
        ),
        h(
            "backslash",
            raw_zip(&[raw(b"..\\evil.txt", b"x")]),
            d(),
            "backslash",
        ),
        h(
            "drive letter",
            raw_zip(&[raw(b"C:/evil.txt", b"x")]),
            d(),
            "drive letter",
        ),
        h(
            "drive-relative",
            raw_zip(&[raw(b"c:evil.txt", b"x")]),
            d(),
            "drive letter",
        ),
        h(
            "empty name",
            raw_zip(&[raw(b"", b"x")]),
            d(),
            "name is empty",
        ),
        h(
            "empty component",
            raw_zip(&[raw(b"a//b.txt", b"x")]),
            d(),
            "empty path component",
        ),
        h(
            "nul byte",
            raw_zip(&[raw(b"a\0b.txt", b"x")]),
            d(),
            "NUL byte",
        ),
        h(
            "control character",
            raw_zip(&[raw(b"a\x1b[2Jb", b"x")]),
            d(),
            "control character",
        ),
        h(
            "invalid utf-8",
            raw_zip(&[raw(b"\xff\xfe.txt", b"x")]),
            d(),
            "not valid UTF-8",
        ),
        h(
            "marker",
            raw_zip(&[raw(b".elves-version", b"9.9")]),
            d(),
            "reserved",
        ),
        h(
            "symlink",
            raw_zip(&[raw_mode(b"link", b"/etc", 0o120_777)]),
            d(),
            "symbolic link",
        ),
        h(
            "symlink escape",
            raw_zip(&[
                raw_mode(b"link", b"../../outside", 0o120_777),
                raw(b"link/pwned.txt", b"pwned"),
            ]),
            d(),
            "symbolic link",
        ),
        h(
            "symlink made on DOS",
            raw_zip(&[
                Raw {
                    mode: None,
                    ..raw(b"plain.txt", b"x")
                },
                // Made by MS-DOS, but the Unix bits of the attributes still say link.
                Raw {
                    dos: true,
                    ..raw_mode(b"link", b"/etc", 0o120_777)
                },
            ]),
            d(),
            "symbolic link",
        ),
        h(
            "fifo",
            raw_zip(&[raw_mode(b"fifo", b"", 0o010_644)]),
            d(),
            "FIFO",
        ),
        h(
            "char device",
            raw_zip(&[raw_mode(b"tty", b"", 0o020_666)]),
            d(),
            "character device",
        ),
        h(
            "block device",
            raw_zip(&[raw_mode(b"sda", b"", 0o060_660)]),
            d(),
            "block device",
        ),
        h(
            "socket",
            raw_zip(&[raw_mode(b"sock", b"", 0o140_755)]),
            d(),
            "socket",
        ),
        h(
            "directory with data",
            raw_zip(&[raw_mode(b"d/", b"data", 0o040_755)]),
            d(),
            "directory entry holds data",
        ),
        h(
            "duplicate names",
            raw_zip(&[raw(b"a.txt", b"1"), raw(b"a.txt", b"2")]),
            d(),
            "more than once",
        ),
        h(
            "file and directory of one name",
            raw_zip(&[raw(b"x", b"1"), dir(b"x/")]),
            d(),
            "more than once",
        ),
        h(
            "file used as a directory",
            raw_zip(&[raw(b"x", b"1"), raw(b"x/y", b"2")]),
            d(),
            "parent directories is a file",
        ),
        h(
            "too many entries",
            raw_zip(
                &(0..6)
                    .map(|i| raw(format!("f{i}").as_bytes(), b"x"))
                    .collect::<Vec<_>>(),
            ),
            Limits {
                max_entries: 5,
                ..Limits::default()
            },
            "6 entries, more than the limit of 5",
        ),
        h(
            "end record declaring too many entries",
            {
                let mut bytes = raw_zip(&[ok()]);
                let eocd = bytes.len() - 22;
                bytes[eocd + 8..eocd + 12].copy_from_slice(&[0x60, 0xea, 0x60, 0xea]);
                bytes
            },
            d(),
            "60000 entries, more than the limit of 10000",
        ),
        h(
            "zip bomb (10 MB of zeros, 1 MiB cap)",
            zeros_zip(10_000_000),
            small_limits(),
            "per entry",
        ),
        h(
            "zip bomb whose headers lie about its size",
            lie_about_size(zeros_zip(10_000_000), 1000),
            small_limits(),
            "more data than its declared 1000 bytes",
        ),
        h(
            "zip bomb that lies under the cap",
            lie_about_size(zeros_zip(10_000_000), 500_000),
            small_limits(),
            "more data than its declared 500000 bytes",
        ),
        h("ratio", zeros_zip(2_000_000), d(), "allowed ratio 200"),
        h(
            "total over the cap",
            raw_zip(&[raw(b"a", &[1u8; 600_000]), raw(b"b", &[2u8; 600_000])]),
            small_limits(),
            "in total",
        ),
        h(
            "package over the cap",
            good.clone(),
            Limits {
                max_package_bytes: 100,
                ..Limits::default()
            },
            "more than the limit of 100 bytes",
        ),
        h(
            "truncated",
            good[..good.len() / 2].to_vec(),
            d(),
            "not a readable zip",
        ),
        h(
            "truncated end record",
            good[..good.len() - 5].to_vec(),
            d(),
            "not a readable zip",
        ),
        h(
            "not a zip",
            b"hello, world".to_vec(),
            d(),
            "not a readable zip",
        ),
        h("empty file", Vec::new(), d(), "not a readable zip"),
        h(
            "encrypted",
            raw_zip(&[Raw {
                flags: 1,
                ..raw(b"secret.txt", b"xxxxxxxxxxxxxxxx")
            }]),
            d(),
            "encrypted",
        ),
        h(
            "unsupported compression",
            raw_zip(&[Raw {
                method: 12,
                ..raw(b"b.bz2", b"xxxx")
            }]),
            d(),
            "not supported",
        ),
        h(
            "overlapping entries",
            raw_zip(&[
                raw(b"a.txt", b"shared data"),
                Raw {
                    alias_of: Some(0),
                    ..raw(b"b.txt", b"shared data")
                },
            ]),
            d(),
            "overlapping",
        ),
        h(
            "crc mismatch",
            {
                let mut bytes = raw_zip(&[raw(b"a.txt", b"hello")]);
                let at = 30 + 5; // the data of the only entry
                bytes[at] ^= 0xff;
                bytes
            },
            d(),
            "checksum",
        ),
    ]
}

#[test]
fn hostile_packages_are_refused_and_leave_the_installed_version_intact() {
    let mut failures = Vec::new();
    for case in hostile_cases() {
        let env = Env::with_v1();
        std::fs::create_dir(env.root().join("outside")).expect("mkdir outside");
        let (path, sha, size) = env.put("hostile.zip", &case.bytes);
        let before = tree(env.root());
        let result = install(&env.apps, APP, "2.0", &path, &sha, size, &case.limits);
        let after = tree(env.root());
        match result {
            Ok(()) => failures.push(format!("{}: installed", case.what)),
            Err(e) => {
                let message = e.to_string();
                eprintln!("{}: {message}", case.what);
                if !message.contains(case.expect) {
                    failures.push(format!(
                        "{}: message {message:?} lacks {:?}",
                        case.what, case.expect
                    ));
                }
            }
        }
        if before != after {
            failures.push(format!(
                "{}: the tree changed:\nbefore {before:#?}\nafter {after:#?}",
                case.what
            ));
        }
        if installed_version(&env.apps, APP).as_deref() != Some("1.0") {
            failures.push(format!("{}: the installed version changed", case.what));
        }
        if tree(&env.apps.join(APP)) != v1_tree() {
            failures.push(format!("{}: the installed files changed", case.what));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn prescan_refuses_what_it_can_see_without_extracting() {
    let env = Env::new();
    for case in hostile_cases() {
        let (path, ..) = env.put("hostile.zip", &case.bytes);
        let result = prescan(&path, &case.limits);
        match case.what {
            // These lie in their headers or data: only extraction can see it.
            "zip bomb whose headers lie about its size"
            | "zip bomb that lies under the cap"
            | "crc mismatch" => {
                assert!(result.is_ok(), "{}: {result:?}", case.what)
            }
            _ => {
                let e = result.expect_err(case.what);
                assert!(e.to_string().contains(case.expect), "{}: {e}", case.what);
            }
        }
    }
}

#[test]
fn extraction_stops_a_lying_bomb_at_its_declared_size_and_stays_in_staging() {
    let env = Env::new();
    let (path, ..) = env.put("bomb.zip", &lie_about_size(zeros_zip(10_000_000), 1000));
    let staging = env.root().join("staging");
    let before = tree(env.root());
    let e = extract_to_staging(&path, &staging, &small_limits()).expect_err("bomb extracted");
    assert!(
        matches!(e, InstallError::SizeExceedsDeclared { declared: 1000, .. }),
        "{e}"
    );
    let written = std::fs::metadata(staging.join("zeros.bin"))
        .map(|m| m.len())
        .unwrap_or(0);
    assert!(written <= 1000, "{written} bytes written");
    let mut after = tree(env.root());
    after.retain(|k, _| !k.starts_with("staging"));
    assert_eq!(
        before, after,
        "something was written outside the staging dir"
    );
}

#[test]
fn extract_to_staging_refuses_a_used_or_linked_staging_dir() {
    let env = Env::new();
    let (path, ..) = env.put("v1.zip", &v1());
    let full = env.root().join("full");
    std::fs::create_dir(&full).unwrap();
    std::fs::write(full.join("x"), "x").unwrap();
    let e = extract_to_staging(&path, &full, &Limits::default()).expect_err("non-empty");
    assert!(e.to_string().contains("not empty"), "{e}");

    let target = env.root().join("target");
    std::fs::create_dir(&target).unwrap();
    let link = env.root().join("link");
    std::os::unix::fs::symlink(&target, &link).unwrap();
    let e = extract_to_staging(&path, &link, &Limits::default()).expect_err("link");
    assert!(matches!(e, InstallError::Staging { .. }), "{e}");
    assert!(tree(&target).is_empty(), "wrote through a link");

    let fresh = env.root().join("fresh");
    extract_to_staging(&path, &fresh, &Limits::default()).expect("extract");
    let mut expected = v1_tree();
    expected.remove(".elves-version");
    assert_eq!(tree(&fresh), expected);
}

#[test]
fn digest_and_size_mismatches_are_distinct_clear_errors() {
    let env = Env::with_v1();
    let bytes = v2();
    let (path, sha, size) = env.put("v2.zip", &bytes);
    let before = tree(env.root());

    let wrong_sha = hex::encode(Sha256::digest(b"something else"));
    let e = install(
        &env.apps,
        APP,
        "2.0",
        &path,
        &wrong_sha,
        size,
        &Limits::default(),
    )
    .expect_err("wrong digest");
    assert!(matches!(e, InstallError::DigestMismatch { .. }), "{e}");
    assert!(e.to_string().contains("digest mismatch"), "{e}");
    assert!(e.to_string().contains(&sha), "{e}");

    let e = install(
        &env.apps,
        APP,
        "2.0",
        &path,
        &sha,
        size + 1,
        &Limits::default(),
    )
    .expect_err("wrong size");
    assert!(
        matches!(e, InstallError::SizeMismatch { expected, actual } if expected == size + 1 && actual == size),
        "{e}"
    );
    assert!(e.to_string().contains("size mismatch"), "{e}");

    let e = install(
        &env.apps,
        APP,
        "2.0",
        &path,
        "abc",
        size,
        &Limits::default(),
    )
    .expect_err("bad digest");
    assert!(matches!(e, InstallError::InvalidDigest(_)), "{e}");

    assert_eq!(before, tree(env.root()));
    assert_eq!(installed_version(&env.apps, APP).as_deref(), Some("1.0"));

    verify_digest(&bytes, &sha, size).expect("bytes");
    verify_digest(&bytes, &sha.to_uppercase(), size).expect("upper-case hex");
    verify_digest(&path, &sha, size).expect("path");
    assert!(matches!(
        verify_digest(&bytes, &wrong_sha, size),
        Err(InstallError::DigestMismatch { .. })
    ));
    assert!(matches!(
        verify_digest(&bytes[..10], &sha, size),
        Err(InstallError::SizeMismatch { .. })
    ));
    assert!(matches!(
        verify_digest(path.as_path(), &sha, size - 1),
        Err(InstallError::SizeMismatch { .. })
    ));
    assert_eq!(install::sha256_file(&path).unwrap(), (sha, size));
}

#[test]
fn invalid_app_names_and_versions_are_refused_before_anything_is_written() {
    let env = Env::new();
    let (path, sha, size) = env.put("v1.zip", &v1());
    let cases: &[(&str, &str, &str)] = &[
        ("", "1.0", "invalid app name"),
        ("..", "1.0", "invalid app name"),
        (".staging-x", "1.0", "invalid app name"),
        ("a/b", "1.0", "invalid app name"),
        ("../evil", "1.0", "invalid app name"),
        ("a b", "1.0", "invalid app name"),
        (APP, "", "invalid version"),
        (APP, "1..2", "invalid version"),
        (APP, "../1", "invalid version"),
        (APP, "1/2", "invalid version"),
        (APP, "1.0\n", "invalid version"),
    ];
    for (app, version, expect) in cases {
        let e = install(
            &env.apps,
            app,
            version,
            &path,
            &sha,
            size,
            &Limits::default(),
        )
        .expect_err(app);
        assert!(e.to_string().contains(expect), "{app:?} {version:?}: {e}");
    }
    assert!(!env.apps.exists(), "apps_dir was created");
}

// ----------------------------------------------------------------------------------------
// Happy paths.

#[test]
fn fresh_install_creates_the_app_with_marker_and_modes() {
    let env = Env::new();
    env.install("1.0", &v1()).expect("install");
    assert_eq!(tree(&env.apps.join(APP)), v1_tree());
    assert_eq!(env.apps_listing(), vec![APP.to_owned()]);
    assert_eq!(installed_version(&env.apps, APP).as_deref(), Some("1.0"));
    let mode = std::fs::metadata(env.apps.join(APP))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o755);

    let cfg = elves_agent::exec::ExecConfig {
        apps_dir: env.apps.clone(),
        ..Default::default()
    };
    let (program, args) = elves_agent::exec::resolve_entry(&cfg, APP, "").expect("entry");
    assert!(
        program.ends_with("demo/app-worker"),
        "{}",
        program.display()
    );
    assert!(args.is_empty());
}

#[test]
fn upgrade_replaces_the_whole_tree_and_keeps_the_executable_bit() {
    let env = Env::with_v1();
    env.install("2.0", &v2()).expect("upgrade");
    assert_eq!(tree(&env.apps.join(APP)), v2_tree());
    assert_eq!(installed_version(&env.apps, APP).as_deref(), Some("2.0"));
    assert_eq!(env.apps_listing(), vec![APP.to_owned()], "leftovers");

    env.install("1.0", &v1()).expect("downgrade");
    assert_eq!(tree(&env.apps.join(APP)), v1_tree());
    env.install("1.0", &v1())
        .expect("reinstall of the same version");
    assert_eq!(tree(&env.apps.join(APP)), v1_tree());
    assert_eq!(env.apps_listing(), vec![APP.to_owned()], "leftovers");
}

#[test]
fn install_replaces_a_preinstalled_app_without_marker() {
    let env = Env::new();
    std::fs::create_dir_all(env.apps.join(APP).join("old")).unwrap();
    std::fs::write(env.apps.join(APP).join("old/file"), "x").unwrap();
    assert_eq!(installed_version(&env.apps, APP), None);
    env.install("2.0", &v2()).expect("install");
    assert_eq!(tree(&env.apps.join(APP)), v2_tree());
}

/// Spawns a program, retrying while it is briefly busy (`ETXTBSY`) because another test
/// thread forked while a freshly written executable was still open.
fn spawn(cmd: &mut Command) -> std::process::Child {
    for _ in 0..50 {
        match cmd.spawn() {
            Ok(child) => return child,
            Err(e) if e.raw_os_error() == Some(26) => {
                std::thread::sleep(std::time::Duration::from_millis(20))
            }
            Err(e) => panic!("spawn: {e}"),
        }
    }
    panic!("the program stayed busy");
}

/// A worker that waits for a line on stdin, then reads `data.txt` by a relative path (opened
/// again, after the swap) and says whether it is still there.
const LATE_READER: &[u8] = b"#!/bin/sh\nexec 3< data.txt\necho ready\nread x\ncat <&3\necho\n\
    cat data.txt\necho\nif [ -e data.txt ]; then echo present; else echo gone; fi\n";

/// Version `version` of the demo app: the [`LATE_READER`] worker and `data.txt` = `data`.
fn late_reader_zip(data: &[u8]) -> Vec<u8> {
    good_zip(&[
        ("app-worker", LATE_READER, 0o755),
        ("data.txt", data, 0o644),
    ])
}

/// Starts the installed worker in `apps/demo` and waits for its `ready`.
fn start_worker(app_dir: &Path) -> (std::process::Child, BufReader<std::process::ChildStdout>) {
    let mut child = spawn(
        Command::new(app_dir.join("app-worker"))
            .current_dir(app_dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped()),
    );
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    stdout.read_line(&mut line).unwrap();
    assert_eq!(line, "ready\n");
    (child, stdout)
}

/// Lets the worker go on and returns the rest of its output.
fn finish_worker(
    mut child: std::process::Child,
    mut stdout: BufReader<std::process::ChildStdout>,
) -> String {
    child.stdin.take().unwrap().write_all(b"go\n").unwrap();
    let mut rest = String::new();
    stdout.read_to_string(&mut rest).unwrap();
    assert!(child.wait().unwrap().success());
    rest
}

/// The `.retired-` entries of `apps/`.
fn retired(env: &Env) -> Vec<String> {
    env.apps_listing()
        .into_iter()
        .filter(|n| n.starts_with(install::RETIRED_PREFIX))
        .collect()
}

#[test]
fn a_running_worker_keeps_its_files_across_the_swap_until_it_exits() {
    let env = Env::new();
    env.install("1.0", &late_reader_zip(b"one"))
        .expect("install v1");
    let app_dir = env.apps.join(APP);
    let mut held = std::fs::File::open(app_dir.join("data.txt")).unwrap();
    let (child, stdout) = start_worker(&app_dir);

    env.install("2.0", &v2()).expect("upgrade while running");
    assert_eq!(tree(&app_dir), v2_tree(), "new lookups see the new version");
    let kept = retired(&env);
    assert_eq!(
        kept.len(),
        1,
        "the old tree is kept while the worker runs: {kept:?}"
    );
    assert_eq!(
        install::reap_retired(&env.apps).expect("reap"),
        1,
        "the worker still uses it"
    );

    // The open file, and the files opened by relative path after the swap, are the old ones.
    assert_eq!(finish_worker(child, stdout), "one\none\npresent\n");
    let mut content = String::new();
    held.read_to_string(&mut content).unwrap();
    assert_eq!(content, "one");

    assert_eq!(install::reap_retired(&env.apps).expect("reap"), 0);
    assert_eq!(
        env.apps_listing(),
        vec![APP.to_owned()],
        "the old tree is gone once unused"
    );
    assert_eq!(tree(&app_dir), v2_tree());
}

#[test]
fn a_running_worker_keeps_its_files_when_its_app_is_removed() {
    let env = Env::new();
    env.install("1.0", &late_reader_zip(b"one"))
        .expect("install v1");
    let (child, stdout) = start_worker(&env.apps.join(APP));
    assert!(remove(&env.apps, APP).expect("remove"));
    assert_eq!(
        installed_version(&env.apps, APP),
        None,
        "the app is gone at once"
    );
    assert_eq!(retired(&env).len(), 1);
    assert_eq!(finish_worker(child, stdout), "one\none\npresent\n");
    assert_eq!(install::reap_retired(&env.apps).expect("reap"), 0);
    assert!(env.apps_listing().is_empty(), "{:?}", env.apps_listing());
}

#[test]
fn trees_in_use_sees_working_directories_and_programs_inside_a_tree() {
    let env = Env::new();
    env.install("1.0", &late_reader_zip(b"one")).unwrap();
    let app_dir = env.apps.join(APP);
    let elsewhere = env.root().join("pkgs");
    let dirs = [
        app_dir.clone(),
        elsewhere.clone(),
        env.root().join("missing"),
    ];
    assert_eq!(install::trees_in_use(&dirs), [false, false, false]);

    // A process whose working directory is in the tree.
    let (child, stdout) = start_worker(&app_dir);
    assert_eq!(install::trees_in_use(&dirs), [true, false, false]);
    finish_worker(child, stdout);
    assert_eq!(install::trees_in_use(&dirs), [false, false, false]);

    // A process whose program is in the tree, running elsewhere.
    let sleep = ["/bin/sleep", "/usr/bin/sleep"]
        .into_iter()
        .find(|p| Path::new(p).is_file())
        .expect("a sleep program");
    std::fs::copy(sleep, app_dir.join("bin-sleep")).unwrap();
    let mut p = spawn(
        Command::new(app_dir.join("bin-sleep"))
            .arg("30")
            .current_dir(&elsewhere),
    );
    assert_eq!(install::trees_in_use(&dirs), [true, true, false]);
    p.kill().unwrap();
    p.wait().unwrap();
    assert_eq!(install::trees_in_use(&dirs), [false, false, false]);
}

#[test]
fn cleanup_keeps_a_leftover_tree_a_surviving_worker_uses() {
    let env = Env::with_v1();
    // The old tree, swapped out by an agent that died; its worker is still running in it.
    let old = env.apps.join(format!(".staging-{APP}-{HEX}"));
    installed_tree("0.9", &late_reader_zip(b"old"), &old);
    let (child, stdout) = start_worker(&old);
    assert_eq!(cleanup_staging(&env.apps).expect("cleanup"), 0);
    assert_eq!(tree(&env.apps.join(APP)), v1_tree());
    assert_eq!(retired(&env).len(), 1, "{:?}", env.apps_listing());
    assert!(!old.exists(), "renamed to a .retired- name");
    assert_eq!(finish_worker(child, stdout), "old\nold\npresent\n");
    assert_eq!(install::reap_retired(&env.apps).expect("reap"), 0);
    assert_eq!(env.apps_listing(), vec![APP.to_owned()]);
}

#[test]
fn remove_takes_the_app_away_atomically() {
    let env = Env::with_v1();
    assert!(remove(&env.apps, APP).expect("remove"));
    assert!(env.apps_listing().is_empty(), "{:?}", env.apps_listing());
    assert_eq!(installed_version(&env.apps, APP), None);
    assert!(!remove(&env.apps, APP).expect("remove again"));
    assert!(matches!(
        remove(&env.apps, "../x"),
        Err(InstallError::InvalidApp { .. })
    ));
}

#[test]
fn installed_version_reads_only_a_valid_marker() {
    let env = Env::with_v1();
    assert_eq!(installed_version(&env.apps, "other"), None);
    assert_eq!(installed_version(&env.apps, "../apps/demo"), None);
    std::fs::write(env.apps.join(APP).join(".elves-version"), "../../x\n").unwrap();
    assert_eq!(installed_version(&env.apps, APP), None);
    std::fs::remove_file(env.apps.join(APP).join(".elves-version")).unwrap();
    std::os::unix::fs::symlink(
        env.root().join("pkgs"),
        env.apps.join(APP).join(".elves-version"),
    )
    .unwrap();
    assert_eq!(installed_version(&env.apps, APP), None);
}

// ----------------------------------------------------------------------------------------
// Crash recovery.

/// Builds a complete installed tree of `bytes` as `version` and moves it to `dest`.
fn installed_tree(version: &str, bytes: &[u8], dest: &Path) {
    let scratch = Env::new();
    scratch.install(version, bytes).expect("install");
    // Same filesystem (both in the system temporary directory), so a rename works.
    std::fs::rename(scratch.apps.join(APP), dest).expect("move tree");
}

const HEX: &str = "0123456789abcdef";

#[test]
fn cleanup_after_a_crash_during_extraction_keeps_the_old_version() {
    let env = Env::with_v1();
    let staging = env.apps.join(format!(".staging-{APP}-{HEX}"));
    std::fs::create_dir_all(staging.join("lib")).unwrap();
    std::fs::write(staging.join("app-worker"), "#!/bin/sh\necho half").unwrap();
    assert_eq!(cleanup_staging(&env.apps).expect("cleanup"), 1);
    assert_eq!(env.apps_listing(), vec![APP.to_owned()]);
    assert_eq!(tree(&env.apps.join(APP)), v1_tree());
}

#[test]
fn cleanup_after_a_crash_after_the_exchange_keeps_the_new_version() {
    let env = Env::with_v1();
    env.install("2.0", &v2()).unwrap();
    // The old tree, swapped out but not yet deleted.
    installed_tree(
        "1.0",
        &v1(),
        &env.apps.join(format!(".staging-{APP}-{HEX}")),
    );
    assert_eq!(cleanup_staging(&env.apps).expect("cleanup"), 1);
    assert_eq!(env.apps_listing(), vec![APP.to_owned()]);
    assert_eq!(tree(&env.apps.join(APP)), v2_tree());
}

#[test]
fn cleanup_after_a_crash_between_the_fallback_renames_restores_the_old_version() {
    let env = Env::new();
    std::fs::create_dir(&env.apps).unwrap();
    // The old version was parked, the complete new one not yet renamed into place.
    installed_tree("1.0", &v1(), &env.apps.join(format!(".old-{APP}-{HEX}")));
    installed_tree(
        "2.0",
        &v2(),
        &env.apps.join(format!(".staging-{APP}-{HEX}")),
    );
    assert_eq!(cleanup_staging(&env.apps).expect("cleanup"), 2);
    assert_eq!(env.apps_listing(), vec![APP.to_owned()]);
    assert_eq!(tree(&env.apps.join(APP)), v1_tree());
    assert_eq!(installed_version(&env.apps, APP).as_deref(), Some("1.0"));
    env.install("2.0", &v2()).expect("install after recovery");
    assert_eq!(tree(&env.apps.join(APP)), v2_tree());
}

#[test]
fn cleanup_after_a_crash_after_the_fallback_renames_keeps_the_new_version() {
    let env = Env::with_v1();
    env.install("2.0", &v2()).unwrap();
    installed_tree("1.0", &v1(), &env.apps.join(format!(".old-{APP}-{HEX}")));
    let trash = env.apps.join(format!(".trash-other-{HEX}"));
    std::fs::create_dir_all(trash.join("x")).unwrap();
    // Unrelated things stay.
    installed_tree("1.0", &v1(), &env.apps.join("other"));
    std::fs::write(env.apps.join("README"), "hello").unwrap();

    assert_eq!(cleanup_staging(&env.apps).expect("cleanup"), 2);
    assert_eq!(env.apps_listing(), vec!["README", APP, "other"]);
    assert_eq!(tree(&env.apps.join(APP)), v2_tree());
    assert_eq!(tree(&env.apps.join("other")), v1_tree());
    assert_eq!(cleanup_staging(&env.apps).expect("cleanup again"), 0);
}

#[test]
fn cleanup_of_a_missing_apps_dir_is_a_no_op() {
    let env = Env::new();
    assert_eq!(cleanup_staging(&env.apps).expect("cleanup"), 0);
}

// ----------------------------------------------------------------------------------------
// Packing.

/// Writes a source app directory with nested files, an executable, an empty directory and a
/// stale marker (which `pack` skips).
fn source_dir(root: &Path) -> PathBuf {
    let dir = root.join("src-app");
    let files: &[(&str, &str, u32)] = &[
        ("app-worker", "#!/bin/sh\necho packed\n", 0o755),
        ("app-worker.py", "print('x')\n", 0o600),
        ("conf/settings.json", "{\"a\":1}\n", 0o640),
        ("conf/deep/tool.sh", "#!/bin/sh\n", 0o700),
        (".elves-version", "0.0\n", 0o644),
    ];
    for (name, content, mode) in files {
        let path = dir.join(name);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, content).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(*mode)).unwrap();
    }
    std::fs::create_dir_all(dir.join("var/empty")).unwrap();
    dir
}

fn sha_of(path: &Path) -> String {
    hex::encode(Sha256::digest(std::fs::read(path).unwrap()))
}

#[test]
fn pack_then_install_round_trips() {
    let env = Env::new();
    let src = source_dir(env.root());
    let out = env.root().join("out");
    let zip = pack(&src, APP, "3.1-rc.1", &out).expect("pack");
    assert_eq!(zip, out.join("demo_3.1-rc.1.zip"));
    assert_eq!(package_file_name(APP, "3.1-rc.1"), "demo_3.1-rc.1.zip");
    assert_eq!(
        tree(&out).len(),
        1,
        "a temporary file was left: {:?}",
        tree(&out)
    );

    let (sha, size) = install::sha256_file(&zip).unwrap();
    install(
        &env.apps,
        APP,
        "3.1-rc.1",
        &zip,
        &sha,
        size,
        &Limits::default(),
    )
    .expect("install");
    let expected = tree_of(&[
        (".elves-version", "f644 3.1-rc.1\n"),
        ("app-worker", "f755 #!/bin/sh\necho packed\n"),
        ("app-worker.py", "f644 print('x')\n"),
        ("conf", "d755"),
        ("conf/deep", "d755"),
        ("conf/deep/tool.sh", "f755 #!/bin/sh\n"),
        ("conf/settings.json", "f644 {\"a\":1}\n"),
        ("var", "d755"),
        ("var/empty", "d755"),
    ]);
    assert_eq!(tree(&env.apps.join(APP)), expected);

    // An installed app can be packed again and gives the same package.
    let again = pack(
        &env.apps.join(APP),
        APP,
        "3.1-rc.1",
        &env.root().join("out2"),
    )
    .unwrap();
    assert_eq!(sha_of(&again), sha);
}

#[test]
fn pack_is_deterministic() {
    let env = Env::new();
    let src = source_dir(env.root());
    let first = sha_of(&pack(&src, APP, "1.0", &env.root().join("a")).unwrap());
    let second = sha_of(&pack(&src, APP, "1.0", &env.root().join("b")).unwrap());
    assert_eq!(first, second);

    // Timestamps and permission details other than the executable bit do not matter.
    let old = std::time::SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_000_000_000);
    for name in ["app-worker", "conf/settings.json", "conf/deep"] {
        std::fs::File::open(src.join(name))
            .unwrap()
            .set_modified(old)
            .unwrap();
    }
    std::fs::set_permissions(
        src.join("app-worker"),
        std::fs::Permissions::from_mode(0o500),
    )
    .unwrap();
    std::fs::set_permissions(
        src.join("conf/settings.json"),
        std::fs::Permissions::from_mode(0o666),
    )
    .unwrap();
    let third = sha_of(&pack(&src, APP, "1.0", &env.root().join("c")).unwrap());
    assert_eq!(first, third);

    // Contents and the executable bit do.
    std::fs::set_permissions(
        src.join("app-worker.py"),
        std::fs::Permissions::from_mode(0o755),
    )
    .unwrap();
    let fourth = sha_of(&pack(&src, APP, "1.0", &env.root().join("d")).unwrap());
    assert_ne!(first, fourth);
}

#[test]
fn pack_refuses_links_special_files_and_bad_targets() {
    let env = Env::new();
    let src = source_dir(env.root());
    let out = env.root().join("out");

    std::os::unix::fs::symlink("/etc/passwd", src.join("conf/link")).unwrap();
    let e = pack(&src, APP, "1.0", &out).expect_err("symlink");
    assert!(
        matches!(e, PackError::Symlink(ref p) if p.ends_with("conf/link")),
        "{e}"
    );
    std::fs::remove_file(src.join("conf/link")).unwrap();

    nix::unistd::mkfifo(
        &src.join("fifo"),
        nix::sys::stat::Mode::from_bits_truncate(0o644),
    )
    .unwrap();
    let e = pack(&src, APP, "1.0", &out).expect_err("fifo");
    assert!(matches!(e, PackError::NotRegular(_)), "{e}");
    std::fs::remove_file(src.join("fifo")).unwrap();

    std::fs::write(src.join("bad\\name"), "x").unwrap();
    let e = pack(&src, APP, "1.0", &out).expect_err("backslash");
    assert!(e.to_string().contains("backslash"), "{e}");
    std::fs::remove_file(src.join("bad\\name")).unwrap();

    let e = pack(&src, APP, "1.0", &src.join("dist")).expect_err("output inside");
    assert!(matches!(e, PackError::OutputInsideSource { .. }), "{e}");
    let e = pack(&src, "../x", "1.0", &out).expect_err("bad app");
    assert!(e.to_string().contains("invalid app name"), "{e}");
    let e = pack(&src, APP, "1..0", &out).expect_err("bad version");
    assert!(e.to_string().contains("invalid version"), "{e}");
    let e = pack(&src.join("missing"), APP, "1.0", &out).expect_err("missing dir");
    assert!(e.to_string().contains("missing"), "{e}");

    let listing = std::fs::read_dir(&out).map(|l| l.count()).unwrap_or(0);
    assert_eq!(listing, 0, "a failed pack left files");
    pack(&src, APP, "1.0", &out).expect("clean source packs");
}

#[test]
fn a_package_made_by_python_zipfile_installs() {
    let env = Env::new();
    let src = source_dir(env.root());
    std::fs::remove_file(src.join(".elves-version")).unwrap();
    let zip = env.pkgs.join("py.zip");
    let script = "import os, sys, zipfile\n\
        src, out = sys.argv[1], sys.argv[2]\n\
        with zipfile.ZipFile(out, 'w', zipfile.ZIP_DEFLATED) as z:\n\
        \x20   for root, dirs, files in os.walk(src):\n\
        \x20       for d in dirs:\n\
        \x20           p = os.path.join(root, d); z.write(p, os.path.relpath(p, src))\n\
        \x20       for f in files:\n\
        \x20           p = os.path.join(root, f); z.write(p, os.path.relpath(p, src))\n";
    let status = match Command::new("python3")
        .args(["-c", script])
        .arg(&src)
        .arg(&zip)
        .status()
    {
        Ok(s) => s,
        Err(_) => {
            eprintln!("python3 is missing: skipped");
            return;
        }
    };
    assert!(status.success());
    let (sha, size) = install::sha256_file(&zip).unwrap();
    install(&env.apps, APP, "1.0", &zip, &sha, size, &Limits::default()).expect("install");
    let installed = tree(&env.apps.join(APP));
    assert_eq!(installed["app-worker"], "f755 #!/bin/sh\necho packed\n");
    assert_eq!(installed["conf/deep/tool.sh"], "f755 #!/bin/sh\n");
    assert_eq!(installed["app-worker.py"], "f644 print('x')\n");
    assert_eq!(installed["var/empty"], "d755");
}
