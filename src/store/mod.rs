//! The SQLite store: one file holding issued API keys (hashed), the audit log and the delivery
//! queue. Opened in WAL mode so the CLI can read while the server writes.
//!
//! Schema changes are numbered migrations applied in order at open; `PRAGMA user_version`
//! records how far a file has come.

pub mod events;
pub mod keys;
mod static_statement;

use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use rusqlite::{Connection, OptionalExtension};

/// Why the store failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// SQLite refused.
    #[error("store: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// The file could not be created.
    #[error(
        "cannot create the store {path} ([storage] path): {source}; its directory must exist and be writable by this user"
    )]
    Create {
        /// The file.
        path: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file was written by an older hookwarden, and a command other than `serve` opened it.
    #[error(
        "store {path} was written by an older hookwarden (schema version {found}, this one uses {supported}); \
         stop the gateway that uses it, start this version's `hookwarden serve` on it once (that updates the file), \
         then run this command again"
    )]
    TooOld {
        /// The file.
        path: String,
        /// Its version.
        found: i64,
        /// Ours.
        supported: i64,
    },
    /// Another `hookwarden serve` has the file.
    #[error(
        "store {path} ([storage] path) is in use by another `hookwarden serve`: two servers on one store would both deliver every queued message; stop the other one, or give this one its own [storage] path"
    )]
    InUse {
        /// The file.
        path: String,
    },
    /// The file at `[storage] path` is no longer the one this process opened.
    #[error(
        "store {path} ([storage] path) was deleted or replaced after hookwarden opened it; \
         this process still reads and writes the file it opened, so keys created or revoked in the file now at that path are not seen: \
         restart hookwarden"
    )]
    Replaced {
        /// The file.
        path: String,
    },
    /// The file was written by a newer hookwarden.
    #[error(
        "store {path} has schema version {found}, newer than this hookwarden ({supported}); upgrade hookwarden"
    )]
    TooNew {
        /// The file.
        path: String,
        /// Its version.
        found: i64,
        /// Ours.
        supported: i64,
    },
}

/// The store's connection, and the statements kept prepared on it. Used as the connection it
/// derefs to; only the audit writer needs more.
pub struct Db {
    /// The audit log's multi-row inserts, prepared on first use (see `events::insert`).
    /// Declared before `conn`: statements are finalized before their connection closes.
    event_inserts: Vec<static_statement::StaticStatement>,
    conn: Connection,
}

impl std::ops::Deref for Db {
    type Target = Connection;
    fn deref(&self) -> &Connection {
        &self.conn
    }
}

impl std::ops::DerefMut for Db {
    fn deref_mut(&mut self) -> &mut Connection {
        &mut self.conn
    }
}

/// Migrations, in order. Append only: never edit one that has shipped.
const MIGRATIONS: &[&str] = &[
    // 1: key/value settings (e.g. the generated token secret).
    "CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL) STRICT;",
    // 2: issued API keys (see keys.rs): SHA-256 digests only; `keys_version` counts changes so
    // running gateways notice keys created or revoked by the CLI.
    "CREATE TABLE api_keys (
        id TEXT PRIMARY KEY,
        digest BLOB NOT NULL UNIQUE,
        hint TEXT NOT NULL,
        name TEXT,
        route TEXT NOT NULL,
        created INTEGER NOT NULL,
        expires INTEGER,
        revoked INTEGER,
        last_used INTEGER,
        successor TEXT
     ) STRICT;
     CREATE INDEX api_keys_route ON api_keys (route);
     INSERT INTO meta (key, value) VALUES ('keys_version', '0');",
    // 3: the audit log, counts of events recorded only in aggregate, alerts sent.
    events::MIGRATION,
    // 4: the durable delivery queue of async routes (see queue/store.rs).
    crate::queue::store::MIGRATION,
    // 5: no index on the client address. Addresses arrive in no order, so every insert
    // rebalanced a different part of that index: it cost more than the rest of the row
    // (8.8 µs a row with it, 3.7 µs without, 100,000 rows from 1,000 addresses). A query for
    // one address now walks the log from its newest row, bounded by `max_events` (a rare
    // address in a million rows: about 50 ms).
    events::DROP_CLIENT_IP_INDEX,
    // 6: no index on the request id: it cost 2,500 instructions per request (`bench/run
    // --instructions`, a fifth of the row). The id starts with its time, so a lookup reads
    // the events from there (see `events::list_events`).
    events::DROP_REQUEST_ID_INDEX,
    // 7: event ids start with their time, and no index on times: that index cost 1,700
    // instructions a request (see `events::ID_TIME_SHIFT`).
    events::IDS_FROM_TIME,
];

