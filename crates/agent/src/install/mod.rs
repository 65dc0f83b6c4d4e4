//! The app installer: verifies a package, extracts it safely and swaps it atomically into
//! `apps_dir/{app}` (agent-protocol §2).
//!
//! # Steps
//!
//! [`install`] verifies the package's size and SHA-256 ([`verify_digest`]), reads its central
//! directory without extracting anything ([`prescan`]), extracts it into a fresh staging
//! directory `apps_dir/.staging-{app}-{random}` while enforcing the [`Limits`] on the bytes
//! actually produced ([`extract_to_staging`]), writes the version marker `.elves-version`
//! into the staging directory, flushes everything to disk, and only then swaps the staging
//! directory into `apps_dir/{app}`. A failure at any step before the swap removes the staging
//! directory and leaves the installed version untouched: the original agent deleted the app
//! first and unzipped into place without checking paths (original §8.4), this one never does.
//!
//! # The swap
//!
//! When `apps_dir/{app}` does not exist, the staging directory is renamed to it with
//! `renameat2(RENAME_NOREPLACE)`. When it exists, `renameat2(RENAME_EXCHANGE)` exchanges the
//! two names in one atomic step: the old version serves every lookup until that instant and
//! the new one every lookup after it, with no moment where `apps_dir/{app}` is missing or
//! mixed. The old tree, now under the staging name, is then retired (see *Running workers*).
//!
//! When the filesystem does not support `RENAME_EXCHANGE` (`EINVAL`, `ENOSYS`,
//! `EOPNOTSUPP`), the installer falls back to two renames: the old tree to
//! `apps_dir/.old-{app}-{random}`, then the staging directory to `apps_dir/{app}`. Between the
//! two renames (a few microseconds) `apps_dir/{app}` does not exist, and a worker started in
//! that window fails with "entry missing". A crash in that window leaves no `apps_dir/{app}`:
//! [`cleanup_staging`] renames the `.old-` tree back.
//!
//! # Running workers
//!
//! A worker that is already running when its app is upgraded or removed keeps its files: the
//! replaced tree is renamed to `apps_dir/.retired-{app}-{random}` (one rename in the same
//! directory, so the worker's working directory and every path relative to it stay valid) and
//! deleted only once no process has its working directory or its program file inside it
//! ([`trees_in_use`], read from `/proc`). [`install`] and [`remove`] delete it at once when
//! nothing uses it; otherwise the agent calls [`reap_retired`] every few seconds until
//! nothing does. Workers started after the swap run the new version. Without a readable
//! `/proc` nothing can be seen in use and the old tree is deleted at once.
//!
//! # Concurrency and crashes
//!
//! [`install`] and [`remove`] are synchronous and do blocking I/O: an async caller runs them
//! with `tokio::task::spawn_blocking` while holding the app's guard from [`AppLocks`], so two
//! updates of one app never run at once:
//!
//! ```no_run
//! # async fn update(locks: std::sync::Arc<elves_agent::install::AppLocks>) -> anyhow::Result<()> {
//! use elves_agent::install::{Limits, install};
//! let _guard = locks.lock("demo").await;
//! tokio::task::spawn_blocking(|| {
//!     install("apps".as_ref(), "demo", "1.2.0", "/tmp/demo_1.2.0.zip".as_ref(),
//!             "00".repeat(32).as_str(), 1234, &Limits::default())
//! })
//! .await??;
//! # Ok(()) }
//! ```
//!
//! A crash can leave `.staging-*`, `.old-*`, `.trash-*` and `.retired-*` entries in
//! `apps_dir`; the agent calls [`cleanup_staging`] once at start, before any install, to
//! remove them (a tree a surviving worker still uses is retired instead, and reaped later).
//! After it every app directory holds one complete version, old or new, never a mix.

mod archive;
mod error;
mod locks;

use std::fs::File;
use std::io::{ErrorKind, Read, Write};
use std::os::fd::OwnedFd;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{AT_FDCWD, OFlag, RenameFlags, openat, renameat, renameat2};
use nix::sys::stat::{Mode, fchmod};
use sha2::{Digest, Sha256};

