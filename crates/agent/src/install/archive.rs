//! Reading packages: the limits, the pre-scan of the central directory and the extraction.
//!
//! The pre-scan decides everything it can from the zip's central directory before a single
//! byte is decompressed. The extraction then enforces the same limits again on the bytes it
//! actually produces, because a hostile zip can lie in its headers.

use std::collections::HashMap;
use std::fs::File;
use std::io::{ErrorKind, Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::{DirBuilderExt, FileExt};
use std::path::Path;

use nix::errno::Errno;
use nix::fcntl::{AT_FDCWD, OFlag, openat};
use nix::sys::stat::{Mode, fchmod, mkdirat};
use zip::{CompressionMethod, ZipArchive};

use super::MARKER;
use super::error::{InstallError, shown};

/// Entries that declare at most this many bytes are not checked against `Limits::max_ratio`
/// (and neither is a package that expands to at most this many bytes in total): a small file
/// of zeros compresses extremely well and is harmless.
pub const RATIO_FLOOR: u64 = 1024 * 1024;

/// The longest entry name accepted, in bytes.
const MAX_NAME_BYTES: usize = 4096;

/// The longest path component accepted, in bytes.
const MAX_COMPONENT_BYTES: usize = 255;

/// The size of the copy buffer used while extracting.
const COPY_BUFFER: usize = 64 * 1024;

const S_IFMT: u32 = 0o170_000;
const S_IFSOCK: u32 = 0o140_000;
const S_IFLNK: u32 = 0o120_000;
const S_IFREG: u32 = 0o100_000;
const S_IFBLK: u32 = 0o060_000;
const S_IFDIR: u32 = 0o040_000;
const S_IFCHR: u32 = 0o020_000;
const S_IFIFO: u32 = 0o010_000;

/// The MS-DOS "directory" attribute, in the low byte of the external attributes.
const DOS_DIRECTORY: u32 = 0x10;

/// The caps a package must respect, checked on the declared sizes before extraction and on
/// the actual bytes during extraction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// The largest package file accepted, in bytes.
    pub max_package_bytes: u64,
    /// The most entries (files and directories) a package may hold.
    pub max_entries: usize,
    /// The most bytes all entries together may expand to.
    pub max_total_uncompressed: u64,
    /// The most bytes one entry may expand to.
    pub max_entry_uncompressed: u64,
    /// The highest accepted ratio of uncompressed to compressed size, for one entry and for
    /// the whole package; sizes up to [`RATIO_FLOOR`] are exempt.
    pub max_ratio: u64,
}

impl Default for Limits {
    /// Returns a 256 MiB package cap, 10 000 entries, 1 GiB in total, 512 MiB per entry and a
    /// compression ratio of at most 200.
    fn default() -> Self {
        Limits {
            max_package_bytes: 256 * 1024 * 1024,
            max_entries: 10_000,
            max_total_uncompressed: 1024 * 1024 * 1024,
            max_entry_uncompressed: 512 * 1024 * 1024,
            max_ratio: 200,
        }
    }
}

/// Whether an entry is a regular file or a directory (nothing else is ever accepted).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryKind {
    /// A regular file.
    File,
    /// A directory.
    Dir,
}

/// One accepted entry of a package.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManifestEntry {
    /// The entry's index in the zip's central directory.
    pub index: usize,
    /// The relative path, `/`-separated, without a trailing `/`.
    pub path: String,
    /// A file or a directory.
    pub kind: EntryKind,
    /// Whether the entry's mode has an executable bit (files only); the file is created with
    /// mode 0755 when set and 0644 otherwise.
    pub executable: bool,
    /// The declared uncompressed size.
    pub size: u64,
    /// The declared compressed size.
    pub compressed_size: u64,
}

/// What the pre-scan found in a package's central directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Manifest {
    /// The size of the package file.
    pub package_bytes: u64,
    /// The entries, in central-directory order.
    pub entries: Vec<ManifestEntry>,
    /// The sum of the declared uncompressed sizes.
    pub total_uncompressed: u64,
}

