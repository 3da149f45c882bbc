//! Issued API keys: what `hookwarden keys create|list|revoke|rotate` writes, and the in-memory
//! cache the request path reads.
//!
//! A key is shown once, at creation: `hw_` followed by 43 base64url characters (256 random
//! bits), so a leaked key is recognisable in logs and secret scanners. The store keeps only its
//! SHA-256 digest, a short hint (`hw_AbCd…`) to tell keys apart, and metadata: id, name, route,
//! created, expires, revoked, last used, successor.
//!
//! The request path never touches SQLite. [`KeyCache`] holds digest → key in memory, loaded at
//! start; [`KeyCache::maintain`], run every [`REFRESH_EVERY`] off the request path, reloads it
//! when `keys_version` (bumped by every create, revoke and rotate, from any process) changed,
//! and writes the batched `last_used` times. So a key created or revoked with the CLI takes
//! effect on a running gateway within about [`REFRESH_EVERY`] (at most twice that).

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rusqlite::{OptionalExtension, params};
use sha2::{Digest, Sha256};

use super::{Store, StoreError};
use crate::secret::Secret;

/// How often running gateways look for key changes and write `last_used`.
pub const REFRESH_EVERY: Duration = Duration::from_secs(1);

/// The prefix of every issued key.
pub const KEY_PREFIX: &str = "hw_";

/// One issued key as stored (never the key itself).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IssuedKey {
    /// Stable id, shown in `keys list` and recorded in events (`key_…`).
    pub id: String,
    /// Free-form label.
    pub name: Option<String>,
    /// The route the key opens.
    pub route: String,
    /// The key's first characters, to tell keys apart (`hw_AbCd…`).
    pub hint: String,
    /// Unix seconds.
    pub created: i64,
    /// Unix seconds after which the key gets `key_expired`.
    pub expires: Option<i64>,
    /// Unix seconds when it was revoked.
    pub revoked: Option<i64>,
    /// Unix seconds of the last accepted request (written in batches, so a little behind).
    pub last_used: Option<i64>,
    /// The key issued by `keys rotate` to replace this one.
    pub successor: Option<String>,
}

/// What a key is, at some moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyStatus {
    /// Accepted.
    Active,
    /// Past its expiry (`key_expired`).
    Expired,
    /// Revoked (`key_invalid`).
    Revoked,
}

impl IssuedKey {
    /// The key's status at `now`.
    pub fn status(&self, now: i64) -> KeyStatus {
        if self.revoked.is_some() {
            KeyStatus::Revoked
        } else if self.expires.is_some_and(|e| e <= now) {
            KeyStatus::Expired
        } else {
            KeyStatus::Active
        }
    }
}

/// A freshly issued key: the only moment the key exists in clear.
#[derive(Debug)]
pub struct NewKey {
    /// The key, to show once.
    pub key: Secret,
    /// Its record.
    pub record: IssuedKey,
}

/// Why a key operation failed.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// No key has this id.
    #[error("no key with id {0}; `hookwarden keys list` shows the ids")]
    NotFound(String),
    /// The key is revoked: nothing to rotate.
    #[error("key {0} is revoked; issue a new one with `hookwarden keys create`")]
    Revoked(String),
    /// The key has expired: nothing to rotate.
    #[error("key {0} has expired; issue a new one with `hookwarden keys create`")]
    Expired(String),
    /// The key was rotated already: a second successor would orphan the first and cut the
    /// old key's grace period down further.
    #[error(
        "key {id} was rotated already, to {successor}; rotate {successor} instead, or revoke \
         it and rotate again"
    )]
    Rotated {
        /// The key asked for.
        id: String,
        /// Its successor.
        successor: String,
    },
    /// The system's random source failed.
    #[error("cannot get random bytes for a new key: {0}")]
    Random(String),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<rusqlite::Error> for KeyError {
    fn from(e: rusqlite::Error) -> Self {
        KeyError::Store(StoreError::Sqlite(e))
    }
}

/// What `revoke` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Revoked {
    /// Revoked now.
    Now,
    /// It already was, at this time.
    Already(i64),
}