pub(crate) use archive::check_entry_name;
pub use archive::{
    EntryKind, Limits, Manifest, ManifestEntry, RATIO_FLOOR, extract_to_staging, prescan,
};
pub use error::InstallError;
pub use locks::{AppGuard, AppLocks};

/// The file, at the top of an installed app directory, that holds the installed version.
pub const MARKER: &str = ".elves-version";

/// The prefix of the staging directories in `apps_dir`.
pub const STAGING_PREFIX: &str = ".staging-";

/// The prefix of the old trees parked by the fallback swap in `apps_dir`.
pub const OLD_PREFIX: &str = ".old-";

/// The prefix of the trees being deleted by [`remove`] in `apps_dir` (older agents; still
/// cleaned up).
pub const TRASH_PREFIX: &str = ".trash-";

/// The prefix of replaced or removed trees, kept while a running process still uses them.
pub const RETIRED_PREFIX: &str = ".retired-";

/// The longest app name or version accepted, in bytes.
const MAX_TOKEN: usize = 128;

/// Checks that `app` can name a directory of `apps_dir`: 1 to 128 characters from
/// `[A-Za-z0-9._-]`, not starting with `.` (names starting with `.` are the installer's own).
pub fn check_app_name(app: &str) -> Result<(), InstallError> {
    check_token(app).map_err(|reason| InstallError::InvalidApp {
        app: error::shown(app.as_bytes()),
        reason,
    })
}

/// Checks that `version` is a safe token: 1 to 128 characters from `[A-Za-z0-9._-]`, not
/// starting with `.` and without `..`.
pub fn check_version(version: &str) -> Result<(), InstallError> {
    check_token(version).map_err(|reason| InstallError::InvalidVersion {
        version: error::shown(version.as_bytes()),
        reason,
    })
}

/// The shared rule of [`check_app_name`] and [`check_version`].
fn check_token(token: &str) -> Result<(), &'static str> {
    if token.is_empty() {
        return Err("it is empty");
    }
    if token.len() > MAX_TOKEN {
        return Err("it is longer than 128 characters");
    }
    if !token
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
    {
        return Err("only letters, digits, `.`, `_` and `-` are allowed");
    }
    if token.starts_with('.') {
        return Err("it may not start with `.`");
    }
    if token.contains("..") {
        return Err("it may not contain `..`");
    }
    Ok(())
}

/// Where the bytes to verify come from.
#[derive(Debug, Clone, Copy)]
pub enum PackageSource<'a> {
    /// A file, read in a streaming way.
    Path(&'a Path),
    /// Bytes already in memory.
    Bytes(&'a [u8]),
}

impl<'a> From<&'a Path> for PackageSource<'a> {
    fn from(p: &'a Path) -> Self {
        PackageSource::Path(p)
    }
}

impl<'a> From<&'a PathBuf> for PackageSource<'a> {
    fn from(p: &'a PathBuf) -> Self {
        PackageSource::Path(p)
    }
}

impl<'a> From<&'a [u8]> for PackageSource<'a> {
    fn from(b: &'a [u8]) -> Self {
        PackageSource::Bytes(b)
    }
}

impl<'a> From<&'a Vec<u8>> for PackageSource<'a> {
    fn from(b: &'a Vec<u8>) -> Self {
        PackageSource::Bytes(b)
    }
}

/// Parses a SHA-256 written as 64 hexadecimal digits (either case).
fn parse_digest(hex_digest: &str) -> Result<[u8; 32], InstallError> {
    let mut out = [0u8; 32];
    if hex_digest.len() != 64 || hex::decode_to_slice(hex_digest, &mut out).is_err() {
        return Err(InstallError::InvalidDigest(error::shown(
            hex_digest.as_bytes(),
        )));
    }
    Ok(out)
}