/// Checks a package without extracting it and returns what it holds.
///
/// Only the zip's end records and central directory are read (plus each local header's
/// position, to detect entries that share compressed data). The package is refused when it is
/// larger than `max_package_bytes`, is truncated or corrupt, declares more than `max_entries`
/// entries, declares an entry larger than `max_entry_uncompressed` or a total larger than
/// `max_total_uncompressed`, compresses more than `max_ratio` times (above [`RATIO_FLOOR`]),
/// or holds an entry that is encrypted, compressed with anything but store or deflate, a
/// symbolic link, a device, FIFO or socket, a duplicate, or whose name is empty, absolute,
/// has a drive letter, a backslash, a `.` or `..` component, an empty component, a control
/// character, invalid UTF-8, or is the installer's own marker `.elves-version`.
pub fn prescan(path: &Path, limits: &Limits) -> Result<Manifest, InstallError> {
    let file = open_package(path)?;
    prescan_file(&file, limits)
}

/// Extracts a package into `staging_dir`, which must not exist yet (it is then created with
/// mode 0755; its parent must exist) or be an empty directory.
///
/// The package is pre-scanned first (see [`prescan`]). Entries are then written through
/// directory handles opened with `O_NOFOLLOW`, files are created with `O_CREAT | O_EXCL |
/// O_NOFOLLOW`, so nothing is ever written outside `staging_dir`, no link is followed and
/// none is created. Files get mode 0755 when the entry had an executable bit and 0644
/// otherwise; directories get 0755. While streaming, every entry is stopped as soon as it
/// produces more bytes than it declared or than `max_entry_uncompressed`, and the whole
/// extraction as soon as it exceeds `max_total_uncompressed`.
///
/// On error the staging directory may hold a partial tree: the caller removes it.
pub fn extract_to_staging(
    path: &Path,
    staging_dir: &Path,
    limits: &Limits,
) -> Result<(), InstallError> {
    let file = open_package(path)?;
    let manifest = prescan_file(&file, limits)?;
    prepare_staging(staging_dir)?;
    extract_file(&file, &manifest, staging_dir, limits)
}

/// Opens a package file for reading and checks that it is a regular file.
pub(crate) fn open_package(path: &Path) -> Result<File, InstallError> {
    let file = File::open(path)
        .map_err(|e| InstallError::io(format!("cannot open package {}", path.display()), e))?;
    let meta = file
        .metadata()
        .map_err(|e| InstallError::io(format!("cannot stat package {}", path.display()), e))?;
    if !meta.is_file() {
        return Err(InstallError::io(
            format!("package {} is not a regular file", path.display()),
            std::io::Error::from(ErrorKind::InvalidInput),
        ));
    }
    Ok(file)
}

/// Maps a zip reading error to [`InstallError::Corrupt`].
fn corrupt(e: zip::result::ZipError) -> InstallError {
    InstallError::Corrupt(e.to_string())
}