/// SHA-256 of a presented or issued key.
pub fn digest(key: &[u8]) -> [u8; 32] {
    Sha256::digest(key).into()
}

fn random_bytes<const N: usize>() -> Result<[u8; N], KeyError> {
    let mut b = [0u8; N];
    getrandom::fill(&mut b).map_err(|e| KeyError::Random(e.to_string()))?;
    Ok(b)
}

fn secs(d: Duration) -> i64 {
    i64::try_from(d.as_secs()).unwrap_or(i64::MAX)
}

const COLUMNS: &str = "id, name, route, hint, created, expires, revoked, last_used, successor";

fn from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<IssuedKey> {
    Ok(IssuedKey {
        id: r.get(0)?,
        name: r.get(1)?,
        route: r.get(2)?,
        hint: r.get(3)?,
        created: r.get(4)?,
        expires: r.get(5)?,
        revoked: r.get(6)?,
        last_used: r.get(7)?,
        successor: r.get(8)?,
    })
}

fn bump_version(conn: &rusqlite::Connection) -> rusqlite::Result<()> {
    conn.execute(
        "INSERT INTO meta (key, value) VALUES ('keys_version', '1')
         ON CONFLICT (key) DO UPDATE SET value = CAST(CAST(value AS INTEGER) + 1 AS TEXT)",
        [],
    )?;
    Ok(())
}

fn insert_new(
    conn: &rusqlite::Connection,
    route: &str,
    name: Option<&str>,
    expires: Option<i64>,
    now: i64,
) -> Result<NewKey, KeyError> {
    let key = format!(
        "{KEY_PREFIX}{}",
        URL_SAFE_NO_PAD.encode(random_bytes::<32>()?)
    );
    let hint = format!("{}…", &key[..KEY_PREFIX.len() + 4]);
    let id = format!("key_{}", hex::encode(random_bytes::<6>()?));
    conn.execute(
        "INSERT INTO api_keys (id, digest, hint, name, route, created, expires)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        params![
            id,
            &digest(key.as_bytes())[..],
            hint,
            name,
            route,
            now,
            expires
        ],
    )?;
    Ok(NewKey {
        key: Secret::new(key),
        record: IssuedKey {
            id,
            name: name.map(str::to_owned),
            route: route.to_owned(),
            hint,
            created: now,
            expires,
            revoked: None,
            last_used: None,
            successor: None,
        },
    })
}

impl Store {
    /// Issues a key for `route`, valid for `lifetime` (forever when `None`).
    pub fn create_key(
        &self,
        route: &str,
        name: Option<&str>,
        lifetime: Option<Duration>,
        now: i64,
    ) -> Result<NewKey, KeyError> {
        let mut conn = self.lock();
        let tx = conn.transaction()?;
        let expires = lifetime.map(|l| now.saturating_add(secs(l)));
        let new = insert_new(&tx, route, name, expires, now)?;
        bump_version(&tx)?;
        tx.commit()?;
        Ok(new)
    }