/// Checks that a package has exactly `expected_size` bytes and the SHA-256 `expected_sha256`
/// (64 hexadecimal digits, either case).
///
/// A wrong size is reported as [`InstallError::SizeMismatch`] (checked first, without
/// hashing, for a file) and a wrong digest as [`InstallError::DigestMismatch`].
pub fn verify_digest<'a>(
    source: impl Into<PackageSource<'a>>,
    expected_sha256: &str,
    expected_size: u64,
) -> Result<(), InstallError> {
    let expected = parse_digest(expected_sha256)?;
    match source.into() {
        PackageSource::Bytes(bytes) => {
            let actual = bytes.len() as u64;
            if actual != expected_size {
                return Err(InstallError::SizeMismatch {
                    expected: expected_size,
                    actual,
                });
            }
            compare_digest(&expected, &Sha256::digest(bytes).into())
        }
        PackageSource::Path(path) => {
            let file = File::open(path).map_err(|e| {
                InstallError::io(format!("cannot open package {}", path.display()), e)
            })?;
            verify_file(&file, &expected, expected_size)
        }
    }
}

/// Returns the SHA-256 (lower-case hexadecimal) and the size of a file, as [`verify_digest`]
/// expects them.
pub fn sha256_file(path: &Path) -> Result<(String, u64), InstallError> {
    let file = File::open(path)
        .map_err(|e| InstallError::io(format!("cannot open {}", path.display()), e))?;
    let (digest, size) = hash_file(&file)?;
    Ok((hex::encode(digest), size))
}

/// Hashes a whole file from its start, returning the digest and how many bytes were read.
fn hash_file(file: &File) -> Result<([u8; 32], u64), InstallError> {
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 64 * 1024];
    let mut size: u64 = 0;
    let mut offset: u64 = 0;
    loop {
        let n = match std::os::unix::fs::FileExt::read_at(file, &mut buf, offset) {
            Ok(n) => n,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) => return Err(InstallError::io("cannot read package", e)),
        };
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        size += n as u64;
        offset += n as u64;
    }
    Ok((hasher.finalize().into(), size))
}

/// Verifies the size, then the digest, of an open package.
fn verify_file(file: &File, expected: &[u8; 32], expected_size: u64) -> Result<(), InstallError> {
    let actual_size = file
        .metadata()
        .map_err(|e| InstallError::io("cannot stat package", e))?
        .len();
    if actual_size != expected_size {
        return Err(InstallError::SizeMismatch {
            expected: expected_size,
            actual: actual_size,
        });
    }
    let (digest, read) = hash_file(file)?;
    if read != expected_size {
        return Err(InstallError::SizeMismatch {
            expected: expected_size,
            actual: read,
        });
    }
    compare_digest(expected, &digest)
}

/// Compares two digests and reports a mismatch with both in hexadecimal.
fn compare_digest(expected: &[u8; 32], actual: &[u8; 32]) -> Result<(), InstallError> {
    if expected != actual {
        return Err(InstallError::DigestMismatch {
            expected: hex::encode(expected),
            actual: hex::encode(actual),
        });
    }
    Ok(())
}

/// A fresh random suffix for the installer's temporary names.
fn random_suffix() -> String {
    format!("{:016x}", rand::random::<u64>())
}

/// Removes a staging directory on drop unless it was handed over.
struct StagingGuard {
    path: Option<PathBuf>,
}

impl StagingGuard {
    /// Creates `apps_dir/.staging-{app}-{random}` with mode 0755.
    fn create(apps_dir: &Path, app: &str) -> Result<StagingGuard, InstallError> {
        let mut last = None;
        for _ in 0..8 {
            let path = apps_dir.join(format!("{STAGING_PREFIX}{app}-{}", random_suffix()));
            match std::fs::DirBuilder::new().mode(0o755).create(&path) {
                Ok(()) => {
                    std::fs::set_permissions(
                        &path,
                        std::os::unix::fs::PermissionsExt::from_mode(0o755),
                    )
                    .map_err(|e| InstallError::io(format!("cannot chmod {}", path.display()), e))?;
                    return Ok(StagingGuard { path: Some(path) });
                }
                Err(e) if e.kind() == ErrorKind::AlreadyExists => last = Some(e),
                Err(e) => {
                    return Err(InstallError::io(
                        format!("cannot create staging directory {}", path.display()),
                        e,
                    ));
                }
            }
        }
        Err(InstallError::io(
            "cannot create a staging directory with a fresh name",
            last.unwrap_or_else(|| ErrorKind::AlreadyExists.into()),
        ))
    }