/// The pre-scan of an open package (see [`prescan`]).
pub(crate) fn prescan_file(file: &File, limits: &Limits) -> Result<Manifest, InstallError> {
    let package_bytes = file
        .metadata()
        .map_err(|e| InstallError::io("cannot stat package", e))?
        .len();
    if package_bytes > limits.max_package_bytes {
        return Err(InstallError::PackageTooLarge {
            size: package_bytes,
            max: limits.max_package_bytes,
        });
    }
    precheck_entry_counts(file, package_bytes, limits.max_entries)?;

    let mut archive = ZipArchive::new(file).map_err(corrupt)?;
    if archive.len() > limits.max_entries {
        return Err(InstallError::TooManyEntries {
            count: archive.len() as u64,
            max: limits.max_entries as u64,
        });
    }
    if archive.has_duplicate_names() {
        return Err(InstallError::DuplicateInDirectory);
    }

    let mut entries = Vec::with_capacity(archive.len());
    let mut kinds: HashMap<String, EntryKind> = HashMap::with_capacity(archive.len());
    let mut total: u64 = 0;
    for index in 0..archive.len() {
        let entry = archive.by_index_data(index).map_err(corrupt)?;
        let (path, dir_marker) = check_entry_name(entry.name_raw())?;
        if entry.encrypted() {
            return Err(InstallError::Unsupported {
                name: shown(path.as_bytes()),
                reason: "the entry is encrypted".to_owned(),
            });
        }
        match entry.compression() {
            CompressionMethod::Stored | CompressionMethod::Deflated => {}
            other => {
                return Err(InstallError::Unsupported {
                    name: shown(path.as_bytes()),
                    reason: format!("compression method {other} (only store and deflate are)"),
                });
            }
        }
        let size = entry.size();
        let compressed_size = entry.compressed_size();
        let (kind, executable) = classify(&path, entry.external_attributes(), dir_marker, size)?;
        if size > limits.max_entry_uncompressed {
            return Err(InstallError::EntryTooLarge {
                name: shown(path.as_bytes()),
                size,
                max: limits.max_entry_uncompressed,
            });
        }
        total = total.saturating_add(size);
        if total > limits.max_total_uncompressed {
            return Err(InstallError::TotalTooLarge {
                total,
                max: limits.max_total_uncompressed,
            });
        }
        check_ratio(
            || format!("entry [{}]", shown(path.as_bytes())),
            size,
            compressed_size,
            limits.max_ratio,
        )?;
        if kinds.insert(path.clone(), kind).is_some() {
            return Err(InstallError::Duplicate {
                name: shown(path.as_bytes()),
            });
        }
        entries.push(ManifestEntry {
            index,
            path,
            kind,
            executable,
            size,
            compressed_size,
        });
    }

    for entry in &entries {
        let mut end = 0;
        while let Some(slash) = entry.path[end..].find('/') {
            end += slash;
            if kinds.get(&entry.path[..end]) == Some(&EntryKind::File) {
                return Err(InstallError::UnsafePath {
                    name: shown(entry.path.as_bytes()),
                    reason: "one of its parent directories is a file entry of the package",
                });
            }
            end += 1;
        }
    }

    check_ratio(
        || "the package".to_owned(),
        total,
        package_bytes,
        limits.max_ratio,
    )?;
    if archive.has_overlapping_files().map_err(corrupt)? {
        return Err(InstallError::Corrupt(
            "two entries share the same compressed data (overlapping entries, a zip-bomb technique)"
                .to_owned(),
        ));
    }

    Ok(Manifest {
        package_bytes,
        entries,
        total_uncompressed: total,
    })
}

/// Refuses `size` when it is above [`RATIO_FLOOR`] and more than `max_ratio` times
/// `compressed` (an empty compressed size counts as one byte).
fn check_ratio(
    name: impl FnOnce() -> String,
    size: u64,
    compressed: u64,
    max_ratio: u64,
) -> Result<(), InstallError> {
    if size <= RATIO_FLOOR {
        return Ok(());
    }
    let ratio = size / compressed.max(1);
    if ratio > max_ratio {
        return Err(InstallError::RatioTooHigh {
            name: name(),
            ratio,
            max: max_ratio,
        });
    }
    Ok(())
}