/// A handle on the store. Cheap to clone; calls block, so async code runs them with
/// `tokio::task::spawn_blocking` or off the request path.
#[derive(Clone)]
pub struct Store {
    conn: Arc<Mutex<Db>>,
    /// The file opened and its identity then; `None` in memory.
    file: Option<Arc<OpenedFile>>,
}

/// A store file as opened: its path and its device and inode numbers at the time.
#[derive(Debug)]
struct OpenedFile {
    path: std::path::PathBuf,
    id: (u64, u64),
}

/// `path` with every symlink resolved: the file's own when it exists, else its directory's
/// (a store not made yet); `path` as given when neither resolves.
fn real_path(path: &Path) -> std::path::PathBuf {
    real_path_within(path, 8)
}

fn real_path_within(path: &Path, links: u8) -> std::path::PathBuf {
    if let Ok(p) = std::fs::canonicalize(path) {
        return p;
    }
    // A symlink to a store not made yet: where SQLite will create it.
    if links > 0
        && let Ok(target) = std::fs::read_link(path)
    {
        let target = match path.parent() {
            Some(dir) if target.is_relative() => dir.join(target),
            _ => target,
        };
        return real_path_within(&target, links - 1);
    }
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    match (std::fs::canonicalize(dir), path.file_name()) {
        (Ok(d), Some(name)) => d.join(name),
        _ => path.to_owned(),
    }
}

fn file_id(path: &Path) -> std::io::Result<(u64, u64)> {
    use std::os::unix::fs::MetadataExt as _;
    let m = std::fs::metadata(path)?;
    Ok((m.dev(), m.ino()))
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Store")
    }
}

impl Store {
    /// Opens (creating if needed) the store at `path`, or an in-memory one for `:memory:`, and
    /// brings a file an older hookwarden wrote up to this version's schema. For the server:
    /// commands use [`Store::open_for_command`].
    pub fn open(path: &Path) -> Result<Store, StoreError> {
        Store::open_with(path, true)
    }

    /// Opens the store for a command other than `serve` (`events`, `keys`, `queue`): a new file
    /// is made, but one an older hookwarden wrote is refused ([`StoreError::TooOld`]) rather
    /// than updated, since that version's server may still be writing to it, and rows it
    /// writes after the update would not fit the new schema's rules (migration 7: event ids
    /// start with their time; an older server's rows would not, and lookups by time would miss
    /// them).
    pub fn open_for_command(path: &Path) -> Result<Store, StoreError> {
        Store::open_with(path, false)
    }

    fn open_with(path: &Path, upgrade: bool) -> Result<Store, StoreError> {
        let conn = if path.as_os_str() == ":memory:" {
            Connection::open_in_memory()?
        } else {
            create_private(path)?;
            Connection::open(path)?
        };
        conn.busy_timeout(Duration::from_secs(5))?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        migrate(&conn, &path.display().to_string(), upgrade)?;
        let file = if path.as_os_str() == ":memory:" {
            None
        } else {
            let id = file_id(path).map_err(|source| StoreError::Create {
                path: path.display().to_string(),
                source,
            })?;
            Some(Arc::new(OpenedFile {
                path: path.to_owned(),
                id,
            }))
        };
        Ok(Store {
            conn: Arc::new(Mutex::new(Db {
                event_inserts: Vec::new(),
                conn,
            })),
            file,
        })
    }