    /// The staging directory.
    fn path(&self) -> &Path {
        self.path
            .as_deref()
            .expect("staging guard already consumed")
    }

    /// Stops the guard from removing the directory (it was renamed away).
    fn disarm(&mut self) {
        self.path = None;
    }
}

impl Drop for StagingGuard {
    fn drop(&mut self) {
        if let Some(path) = self.path.take()
            && let Err(e) = remove_tree(&path)
        {
            tracing::warn!(path = %path.display(), error = %e, "cannot remove a staging directory; cleanup_staging will");
        }
    }
}

/// Installs (or upgrades to) `version` of `app` from the zip at `package_path`, which must
/// have `expected_size` bytes and the SHA-256 `expected_sha256`.
///
/// The steps are: check the names, verify the size and digest, pre-scan the package, extract
/// it into `apps_dir/.staging-{app}-{random}` under `limits`, write `.elves-version`, flush
/// the tree to disk (`syncfs`), swap it atomically into `apps_dir/{app}` and retire the old
/// tree, deleting it at once unless a running process uses it (see the module documentation). The package file is opened once and that one handle
/// is verified and extracted. `apps_dir` is created when missing.
///
/// On any error before the swap, the staging directory is removed and `apps_dir/{app}` is
/// exactly as it was. A failure to retire or delete the old tree after a successful swap is
/// only logged: [`reap_retired`] or [`cleanup_staging`] removes it later. The function is synchronous; callers hold
/// the app's [`AppLocks`] guard so that two installs of one app never overlap.
pub fn install(
    apps_dir: &Path,
    app: &str,
    version: &str,
    package_path: &Path,
    expected_sha256: &str,
    expected_size: u64,
    limits: &Limits,
) -> Result<(), InstallError> {
    check_app_name(app)?;
    check_version(version)?;
    let expected = parse_digest(expected_sha256)?;
    let file = archive::open_package(package_path)?;
    verify_file(&file, &expected, expected_size)?;
    let manifest = archive::prescan_file(&file, limits)?;

    std::fs::create_dir_all(apps_dir).map_err(|e| {
        InstallError::io(format!("cannot create apps_dir {}", apps_dir.display()), e)
    })?;
    let mut staging = StagingGuard::create(apps_dir, app)?;
    archive::extract_file(&file, &manifest, staging.path(), limits)?;
    let root = archive::open_dir_at(AT_FDCWD, staging.path())
        .map_err(|e| InstallError::errno(format!("cannot open {}", staging.path().display()), e))?;
    write_marker(&root, version)?;
    nix::unistd::syncfs(&root)
        .map_err(|e| InstallError::errno("cannot flush the staging directory to disk", e))?;
    drop(root);

    let staging_name = staging
        .path()
        .file_name()
        .and_then(|n| n.to_str())
        .expect("staging name is UTF-8")
        .to_owned();
    let old = swap_into_place(apps_dir, app, &staging_name)?;
    staging.disarm();
    match old {
        Some(old) => {
            retire(apps_dir, app, &old);
            tracing::info!(app, version, "app upgraded");
        }
        None => tracing::info!(app, version, "app installed"),
    }
    Ok(())
}

/// Writes the version marker (mode 0644) into the staging root.
fn write_marker(root: &OwnedFd, version: &str) -> Result<(), InstallError> {
    let fd = openat(
        root,
        MARKER,
        OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::from_bits_truncate(0o644),
    )
    .map_err(|e| InstallError::errno("cannot create the version marker", e))?;
    fchmod(&fd, Mode::from_bits_truncate(0o644))
        .map_err(|e| InstallError::errno("cannot set the mode of the version marker", e))?;
    let mut file = File::from(fd);
    file.write_all(format!("{version}\n").as_bytes())
        .map_err(|e| InstallError::io("cannot write the version marker", e))
}