/// Reads the entry counts declared by every end-of-central-directory record candidate in the
/// package's tail (and the ZIP64 record one points to) and refuses the package when any of them
/// declares more than `max` entries.
///
/// This runs before the zip reader parses the central directory, so a package that declares
/// millions of tiny entries is refused before they are all loaded into memory.
fn precheck_entry_counts(file: &File, len: u64, max: usize) -> Result<(), InstallError> {
    const EOCD: &[u8] = b"PK\x05\x06";
    const LOCATOR64: &[u8] = b"PK\x06\x07";
    const EOCD64: &[u8] = b"PK\x06\x06";
    const EOCD_LEN: usize = 22;
    const LOCATOR64_LEN: usize = 20;

    let window = len.min((EOCD_LEN + usize::from(u16::MAX) + LOCATOR64_LEN) as u64);
    if window < EOCD_LEN as u64 {
        return Ok(());
    }
    let mut tail = vec![0u8; window as usize];
    file.read_exact_at(&mut tail, len - window)
        .map_err(|e| InstallError::io("cannot read the end of the package", e))?;

    let le16 = |b: &[u8]| u64::from(u16::from_le_bytes([b[0], b[1]]));
    let le64 = |b: &[u8]| {
        let mut a = [0u8; 8];
        a.copy_from_slice(&b[..8]);
        u64::from_le_bytes(a)
    };
    for i in 0..=tail.len() - EOCD_LEN {
        if &tail[i..i + 4] != EOCD {
            continue;
        }
        let mut count = le16(&tail[i + 10..]).max(le16(&tail[i + 8..]));
        if count == u64::from(u16::MAX)
            && i >= LOCATOR64_LEN
            && &tail[i - LOCATOR64_LEN..i - LOCATOR64_LEN + 4] == LOCATOR64
        {
            let offset = le64(&tail[i - LOCATOR64_LEN + 8..]);
            let mut record = [0u8; 40];
            if offset.checked_add(40).is_some_and(|end| end <= len)
                && file.read_exact_at(&mut record, offset).is_ok()
                && &record[..4] == EOCD64
            {
                count = le64(&record[32..]).max(le64(&record[24..]));
            }
        }
        if count > max as u64 {
            return Err(InstallError::TooManyEntries {
                count,
                max: max as u64,
            });
        }
    }
    Ok(())
}

/// Checks a raw entry name and returns it as a relative `/`-separated path without a trailing
/// `/`, with whether the raw name ended with `/` (the zip convention for a directory).
pub(crate) fn check_entry_name(raw: &[u8]) -> Result<(String, bool), InstallError> {
    let refuse = |reason: &'static str| InstallError::UnsafePath {
        name: shown(raw),
        reason,
    };
    if raw.is_empty() {
        return Err(refuse("the name is empty"));
    }
    if raw.len() > MAX_NAME_BYTES {
        return Err(refuse("the name is longer than 4096 bytes"));
    }
    let name = std::str::from_utf8(raw).map_err(|_| refuse("the name is not valid UTF-8"))?;
    if name.contains('\0') {
        return Err(refuse("the name contains a NUL byte"));
    }
    if name.chars().any(char::is_control) {
        return Err(refuse("the name contains a control character"));
    }
    if name.contains('\\') {
        return Err(refuse(
            "the name contains a backslash (a Windows path separator)",
        ));
    }
    if name.starts_with('/') {
        return Err(refuse("the name is an absolute path"));
    }
    let bytes = name.as_bytes();
    if bytes.len() >= 2 && bytes[0].is_ascii_alphabetic() && bytes[1] == b':' {
        return Err(refuse("the name starts with a drive letter"));
    }
    let (path, dir_marker) = match name.strip_suffix('/') {
        Some(p) => (p, true),
        None => (name, false),
    };
    for component in path.split('/') {
        match component {
            "" => return Err(refuse("the name has an empty path component (`//`)")),
            "." => return Err(refuse("the name has a `.` component")),
            ".." => return Err(refuse("the name has a `..` component")),
            c if c.len() > MAX_COMPONENT_BYTES => {
                return Err(refuse("a path component is longer than 255 bytes"));
            }
            _ => {}
        }
    }
    if path == MARKER {
        return Err(refuse(
            "`.elves-version` is reserved for the installer's version marker",
        ));
    }
    Ok((path.to_owned(), dir_marker))
}

