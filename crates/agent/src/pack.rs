//! Building app packages: `{app}_{version}.zip` from an app directory (agent-protocol §2).
//!
//! The zip holds the app directory itself (no top folder). It is deterministic: entries are
//! sorted by path, every timestamp is 1980-01-01 00:00, modes are reduced to 0755 for
//! directories and executable files and 0644 for the other files, and no extra field is
//! written, so the same tree always gives the same bytes and the same SHA-256 whatever its
//! mtimes, owners or permission details.

use std::fs::File;
use std::io::BufWriter;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use nix::fcntl::OFlag;
use zip::write::SimpleFileOptions;
use zip::{CompressionMethod, DateTime, ZipWriter};

use crate::install::{self, InstallError, Limits, MARKER};

/// Why a package could not be built.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PackError {
    /// The app directory is missing or not a directory.
    #[error("{0} is not a directory")]
    NotADirectory(PathBuf),
    /// The app directory holds a symbolic link.
    #[error("{0} is a symbolic link: packages may hold only regular files and directories")]
    Symlink(PathBuf),
    /// The app directory holds a device, FIFO or socket.
    #[error("{0} is not a regular file or directory")]
    NotRegular(PathBuf),
    /// A file name cannot be stored safely (the installer would refuse it).
    #[error("{path} cannot be packed: {reason}")]
    BadName {
        /// The file.
        path: PathBuf,
        /// Why it cannot be packed.
        reason: String,
    },
    /// The output directory lies inside the app directory, so the package would pack itself.
    #[error("the output directory {out} is inside the app directory {dir}")]
    OutputInsideSource {
        /// The output directory.
        out: PathBuf,
        /// The app directory.
        dir: PathBuf,
    },
    /// Writing the zip failed.
    #[error("cannot write the zip: {0}")]
    Zip(String),
    /// A filesystem operation failed.
    #[error("{context}: {source}")]
    Io {
        /// What the packer was doing.
        context: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The app name or version is invalid, or the installer would refuse the result (for
    /// example, it is over the default [`Limits`]).
    #[error(transparent)]
    Refused(#[from] InstallError),
}

/// Wraps an I/O error with what the packer was doing.
fn io_err(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> PackError {
    let context = context.into();
    move |source| PackError::Io { context, source }
}

/// Returns the package file name of an app version: `{app}_{version}.zip`.
pub fn package_file_name(app: &str, version: &str) -> String {
    format!("{app}_{version}.zip")
}

/// One file or directory to pack.
struct Item {
    /// The path components relative to the app directory.
    components: Vec<String>,
    /// The file on disk.
    source: PathBuf,
    /// A directory (else a regular file).
    dir: bool,
    /// Whether the file has an executable bit.
    executable: bool,
}

/// Packs the app directory `dir` into `out_dir/{app}_{version}.zip` and returns its path.
///
/// The zip holds the contents of `dir` (no top folder), sorted by path, with fixed
/// timestamps and only the executable bit of each mode, so packing the same tree twice gives
/// the same bytes. Symbolic links, devices, FIFOs and sockets in `dir` are refused (`dir`
/// itself may be a link to a directory), as are
/// file names the installer would refuse; a top-level `.elves-version` (the marker of an
/// installed app) is skipped. `out_dir` is created when missing and must not lie inside
/// `dir`. The zip is written to a temporary file in `out_dir`, checked with the installer's
/// own [`install::prescan`] under the default [`Limits`], then renamed over any previous
/// package of the same name.
pub fn pack(dir: &Path, app: &str, version: &str, out_dir: &Path) -> Result<PathBuf, PackError> {
    install::check_app_name(app)?;
    install::check_version(version)?;
    // The app directory itself may be reached through a link; nothing inside it may.
    let meta = std::fs::metadata(dir).map_err(io_err(format!(
        "cannot read the app directory {}",
        dir.display()
    )))?;
    if !meta.is_dir() {
        return Err(PackError::NotADirectory(dir.to_path_buf()));
    }
    std::fs::create_dir_all(out_dir).map_err(io_err(format!(
        "cannot create the output directory {}",
        out_dir.display()
    )))?;
    let dir_real =
        std::fs::canonicalize(dir).map_err(io_err(format!("cannot resolve {}", dir.display())))?;
    let out_real = std::fs::canonicalize(out_dir)
        .map_err(io_err(format!("cannot resolve {}", out_dir.display())))?;
    if out_real.starts_with(&dir_real) {
        return Err(PackError::OutputInsideSource {
            out: out_dir.to_path_buf(),
            dir: dir.to_path_buf(),
        });
    }

    let mut items = Vec::new();
    collect(dir, &mut Vec::new(), &mut items)?;
    items.sort_by(|a, b| a.components.cmp(&b.components));

    let name = package_file_name(app, version);
    let target = out_dir.join(&name);
    let temp = out_dir.join(format!(".{name}.tmp-{:016x}", rand::random::<u64>()));
    let result = write_zip(&items, &temp).and_then(|()| {
        install::prescan(&temp, &Limits::default())?;
        std::fs::rename(&temp, &target).map_err(io_err(format!(
            "cannot rename {} to {}",
            temp.display(),
            target.display()
        )))
    });
    if let Err(e) = result {
        let _ = std::fs::remove_file(&temp);
        return Err(e);
    }
    if let Ok(d) = File::open(out_dir) {
        let _ = d.sync_all();
    }
    Ok(target)
}

/// Walks `dir` (at `prefix` below the app directory) without following links.
fn collect(dir: &Path, prefix: &mut Vec<String>, items: &mut Vec<Item>) -> Result<(), PackError> {
    let listing =
        std::fs::read_dir(dir).map_err(io_err(format!("cannot list {}", dir.display())))?;
    for entry in listing {
        let entry = entry.map_err(io_err(format!("cannot list {}", dir.display())))?;
        let path = entry.path();
        let Ok(name) = entry.file_name().into_string() else {
            return Err(PackError::BadName {
                path,
                reason: "the name is not valid UTF-8".to_owned(),
            });
        };
        if prefix.is_empty() && name == MARKER {
            continue;
        }
        let meta = std::fs::symlink_metadata(&path)
            .map_err(io_err(format!("cannot read {}", path.display())))?;
        let file_type = meta.file_type();
        if file_type.is_symlink() {
            return Err(PackError::Symlink(path));
        }
        if !file_type.is_dir() && !file_type.is_file() {
            return Err(PackError::NotRegular(path));
        }
        prefix.push(name);
        let relative = prefix.join("/");
        if let Err(e) = install::check_entry_name(relative.as_bytes()) {
            return Err(PackError::BadName {
                path,
                reason: e.to_string(),
            });
        }
        items.push(Item {
            components: prefix.clone(),
            source: path.clone(),
            dir: file_type.is_dir(),
            executable: file_type.is_file() && meta.mode() & 0o111 != 0,
        });
        if file_type.is_dir() {
            collect(&path, prefix, items)?;
        }
        prefix.pop();
    }
    Ok(())
}

/// Writes the sorted items as a deterministic zip at `temp` (created, never overwritten).
fn write_zip(items: &[Item], temp: &Path) -> Result<(), PackError> {
    let out = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o644)
        .open(temp)
        .map_err(io_err(format!("cannot create {}", temp.display())))?;
    let mut zip = ZipWriter::new(BufWriter::new(out));
    let base = SimpleFileOptions::default()
        .compression_method(CompressionMethod::Deflated)
        .last_modified_time(DateTime::default())
        .large_file(false);
    let zip_err = |e: zip::result::ZipError| PackError::Zip(e.to_string());
    for item in items {
        let name = item.components.join("/");
        if item.dir {
            zip.add_directory(format!("{name}/"), base.unix_permissions(0o755))
                .map_err(zip_err)?;
            continue;
        }
        let mode = if item.executable { 0o755 } else { 0o644 };
        zip.start_file(name.as_str(), base.unix_permissions(mode))
            .map_err(zip_err)?;
        let mut source = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(OFlag::O_NOFOLLOW.bits())
            .open(&item.source)
            .map_err(|e| {
                if e.raw_os_error() == Some(nix::libc::ELOOP) {
                    PackError::Symlink(item.source.clone())
                } else {
                    PackError::Io {
                        context: format!("cannot open {}", item.source.display()),
                        source: e,
                    }
                }
            })?;
        std::io::copy(&mut source, &mut zip)
            .map_err(io_err(format!("cannot pack {}", item.source.display())))?;
    }
    let buffered = zip.finish().map_err(zip_err)?;
    let file = buffered.into_inner().map_err(|e| PackError::Io {
        context: format!("cannot write {}", temp.display()),
        source: e.into_error(),
    })?;
    file.sync_all()
        .map_err(io_err(format!("cannot flush {}", temp.display())))
}