/// Opens `apps_dir` as a directory handle.
fn open_apps_dir(apps_dir: &Path) -> Result<OwnedFd, InstallError> {
    archive::open_dir_at(AT_FDCWD, apps_dir)
        .map_err(|e| InstallError::errno(format!("cannot open {}", apps_dir.display()), e))
}

/// Flushes a directory's entries to disk.
fn sync_dir(dir: &OwnedFd, apps_dir: &Path) -> Result<(), InstallError> {
    nix::unistd::fsync(dir)
        .map_err(|e| InstallError::errno(format!("cannot flush {}", apps_dir.display()), e))
}

/// Whether a `renameat2` error means the flag is not supported here.
fn unsupported(e: Errno) -> bool {
    matches!(e, Errno::EINVAL | Errno::ENOSYS | Errno::EOPNOTSUPP)
}

/// Moves `apps_dir/{staging_name}` to `apps_dir/{app}` atomically and returns where the
/// previous version now is, if there was one.
fn swap_into_place(
    apps_dir: &Path,
    app: &str,
    staging_name: &str,
) -> Result<Option<PathBuf>, InstallError> {
    let dir = open_apps_dir(apps_dir)?;
    let context = || format!("cannot move the new version of [{app}] into place");
    match renameat2(&dir, staging_name, &dir, app, RenameFlags::RENAME_NOREPLACE) {
        Ok(()) => {
            sync_dir(&dir, apps_dir)?;
            return Ok(None);
        }
        Err(Errno::EEXIST | Errno::ENOTEMPTY) => {}
        Err(e) if unsupported(e) => return fallback_swap(&dir, apps_dir, app, staging_name),
        Err(e) => return Err(InstallError::errno(context(), e)),
    }
    match renameat2(&dir, staging_name, &dir, app, RenameFlags::RENAME_EXCHANGE) {
        Ok(()) => {
            sync_dir(&dir, apps_dir)?;
            Ok(Some(apps_dir.join(staging_name)))
        }
        Err(e) if unsupported(e) => fallback_swap(&dir, apps_dir, app, staging_name),
        Err(e) => Err(InstallError::errno(context(), e)),
    }
}

/// The swap without `RENAME_EXCHANGE`: parks the old tree as `.old-{app}-{random}`, then
/// renames the staging directory to `app`; restores the old tree if the second rename fails.
fn fallback_swap(
    dir: &OwnedFd,
    apps_dir: &Path,
    app: &str,
    staging_name: &str,
) -> Result<Option<PathBuf>, InstallError> {
    let old_name = format!("{OLD_PREFIX}{app}-{}", random_suffix());
    let had_old = match renameat(dir, app, dir, old_name.as_str()) {
        Ok(()) => true,
        Err(Errno::ENOENT) => false,
        Err(e) => {
            return Err(InstallError::errno(
                format!("cannot move the previous version of [{app}] aside"),
                e,
            ));
        }
    };
    if let Err(e) = renameat(dir, staging_name, dir, app) {
        if had_old && let Err(back) = renameat(dir, old_name.as_str(), dir, app) {
            tracing::error!(app, error = %back, "cannot restore the previous version; cleanup_staging will");
        }
        return Err(InstallError::errno(
            format!("cannot move the new version of [{app}] into place"),
            e,
        ));
    }
    sync_dir(dir, apps_dir)?;
    Ok(had_old.then(|| apps_dir.join(old_name)))
}