    /// Checks that `[storage] path` still names the file this handle opened. An open file
    /// that was deleted, or moved aside and replaced (a restore from backup), goes on working
    /// through its handle, so nothing else would notice: the issued keys' refresh asks this,
    /// so that such a store counts as unreadable (see `keys::KeyCache::check`).
    pub fn check_in_place(&self) -> Result<(), StoreError> {
        let Some(f) = &self.file else {
            return Ok(());
        };
        match file_id(&f.path) {
            Ok(id) if id == f.id => Ok(()),
            _ => Err(StoreError::Replaced {
                path: f.path.display().to_string(),
            }),
        }
    }

    /// Claims the file at `path` for this process's server: an advisory lock on `path` plus
    /// `.lock`, held while the returned file is open. A second `serve` on the same store is
    /// refused ([`StoreError::InUse`]): both would run the delivery queue and send every
    /// message twice, and the listeners (which share ports) would split the traffic between
    /// two configs. The other commands (`events`, `keys`, `queue`) do not claim it. `None` for
    /// an in-memory store.
    pub fn claim(path: &Path) -> Result<Option<std::fs::File>, StoreError> {
        if path.as_os_str() == ":memory:" {
            return Ok(None);
        }
        // Named after the file's real path: a symlink to the store (or a path through one)
        // must find the same lock, or two servers would share the file.
        let mut lock_path = real_path(path).into_os_string();
        lock_path.push(".lock");
        let shown = || path.display().to_string();
        let mut opts = std::fs::OpenOptions::new();
        opts.read(true).write(true).create(true).truncate(false);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
        let file = opts.open(&lock_path).map_err(|source| StoreError::Create {
            path: std::path::PathBuf::from(&lock_path).display().to_string(),
            source,
        })?;
        match file.try_lock() {
            Ok(()) => Ok(Some(file)),
            Err(std::fs::TryLockError::WouldBlock) => Err(StoreError::InUse { path: shown() }),
            // A file system without advisory locks (some network mounts): serve anyway, as
            // before the lock existed, and say what is not guarded.
            Err(std::fs::TryLockError::Error(e)) if e.kind() == std::io::ErrorKind::Unsupported => {
                tracing::warn!(
                    store = %shown(),
                    "the store's file system has no file locks: nothing stops a second `hookwarden serve` on it"
                );
                Ok(None)
            }
            Err(std::fs::TryLockError::Error(source)) => Err(StoreError::Create {
                path: std::path::PathBuf::from(&lock_path).display().to_string(),
                source,
            }),
        }
    }

    /// A second connection to the same file, for long reads (the admin API's queries) that
    /// should not hold the writer's lock. An in-memory store has one connection: a clone.
    pub fn reader(&self, path: &Path) -> Result<Store, StoreError> {
        if path.as_os_str() == ":memory:" {
            Ok(self.clone())
        } else {
            Store::open(path)
        }
    }

    /// Locks the connection for a series of statements.
    pub fn lock(&self) -> MutexGuard<'_, Db> {
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Reads a setting.
    pub fn get_meta(&self, key: &str) -> Result<Option<String>, StoreError> {
        Ok(self
            .lock()
            .query_row("SELECT value FROM meta WHERE key = ?1", [key], |r| r.get(0))
            .optional()?)
    }

    /// Writes a setting.
    pub fn set_meta(&self, key: &str, value: &str) -> Result<(), StoreError> {
        self.lock().execute(
            "INSERT INTO meta (key, value) VALUES (?1, ?2)
             ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            [key, value],
        )?;
        Ok(())
    }

    /// Reads a setting, first writing `initial` if it is unset. Atomic, so two processes
    /// starting on one file agree on the value (e.g. a generated secret).
    pub fn get_or_init_meta(&self, key: &str, initial: &str) -> Result<String, StoreError> {
        let conn = self.lock();
        conn.execute(
            "INSERT INTO meta (key, value) VALUES (?1, ?2) ON CONFLICT (key) DO NOTHING",
            [key, initial],
        )?;
        Ok(conn.query_row("SELECT value FROM meta WHERE key = ?1", [key], |r| r.get(0))?)
    }
}