/// Decides whether an entry is a file or a directory from its external attributes, and
/// whether it is executable; refuses links and special files.
///
/// The Unix mode is read from the high 16 bits of the external attributes whatever system
/// the entry claims to come from, so a link is refused even in a zip that says it was made on
/// MS-DOS. Without a Unix mode, the MS-DOS directory attribute or a trailing `/` marks a
/// directory.
fn classify(
    path: &str,
    external_attributes: u32,
    dir_marker: bool,
    size: u64,
) -> Result<(EntryKind, bool), InstallError> {
    let name = || shown(path.as_bytes());
    let unix = external_attributes >> 16;
    let mode = if unix != 0 {
        unix
    } else if external_attributes & DOS_DIRECTORY != 0 {
        S_IFDIR | 0o755
    } else {
        0
    };
    let kind = match mode & S_IFMT {
        S_IFLNK => return Err(InstallError::Symlink { name: name() }),
        S_IFCHR => "character device",
        S_IFBLK => "block device",
        S_IFIFO => "FIFO",
        S_IFSOCK => "socket",
        S_IFDIR => "",
        S_IFREG | 0 => {
            if dir_marker {
                ""
            } else {
                "file"
            }
        }
        _ => "file of unknown type",
    };
    match kind {
        "" => {
            if size != 0 {
                return Err(InstallError::UnsafePath {
                    name: name(),
                    reason: "a directory entry holds data",
                });
            }
            Ok((EntryKind::Dir, false))
        }
        "file" => Ok((EntryKind::File, mode & 0o111 != 0)),
        kind => Err(InstallError::SpecialFile { name: name(), kind }),
    }
}

/// Creates `staging` (mode 0755) when it does not exist, else checks that it is an empty
/// directory and not a link.
fn prepare_staging(staging: &Path) -> Result<(), InstallError> {
    let refuse = |reason: String| InstallError::Staging {
        path: staging.to_path_buf(),
        reason,
    };
    match std::fs::DirBuilder::new().mode(0o755).create(staging) {
        Ok(()) => return Ok(()),
        Err(e) if e.kind() == ErrorKind::AlreadyExists => {}
        Err(e) => return Err(refuse(e.to_string())),
    }
    let meta = std::fs::symlink_metadata(staging).map_err(|e| refuse(e.to_string()))?;
    if !meta.is_dir() {
        return Err(refuse("it exists and is not a directory".to_owned()));
    }
    let mut listing = std::fs::read_dir(staging).map_err(|e| refuse(e.to_string()))?;
    if listing.next().is_some() {
        return Err(refuse("it is not empty".to_owned()));
    }
    Ok(())
}