/// Removes a path without following links: a directory recursively, anything else alone.
fn remove_tree(path: &Path) -> std::io::Result<()> {
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.is_dir() => std::fs::remove_dir_all(path),
        Ok(_) => std::fs::remove_file(path),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

/// Returns the version recorded in `apps_dir/{app}/.elves-version`, or `None` when the app
/// name is invalid, the app is not installed, or it was not installed by [`install`] (an app
/// pre-installed by configuration has no marker).
pub fn installed_version(apps_dir: &Path, app: &str) -> Option<String> {
    check_app_name(app).ok()?;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(OFlag::O_NOFOLLOW.bits())
        .open(apps_dir.join(app).join(MARKER))
        .ok()?;
    let mut text = String::new();
    file.take(256).read_to_string(&mut text).ok()?;
    let version = text.trim();
    check_version(version).ok()?;
    Some(version.to_owned())
}

/// Removes an installed app: `apps_dir/{app}` is renamed to
/// `apps_dir/.retired-{app}-{random}` (one atomic step, after which the app is gone), which is
/// deleted at once unless a running worker still uses it (then [`reap_retired`] deletes it
/// later). Returns false when the app was not installed.
///
/// A failure to delete the retired tree is only logged: [`reap_retired`] retries.
pub fn remove(apps_dir: &Path, app: &str) -> Result<bool, InstallError> {
    check_app_name(app)?;
    let retired = retired_path(apps_dir, app);
    match std::fs::rename(apps_dir.join(app), &retired) {
        Ok(()) => {}
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(false),
        Err(e) => {
            return Err(InstallError::io(format!("cannot remove app [{app}]"), e));
        }
    }
    let dir = open_apps_dir(apps_dir)?;
    sync_dir(&dir, apps_dir)?;
    reap_one(&retired);
    tracing::info!(app, "app removed");
    Ok(true)
}

/// A fresh `apps_dir/.retired-{app}-{random}` name.
fn retired_path(apps_dir: &Path, app: &str) -> PathBuf {
    apps_dir.join(format!("{RETIRED_PREFIX}{app}-{}", random_suffix()))
}

/// Renames a replaced tree to a `.retired-` name and deletes it unless it is in use.
fn retire(apps_dir: &Path, app: &str, old: &Path) {
    let retired = retired_path(apps_dir, app);
    if let Err(e) = std::fs::rename(old, &retired) {
        tracing::warn!(app, path = %old.display(), error = %e, "cannot retire the previous version; cleanup_staging will remove it");
        return;
    }
    reap_one(&retired);
}

/// Deletes a retired tree unless a running process uses it; returns whether it is gone.
fn reap_one(path: &Path) -> bool {
    if trees_in_use(&[path.to_owned()])[0] {
        tracing::info!(path = %path.display(), "previous version kept while a running worker uses it");
        return false;
    }
    match remove_tree(path) {
        Ok(()) => true,
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %e, "cannot delete a retired app tree; will retry");
            false
        }
    }
}

/// For each of `dirs`: whether a running process has its working directory or its program
/// file inside it, as `/proc/{pid}/cwd` and `/proc/{pid}/exe` show (a renamed directory shows
/// its new name there). Processes the agent may not inspect are not seen; without a readable
/// `/proc` nothing is in use. One pass over `/proc`, whatever the number of `dirs`.
pub fn trees_in_use(dirs: &[PathBuf]) -> Vec<bool> {
    let roots: Vec<Option<PathBuf>> = dirs.iter().map(|d| std::fs::canonicalize(d).ok()).collect();
    let mut used = vec![false; dirs.len()];
    if roots.iter().all(Option::is_none) {
        return used;
    }
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return used;
    };
    for entry in procs.flatten() {
        let name = entry.file_name();
        if !name
            .to_str()
            .is_some_and(|n| n.bytes().all(|b| b.is_ascii_digit()))
        {
            continue;
        }
        for link in ["cwd", "exe"] {
            let Ok(target) = std::fs::read_link(entry.path().join(link)) else {
                continue;
            };
            for (i, root) in roots.iter().enumerate() {
                if let Some(root) = root
                    && target.starts_with(root)
                {
                    used[i] = true;
                }
            }
        }
    }
    used
}