    /// Every issued key (of `route`, when given), oldest first.
    pub fn list_keys(&self, route: Option<&str>) -> Result<Vec<IssuedKey>, KeyError> {
        let conn = self.lock();
        let mut stmt = conn.prepare(&format!(
            "SELECT {COLUMNS} FROM api_keys WHERE ?1 IS NULL OR route = ?1 ORDER BY created, id"
        ))?;
        let rows = stmt.query_map([route], from_row)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// One key by id.
    pub fn get_key(&self, id: &str) -> Result<IssuedKey, KeyError> {
        self.lock()
            .query_row(
                &format!("SELECT {COLUMNS} FROM api_keys WHERE id = ?1"),
                [id],
                from_row,
            )
            .optional()?
            .ok_or_else(|| KeyError::NotFound(id.to_owned()))
    }

    /// Revokes a key: from the next cache refresh on it gets `key_invalid`.
    pub fn revoke_key(&self, id: &str, now: i64) -> Result<Revoked, KeyError> {
        let mut conn = self.lock();
        let tx = conn.transaction()?;
        let revoked: Option<Option<i64>> = tx
            .query_row("SELECT revoked FROM api_keys WHERE id = ?1", [id], |r| {
                r.get(0)
            })
            .optional()?;
        let outcome = match revoked {
            None => return Err(KeyError::NotFound(id.to_owned())),
            Some(Some(at)) => Revoked::Already(at),
            Some(None) => {
                tx.execute(
                    "UPDATE api_keys SET revoked = ?2 WHERE id = ?1",
                    params![id, now],
                )?;
                bump_version(&tx)?;
                Revoked::Now
            }
        };
        tx.commit()?;
        Ok(outcome)
    }

    /// Issues a successor to key `id` for the same route and name, and lets the old key expire
    /// after `grace` (or sooner, if it already expires sooner). The successor lives `lifetime`,
    /// or as long as the old key was meant to when `None`.
    pub fn rotate_key(
        &self,
        id: &str,
        grace: Duration,
        lifetime: Option<Duration>,
        now: i64,
    ) -> Result<(NewKey, IssuedKey), KeyError> {
        let mut conn = self.lock();
        let tx = conn.transaction()?;
        let old = tx
            .query_row(
                &format!("SELECT {COLUMNS} FROM api_keys WHERE id = ?1"),
                [id],
                from_row,
            )
            .optional()?
            .ok_or_else(|| KeyError::NotFound(id.to_owned()))?;
        match old.status(now) {
            KeyStatus::Revoked => return Err(KeyError::Revoked(id.to_owned())),
            KeyStatus::Expired => return Err(KeyError::Expired(id.to_owned())),
            KeyStatus::Active => {}
        }
        // The lifetime the key was issued with. A rotation cut its expiry down to the grace
        // period's end, and its successor was issued for that lifetime.
        let mut issued_for = old.expires.map(|e| e.saturating_sub(old.created));
        // A revoked or expired successor (rotated by mistake, compromised, or issued for less
        // time than the old key's grace) frees the key to be rotated again; a live one is the
        // key to rotate.
        if let Some(successor) = &old.successor {
            let next = tx
                .query_row(
                    &format!("SELECT {COLUMNS} FROM api_keys WHERE id = ?1"),
                    [successor],
                    from_row,
                )
                .optional()?;
            match next {
                Some(next) if next.status(now) == KeyStatus::Active => {
                    return Err(KeyError::Rotated {
                        id: id.to_owned(),
                        successor: successor.clone(),
                    });
                }
                // Revoked or expired: the key may be rotated again.
                Some(next) => {
                    issued_for = next.expires.map(|e| e.saturating_sub(next.created));
                }
                None => {}
            }
        }
        let lifetime = lifetime.map(secs).or(issued_for);
        let new = insert_new(
            &tx,
            &old.route,
            old.name.as_deref(),
            lifetime.map(|l| now.saturating_add(l)),
            now,
        )?;
        let grace_end = now.saturating_add(secs(grace));
        let old_expires = old.expires.map_or(grace_end, |e| e.min(grace_end));
        tx.execute(
            "UPDATE api_keys SET expires = ?2, successor = ?3 WHERE id = ?1",
            params![id, old_expires, new.record.id],
        )?;
        bump_version(&tx)?;
        tx.commit()?;
        let old = IssuedKey {
            expires: Some(old_expires),
            successor: Some(new.record.id.clone()),
            ..old
        };
        Ok((new, old))
    }

    /// The counter bumped by every change to the keys' validity.
    pub fn keys_version(&self) -> Result<i64, KeyError> {
        let v: Option<String> = self.get_meta("keys_version")?;
        Ok(v.and_then(|v| v.parse().ok()).unwrap_or(0))
    }

    /// Records when keys were last used; a time never moves backwards.
    pub fn record_last_used(&self, used: &[(Arc<str>, i64)]) -> Result<(), KeyError> {
        let mut conn = self.lock();
        let tx = conn.transaction()?;
        {
            let mut stmt = tx.prepare(
                "UPDATE api_keys SET last_used = max(coalesce(last_used, 0), ?2) WHERE id = ?1",
            )?;
            for (id, at) in used {
                stmt.execute(params![id.as_ref(), at])?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    fn load_cached_keys(&self) -> Result<(i64, HashMap<[u8; 32], CachedKey>), KeyError> {
        let conn = self.lock();
        // Read the version first: a change made while loading is then seen at the next check.
        let version: i64 = conn
            .query_row(
                "SELECT value FROM meta WHERE key = 'keys_version'",
                [],
                |r| r.get::<_, String>(0),
            )
            .optional()?
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        let mut stmt = conn.prepare("SELECT digest, id, route, expires, revoked FROM api_keys")?;
        let rows = stmt.query_map([], |r| {
            let digest: Vec<u8> = r.get(0)?;
            Ok((
                digest,
                CachedKey {
                    id: r.get::<_, String>(1)?.into(),
                    route: r.get::<_, String>(2)?.into(),
                    expires: r.get(3)?,
                    revoked: r.get::<_, Option<i64>>(4)?.is_some(),
                },
            ))
        })?;
        let mut map = HashMap::new();
        for row in rows {
            let (d, key) = row?;
            if let Ok(d) = <[u8; 32]>::try_from(d.as_slice()) {
                map.insert(d, key);
            }
        }
        Ok((version, map))
    }
}

/// What the request path knows of an issued key.
#[derive(Debug, Clone)]
pub struct CachedKey {
    /// The key's id.
    pub id: Arc<str>,
    /// The route it opens.
    pub route: Arc<str>,
    /// Unix seconds.
    pub expires: Option<i64>,
    /// Revoked keys stay known so the audit log can say which key was used.
    pub revoked: bool,
}

/// The verdict on a presented key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyCheck {
    /// Valid for this route.
    Valid(Arc<str>),
    /// Issued for this route but past its expiry.
    Expired(Arc<str>),
    /// Revoked.
    Revoked(Arc<str>),
    /// Issued for another route.
    OtherRoute(Arc<str>),
    /// Not an issued key.
    Unknown,
    /// The issued keys could not be re-read for too long ([`STALE_AFTER`]): a key revoked in
    /// the meantime might still look valid, so none is trusted until the store answers again.
    Stale,
}

/// How long the cache may go without a successful look at the store before issued keys are
/// refused (static keys from the config are not affected).
pub const STALE_AFTER: Duration = Duration::from_secs(60);

fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// Issued keys in memory, for the request path. Cheap to clone.
#[derive(Clone)]
pub struct KeyCache {
    inner: Arc<CacheInner>,
}

struct CacheInner {
    store: Option<Store>,
    keys: ArcSwap<HashMap<[u8; 32], CachedKey>>,
    version: AtomicI64,
    used: Mutex<HashMap<Arc<str>, i64>>,
    /// Unix seconds of the last successful look at the store.
    checked: AtomicI64,
}

impl std::fmt::Debug for KeyCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyCache")
            .field("keys", &self.inner.keys.load().len())
            .finish()
    }
}

impl KeyCache {
    /// A cache with no store behind it: no issued key exists.
    pub fn empty() -> Self {
        KeyCache {
            inner: Arc::new(CacheInner {
                store: None,
                keys: ArcSwap::from_pointee(HashMap::new()),
                version: AtomicI64::new(0),
                used: Mutex::new(HashMap::new()),
                checked: AtomicI64::new(unix_now()),
            }),
        }
    }

