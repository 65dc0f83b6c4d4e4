//! Package file names: `{app}_{version}.zip`.
//!
//! The version is what follows the known `{app}_` prefix (original.md §15 item 30): an app
//! name may itself contain `_`, so splitting on the first or last `_` would misread
//! `my_app_1.0.zip`. A version is a safe token, usable as a file or directory name as it is.

/// The longest version accepted, in bytes.
pub const MAX_VERSION_LEN: usize = 64;

/// Why a file name is not a package of the app.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// The name does not end in `.zip`.
    #[error("a package file name ends in .zip")]
    NotZip,
    /// The name does not start with `{app}_`.
    #[error("a package of app `{app}` is named {app}_VERSION.zip")]
    OtherApp { app: String },
    /// The version part is empty, too long, or has a character outside `[A-Za-z0-9._-]`.
    #[error(
        "the version must be 1 to 64 characters of A-Z a-z 0-9 . _ - and not start with . or -"
    )]
    BadVersion,
}

/// Whether `version` is a safe version token: 1 to [`MAX_VERSION_LEN`] characters of
/// `[A-Za-z0-9._-]`, not starting with `.` (no `.`, `..` or hidden names) nor `-` (no
/// command-line flags).
pub fn is_valid_version(version: &str) -> bool {
    (1..=MAX_VERSION_LEN).contains(&version.len())
        && !version.starts_with(['.', '-'])
        && version
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// The version in `file_name`, a package of `app`. The `.zip` suffix is matched
/// ASCII-case-insensitively (`.ZIP` from some systems); the app prefix exactly.
pub fn parse<'a>(file_name: &'a str, app: &str) -> Result<&'a str, Error> {
    let len = file_name.len();
    let stem = match file_name.get(len.saturating_sub(4)..) {
        Some(ext) if len > 4 && ext.eq_ignore_ascii_case(".zip") => &file_name[..len - 4],
        _ => return Err(Error::NotZip),
    };
    let version = stem
        .strip_prefix(app)
        .and_then(|rest| rest.strip_prefix('_'))
        .filter(|_| !app.is_empty())
        .ok_or_else(|| Error::OtherApp {
            app: app.to_owned(),
        })?;
    if !is_valid_version(version) {
        return Err(Error::BadVersion);
    }
    Ok(version)
}

/// The file name of version `version` of `app`: `{app}_{version}.zip`.
pub fn file_name(app: &str, version: &str) -> String {
    format!("{app}_{version}.zip")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn other(app: &str) -> Result<&'static str, Error> {
        Err(Error::OtherApp {
            app: app.to_owned(),
        })
    }

    #[test]
    fn the_version_is_what_follows_the_app_prefix() {
        let long = format!("ops_{}.zip", "1".repeat(MAX_VERSION_LEN));
        let too_long = format!("ops_{}.zip", "1".repeat(MAX_VERSION_LEN + 1));
        let cases: &[(&str, &str, &str, Result<&str, Error>)] = &[
            ("plain", "ops_1.0.zip", "ops", Ok("1.0")),
            ("app with _", "my_app_1.0.zip", "my_app", Ok("1.0")),
            ("app with several _", "a_b_c_2.zip", "a_b_c", Ok("2")),
            ("version with _", "ops_1_0.zip", "ops", Ok("1_0")),
            (
                "shorter app owns the rest",
                "my_app_1.0.zip",
                "my",
                Ok("app_1.0"),
            ),
            (
                "semver with pre-release",
                "ops_1.2.3-rc.1.zip",
                "ops",
                Ok("1.2.3-rc.1"),
            ),
            ("upper-case .ZIP", "ops_1.0.ZIP", "ops", Ok("1.0")),
            ("mixed-case .Zip", "ops_1.0.Zip", "ops", Ok("1.0")),
            (
                "64-byte version",
                &long,
                "ops",
                Ok(&long[4..long.len() - 4]),
            ),
            ("65-byte version", &too_long, "ops", Err(Error::BadVersion)),
            ("not a zip", "ops_1.0.tar.gz", "ops", Err(Error::NotZip)),
            ("no extension", "ops_1.0", "ops", Err(Error::NotZip)),
            ("only .zip", ".zip", "ops", Err(Error::NotZip)),
            ("empty name", "", "ops", Err(Error::NotZip)),
            (
                "non-ASCII before the suffix",
                "ops_1.0é.zip",
                "ops",
                Err(Error::BadVersion),
            ),
            (
                "multibyte where the suffix would be",
                "ops_1.0ézip",
                "ops",
                Err(Error::NotZip),
            ),
            ("other app", "web_1.0.zip", "ops", other("ops")),
            ("app case differs", "OPS_1.0.zip", "ops", other("ops")),
            ("app without _", "ops1.0.zip", "ops", other("ops")),
            (
                "app is only a prefix of the name",
                "opsx_1.0.zip",
                "ops",
                other("ops"),
            ),
            (
                "path before the name",
                "dir/ops_1.0.zip",
                "ops",
                other("ops"),
            ),
            ("empty app", "_1.0.zip", "", other("")),
            ("empty version", "ops_.zip", "ops", Err(Error::BadVersion)),
            ("version ..", "ops_...zip", "ops", Err(Error::BadVersion)),
            (
                "hidden version",
                "ops_.1.zip",
                "ops",
                Err(Error::BadVersion),
            ),
            (
                "flag-like version",
                "ops_-rf.zip",
                "ops",
                Err(Error::BadVersion),
            ),
            (
                "slash in version",
                "ops_1/../x.zip",
                "ops",
                Err(Error::BadVersion),
            ),
            (
                "backslash in version",
                "ops_1\\x.zip",
                "ops",
                Err(Error::BadVersion),
            ),
            (
                "space in version",
                "ops_1 0.zip",
                "ops",
                Err(Error::BadVersion),
            ),
            (
                "NUL in version",
                "ops_1\0.zip",
                "ops",
                Err(Error::BadVersion),
            ),
        ];
        let mut failed = Vec::new();
        for (name, file, app, want) in cases {
            let got = parse(file, app);
            if &got != want {
                failed.push(format!(
                    "{name}: {file:?} / {app:?}: want {want:?}, got {got:?}"
                ));
            }
        }
        assert!(failed.is_empty(), "\n{}", failed.join("\n"));
    }

    #[test]
    fn file_name_and_parse_round_trip() {
        for (app, version) in [("ops", "1.0"), ("my_app", "2_0-b.1"), ("a", "Z")] {
            assert_eq!(parse(&file_name(app, version), app), Ok(version));
        }
    }

    #[test]
    fn errors_are_one_line_and_say_what_is_expected() {
        assert_eq!(
            Error::OtherApp {
                app: "ops".to_owned()
            }
            .to_string(),
            "a package of app `ops` is named ops_VERSION.zip"
        );
        for e in [Error::NotZip, Error::BadVersion] {
            assert!(!e.to_string().contains('\n'));
        }
    }
}
