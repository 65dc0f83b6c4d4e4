//! The one error type of the installer, with a clear reason for every refusal.

use std::path::PathBuf;

/// Why a package was refused or an installation step failed.
///
/// Every variant names what was wrong in words an operator can act on; entry names are shown
/// escaped, so a hostile name cannot inject control characters into a log line.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum InstallError {
    /// The app name is not a single safe path component.
    #[error("invalid app name [{app}]: {reason}")]
    InvalidApp {
        /// The refused name, escaped.
        app: String,
        /// Why it was refused.
        reason: &'static str,
    },
    /// The version is not a safe token.
    #[error("invalid version [{version}]: {reason}")]
    InvalidVersion {
        /// The refused version, escaped.
        version: String,
        /// Why it was refused.
        reason: &'static str,
    },
    /// The expected digest is not a SHA-256 written as 64 hexadecimal digits.
    #[error("invalid expected digest [{0}]: a SHA-256 must be 64 hexadecimal digits")]
    InvalidDigest(String),
    /// The package does not have the expected size.
    #[error("package size mismatch: expected {expected} bytes, found {actual} bytes")]
    SizeMismatch {
        /// The size the center announced.
        expected: u64,
        /// The size of the package on disk.
        actual: u64,
    },
    /// The package does not have the expected SHA-256 digest.
    #[error("package digest mismatch: expected sha256 {expected}, found sha256 {actual}")]
    DigestMismatch {
        /// The digest the center announced, in lower-case hexadecimal.
        expected: String,
        /// The digest of the package on disk, in lower-case hexadecimal.
        actual: String,
    },
    /// The package file is larger than `Limits::max_package_bytes`.
    #[error("package is {size} bytes, more than the limit of {max} bytes")]
    PackageTooLarge {
        /// The size of the package.
        size: u64,
        /// The limit.
        max: u64,
    },
    /// The package is not a readable zip archive (truncated, corrupt, or not a zip at all).
    #[error("package is not a readable zip archive: {0}")]
    Corrupt(String),
    /// The package has more entries than `Limits::max_entries`.
    #[error("package has {count} entries, more than the limit of {max} entries")]
    TooManyEntries {
        /// How many entries the package declares.
        count: u64,
        /// The limit.
        max: u64,
    },
    /// One entry expands to more than `Limits::max_entry_uncompressed`.
    #[error("entry [{name}] expands to {size} bytes, more than the limit of {max} bytes per entry")]
    EntryTooLarge {
        /// The entry name, escaped.
        name: String,
        /// Its declared (or, while extracting, actual) size.
        size: u64,
        /// The limit.
        max: u64,
    },
    /// The whole package expands to more than `Limits::max_total_uncompressed`.
    #[error(
        "package expands to {total} bytes or more, more than the limit of {max} bytes in total"
    )]
    TotalTooLarge {
        /// The declared (or, while extracting, actual) total so far.
        total: u64,
        /// The limit.
        max: u64,
    },
    /// An entry, or the package as a whole, compresses suspiciously well.
    #[error("{name} expands {ratio} times its compressed size, more than the allowed ratio {max}")]
    RatioTooHigh {
        /// `entry [name]` or `the package`.
        name: String,
        /// The uncompressed size divided by the compressed size.
        ratio: u64,
        /// The limit.
        max: u64,
    },
    /// An entry name could write outside the app directory or is otherwise unsafe.
    #[error("entry [{name}] refused: {reason}")]
    UnsafePath {
        /// The entry name, escaped.
        name: String,
        /// Why it was refused.
        reason: &'static str,
    },
    /// An entry is a symbolic link.
    #[error(
        "entry [{name}] is a symbolic link: packages may hold only regular files and directories"
    )]
    Symlink {
        /// The entry name, escaped.
        name: String,
    },
    /// An entry is a device, a FIFO, a socket or of an unknown file type.
    #[error("entry [{name}] is a {kind}: packages may hold only regular files and directories")]
    SpecialFile {
        /// The entry name, escaped.
        name: String,
        /// What kind of file it claims to be.
        kind: &'static str,
    },
    /// Two entries have the same name once a trailing `/` is removed.
    #[error("entry [{name}] appears more than once in the package")]
    Duplicate {
        /// The entry name, escaped.
        name: String,
    },
    /// The central directory lists the same raw name more than once.
    #[error("package lists the same entry name more than once in its central directory")]
    DuplicateInDirectory,
    /// An entry uses a feature the installer does not support (encryption, another compression).
    #[error("entry [{name}] is not supported: {reason}")]
    Unsupported {
        /// The entry name, escaped.
        name: String,
        /// What is not supported.
        reason: String,
    },
    /// An entry produced more bytes than its header declared: a lying header or a zip bomb.
    #[error(
        "entry [{name}] holds more data than its declared {declared} bytes (a lying header or a zip bomb): extraction stopped"
    )]
    SizeExceedsDeclared {
        /// The entry name, escaped.
        name: String,
        /// The size the headers declared.
        declared: u64,
    },
    /// An entry's data could not be decompressed or did not match its checksum or size.
    #[error("entry [{name}] cannot be extracted: {reason}")]
    EntryData {
        /// The entry name, escaped.
        name: String,
        /// What went wrong.
        reason: String,
    },
    /// The staging directory given to `extract_to_staging` cannot be used.
    #[error("staging directory {path} cannot be used: {reason}")]
    Staging {
        /// The staging directory.
        path: PathBuf,
        /// Why it cannot be used.
        reason: String,
    },
    /// A filesystem operation failed.
    #[error("{context}: {source}")]
    Io {
        /// What the installer was doing.
        context: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
}

impl InstallError {
    /// Wraps an I/O error with what the installer was doing.
    pub(crate) fn io(context: impl Into<String>, source: std::io::Error) -> InstallError {
        InstallError::Io {
            context: context.into(),
            source,
        }
    }

    /// Wraps a `nix` error with what the installer was doing.
    pub(crate) fn errno(context: impl Into<String>, errno: nix::errno::Errno) -> InstallError {
        InstallError::io(context, std::io::Error::from(errno))
    }
}

/// Shows raw name bytes safely: invalid UTF-8 is replaced, control characters are escaped and
/// very long names are cut.
pub(crate) fn shown(raw: &[u8]) -> String {
    let text = String::from_utf8_lossy(raw);
    let mut out: String = text.escape_debug().take(300).collect();
    if text.escape_debug().nth(300).is_some() {
        out.push('…');
    }
    out
}