    /// Loads every issued key of `store` (blocking).
    pub fn load(store: Store) -> Result<Self, KeyError> {
        let (version, map) = store.load_cached_keys()?;
        Ok(KeyCache {
            inner: Arc::new(CacheInner {
                store: Some(store),
                keys: ArcSwap::from_pointee(map),
                version: AtomicI64::new(version),
                used: Mutex::new(HashMap::new()),
                checked: AtomicI64::new(unix_now()),
            }),
        })
    }

    /// Looks a presented key's digest up for `route` at `now`. The lookup is by digest, so its
    /// timing can only tell about SHA-256 outputs, never about the keys.
    pub fn check(&self, digest: &[u8; 32], route: &str, now: i64) -> KeyCheck {
        let keys = self.inner.keys.load();
        let Some(k) = keys.get(digest) else {
            return KeyCheck::Unknown;
        };
        // The real clock, not `now`: staleness is about this process, not the request.
        let stale_after = i64::try_from(STALE_AFTER.as_secs()).unwrap_or(i64::MAX);
        if self.inner.store.is_some()
            && unix_now().saturating_sub(self.inner.checked.load(Ordering::Acquire)) > stale_after
        {
            return KeyCheck::Stale;
        }
        if k.revoked {
            KeyCheck::Revoked(k.id.clone())
        } else if &*k.route != route {
            KeyCheck::OtherRoute(k.id.clone())
        } else if k.expires.is_some_and(|e| e <= now) {
            KeyCheck::Expired(k.id.clone())
        } else {
            KeyCheck::Valid(k.id.clone())
        }
    }