/// Creates the store file readable by its owner only (it holds the generated token key, key
/// digests and the audit log). SQLite gives its WAL and shared-memory files the same mode. An
/// existing file keeps the mode its owner chose.
fn create_private(path: &Path) -> Result<(), StoreError> {
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
    match opts.open(path) {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(StoreError::Create {
            path: path.display().to_string(),
            source: e,
        }),
    }
}

fn migrate(conn: &Connection, shown: &str, upgrade: bool) -> Result<(), StoreError> {
    let version: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
    let supported = MIGRATIONS.len() as i64;
    if version > supported {
        return Err(StoreError::TooNew {
            path: shown.to_owned(),
            found: version,
            supported,
        });
    }
    // A new file (version 0) is this version's own to set up.
    if !upgrade && version > 0 && version < supported {
        return Err(StoreError::TooOld {
            path: shown.to_owned(),
            found: version,
            supported,
        });
    }
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(version as usize) {
        let tx = conn.unchecked_transaction()?;
        tx.execute_batch(sql)?;
        tx.pragma_update(None, "user_version", (i + 1) as i64)?;
        tx.commit()?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opens_migrates_and_reopens() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("hw.db");
        let s = Store::open(&path).unwrap();
        s.set_meta("a", "1").unwrap();
        s.set_meta("a", "2").unwrap();
        drop(s);
        let s = Store::open(&path).unwrap();
        assert_eq!(s.get_meta("a").unwrap().as_deref(), Some("2"));
        assert_eq!(s.get_meta("b").unwrap(), None);
        let mode: String = s
            .lock()
            .pragma_query_value(None, "journal_mode", |r| r.get(0))
            .unwrap();
        assert_eq!(mode, "wal");
    }

    #[test]
    fn get_or_init_meta_keeps_the_first_value() {
        let s = Store::open(Path::new(":memory:")).unwrap();
        assert_eq!(s.get_or_init_meta("k", "first").unwrap(), "first");
        assert_eq!(s.get_or_init_meta("k", "second").unwrap(), "first");
        assert_eq!(s.get_meta("k").unwrap().as_deref(), Some("first"));
    }

    #[cfg(unix)]
    #[test]
    fn a_new_store_file_is_private_to_its_owner() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("hw.db");
        let s = Store::open(&path).unwrap();
        s.set_meta("a", "1").unwrap();
        for f in ["hw.db", "hw.db-wal"] {
            let mode = std::fs::metadata(dir.path().join(f))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o077, 0, "{f} is readable by others: {mode:o}");
        }
    }

    #[test]
    fn an_older_file_loses_the_client_address_and_request_id_indexes_and_keeps_its_rows() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("hw.db");
        drop(Store::open(&path).unwrap());
        // The file as version 4 left it.
        let c = Connection::open(&path).unwrap();
        c.execute_batch(
            "CREATE INDEX events_client_ip ON events (client_ip, time_ms);
             INSERT INTO events (time_ms, request_id, client_ip, method, status, outcome,
                 latency_us) VALUES (1, 'r1', '192.0.2.1', 'POST', 200, 'allowed', 5);
             PRAGMA user_version = 4;",
        )
        .unwrap();
        drop(c);
        let s = Store::open(&path).unwrap();
        let c = s.lock();
        let index: i64 = c
            .query_row(
                "SELECT COUNT(*) FROM sqlite_schema
                  WHERE name IN ('events_client_ip', 'events_request_id')",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(index, 0);
        let version: i64 = c
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .unwrap();
        assert_eq!(version, MIGRATIONS.len() as i64);
        let rows: i64 = c
            .query_row("SELECT COUNT(*) FROM events", [], |r| r.get(0))
            .unwrap();
        assert_eq!(rows, 1);
    }

    /// A store file as version `version` of the schema left it, without rows.
    fn file_at_version(path: &Path, version: usize) -> Connection {
        let c = Connection::open(path).unwrap();
        for sql in &MIGRATIONS[..version] {
            c.execute_batch(sql).unwrap();
        }
        c.pragma_update(None, "user_version", version as i64)
            .unwrap();
        c
    }

    /// A file from before migration 7: its events keep their order and columns, and their ids
    /// start with their times (each at least its time's first id, above the previous, the old
    /// gaps kept where no time pushes an id up); no index on times is left.
    #[test]
    fn an_older_file_has_its_events_renumbered_from_their_times_in_their_order() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("hw.db");
        let c = file_at_version(&path, 6);
        let t0 = 1_700_000_000_000i64;
        let old = [
            (1, t0 + 5_000),
            (2, t0),
            (3, t0 + 5_999),
            (7, t0 - 60_000),
            (8, t0 + 9_000),
        ];
        for (id, time) in old {
            c.execute(
                "INSERT INTO events (id, time_ms, request_id, client_ip, method, status, outcome,
                     latency_us, user_agent) VALUES (?1, ?2, ?3, '192.0.2.1', 'POST', 200,
                     'allowed', 5, 'agent')",
                rusqlite::params![id, time, format!("r{id}")],
            )
            .unwrap();
        }
        drop(c);
        let s = Store::open(&path).unwrap();
        let c = s.lock();
        let rows: Vec<(i64, i64, String, String)> = c
            .prepare("SELECT id, time_ms, request_id, user_agent FROM events ORDER BY id")
            .unwrap()
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
            .unwrap()
            .map(Result::unwrap)
            .collect();
        let a = events::first_id_at(t0 + 5_000);
        let want: Vec<(i64, i64, String, String)> = [
            (a, t0 + 5_000, "r1"),
            (a + 1, t0, "r2"),
            (a + 2, t0 + 5_999, "r3"),
            (a + 6, t0 - 60_000, "r7"),
            (events::first_id_at(t0 + 9_000), t0 + 9_000, "r8"),
        ]
        .into_iter()
        .map(|(id, time, r)| (id, time, r.to_owned(), "agent".to_owned()))
        .collect();
        assert_eq!(rows, want);
        let indexes: i64 = c
            .query_row(
                "SELECT COUNT(*) FROM sqlite_schema WHERE type = 'index' AND tbl_name = 'events'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(indexes, 0);
        let version: i64 = c
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .unwrap();
        assert_eq!(version, MIGRATIONS.len() as i64);
    }

    /// A command leaves an older file as it is (its server may still be writing to it) and
    /// says what to do; the server updates it; a new file is set up by either.
    #[test]
    fn a_command_refuses_an_older_file_with_advice_and_the_server_updates_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("hw.db");
        let c = file_at_version(&path, 6);
        drop(c);
        let err = Store::open_for_command(&path).unwrap_err();
        assert!(matches!(err, StoreError::TooOld { found: 6, .. }), "{err}");
        let text = err.to_string();
        assert!(
            text.contains("hookwarden serve") && text.contains("older"),
            "{text}"
        );
        let version = |p: &Path| -> i64 {
            Connection::open(p)
                .unwrap()
                .pragma_query_value(None, "user_version", |r| r.get(0))
                .unwrap()
        };
        assert_eq!(version(&path), 6, "left as it was");
        drop(Store::open(&path).unwrap());
        assert_eq!(version(&path), MIGRATIONS.len() as i64);
        drop(Store::open_for_command(&path).unwrap());
        let fresh = dir.path().join("new.db");
        drop(Store::open_for_command(&fresh).unwrap());
        assert_eq!(version(&fresh), MIGRATIONS.len() as i64);
    }

    #[test]
    fn a_newer_file_is_refused_with_advice() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("hw.db");
        drop(Store::open(&path).unwrap());
        let c = Connection::open(&path).unwrap();
        c.pragma_update(None, "user_version", 99).unwrap();
        drop(c);
        let err = Store::open(&path).unwrap_err();
        assert!(matches!(err, StoreError::TooNew { found: 99, .. }));
        assert!(err.to_string().contains("upgrade hookwarden"));
    }
}
