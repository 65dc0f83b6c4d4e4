//! Which SQL dialect a database URL names, and the migrations written for each dialect.
//!
//! Only SQLite exists today. A new dialect adds a variant to [`Dialect`] and [`Location`], a
//! sibling folder `migrations/<dialect>/` and its list in [`Dialect::migrations`].

use std::path::PathBuf;

use crate::Error;

/// A SQL dialect this build can speak.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Dialect {
    Sqlite,
}

/// One schema step: `migrations/<dialect>/NNNN_name.sql`, embedded at build time.
#[derive(Debug)]
pub(crate) struct Migration {
    pub(crate) version: i64,
    pub(crate) name: &'static str,
    pub(crate) sql: &'static str,
}

/// The SQLite migrations, oldest first. Versions start at 1 and have no gaps.
const SQLITE: &[Migration] = &[
    Migration {
        version: 1,
        name: "agents",
        sql: include_str!("../migrations/sqlite/0001_agents.sql"),
    },
    Migration {
        version: 2,
        name: "supervisor",
        sql: include_str!("../migrations/sqlite/0002_supervisor.sql"),
    },
    Migration {
        version: 3,
        name: "queues",
        sql: include_str!("../migrations/sqlite/0003_queues.sql"),
    },
    Migration {
        version: 4,
        name: "crons",
        sql: include_str!("../migrations/sqlite/0004_crons.sql"),
    },
    Migration {
        version: 5,
        name: "cron_list_by_app_and_dispatch",
        sql: include_str!("../migrations/sqlite/0005_cron_list_by_app_and_dispatch.sql"),
    },
];

impl Dialect {
    /// The migrations of this dialect, oldest first.
    pub(crate) fn migrations(self) -> &'static [Migration] {
        match self {
            Dialect::Sqlite => SQLITE,
        }
    }

    /// The name of this dialect's migrations folder.
    #[cfg(test)]
    pub(crate) fn folder(self) -> &'static str {
        match self {
            Dialect::Sqlite => "sqlite",
        }
    }
}

/// Where a database lives, as parsed from its URL.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Location {
    /// A SQLite database file.
    Sqlite(PathBuf),
}

const EXPECTED: &str = "expected sqlite://PATH";

impl Location {
    /// Parses a database URL. Error messages never repeat the URL: it may carry a password.
    pub(crate) fn parse(url: &str) -> Result<Location, Error> {
        let Some((scheme, rest)) = url.split_once(':') else {
            return Err(Error::Open(format!(
                "the database URL has no scheme; {EXPECTED}"
            )));
        };
        match scheme.to_ascii_lowercase().as_str() {
            "sqlite" => Location::parse_sqlite(rest),
            "postgres" | "postgresql" | "mysql" | "mariadb" => Err(Error::Open(format!(
                "`{scheme}` databases are not supported by this build yet; {EXPECTED}"
            ))),
            _ if is_plain_scheme(scheme) => Err(Error::Open(format!(
                "unsupported database URL scheme `{scheme}`; {EXPECTED}"
            ))),
            _ => Err(Error::Open(format!("unsupported database URL; {EXPECTED}"))),
        }
    }

    /// Parses what follows `sqlite:`.
    fn parse_sqlite(rest: &str) -> Result<Location, Error> {
        if rest == ":memory:" || rest.contains("mode=memory") || rest == "//:memory:" {
            return Err(Error::Open(
                "in-memory SQLite is not supported: every pooled connection would get its own \
                 empty database; use sqlite://PATH to a file"
                    .to_owned(),
            ));
        }
        let Some(path) = rest.strip_prefix("//") else {
            return Err(Error::Open(format!(
                "a sqlite URL must start with sqlite://; {EXPECTED}"
            )));
        };
        if path.contains('?') {
            return Err(Error::Open(
                "query parameters in a sqlite URL are not supported: the store sets its own \
                 connection options"
                    .to_owned(),
            ));
        }
        if path.is_empty() {
            return Err(Error::Open(format!(
                "the sqlite URL names no file; {EXPECTED}"
            )));
        }
        Ok(Location::Sqlite(PathBuf::from(path)))
    }
}

/// Whether `s` looks like a URL scheme, so it can be repeated in an error message safely.
fn is_plain_scheme(s: &str) -> bool {
    (1..=20).contains(&s.len())
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[track_caller]
    fn parses(url: &str, path: &str) {
        assert_eq!(
            Location::parse(url).unwrap(),
            Location::Sqlite(PathBuf::from(path))
        );
    }

    #[track_caller]
    fn refuses(url: &str, expected: &str) {
        let msg = Location::parse(url).unwrap_err().to_string();
        assert!(msg.contains(expected), "{url}: {msg}");
        assert!(!msg.contains('\n'), "{url}: {msg}");
    }

    #[test]
    fn sqlite_urls_take_relative_and_absolute_paths() {
        parses("sqlite://elves.db", "elves.db");
        parses("sqlite://data/elves.db", "data/elves.db");
        parses(
            "sqlite:///var/lib/elves/elves.db",
            "/var/lib/elves/elves.db",
        );
        parses("SQLITE://x.db", "x.db");
    }

    #[test]
    fn in_memory_and_malformed_sqlite_urls_are_refused() {
        refuses("sqlite::memory:", "in-memory SQLite is not supported");
        refuses("sqlite://:memory:", "in-memory SQLite is not supported");
        refuses("sqlite://?mode=memory", "in-memory SQLite is not supported");
        refuses("sqlite:elves.db", "must start with sqlite://");
        refuses("sqlite://", "names no file");
        refuses("sqlite://x.db?mode=rwc", "query parameters");
    }

    #[test]
    fn other_databases_are_refused_without_echoing_the_url() {
        refuses(
            "postgres://u:hunter2@db/elves",
            "`postgres` databases are not supported",
        );
        refuses(
            "mysql://u:hunter2@db/elves",
            "`mysql` databases are not supported",
        );
        refuses(
            "redis://localhost",
            "unsupported database URL scheme `redis`",
        );
        refuses("/var/lib/elves.db", "has no scheme");
        refuses("u s e r:hunter2@db", "unsupported database URL;");
        for url in ["postgres://u:hunter2@db/elves", "u s e r:hunter2@db"] {
            assert!(
                !Location::parse(url)
                    .unwrap_err()
                    .to_string()
                    .contains("hunter2")
            );
        }
    }

    /// Every file in a dialect's migrations folder is in its list, in order, and nothing else.
    #[test]
    fn migration_lists_match_their_folders() {
        for dialect in [Dialect::Sqlite] {
            let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                .join("migrations")
                .join(dialect.folder());
            let mut on_disk: Vec<String> = std::fs::read_dir(&dir)
                .unwrap()
                .map(|e| e.unwrap().file_name().into_string().unwrap())
                .collect();
            on_disk.sort();
            let listed: Vec<String> = dialect
                .migrations()
                .iter()
                .map(|m| format!("{:04}_{}.sql", m.version, m.name))
                .collect();
            assert_eq!(listed, on_disk, "{dialect:?}");
            for (i, m) in dialect.migrations().iter().enumerate() {
                assert_eq!(
                    m.version,
                    i as i64 + 1,
                    "{dialect:?}: versions start at 1, no gaps"
                );
                let on_disk = std::fs::read_to_string(dir.join(&listed[i])).unwrap();
                assert_eq!(m.sql, on_disk, "{dialect:?} {}", listed[i]);
            }
        }
    }
}