/// Deletes every `apps_dir/.retired-*` tree no running process uses (see [`trees_in_use`])
/// and returns how many are still kept. A missing `apps_dir` is not an error. Safe to call
/// while installs run: it touches only `.retired-` entries.
pub fn reap_retired(apps_dir: &Path) -> Result<usize, InstallError> {
    let listing = match std::fs::read_dir(apps_dir) {
        Ok(l) => l,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(0),
        Err(e) => {
            return Err(InstallError::io(
                format!("cannot list {}", apps_dir.display()),
                e,
            ));
        }
    };
    let retired: Vec<PathBuf> = listing
        .flatten()
        .filter(|e| {
            e.file_name()
                .to_str()
                .is_some_and(|n| n.starts_with(RETIRED_PREFIX))
        })
        .map(|e| e.path())
        .collect();
    let used = trees_in_use(&retired);
    let mut kept = 0;
    for (path, used) in retired.iter().zip(used) {
        if used {
            kept += 1;
            continue;
        }
        match remove_tree(path) {
            Ok(()) => {
                tracing::info!(path = %path.display(), "deleted a retired app tree no worker uses any more")
            }
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "cannot delete a retired app tree; will retry");
                kept += 1;
            }
        }
    }
    Ok(kept)
}

/// Returns the app name of a `.old-{app}-{16 hex digits}` entry.
fn old_app_name(name: &str) -> Option<&str> {
    let rest = name.strip_prefix(OLD_PREFIX)?;
    let (app, suffix) = rest.rsplit_once('-')?;
    (suffix.len() == 16 && suffix.bytes().all(|b| b.is_ascii_hexdigit()))
        .then_some(app)
        .filter(|app| check_app_name(app).is_ok())
}