    /// Pretends the last successful look at the store was `secs_ago` seconds ago (tests).
    #[doc(hidden)]
    pub fn set_checked_ago(&self, secs_ago: i64) {
        self.inner
            .checked
            .store(unix_now() - secs_ago, Ordering::Release);
    }

    /// Notes that key `id` was used at `now`; written by the next [`KeyCache::maintain`].
    pub fn mark_used(&self, id: &Arc<str>, now: i64) {
        let mut used = self.inner.used.lock().unwrap_or_else(|p| p.into_inner());
        used.insert(id.clone(), now);
    }

    /// Issued keys held.
    pub fn len(&self) -> usize {
        self.inner.keys.load().len()
    }

    /// True when no issued key is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Reloads the keys if they changed in the store (from any process); true if reloaded.
    /// Blocking: run it off the request path.
    pub fn refresh(&self) -> Result<bool, KeyError> {
        let Some(store) = &self.inner.store else {
            return Ok(false);
        };
        store.check_in_place()?;
        if store.keys_version()? == self.inner.version.load(Ordering::Acquire) {
            self.inner.checked.store(unix_now(), Ordering::Release);
            return Ok(false);
        }
        let (version, map) = store.load_cached_keys()?;
        self.inner.keys.store(Arc::new(map));
        self.inner.version.store(version, Ordering::Release);
        self.inner.checked.store(unix_now(), Ordering::Release);
        Ok(true)
    }

    /// Writes the pending `last_used` times. Blocking: run it off the request path.
    pub fn flush_used(&self) -> Result<usize, KeyError> {
        let Some(store) = &self.inner.store else {
            return Ok(0);
        };
        let pending: Vec<(Arc<str>, i64)> = {
            let mut used = self.inner.used.lock().unwrap_or_else(|p| p.into_inner());
            used.drain().collect()
        };
        if pending.is_empty() {
            return Ok(0);
        }
        store.record_last_used(&pending)?;
        Ok(pending.len())
    }

    /// One round of housekeeping: refresh, then flush. Errors are logged, not returned: the
    /// cache keeps serving what it has.
    pub fn maintain(&self) {
        if let Err(e) = self.refresh() {
            tracing::warn!(error = %e, "cannot refresh the issued API keys");
        }
        if let Err(e) = self.flush_used() {
            tracing::warn!(error = %e, "cannot record API key use");
        }
    }