/// Opens a directory handle without following a link at `name`.
pub(crate) fn open_dir_at<Fd: AsFd>(dir: Fd, name: &Path) -> nix::Result<OwnedFd> {
    openat(
        dir,
        name,
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
}

/// Opens (creating it with mode 0755 when absent) the directory `name` inside `parent`,
/// without following links.
fn ensure_dir(parent: &OwnedFd, name: &str, shown_path: &str) -> Result<OwnedFd, InstallError> {
    let created = match mkdirat(parent, name, Mode::from_bits_truncate(0o755)) {
        Ok(()) => true,
        Err(Errno::EEXIST) => false,
        Err(e) => {
            return Err(InstallError::errno(
                format!("cannot create directory [{shown_path}]"),
                e,
            ));
        }
    };
    let fd = open_dir_at(parent, Path::new(name))
        .map_err(|e| InstallError::errno(format!("cannot open directory [{shown_path}]"), e))?;
    if created {
        fchmod(&fd, Mode::from_bits_truncate(0o755)).map_err(|e| {
            InstallError::errno(format!("cannot set the mode of [{shown_path}]"), e)
        })?;
    }
    Ok(fd)
}

/// Extracts the entries of an already pre-scanned package into the existing directory
/// `staging` (see [`extract_to_staging`]).
pub(crate) fn extract_file(
    file: &File,
    manifest: &Manifest,
    staging: &Path,
    limits: &Limits,
) -> Result<(), InstallError> {
    let root = open_dir_at(AT_FDCWD, staging).map_err(|e| InstallError::Staging {
        path: staging.to_path_buf(),
        reason: format!("cannot open it as a directory: {e}"),
    })?;
    let mut archive = ZipArchive::new(file).map_err(corrupt)?;
    if archive.len() != manifest.entries.len() {
        return Err(InstallError::Corrupt(
            "the package changed between the pre-scan and the extraction".to_owned(),
        ));
    }
    let mut buf = vec![0u8; COPY_BUFFER];
    let mut total: u64 = 0;
    for entry in &manifest.entries {
        let name = shown(entry.path.as_bytes());
        let mut components: Vec<&str> = entry.path.split('/').collect();
        let leaf = components.pop().unwrap_or_default();
        let mut parent: Option<OwnedFd> = None;
        let mut walked = String::new();
        for component in components {
            if !walked.is_empty() {
                walked.push('/');
            }
            walked.push_str(component);
            let at = parent.as_ref().unwrap_or(&root);
            parent = Some(ensure_dir(at, component, &shown(walked.as_bytes()))?);
        }
        let parent = parent.as_ref().unwrap_or(&root);
        match entry.kind {
            EntryKind::Dir => {
                ensure_dir(parent, leaf, &name)?;
            }
            EntryKind::File => {
                let mut reader = archive.by_index(entry.index).map_err(corrupt)?;
                if reader.name_raw() != entry.path.as_bytes() || reader.size() != entry.size {
                    return Err(InstallError::Corrupt(
                        "the package changed between the pre-scan and the extraction".to_owned(),
                    ));
                }
                let fd = openat(
                    parent,
                    leaf,
                    OFlag::O_WRONLY
                        | OFlag::O_CREAT
                        | OFlag::O_EXCL
                        | OFlag::O_NOFOLLOW
                        | OFlag::O_CLOEXEC,
                    Mode::from_bits_truncate(0o600),
                )
                .map_err(|e| InstallError::errno(format!("cannot create file [{name}]"), e))?;
                let mut out = File::from(fd);
                let mut written: u64 = 0;
                loop {
                    // Ask for at most one byte more than declared: that byte proves a lie.
                    let room = entry.size.saturating_sub(written).saturating_add(1);
                    let want = buf.len().min(usize::try_from(room).unwrap_or(usize::MAX));
                    let n = match reader.read(&mut buf[..want]) {
                        Ok(n) => n,
                        Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                        Err(e) => return Err(read_error(&name, entry.size, e)),
                    };
                    if n == 0 {
                        break;
                    }
                    written = written.saturating_add(n as u64);
                    total = total.saturating_add(n as u64);
                    if written > entry.size {
                        return Err(InstallError::SizeExceedsDeclared {
                            name,
                            declared: entry.size,
                        });
                    }
                    if written > limits.max_entry_uncompressed {
                        return Err(InstallError::EntryTooLarge {
                            name,
                            size: written,
                            max: limits.max_entry_uncompressed,
                        });
                    }
                    if total > limits.max_total_uncompressed {
                        return Err(InstallError::TotalTooLarge {
                            total,
                            max: limits.max_total_uncompressed,
                        });
                    }
                    out.write_all(&buf[..n])
                        .map_err(|e| InstallError::io(format!("cannot write [{name}]"), e))?;
                }
                if written != entry.size {
                    return Err(InstallError::EntryData {
                        name,
                        reason: format!(
                            "it ended after {written} of its declared {} bytes",
                            entry.size
                        ),
                    });
                }
                let mode = if entry.executable { 0o755 } else { 0o644 };
                fchmod(&out, Mode::from_bits_truncate(mode)).map_err(|e| {
                    InstallError::errno(format!("cannot set the mode of [{name}]"), e)
                })?;
            }
        }
    }
    Ok(())
}

/// Turns an error met while decompressing an entry into the clearest installer error.
fn read_error(name: &str, declared: u64, e: std::io::Error) -> InstallError {
    if e.to_string().contains("larger than its declared") {
        return InstallError::SizeExceedsDeclared {
            name: name.to_owned(),
            declared,
        };
    }
    InstallError::EntryData {
        name: name.to_owned(),
        reason: e.to_string(),
    }
}