/// Removes what an interrupted install or removal left in `apps_dir` and returns how many
/// entries it handled.
///
/// `.staging-*` (a partial new version, or an old version already swapped out), `.trash-*`
/// and `.retired-*` entries are deleted. A `.old-{app}-*` tree (left by a crash inside the
/// fallback swap) is renamed back to `apps_dir/{app}` when that is missing, and deleted
/// otherwise, so every app directory ends up holding one complete version. An entry a
/// running process still uses (a worker that outlived the agent) is not deleted: it is
/// renamed to `.retired-…` (not counted) for [`reap_retired`]. A missing `apps_dir` is not an
/// error. The agent calls this once at start, before any install: running it during an
/// install would delete that install's staging directory.
pub fn cleanup_staging(apps_dir: &Path) -> Result<usize, InstallError> {
    let listing = match std::fs::read_dir(apps_dir) {
        Ok(l) => l,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(0),
        Err(e) => {
            return Err(InstallError::io(
                format!("cannot list {}", apps_dir.display()),
                e,
            ));
        }
    };
    let mut names: Vec<String> = Vec::new();
    for entry in listing {
        let entry = entry
            .map_err(|e| InstallError::io(format!("cannot list {}", apps_dir.display()), e))?;
        if let Ok(name) = entry.file_name().into_string()
            && (name.starts_with(STAGING_PREFIX)
                || name.starts_with(TRASH_PREFIX)
                || name.starts_with(OLD_PREFIX)
                || name.starts_with(RETIRED_PREFIX))
        {
            names.push(name);
        }
    }
    names.sort();
    let used = trees_in_use(&names.iter().map(|n| apps_dir.join(n)).collect::<Vec<_>>());

    let mut handled = 0;
    let mut first_error = None;
    for (name, used) in names.into_iter().zip(used) {
        let path = apps_dir.join(&name);
        if let Some(app) = old_app_name(&name) {
            let target = apps_dir.join(app);
            if matches!(std::fs::symlink_metadata(&target), Err(e) if e.kind() == ErrorKind::NotFound)
            {
                match std::fs::rename(&path, &target) {
                    Ok(()) => {
                        tracing::warn!(
                            app,
                            "restored the previous version after an interrupted install"
                        );
                        handled += 1;
                        continue;
                    }
                    Err(e) => {
                        first_error.get_or_insert(InstallError::io(
                            format!("cannot restore {}", path.display()),
                            e,
                        ));
                        continue;
                    }
                }
            }
        }
        if used {
            if !name.starts_with(RETIRED_PREFIX) {
                let retired = apps_dir.join(format!("{RETIRED_PREFIX}{}", random_suffix()));
                if let Err(e) = std::fs::rename(&path, &retired) {
                    first_error.get_or_insert(InstallError::io(
                        format!("cannot retire {}", path.display()),
                        e,
                    ));
                }
            }
            tracing::info!(path = %path.display(), "a leftover tree is still used by a running process; kept until it is not");
            continue;
        }
        match remove_tree(&path) {
            Ok(()) => {
                tracing::info!(path = %path.display(), "removed a leftover of an interrupted install");
                handled += 1;
            }
            Err(e) => {
                first_error.get_or_insert(InstallError::io(
                    format!("cannot remove {}", path.display()),
                    e,
                ));
            }
        }
    }
    if let Ok(dir) = open_apps_dir(apps_dir) {
        let _ = nix::unistd::fsync(&dir);
    }
    match first_error {
        Some(e) => Err(e),
        None => Ok(handled),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fallback_swap_replaces_and_parks_the_old_tree() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let apps = tmp.path();
        std::fs::create_dir(apps.join("app")).unwrap();
        std::fs::write(apps.join("app/v"), "old").unwrap();
        std::fs::create_dir(apps.join(".staging-app-1")).unwrap();
        std::fs::write(apps.join(".staging-app-1/v"), "new").unwrap();
        let dir = open_apps_dir(apps).unwrap();
        let old = fallback_swap(&dir, apps, "app", ".staging-app-1")
            .unwrap()
            .expect("an old tree");
        assert_eq!(std::fs::read_to_string(apps.join("app/v")).unwrap(), "new");
        assert_eq!(std::fs::read_to_string(old.join("v")).unwrap(), "old");
        let name = old.file_name().unwrap().to_str().unwrap();
        assert_eq!(old_app_name(name), Some("app"));
        assert!(!apps.join(".staging-app-1").exists());
    }

    #[test]
    fn fallback_swap_without_an_old_tree() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let apps = tmp.path();
        std::fs::create_dir(apps.join(".staging-app-1")).unwrap();
        let dir = open_apps_dir(apps).unwrap();
        assert!(
            fallback_swap(&dir, apps, "app", ".staging-app-1")
                .unwrap()
                .is_none()
        );
        assert!(apps.join("app").is_dir());
    }

    #[test]
    fn fallback_swap_restores_the_old_tree_when_the_new_one_is_missing() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let apps = tmp.path();
        std::fs::create_dir(apps.join("app")).unwrap();
        let dir = open_apps_dir(apps).unwrap();
        assert!(fallback_swap(&dir, apps, "app", ".staging-gone").is_err());
        assert!(
            apps.join("app").is_dir(),
            "the old version was not restored"
        );
        let leftovers: Vec<_> = std::fs::read_dir(apps).unwrap().collect();
        assert_eq!(leftovers.len(), 1);
    }

    #[test]
    fn old_names_are_parsed_strictly() {
        assert_eq!(old_app_name(".old-my-app-0123456789abcdef"), Some("my-app"));
        assert_eq!(old_app_name(".old-app-123"), None);
        assert_eq!(old_app_name(".old-.hidden-0123456789abcdef"), None);
        assert_eq!(old_app_name(".old--0123456789abcdef"), None);
    }

    #[test]
    fn tokens() {
        for ok in ["a", "my_app", "my-app.v2", "1.0.0-rc.1", "A_b-C.9"] {
            assert!(check_app_name(ok).is_ok(), "{ok}");
            assert!(check_version(ok).is_ok(), "{ok}");
        }
        for bad in [
            "", ".", "..", ".hidden", "a/b", "a\\b", "a..b", "a b", "a\0b", "é", "a:b",
        ] {
            assert!(check_app_name(bad).is_err(), "{bad:?}");
            assert!(check_version(bad).is_err(), "{bad:?}");
        }
        assert!(check_app_name(&"a".repeat(129)).is_err());
    }
}