    /// Runs [`KeyCache::maintain`] every [`REFRESH_EVERY`] on the blocking pool until aborted.
    pub fn spawn_maintenance(&self) -> tokio::task::JoinHandle<()> {
        let cache = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(REFRESH_EVERY);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let c = cache.clone();
                let _ = tokio::task::spawn_blocking(move || c.maintain()).await;
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: Duration = Duration::from_secs(86_400);

    fn store() -> Store {
        Store::open(std::path::Path::new(":memory:")).unwrap()
    }

    /// The lock of a store reached through a symlink is named after the file it points to,
    /// also before that file exists (the first start, SQLite creating it through the link).
    #[test]
    fn a_store_behind_a_symlink_is_locked_under_its_real_name() {
        let dir = tempfile::tempdir().unwrap();
        let real = dir.path().join("real.db");
        let link = dir.path().join("link.db");
        std::os::unix::fs::symlink("real.db", &link).unwrap();
        let held = Store::claim(&link).unwrap();
        assert!(held.is_some());
        assert!(dir.path().join("real.db.lock").exists());
        assert!(matches!(
            Store::claim(&real),
            Err(crate::store::StoreError::InUse { .. })
        ));
    }

    /// A store file deleted or replaced under a running gateway: the open handle still
    /// reads the old file, so revocations made in the new one would go unseen. The refresh
    /// fails instead, and after a minute of that, issued keys are refused as stale.
    #[test]
    fn a_store_file_replaced_under_the_cache_makes_it_stale() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys.db");
        let s = Store::open(&path).unwrap();
        let k = s.create_key("chat", None, None, 1000).unwrap();
        let cache = KeyCache::load(s.clone()).unwrap();
        let presented = digest(k.key.expose().as_bytes());
        assert!(matches!(
            cache.check(&presented, "chat", 2000),
            KeyCheck::Valid(_)
        ));

        // Moved aside and a copy put back: another file at the same path.
        let aside = dir.path().join("aside.db");
        std::fs::rename(&path, &aside).unwrap();
        std::fs::copy(&aside, &path).unwrap();
        let err = cache.refresh().unwrap_err().to_string();
        assert!(
            err.contains("deleted or replaced") && err.contains("restart"),
            "{err}"
        );
        cache.set_checked_ago(61);
        assert!(matches!(
            cache.check(&presented, "chat", 2000),
            KeyCheck::Stale
        ));

        // Deleted outright.
        let cache = KeyCache::load(Store::open(&path).unwrap()).unwrap();
        cache.refresh().unwrap();
        std::fs::remove_file(&path).unwrap();
        assert!(cache.refresh().is_err());
    }

    #[test]
    fn created_keys_are_prefixed_random_and_stored_only_as_digests() {
        let s = store();
        let a = s
            .create_key("chat", Some("voiceflow"), Some(DAY), 1000)
            .unwrap();
        let b = s.create_key("chat", None, None, 1000).unwrap();
        let key = a.key.expose();
        assert!(key.starts_with("hw_"), "{key}");
        assert_eq!(key.len(), 3 + 43);
        assert_ne!(key, b.key.expose());
        assert_eq!(a.record.hint, format!("{}…", &key[..7]));
        assert_eq!(a.record.expires, Some(1000 + 86_400));
        assert!(a.record.id.starts_with("key_"));
        // The clear key is nowhere in the table.
        let conn = s.lock();
        let mut stmt = conn.prepare("SELECT * FROM api_keys").unwrap();
        let n = stmt.column_count();
        let rows: Vec<String> = stmt
            .query_map([], |r| {
                Ok((0..n)
                    .map(|i| format!("{:?}", r.get_ref(i).unwrap()))
                    .collect::<String>())
            })
            .unwrap()
            .map(Result::unwrap)
            .collect();
        assert_eq!(rows.len(), 2);
        assert!(rows.iter().all(|r| !r.contains(&key[3..])), "{rows:?}");
        drop(stmt);
        let d: Vec<u8> = conn
            .query_row(
                "SELECT digest FROM api_keys WHERE id = ?1",
                [&a.record.id],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(d, digest(key.as_bytes()));
    }

    #[test]
    fn issued_keys_are_refused_while_the_store_cannot_be_reread() {
        let s = store();
        let live = s.create_key("chat", None, None, 1000).unwrap();
        let cache = KeyCache::load(s.clone()).unwrap();
        let d = digest(live.key.expose().as_bytes());
        let id: Arc<str> = live.record.id.as_str().into();
        assert_eq!(cache.check(&d, "chat", 2000), KeyCheck::Valid(id.clone()));
        // No successful look at the store for longer than STALE_AFTER: a revocation could
        // have been missed.
        cache.set_checked_ago(i64::try_from(STALE_AFTER.as_secs()).unwrap() + 1);
        assert_eq!(cache.check(&d, "chat", 2000), KeyCheck::Stale);
        // The store answers again.
        cache.refresh().unwrap();
        assert_eq!(cache.check(&d, "chat", 2000), KeyCheck::Valid(id));
    }

    #[test]
    fn the_cache_answers_every_status() {
        let s = store();
        let live = s.create_key("chat", None, None, 1000).unwrap();
        let short = s
            .create_key("chat", None, Some(Duration::from_secs(10)), 1000)
            .unwrap();
        let other = s.create_key("other", None, None, 1000).unwrap();
        let gone = s.create_key("chat", None, None, 1000).unwrap();
        s.revoke_key(&gone.record.id, 1001).unwrap();
        let cache = KeyCache::load(s.clone()).unwrap();
        let d = |k: &NewKey| digest(k.key.expose().as_bytes());
        assert_eq!(
            cache.check(&d(&live), "chat", 2000),
            KeyCheck::Valid(live.record.id.as_str().into())
        );
        assert_eq!(
            cache.check(&d(&short), "chat", 1009),
            KeyCheck::Valid(short.record.id.as_str().into())
        );
        assert_eq!(
            cache.check(&d(&short), "chat", 1010),
            KeyCheck::Expired(short.record.id.as_str().into())
        );
        assert_eq!(
            cache.check(&d(&other), "chat", 1000),
            KeyCheck::OtherRoute(other.record.id.as_str().into())
        );
        assert_eq!(
            cache.check(&d(&gone), "chat", 1000),
            KeyCheck::Revoked(gone.record.id.as_str().into())
        );
        assert_eq!(
            cache.check(&digest(b"hw_nope"), "chat", 1000),
            KeyCheck::Unknown
        );
    }

    #[test]
    fn refresh_sees_changes_only_when_the_version_moved() {
        let s = store();
        let cache = KeyCache::load(s.clone()).unwrap();
        assert!(!cache.refresh().unwrap());
        let k = s.create_key("chat", None, None, 1000).unwrap();
        let d = digest(k.key.expose().as_bytes());
        assert_eq!(cache.check(&d, "chat", 1000), KeyCheck::Unknown);
        assert!(cache.refresh().unwrap());
        assert!(matches!(cache.check(&d, "chat", 1000), KeyCheck::Valid(_)));
        assert!(!cache.refresh().unwrap());
        // Recording use does not count as a change.
        cache.mark_used(&k.record.id.as_str().into(), 1500);
        assert_eq!(cache.flush_used().unwrap(), 1);
        assert_eq!(cache.flush_used().unwrap(), 0);
        assert!(!cache.refresh().unwrap());
        assert_eq!(s.get_key(&k.record.id).unwrap().last_used, Some(1500));
        // An older time never overwrites a newer one.
        s.record_last_used(&[(k.record.id.as_str().into(), 1200)])
            .unwrap();
        assert_eq!(s.get_key(&k.record.id).unwrap().last_used, Some(1500));
        assert_eq!(s.revoke_key(&k.record.id, 1600).unwrap(), Revoked::Now);
        assert_eq!(
            s.revoke_key(&k.record.id, 1700).unwrap(),
            Revoked::Already(1600)
        );
        assert!(cache.refresh().unwrap());
        assert!(matches!(
            cache.check(&d, "chat", 1000),
            KeyCheck::Revoked(_)
        ));
    }

    #[test]
    fn rotate_issues_a_successor_and_keeps_the_old_key_for_the_grace() {
        let s = store();
        let old = s
            .create_key("chat", Some("agent"), Some(90 * DAY), 1000)
            .unwrap();
        let (new, old_after) = s.rotate_key(&old.record.id, DAY, None, 5000).unwrap();
        assert_eq!(new.record.route, "chat");
        assert_eq!(new.record.name.as_deref(), Some("agent"));
        // Same lifetime as the old key was issued with.
        assert_eq!(new.record.expires, Some(5000 + 90 * 86_400));
        assert_eq!(old_after.expires, Some(5000 + 86_400));
        assert_eq!(old_after.successor.as_deref(), Some(new.record.id.as_str()));
        assert_eq!(s.get_key(&old.record.id).unwrap(), old_after);
        let cache = KeyCache::load(s.clone()).unwrap();
        let d_old = digest(old.key.expose().as_bytes());
        assert!(matches!(
            cache.check(&d_old, "chat", 5000 + 86_399),
            KeyCheck::Valid(_)
        ));
        assert!(matches!(
            cache.check(&d_old, "chat", 5000 + 86_400),
            KeyCheck::Expired(_)
        ));
        // A grace longer than the old key's remaining life does not extend it.
        let short = s
            .create_key("chat", None, Some(Duration::from_secs(60)), 1000)
            .unwrap();
        let (_, short_after) = s.rotate_key(&short.record.id, DAY, None, 1010).unwrap();
        assert_eq!(short_after.expires, Some(1060));

        s.revoke_key(&new.record.id, 6000).unwrap();
        assert!(matches!(
            s.rotate_key(&new.record.id, DAY, None, 6001),
            Err(KeyError::Revoked(_))
        ));
        assert!(matches!(
            s.rotate_key(&old.record.id, DAY, None, 5000 + 86_400),
            Err(KeyError::Expired(_))
        ));
        assert!(matches!(
            s.rotate_key("key_missing", DAY, None, 1),
            Err(KeyError::NotFound(_))
        ));
    }

    /// Rotating a key twice would orphan its first successor and give the second one the
    /// grace period as its lifetime: refused while the successor is live. With the successor
    /// revoked, the key can be rotated again, for the lifetime it was issued with.
    #[test]
    fn a_rotated_key_is_not_rotated_again_while_its_successor_lives() {
        let s = store();
        let old = s.create_key("chat", None, Some(90 * DAY), 1000).unwrap();
        let (first, _) = s.rotate_key(&old.record.id, DAY, None, 2000).unwrap();
        match s.rotate_key(&old.record.id, DAY, None, 3000) {
            Err(e @ KeyError::Rotated { .. }) => {
                assert!(e.to_string().contains(&first.record.id), "{e}");
            }
            other => panic!("rotated twice: {other:?}"),
        }
        s.revoke_key(&first.record.id, 4000).unwrap();
        let (second, after) = s.rotate_key(&old.record.id, DAY, None, 5000).unwrap();
        assert_eq!(second.record.expires, Some(5000 + 90 * 86_400));
        assert_eq!(after.successor.as_deref(), Some(second.record.id.as_str()));
        // The old key's grace is the first rotation's, not extended.
        assert_eq!(after.expires, Some(2000 + 86_400));

        // A successor that expired (issued for less than the grace) frees it too.
        let long = s.create_key("chat", None, Some(90 * DAY), 1000).unwrap();
        let (short, _) = s
            .rotate_key(
                &long.record.id,
                7 * DAY,
                Some(Duration::from_secs(3600)),
                2000,
            )
            .unwrap();
        assert!(matches!(
            s.rotate_key(&long.record.id, DAY, None, 2000 + 3599),
            Err(KeyError::Rotated { .. })
        ));
        let (again, _) = s
            .rotate_key(&long.record.id, DAY, None, 2000 + 3600)
            .unwrap();
        assert_ne!(again.record.id, short.record.id);
    }

    #[test]
    fn list_filters_by_route_in_creation_order() {
        let s = store();
        let a = s.create_key("a", None, None, 1).unwrap();
        let b = s.create_key("b", None, None, 2).unwrap();
        let c = s.create_key("a", None, None, 3).unwrap();
        let ids = |v: Vec<IssuedKey>| v.into_iter().map(|k| k.id).collect::<Vec<String>>();
        assert_eq!(
            ids(s.list_keys(None).unwrap()),
            [
                a.record.id.clone(),
                b.record.id.clone(),
                c.record.id.clone()
            ]
        );
        assert_eq!(
            ids(s.list_keys(Some("a")).unwrap()),
            [a.record.id.clone(), c.record.id.clone()]
        );
        assert!(matches!(s.get_key("nope"), Err(KeyError::NotFound(_))));
    }
}
