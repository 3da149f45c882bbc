//! The audit log in the store: the writer task, the queries shared by `hookwarden events` and
//! the admin API, retention, and the record of alerts sent.
//!
//! One writer owns all inserts. It takes events from a bounded channel (the emitter's
//! `try_send` is the request path's only contact with it) and writes them in batches of up to
//! [`BATCH_MAX`] events or [`BATCH_LINGER`], one transaction per batch. When the channel is
//! full, the emitter hands the event to [`Rollup`] instead, which counts it by minute, route,
//! outcome and reason; the writer stores those counts in `event_counts` with its next batch.
//! So a flood costs the detail of some events, never their existence in the numbers.
//!
//! Retention runs in the writer between batches, in chunks, by age (`[storage] keep`) and by
//! count (`[storage] max_events`).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use rusqlite::types::Value;
use rusqlite::{Connection, params, params_from_iter};
use serde::Serialize;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use super::static_statement::{Param, StaticStatement};
use super::{Store, StoreError};
use crate::events::{Emitter, Event, Outcome};
use crate::policy::Reason;

/// Events written in one transaction at most.
pub const BATCH_MAX: usize = 500;
/// How long the writer waits for more events to fill a batch. Short, so that under load the
/// writer works in small steps: with 200 ms, a backlog of thousands of events built up while
/// it slept and was then written in one burst of tens of milliseconds, which took a core from
/// the request threads and doubled the gateway's added p99 latency at half load (+2.1 ms
/// against +1.05 ms with 20 ms, `bench/run`). More, smaller transactions cost about 1,000
/// instructions per request at low rates.
pub const BATCH_LINGER: Duration = Duration::from_millis(20);
/// Events the writer's queue holds; beyond it events are aggregated into counts.
pub const QUEUE_CAPACITY: usize = 10_000;
/// How often retention runs.
const RETENTION_EVERY: Duration = Duration::from_secs(60);
/// Rows deleted per retention statement, so other store users get the lock in between.
const DELETE_CHUNK: i64 = 5_000;
/// Granularity of the counts kept for events the writer could not take.
const ROLLUP_BUCKET_MS: i64 = 60_000;

/// Migration 5 (see `store::MIGRATIONS`).
pub(super) const DROP_CLIENT_IP_INDEX: &str = "DROP INDEX IF EXISTS events_client_ip;";
/// Migration 6 (see `store::MIGRATIONS`).
pub(super) const DROP_REQUEST_ID_INDEX: &str = "DROP INDEX IF EXISTS events_request_id;";

/// How much earlier than its request id's time an event may be stamped. A request's event takes
/// its time a moment before the id is made; every later event under the same id (a queued
/// message's dead-lettering) is later still. The margin covers the clock being set back a
/// little in between.
const REQUEST_ID_SKEW_MS: i64 = 60_000;

/// The time in milliseconds at the start of a request id the gateway made (twelve hex digits,
/// see `gateway::new_request_id`), or `None` for any other id.
fn request_id_time(id: &str) -> Option<i64> {
    if id.len() != 32 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    i64::from_str_radix(&id[..12], 16).ok()
}

/// Event ids start with their time: an event's id is at least its time in seconds shifted left
/// by this many bits, and above the id written before it. So ids grow in the order events are
/// written (`--follow` asks for `id > last`), and an event stamped at or after a time `T` has
/// an id at or above `first_id_at(T)`: a lookup by time reads a range of the table's own key.
/// An index on times did the same for 1,700 instructions a request (`bench/run
/// --instructions`, `plain`): events are stamped when their request starts and written when it
/// ends, so that index took them out of order. Most events take the id after the last one
/// (SQLite's own choice for a row without one, which is cheap); only the first event of a new
/// second is given its time's first id. Twenty bits leave a million ids a second before ids
/// run ahead of the clock, and keep ids below 2^53 (exact in JavaScript, for the dashboard)
/// until the year 2242.
pub const ID_TIME_SHIFT: u32 = 20;

/// The smallest id an event stamped at `time_ms` can have.
pub fn first_id_at(time_ms: i64) -> i64 {
    time_ms.div_euclid(1000).saturating_mul(1 << ID_TIME_SHIFT)
}

/// Migration 7 (see `store::MIGRATIONS`): events renumbered so that ids start with their time
/// (see [`ID_TIME_SHIFT`]), in their order, and no index on times. Each id becomes
/// `max(previous new id + (id - previous id), first_id_at(time))`, written as a running
/// maximum: `new_i = id_i + max over j <= i of (first_id_at(time_j) - id_j)`. So new ids keep
/// the gaps between old ones where no time pushes them up, grow strictly (old ids do, in id
/// order), and are at least their time's first id. (SQL's division truncates toward zero
/// where `first_id_at` floors: the same for times after 1970, a higher floor before.)
pub(super) const IDS_FROM_TIME: &str = "
CREATE TABLE events_renumbered (
    id INTEGER PRIMARY KEY,
    time_ms INTEGER NOT NULL,
    request_id TEXT NOT NULL,
    route TEXT,
    client_ip TEXT NOT NULL,
    method TEXT NOT NULL,
    status INTEGER NOT NULL,
    outcome TEXT NOT NULL,
    reason TEXT,
    detail TEXT,
    flags TEXT,
    key_id TEXT,
    session_id TEXT,
    latency_us INTEGER NOT NULL,
    upstream_status INTEGER,
    upstream_latency_us INTEGER,
    user_agent TEXT
) STRICT;
INSERT INTO events_renumbered
SELECT id + MAX(((time_ms / 1000) << 20) - id) OVER (ORDER BY id ROWS UNBOUNDED PRECEDING),
       time_ms, request_id, route, client_ip, method, status, outcome, reason, detail, flags,
       key_id, session_id, latency_us, upstream_status, upstream_latency_us, user_agent
  FROM events ORDER BY id;
DROP TABLE events;
ALTER TABLE events_renumbered RENAME TO events;
";

/// Schema of the audit log (appended to the store's migrations).
pub(super) const MIGRATION: &str = "
CREATE TABLE events (
    id INTEGER PRIMARY KEY,
    time_ms INTEGER NOT NULL,
    request_id TEXT NOT NULL,
    route TEXT,
    client_ip TEXT NOT NULL,
    method TEXT NOT NULL,
    status INTEGER NOT NULL,
    outcome TEXT NOT NULL,
    reason TEXT,
    detail TEXT,
    flags TEXT,
    key_id TEXT,
    session_id TEXT,
    latency_us INTEGER NOT NULL,
    upstream_status INTEGER,
    upstream_latency_us INTEGER,
    user_agent TEXT
) STRICT;
CREATE INDEX events_time ON events (time_ms);
CREATE INDEX events_request_id ON events (request_id);
CREATE INDEX events_client_ip ON events (client_ip, time_ms);
CREATE TABLE event_counts (
    bucket_ms INTEGER NOT NULL,
    route TEXT NOT NULL,
    outcome TEXT NOT NULL,
    reason TEXT NOT NULL,
    count INTEGER NOT NULL,
    PRIMARY KEY (bucket_ms, route, outcome, reason)
) STRICT;
CREATE TABLE alerts (
    id INTEGER PRIMARY KEY,
    time_ms INTEGER NOT NULL,
    name TEXT NOT NULL,
    matched INTEGER NOT NULL,
    threshold INTEGER NOT NULL,
    window_ms INTEGER NOT NULL,
    route TEXT,
    result TEXT NOT NULL,
    attempts INTEGER NOT NULL,
    http_status INTEGER,
    error TEXT
) STRICT;
CREATE INDEX alerts_time ON alerts (time_ms);
";

/// How long and how many audit events are kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    /// Age limit.
    pub keep: Duration,
    /// Count limit.
    pub max_events: u64,
    /// Store allowed requests row by row (else only their per-minute counts).
    pub audit_allowed: bool,
}

/// Counts of events the writer could not take one by one, by minute, route, outcome, reason.
#[derive(Debug, Default)]
pub struct Rollup {
    counts: Mutex<HashMap<RollupKey, i64>>,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct RollupKey {
    bucket_ms: i64,
    route: Arc<str>,
    outcome: &'static str,
    reason: &'static str,
}

impl Rollup {
    /// Counts one event.
    pub fn add(&self, e: &Event) {
        let key = RollupKey {
            bucket_ms: e.time.as_millisecond().div_euclid(ROLLUP_BUCKET_MS) * ROLLUP_BUCKET_MS,
            route: e.route.clone().unwrap_or_else(|| Arc::from("")),
            outcome: e.outcome.as_str(),
            reason: e.reason.map(Reason::as_str).unwrap_or(""),
        };
        *self
            .counts
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(key)
            .or_insert(0) += 1;
    }

    fn take(&self) -> HashMap<RollupKey, i64> {
        std::mem::take(&mut *self.counts.lock().unwrap_or_else(|p| p.into_inner()))
    }

    fn put_back(&self, counts: HashMap<RollupKey, i64>) {
        let mut map = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        for (k, n) in counts {
            *map.entry(k).or_insert(0) += n;
        }
    }
}

/// The running audit writer.
pub struct AuditWriter {
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl AuditWriter {
    /// Subscribes to `emitter` and starts the writer on `store`.
    pub fn start(
        store: Store,
        emitter: &Emitter,
        retention: Arc<ArcSwap<Retention>>,
    ) -> AuditWriter {
        AuditWriter::start_with_capacity(store, emitter, retention, QUEUE_CAPACITY)
    }

    /// Like [`AuditWriter::start`] with a queue of `capacity` events.
    pub fn start_with_capacity(
        store: Store,
        emitter: &Emitter,
        retention: Arc<ArcSwap<Retention>>,
        capacity: usize,
    ) -> AuditWriter {
        let rollup = Arc::new(Rollup::default());
        let overflow = rollup.clone();
        let rx = emitter.subscribe_with_overflow(
            "audit",
            capacity,
            Arc::new(move |e: &Event| overflow.add(e)),
        );
        let (stop_tx, stop_rx) = oneshot::channel();
        let task = tokio::spawn(run_writer(store, rx, rollup, retention, stop_rx));
        AuditWriter {
            stop: Some(stop_tx),
            task: Some(task),
        }
    }

    /// Writes what is queued and stops (waits at most `timeout`).
    pub async fn finish(mut self, timeout: Duration) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.task.take()
            && tokio::time::timeout(timeout, t).await.is_err()
        {
            tracing::warn!("audit writer did not finish in time; some events may be missing");
        }
    }
}

impl Drop for AuditWriter {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
    }
}

async fn run_writer(
    store: Store,
    mut rx: mpsc::Receiver<Arc<Event>>,
    rollup: Arc<Rollup>,
    retention: Arc<ArcSwap<Retention>>,
    mut stop: oneshot::Receiver<()>,
) {
    let mut tick = tokio::time::interval(RETENTION_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let mut batch: Vec<Arc<Event>> = Vec::with_capacity(64);
        let mut stopping = false;
        tokio::select! {
            biased;
            _ = &mut stop => stopping = true,
            n = rx.recv_many(&mut batch, BATCH_MAX) => {
                if n == 0 {
                    stopping = true;
                }
            }
            _ = tick.tick() => {
                let r = **retention.load();
                let s = store.clone();
                let rollup = rollup.clone();
                let _ = tokio::task::spawn_blocking(move || {
                    write_batch(&s, &[], &rollup);
                    if let Err(e) = apply_retention(&s, jiff::Timestamp::now(), r) {
                        tracing::error!(error = %e, "audit retention failed");
                    }
                })
                .await;
                continue;
            }
        }
        if stopping {
            while let Ok(e) = rx.try_recv() {
                batch.push(e);
            }
        } else if batch.len() < BATCH_MAX {
            // Sleep, then take what arrived, rather than awaiting each event: waiting on the
            // channel would have every request wake this task from a listener thread (a
            // futex call per request); a sleeping task is woken at most once.
            tokio::time::sleep(BATCH_LINGER).await;
            while batch.len() < BATCH_MAX {
                match rx.try_recv() {
                    Ok(e) => batch.push(e),
                    Err(_) => break,
                }
            }
        }
        if !retention.load().audit_allowed {
            // Allowed requests are only counted, like events the writer could not take.
            batch.retain(|e| {
                let keep = e.outcome != crate::events::Outcome::Allowed;
                if !keep {
                    rollup.add(e);
                }
                keep
            });
        }
        let s = store.clone();
        let r = rollup.clone();
        let _ = tokio::task::spawn_blocking(move || write_batch(&s, &batch, &r)).await;
        if stopping {
            return;
        }
    }
}

/// Writes `batch` and the pending rollup counts in one transaction. On failure the counts are
/// kept for the next try and the events are logged as lost (they are still in the log lines).
fn write_batch(store: &Store, batch: &[Arc<Event>], rollup: &Rollup) {
    let counts = rollup.take();
    if batch.is_empty() && counts.is_empty() {
        return;
    }
    let mut conn = store.lock();
    match insert(&mut conn, batch, &counts) {
        Ok(()) => {}
        Err(e) => {
            drop(conn);
            rollup.put_back(counts);
            tracing::error!(error = %e, lost = batch.len(), "cannot write audit events");
        }
    }
}

fn insert(
    db: &mut super::Db,
    batch: &[Arc<Event>],
    counts: &HashMap<RollupKey, i64>,
) -> rusqlite::Result<()> {
    let super::Db {
        event_inserts,
        conn,
    } = db;
    if event_inserts.is_empty() && !batch.is_empty() {
        // All or none: the loop below pairs each size with its statement.
        *event_inserts = insert_statements()
            .iter()
            .map(|(_, sql)| StaticStatement::prepare(conn, sql))
            .collect::<rusqlite::Result<_>>()?;
    }
    // Immediate: the last id is read under the write lock the rows are written under, so
    // another process writing to the file cannot take an id in between.
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    {
        let mut last: i64 = if batch.is_empty() {
            0
        } else {
            tx.prepare_cached("SELECT COALESCE(MAX(id), 0) FROM events")?
                .query_row([], |r| r.get(0))?
        };
        let mut rest = batch;
        for ((rows, _), stmt) in insert_statements().iter().zip(event_inserts.iter_mut()) {
            let rows = *rows;
            while rest.len() >= rows {
                let (now, later) = rest.split_at(rows);
                // The texts a row is bound to that the event does not hold: its address and
                // flags.
                let texts: Vec<(String, Option<String>)> = now
                    .iter()
                    .map(|e| {
                        let flags = (!e.flags.is_empty()).then(|| {
                            e.flags
                                .iter()
                                .map(|f| f.as_str())
                                .collect::<Vec<_>>()
                                .join(",")
                        });
                        (crate::policy::client_ip::ip_string(e.client_ip), flags)
                    })
                    .collect();
                let mut values = Vec::with_capacity(rows * EVENT_COLUMNS);
                for (e, (ip, flags)) in now.iter().zip(&texts) {
                    // No id (NULL) is SQLite's "the largest plus one", found without a search
                    // of the table; an id given is looked up first.
                    let floor = first_id_at(e.time.as_millisecond());
                    let id = if last < floor {
                        last = floor;
                        Some(floor)
                    } else {
                        last = last.saturating_add(1);
                        None
                    };
                    event_values(&mut values, id, e, ip, flags.as_deref());
                }
                stmt.execute(&tx, &values)?;
                rest = later;
            }
        }
        if !rest.is_empty() {
            // Cannot happen (the last size is one row); never commit a batch short of rows.
            return Err(rusqlite::Error::SqliteFailure(
                rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_INTERNAL),
                Some(format!("{} audit rows left unwritten", rest.len())),
            ));
        }
        let mut up = tx.prepare_cached(
            "INSERT INTO event_counts (bucket_ms, route, outcome, reason, count)
             VALUES (?1, ?2, ?3, ?4, ?5)
             ON CONFLICT (bucket_ms, route, outcome, reason)
             DO UPDATE SET count = count + excluded.count",
        )?;
        for (k, n) in counts {
            up.execute(params![k.bucket_ms, &*k.route, k.outcome, k.reason, n])?;
        }
    }
    tx.commit()
}

/// Rows per `INSERT` statement, largest first; a batch is written in as few statements as
/// these sizes allow. One statement for many rows costs about 2,000 instructions a row less
/// than a statement per row (`bench/run --instructions`): the statement's start, end and
/// reset are paid once; 128 rows instead of 32 save about 120 more (`bench/row-shapes`).
const INSERT_ROWS: &[usize] = &[128, 32, 8, 1];
/// Columns bound per event.
const EVENT_COLUMNS: usize = 17;

/// For each of [`INSERT_ROWS`], largest first, that many rows and the `INSERT INTO events …
/// VALUES (…), (…)` statement for them.
fn insert_statements() -> &'static [(usize, String)] {
    static SQL: std::sync::LazyLock<Vec<(usize, String)>> = std::sync::LazyLock::new(|| {
        INSERT_ROWS
            .iter()
            .map(|&n| (n, build_insert_sql(n)))
            .collect()
    });
    &SQL
}

fn build_insert_sql(rows: usize) -> String {
    let mut sql = String::from(
        "INSERT INTO events (id, time_ms, request_id, route, client_ip, method, status, outcome, \
         reason, detail, flags, key_id, session_id, latency_us, upstream_status, \
         upstream_latency_us, user_agent) VALUES ",
    );
    for r in 0..rows {
        sql.push_str(if r == 0 { "(" } else { ", (" });
        for c in 1..=EVENT_COLUMNS {
            if c > 1 {
                sql.push_str(", ");
            }
            sql.push('?');
            sql.push_str(&(r * EVENT_COLUMNS + c).to_string());
        }
        sql.push(')');
    }
    sql
}

/// Appends one event's [`EVENT_COLUMNS`] values, in the statement's column order: its id
/// (`None`: the next), then its fields; `ip` and `flags` are its address and flags as text.
fn event_values<'a>(
    out: &mut Vec<Param<'a>>,
    id: Option<i64>,
    e: &'a Event,
    ip: &'a str,
    flags: Option<&'a str>,
) {
    let int = |v: Option<i64>| v.map_or(Param::Null, Param::Int);
    let text = |v: Option<&'a str>| v.map_or(Param::Null, Param::Text);
    out.extend([
        int(id),
        Param::Int(e.time.as_millisecond()),
        Param::Text(&e.request_id),
        text(e.route.as_deref()),
        Param::Text(ip),
        Param::Text(&e.method),
        Param::Int(i64::from(e.status)),
        Param::Text(e.outcome.as_str()),
        text(e.reason.map(Reason::as_str)),
        text(e.detail),
        text(flags),
        text(e.key_id.as_deref()),
        text(e.session_id.as_deref()),
        Param::Int(micros(e.latency)),
        int(e.upstream_status.map(i64::from)),
        int(e.upstream_latency.map(micros)),
        text(e.user_agent.as_deref()),
    ]);
}

fn micros(d: Duration) -> i64 {
    i64::try_from(d.as_micros()).unwrap_or(i64::MAX)
}

/// Deletes events (and counts and alert records) older than `keep`, then the oldest events
/// beyond `max_events`. Returns the number of events deleted.
pub fn apply_retention(
    store: &Store,
    now: jiff::Timestamp,
    r: Retention,
) -> Result<u64, StoreError> {
    let keep_ms = i64::try_from(r.keep.as_millis()).unwrap_or(i64::MAX);
    let cutoff = now.as_millisecond().saturating_sub(keep_ms);
    let mut deleted = 0u64;
    // Every event below the cutoff's first id is older than the cutoff (ids are at least their
    // time's first id). One stamped earlier but written after a later one (a long streamed
    // answer) has a higher id and goes when the cutoff passes the time it was written.
    loop {
        let n = store.lock().execute(
            "DELETE FROM events WHERE id IN
               (SELECT id FROM events WHERE id < ?1 ORDER BY id LIMIT ?2)",
            params![first_id_at(cutoff), DELETE_CHUNK],
        )?;
        deleted += n as u64;
        if (n as i64) < DELETE_CHUNK {
            break;
        }
    }
    {
        let conn = store.lock();
        conn.execute("DELETE FROM event_counts WHERE bucket_ms < ?1", [cutoff])?;
        conn.execute("DELETE FROM alerts WHERE time_ms < ?1", [cutoff])?;
    }
    let max = i64::try_from(r.max_events).unwrap_or(i64::MAX);
    let cut: Option<i64> = {
        let conn = store.lock();
        let mut stmt = conn.prepare("SELECT id FROM events ORDER BY id DESC LIMIT 1 OFFSET ?1")?;
        let mut rows = stmt.query([max])?;
        match rows.next()? {
            Some(row) => Some(row.get(0)?),
            None => None,
        }
    };
    if let Some(cut) = cut {
        loop {
            let n = store.lock().execute(
                "DELETE FROM events WHERE id IN
                   (SELECT id FROM events WHERE id <= ?1 ORDER BY id LIMIT ?2)",
                params![cut, DELETE_CHUNK],
            )?;
            deleted += n as u64;
            if (n as i64) < DELETE_CHUNK {
                break;
            }
        }
    }
    if deleted > 0 {
        tracing::info!(deleted, "audit retention: old events deleted");
    }
    Ok(deleted)
}

/// Which events to list. Empty fields match everything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EventFilter {
    /// Route name.
    pub route: Option<String>,
    /// Outcome.
    pub outcome: Option<Outcome>,
    /// Reason code.
    pub reason: Option<Reason>,
    /// Client address.
    pub ip: Option<IpAddr>,
    /// The request id an error response showed the client.
    pub request_id: Option<String>,
    /// Events at or after this time.
    pub since: Option<jiff::Timestamp>,
    /// Events with an id above this one, oldest first (for `--follow`); otherwise newest first.
    pub after_id: Option<i64>,
    /// Events with an id below this one (paging back).
    pub before_id: Option<i64>,
    /// At most this many.
    pub limit: u32,
}

/// Filters as a person types them (CLI flags, API query parameters), before checking.
#[derive(Debug, Clone, Default, serde::Deserialize)]
pub struct FilterArgs {
    /// Route name.
    pub route: Option<String>,
    /// `allowed`, `denied` or `failed`.
    pub outcome: Option<String>,
    /// A reason code.
    pub reason: Option<String>,
    /// A duration back from now, e.g. `1h`.
    pub since: Option<String>,
    /// A client address.
    pub ip: Option<String>,
    /// A request id, as an error response shows it.
    pub request_id: Option<String>,
    /// At most this many events (more than the caller's maximum is read as the maximum,
    /// however large).
    #[serde(default, deserialize_with = "whole_number")]
    pub limit: Option<u64>,
    /// Events with a smaller id (paging back).
    pub before: Option<i64>,
    /// Events with a larger id, oldest first (following).
    pub after: Option<i64>,
}

/// A count from a query string: a whole number of any size (one too large for `u64` is read as
/// the largest, as any count over a page's maximum is read as that maximum).
pub fn whole_number<'de, D>(d: D) -> Result<Option<u64>, D::Error>
where
    D: serde::Deserializer<'de>,
{
    use serde::Deserialize as _;
    match Option::<String>::deserialize(d)? {
        None => Ok(None),
        Some(s) if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) => {
            Ok(Some(s.parse().unwrap_or(u64::MAX)))
        }
        Some(_) => Err(serde::de::Error::custom("not a whole number")),
    }
}

impl FilterArgs {
    /// Checks the values; errors are sentences naming the filter and what it accepts.
    pub fn resolve(&self, now: jiff::Timestamp, max_limit: u32) -> Result<EventFilter, String> {
        let outcome =
            match self.outcome.as_deref().filter(|s| !s.is_empty()) {
                None => None,
                Some(o) => Some(Outcome::from_code(o).ok_or_else(|| {
                    format!("outcome \"{o}\" is not one of allowed, denied, failed")
                })?),
            };
        let reason = match self.reason.as_deref().filter(|s| !s.is_empty()) {
            None => None,
            Some(r) => Some(Reason::from_code(r).ok_or_else(|| {
                let known: Vec<&str> = Reason::ALL.iter().map(|r| r.as_str()).collect();
                format!(
                    "reason \"{r}\" is not a reason code; known codes: {}",
                    known.join(", ")
                )
            })?),
        };
        let since = match self.since.as_deref().filter(|s| !s.is_empty()) {
            None => None,
            Some(s) => {
                let d = crate::config::units::parse_duration(s)
                    .map_err(|e| format!("since: {e}; write e.g. 30m, 1h or 7d"))?;
                let d = jiff::SignedDuration::try_from(d)
                    .map_err(|_| format!("since: \"{s}\" is too long"))?;
                Some(
                    now.checked_sub(d)
                        .map_err(|_| format!("since: \"{s}\" is too long"))?,
                )
            }
        };
        let ip = match self.ip.as_deref().filter(|s| !s.is_empty()) {
            None => None,
            Some(a) => Some(
                a.parse::<IpAddr>()
                    .map_err(|_| format!("ip \"{a}\" is not an IP address"))?,
            ),
        };
        let request_id = match self.request_id.as_deref().map(str::trim) {
            None | Some("") => None,
            Some(id)
                if id.len() <= 64 && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') =>
            {
                Some(id.to_ascii_lowercase())
            }
            Some(_) => {
                return Err(
                    "request_id is not a request id; copy the \"request_id\" of the error \
                     response (32 hex digits)"
                        .into(),
                );
            }
        };
        // Event ids start at 1: `before=0` or below would silently match nothing.
        if self.before.is_some_and(|b| b < 1) {
            return Err("before must be an event id (1 or more)".to_owned());
        }
        if self.after.is_some_and(|a| a < 0) {
            return Err("after must be an event id, or 0 for the first event on".to_owned());
        }
        Ok(EventFilter {
            route: self.route.clone().filter(|s| !s.is_empty()),
            outcome,
            reason,
            ip,
            request_id,
            since,
            after_id: self.after,
            before_id: self.before,
            limit: match self.limit {
                Some(0) => return Err("limit must be 1 or more".to_owned()),
                l => u32::try_from(l.unwrap_or(100)).map_or(max_limit, |l| l.min(max_limit)),
            },
        })
    }
}

/// One stored event, as the CLI and the API show it.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct StoredEvent {
    /// Row id: increases with every event written, and starts with the event's time (see
    /// [`ID_TIME_SHIFT`]).
    pub id: i64,
    /// When the request arrived (RFC 3339, UTC).
    pub time: String,
    /// The request id.
    pub request_id: String,
    /// The route, when the path matched one.
    pub route: Option<String>,
    /// The client address.
    pub client_ip: String,
    /// The method.
    pub method: String,
    /// The status sent.
    pub status: u16,
    /// `allowed`, `denied` or `failed`.
    pub outcome: String,
    /// The reason code.
    pub reason: Option<String>,
    /// Which step failed, for reasons with several.
    pub detail: Option<String>,
    /// Alert-mode findings.
    pub flags: Vec<String>,
    /// The API key's id.
    pub key_id: Option<String>,
    /// The browser session.
    pub session_id: Option<String>,
    /// Time to response headers, in milliseconds.
    pub latency_ms: f64,
    /// The upstream's status.
    pub upstream_status: Option<u16>,
    /// The upstream's time to response headers, in milliseconds.
    pub upstream_latency_ms: Option<f64>,
    /// The User-Agent, truncated.
    pub user_agent: Option<String>,
}

/// Lists events matching `f`.
pub fn list_events(conn: &Connection, f: &EventFilter) -> Result<Vec<StoredEvent>, StoreError> {
    let (sql, args) = events_query(f);
    let mut stmt = conn.prepare(&sql)?;
    let rows = stmt.query_map(params_from_iter(args), |r| {
        let time_ms: i64 = r.get(1)?;
        let flags: Option<String> = r.get(10)?;
        let latency_us: i64 = r.get(13)?;
        let up_us: Option<i64> = r.get(15)?;
        Ok(StoredEvent {
            id: r.get(0)?,
            time: format_ms(time_ms),
            request_id: r.get(2)?,
            route: r.get(3)?,
            client_ip: r.get(4)?,
            method: r.get(5)?,
            status: r.get(6)?,
            outcome: r.get(7)?,
            reason: r.get(8)?,
            detail: r.get(9)?,
            flags: flags
                .map(|s| s.split(',').map(str::to_owned).collect())
                .unwrap_or_default(),
            key_id: r.get(11)?,
            session_id: r.get(12)?,
            latency_ms: latency_us as f64 / 1000.0,
            upstream_status: r.get(14)?,
            upstream_latency_ms: up_us.map(|u| u as f64 / 1000.0),
            user_agent: r.get(16)?,
        })
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// The statement and parameters [`list_events`] runs for `f`.
fn events_query(f: &EventFilter) -> (String, Vec<Value>) {
    let mut sql = String::from(
        "SELECT id, time_ms, request_id, route, client_ip, method, status, outcome, reason,
                detail, flags, key_id, session_id, latency_us, upstream_status,
                upstream_latency_us, user_agent
         FROM events",
    );
    // No index on request ids (migration 6): a request's events are found from the time its
    // id starts with, as a range of event ids (see `ID_TIME_SHIFT`).
    let id_time = f.request_id.as_deref().and_then(request_id_time);
    sql.push_str(" WHERE 1 = 1");
    let mut args: Vec<Value> = Vec::new();
    let mut add = |cond: &str, v: Value| {
        args.push(v);
        sql.push_str(&format!(" AND {cond} ?{}", args.len()));
    };
    if let Some(r) = &f.route {
        add("route =", Value::Text(r.clone()));
    }
    if let Some(o) = f.outcome {
        add("outcome =", Value::Text(o.as_str().into()));
    }
    if let Some(r) = f.reason {
        add("reason =", Value::Text(r.as_str().into()));
    }
    if let Some(ip) = f.ip {
        add("client_ip =", Value::Text(ip.to_canonical().to_string()));
    }
    if let Some(id) = &f.request_id {
        add("request_id =", Value::Text(id.clone()));
    }
    if let Some(t) = id_time {
        add(
            "id >=",
            Value::Integer(first_id_at(t.saturating_sub(REQUEST_ID_SKEW_MS))),
        );
    }
    if let Some(t) = f.since {
        let ms = t.as_millisecond();
        add("id >=", Value::Integer(first_id_at(ms)));
        add("time_ms >=", Value::Integer(ms));
    }
    if let Some(id) = f.after_id {
        add("id >", Value::Integer(id));
    }
    if let Some(id) = f.before_id {
        add("id <", Value::Integer(id));
    }
    sql.push_str(if f.after_id.is_some() {
        " ORDER BY id ASC"
    } else {
        " ORDER BY id DESC"
    });
    args.push(Value::Integer(i64::from(f.limit.max(1))));
    sql.push_str(&format!(" LIMIT ?{}", args.len()));
    (sql, args)
}

/// Number of events recorded only as counts (the writer was behind) since `since`.
pub fn aggregated_since(conn: &Connection, since: jiff::Timestamp) -> Result<i64, StoreError> {
    let bucket = since.as_millisecond().div_euclid(ROLLUP_BUCKET_MS) * ROLLUP_BUCKET_MS;
    Ok(conn.query_row(
        "SELECT COALESCE(SUM(count), 0) FROM event_counts WHERE bucket_ms >= ?1",
        [bucket],
        |r| r.get(0),
    )?)
}

fn format_ms(ms: i64) -> String {
    // Always three decimals: the strings line up in a table and sort as text.
    jiff::Timestamp::from_millisecond(ms)
        .map(|t| t.strftime("%Y-%m-%dT%H:%M:%S%.3fZ").to_string())
        .unwrap_or_else(|_| ms.to_string())
}

/// Counts over a time window, for the dashboard and `GET /api/stats`.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Stats {
    /// The window, in seconds.
    pub window_seconds: u64,
    /// The width of one point of `series`, in seconds.
    pub bucket_seconds: u64,
    /// Start of the window (RFC 3339).
    pub since: String,
    /// Totals by outcome.
    pub totals: OutcomeCounts,
    /// Requests per bucket by outcome, oldest first; buckets without requests are included.
    pub series: Vec<SeriesPoint>,
    /// Counts by route, outcome and reason, largest first.
    pub counts: Vec<Count>,
    /// Denials by reason, largest first.
    pub denials_by_reason: Vec<Named>,
    /// Client addresses with the most denials.
    pub top_ips: Vec<Named>,
    /// API keys with the most denials.
    pub top_keys: Vec<Named>,
    /// Events in the window recorded only as counts (the audit writer was behind).
    pub aggregated: i64,
}

/// Counts by outcome.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct OutcomeCounts {
    /// Forwarded.
    pub allowed: i64,
    /// Refused.
    pub denied: i64,
    /// Upstream failed.
    pub failed: i64,
}

impl OutcomeCounts {
    fn add(&mut self, outcome: &str, n: i64) {
        match outcome {
            "allowed" => self.allowed += n,
            "denied" => self.denied += n,
            "failed" => self.failed += n,
            _ => {}
        }
    }
}

/// One point of the time series.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct SeriesPoint {
    /// Bucket start (RFC 3339).
    pub t: String,
    /// Counts in the bucket.
    #[serde(flatten)]
    pub counts: OutcomeCounts,
}

/// A count by route, outcome and reason.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Count {
    /// Route (`""` for requests that matched none).
    pub route: String,
    /// Outcome.
    pub outcome: String,
    /// Reason (`""` for allowed requests).
    pub reason: String,
    /// How many.
    pub count: i64,
}

/// A name with a count.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Named {
    /// The reason, address or key id.
    pub name: String,
    /// How many.
    pub count: i64,
}

/// Bucket widths the series uses; the smallest giving at most 60 points is taken.
const BUCKETS_S: &[u64] = &[
    10,
    30,
    60,
    300,
    900,
    1800,
    3600,
    3 * 3600,
    6 * 3600,
    12 * 3600,
    86400,
];

/// Counts over the `window` before `now`.
pub fn stats(
    conn: &Connection,
    now: jiff::Timestamp,
    window: Duration,
) -> Result<Stats, StoreError> {
    let window_s = window.as_secs().max(60);
    let bucket_s = BUCKETS_S
        .iter()
        .copied()
        .find(|b| window_s / b <= 60)
        .unwrap_or(86400);
    let bucket_ms = (bucket_s * 1000) as i64;
    let now_ms = now.as_millisecond();
    let last_bucket = now_ms.div_euclid(bucket_ms) * bucket_ms;
    let since_ms = now_ms - (window_s * 1000) as i64;
    // From the bucket the window starts in: the totals count the events since `since_ms`, and
    // the series must hold them all (it began a bucket later, and the chart lost them).
    let first_bucket = since_ms.div_euclid(bucket_ms) * bucket_ms;
    let points = (last_bucket - first_bucket) / bucket_ms + 1;

    let mut series: Vec<SeriesPoint> = (0..points)
        .map(|i| SeriesPoint {
            t: format_ms(first_bucket + i * bucket_ms),
            counts: OutcomeCounts::default(),
        })
        .collect();
    let mut totals = OutcomeCounts::default();
    let mut by_key: HashMap<(String, String, String), i64> = HashMap::new();
    let mut aggregated = 0i64;
    // Individual events, then the counts of events the writer could not take one by one.
    let mut collect = |sql: &str, args: &[i64], agg: bool| -> Result<(), StoreError> {
        let mut stmt = conn.prepare(sql)?;
        let mut rows = stmt.query(params_from_iter(args))?;
        while let Some(r) = rows.next()? {
            let b: i64 = r.get(0)?;
            let route: String = r.get(1)?;
            let outcome: String = r.get(2)?;
            let reason: String = r.get(3)?;
            let n: i64 = r.get(4)?;
            let idx = (b - first_bucket).div_euclid(bucket_ms);
            if let Some(p) = usize::try_from(idx).ok().and_then(|i| series.get_mut(i)) {
                p.counts.add(&outcome, n);
            }
            totals.add(&outcome, n);
            if agg {
                aggregated += n;
            }
            *by_key.entry((route, outcome, reason)).or_insert(0) += n;
        }
        Ok(())
    };
    collect(
        "SELECT (time_ms / ?2) * ?2, COALESCE(route, ''), outcome, COALESCE(reason, ''), COUNT(*)
           FROM events WHERE id >= ?3 AND time_ms >= ?1
          GROUP BY 1, 2, 3, 4",
        &[since_ms, bucket_ms, first_id_at(since_ms)],
        false,
    )?;
    collect(
        "SELECT (bucket_ms / ?2) * ?2, route, outcome, reason, SUM(count)
           FROM event_counts WHERE bucket_ms >= ?1
          GROUP BY 1, 2, 3, 4",
        &[
            since_ms.div_euclid(ROLLUP_BUCKET_MS) * ROLLUP_BUCKET_MS,
            bucket_ms,
        ],
        true,
    )?;

    let mut counts: Vec<Count> = by_key
        .into_iter()
        .map(|((route, outcome, reason), count)| Count {
            route,
            outcome,
            reason,
            count,
        })
        .collect();
    counts.sort_by(|a, b| {
        b.count
            .cmp(&a.count)
            .then_with(|| (&a.route, &a.outcome, &a.reason).cmp(&(&b.route, &b.outcome, &b.reason)))
    });
    let mut reasons: HashMap<String, i64> = HashMap::new();
    for c in counts
        .iter()
        .filter(|c| c.outcome != "allowed" && !c.reason.is_empty())
    {
        *reasons.entry(c.reason.clone()).or_insert(0) += c.count;
    }
    let mut denials_by_reason: Vec<Named> = reasons
        .into_iter()
        .map(|(name, count)| Named { name, count })
        .collect();
    denials_by_reason.sort_by(|a, b| b.count.cmp(&a.count).then_with(|| a.name.cmp(&b.name)));

    let top = |column: &str| -> Result<Vec<Named>, StoreError> {
        let mut stmt = conn.prepare(&format!(
            "SELECT {column}, COUNT(*) FROM events
              WHERE id >= ?2 AND time_ms >= ?1 AND outcome = 'denied' AND {column} IS NOT NULL
              GROUP BY {column} ORDER BY 2 DESC, 1 LIMIT 10"
        ))?;
        let rows = stmt.query_map([since_ms, first_id_at(since_ms)], |r| {
            Ok(Named {
                name: r.get(0)?,
                count: r.get(1)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    };
    Ok(Stats {
        window_seconds: window_s,
        bucket_seconds: bucket_s,
        since: format_ms(since_ms),
        totals,
        series,
        counts,
        denials_by_reason,
        top_ips: top("client_ip")?,
        top_keys: top("key_id")?,
        aggregated,
    })
}

/// An alert that was sent (or could not be), as recorded in the store.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct AlertRecord {
    /// When the rule fired (RFC 3339).
    pub time: String,
    /// The rule's name.
    pub name: String,
    /// Matching events in the window when it fired.
    pub matched: i64,
    /// The rule's threshold.
    pub threshold: i64,
    /// The rule's window, in seconds.
    pub window_seconds: i64,
    /// The rule's route filter.
    pub route: Option<String>,
    /// `sent` or `failed`.
    pub result: String,
    /// Delivery attempts made.
    pub attempts: i64,
    /// The receiver's last HTTP status.
    pub http_status: Option<u16>,
    /// Why delivery failed (never the URL).
    pub error: Option<String>,
}

/// Records an alert delivery.
pub fn record_alert(conn: &Connection, a: &AlertRecord, time_ms: i64) -> Result<(), StoreError> {
    conn.execute(
        "INSERT INTO alerts (time_ms, name, matched, threshold, window_ms, route, result,
                             attempts, http_status, error)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
        params![
            time_ms,
            a.name,
            a.matched,
            a.threshold,
            a.window_seconds * 1000,
            a.route,
            a.result,
            a.attempts,
            a.http_status,
            a.error,
        ],
    )?;
    Ok(())
}

/// The latest alert records, newest first.
pub fn recent_alerts(conn: &Connection, limit: u32) -> Result<Vec<AlertRecord>, StoreError> {
    let mut stmt = conn.prepare(
        "SELECT time_ms, name, matched, threshold, window_ms, route, result, attempts,
                http_status, error
           FROM alerts ORDER BY id DESC LIMIT ?1",
    )?;
    let rows = stmt.query_map([limit], |r| {
        let window_ms: i64 = r.get(4)?;
        Ok(AlertRecord {
            time: format_ms(r.get(0)?),
            name: r.get(1)?,
            matched: r.get(2)?,
            threshold: r.get(3)?,
            window_seconds: window_ms / 1000,
            route: r.get(5)?,
            result: r.get(6)?,
            attempts: r.get(7)?,
            http_status: r.get(8)?,
            error: r.get(9)?,
        })
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An event whose every column differs with `i`, some of them absent for odd `i`.
    fn event(i: u16) -> Arc<Event> {
        let odd = i % 2 == 1;
        Arc::new(Event {
            time: jiff::Timestamp::from_millisecond(1_700_000_000_000 + i64::from(i)).unwrap(),
            request_id: format!("req-{i:04}"),
            route: (!odd).then(|| Arc::from(format!("route-{i}"))),
            client_ip: IpAddr::from([10, 0, (i >> 8) as u8, i as u8]),
            method: if odd { "GET".into() } else { "POST".into() },
            status: 200 + i,
            outcome: if odd {
                Outcome::Denied
            } else {
                Outcome::Allowed
            },
            reason: odd.then_some(Reason::RateLimited),
            detail: odd.then_some("a detail"),
            flags: if odd {
                vec![Reason::RateLimited, Reason::NotFound]
            } else {
                vec![]
            },
            key_id: (!odd).then(|| format!("key-{i}")),
            session_id: odd.then(|| format!("session-{i}")),
            latency: Duration::from_micros(1_000 + u64::from(i)),
            upstream_status: (!odd).then_some(500 + i),
            upstream_latency: (!odd).then(|| Duration::from_micros(2_000 + u64::from(i))),
            user_agent: odd.then(|| format!("agent/{i}")),
        })
    }

    /// A batch of 173 is written by the 128-, 32-, 8- and 1-row statements
    /// (128 + 32 + 8 + 5 × 1): every column of every row must land where it belongs, in order.
    #[test]
    fn multi_row_statements_keep_every_column_of_every_row() {
        let store = Store::open(std::path::Path::new(":memory:")).unwrap();
        let batch: Vec<Arc<Event>> = (0..173).map(event).collect();
        write_batch(&store, &batch, &Rollup::default());
        let filter = EventFilter {
            limit: 200,
            ..EventFilter::default()
        };
        let mut rows = list_events(&store.lock(), &filter).unwrap();
        rows.reverse();
        assert_eq!(rows.len(), 173);
        for (i, row) in (0u16..).zip(&rows) {
            let odd = i % 2 == 1;
            assert_eq!(row.request_id, format!("req-{i:04}"));
            let want_time =
                jiff::Timestamp::from_millisecond(1_700_000_000_000 + i64::from(i)).unwrap();
            assert_eq!(row.time, format_ms(want_time.as_millisecond()), "row {i}");
            assert_eq!(row.route, (!odd).then(|| format!("route-{i}")), "row {i}");
            assert_eq!(row.client_ip, format!("10.0.0.{i}"), "row {i}");
            assert_eq!(row.method, if odd { "GET" } else { "POST" }, "row {i}");
            assert_eq!(row.status, 200 + i, "row {i}");
            assert_eq!(
                row.outcome,
                if odd { "denied" } else { "allowed" },
                "row {i}"
            );
            assert_eq!(
                row.reason.as_deref(),
                odd.then_some("rate_limited"),
                "row {i}"
            );
            assert_eq!(row.detail.as_deref(), odd.then_some("a detail"), "row {i}");
            let flags: Vec<String> = if odd {
                vec!["rate_limited".into(), "not_found".into()]
            } else {
                vec![]
            };
            assert_eq!(row.flags, flags, "row {i}");
            assert_eq!(row.key_id, (!odd).then(|| format!("key-{i}")), "row {i}");
            assert_eq!(
                row.session_id,
                odd.then(|| format!("session-{i}")),
                "row {i}"
            );
            assert_eq!(row.latency_ms, (1_000.0 + f64::from(i)) / 1000.0, "row {i}");
            assert_eq!(row.upstream_status, (!odd).then_some(500 + i), "row {i}");
            assert_eq!(
                row.upstream_latency_ms,
                (!odd).then(|| (2_000.0 + f64::from(i)) / 1000.0),
                "row {i}"
            );
            assert_eq!(row.user_agent, odd.then(|| format!("agent/{i}")), "row {i}");
        }
    }

    /// A statement keeps its parameters between executions and batches: a value absent from
    /// a row must be NULL there, not the value the row before it in the statement had.
    #[test]
    fn an_absent_value_is_null_after_a_row_that_had_it() {
        let store = Store::open(std::path::Path::new(":memory:")).unwrap();
        let with = event(2);
        let without = event(3);
        for batch in [
            vec![with.clone()],
            vec![without.clone()],
            vec![with, without],
        ] {
            write_batch(&store, &batch, &Rollup::default());
        }
        let f = EventFilter {
            limit: 10,
            ..EventFilter::default()
        };
        let rows = list_events(&store.lock(), &f).unwrap();
        let absent: Vec<_> = rows
            .iter()
            .map(|r| {
                (
                    r.route.is_none(),
                    r.key_id.is_none(),
                    r.upstream_status.is_none(),
                )
            })
            .collect();
        // Newest first: without, with, without, with.
        assert_eq!(
            absent,
            [
                (true, true, true),
                (false, false, false),
                (true, true, true),
                (false, false, false)
            ]
        );
        assert!(rows[0].reason.is_some() && rows[1].reason.is_none());
    }

    /// Request ids are found through the time they start with, including events written long
    /// after the request under the same id (a dead-lettered message); ids of any other shape
    /// are still found, by walking the log.
    #[test]
    fn request_ids_are_found_without_their_own_index() {
        let store = Store::open(std::path::Path::new(":memory:")).unwrap();
        let t0 = 1_700_000_000_000i64;
        let id = |ms: i64, tail: &str| format!("{ms:012x}{tail}");
        let at = |ms: i64, request_id: String| stamped(ms, &request_id);
        let wanted = id(t0, "00000000000000000001");
        let batch = vec![
            // Stamped a moment before its id was made.
            at(t0 - 1, wanted.clone()),
            at(t0, id(t0, "00000000000000000002")),
            at(t0 + 5, id(t0 + 5, "00000000000000000003")),
            // The same request dead-lettered three days later.
            at(t0 + 3 * 86_400_000, wanted.clone()),
            at(t0 + 10, "not-one-of-ours".to_owned()),
        ];
        write_batch(&store, &batch, &Rollup::default());
        let find = |request_id: &str| {
            let f = EventFilter {
                request_id: Some(request_id.to_owned()),
                limit: 10,
                ..EventFilter::default()
            };
            list_events(&store.lock(), &f).unwrap()
        };
        let found = find(&wanted);
        assert_eq!(found.len(), 2);
        assert!(found.iter().all(|e| e.request_id == wanted));
        assert!(found[0].id > found[1].id, "newest first");
        assert_eq!(find("not-one-of-ours").len(), 1);
        assert!(find(&id(t0, "00000000000000000009")).is_empty());
        // A range of ids from the time the request id starts with, not a walk of the log.
        let (sql, args) = events_query(&EventFilter {
            request_id: Some(wanted.clone()),
            limit: 10,
            ..EventFilter::default()
        });
        let plan: String = store
            .lock()
            .query_row(
                &format!("EXPLAIN QUERY PLAN {sql}"),
                params_from_iter(args),
                |r| r.get(3),
            )
            .unwrap();
        assert!(plan.contains("INTEGER PRIMARY KEY (rowid>?)"), "{plan}");
        assert_eq!(request_id_time(&wanted), Some(t0));
        assert_eq!(request_id_time("0193abc"), None);
        assert_eq!(request_id_time(&"g".repeat(32)), None);
    }

    /// `event(0)` stamped at `ms`.
    fn stamped(ms: i64, request_id: &str) -> Arc<Event> {
        let mut e = Arc::unwrap_or_clone(event(0));
        e.time = jiff::Timestamp::from_millisecond(ms).unwrap();
        e.request_id = request_id.to_owned();
        Arc::new(e)
    }

    /// `(id, time_ms, request_id)` of every event, in id order.
    fn id_rows(conn: &Connection) -> Vec<(i64, i64, String)> {
        conn.prepare("SELECT id, time_ms, request_id FROM events ORDER BY id")
            .unwrap()
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .unwrap()
            .map(Result::unwrap)
            .collect()
    }

    fn since(store: &Store, ms: i64) -> Vec<String> {
        let f = EventFilter {
            since: Some(jiff::Timestamp::from_millisecond(ms).unwrap()),
            limit: 100,
            ..EventFilter::default()
        };
        let mut ids: Vec<String> = list_events(&store.lock(), &f)
            .unwrap()
            .into_iter()
            .map(|e| e.request_id)
            .collect();
        ids.sort();
        ids
    }

    /// Events arrive stamped out of order (a request's event is written when it ends): ids
    /// still grow in the order events are written, each is at least its time's first id, and a
    /// lookup by time finds exactly the events stamped at or after it, including one written
    /// after later ones and not one written late with an earlier stamp.
    #[test]
    fn ids_start_with_their_time_and_grow_in_write_order() {
        let store = Store::open(std::path::Path::new(":memory:")).unwrap();
        let t0 = 1_700_000_000_000i64;
        let first = [
            stamped(t0 + 5_000, "a"),
            stamped(t0, "b"),
            stamped(t0 + 5_000, "c"),
            stamped(t0 + 5_999, "d"),
        ];
        write_batch(&store, &first, &Rollup::default());
        // Written later: a long request stamped before all of them, and a new one.
        let second = [stamped(t0 - 60_000, "e"), stamped(t0 + 9_000, "f")];
        write_batch(&store, &second, &Rollup::default());
        let rows = id_rows(&store.lock());
        let order: Vec<&str> = rows.iter().map(|r| r.2.as_str()).collect();
        assert_eq!(order, ["a", "b", "c", "d", "e", "f"]);
        let a = first_id_at(t0 + 5_000);
        let ids: Vec<i64> = rows.iter().map(|r| r.0).collect();
        assert_eq!(
            ids,
            [a, a + 1, a + 2, a + 3, a + 4, first_id_at(t0 + 9_000)]
        );
        assert_eq!(first_id_at(t0 + 5_999), a);
        assert!(first_id_at(t0 + 6_000) > a + 4);
        assert_eq!(since(&store, t0), ["a", "b", "c", "d", "f"]);
        assert_eq!(since(&store, t0 + 1), ["a", "c", "d", "f"]);
        assert_eq!(since(&store, t0 + 5_001), ["d", "f"]);
        assert_eq!(since(&store, t0 + 6_000), ["f"]);
        assert_eq!(since(&store, t0 - 60_000), ["a", "b", "c", "d", "e", "f"]);
        let st = stats(
            &store.lock(),
            jiff::Timestamp::from_millisecond(t0 + 60_000).unwrap(),
            Duration::from_secs(60),
        )
        .unwrap();
        assert_eq!(st.totals.allowed, 5, "{st:#?}");

        // Retention goes by id: nothing below a cutoff's first id is newer than the cutoff.
        // `b` and `e`, stamped before `a` but written after it, go with `a`: when the cutoff
        // passes `a`'s second.
        let keep = Retention {
            keep: Duration::from_secs(60),
            max_events: 1_000_000,
            audit_allowed: true,
        };
        let cutoff = |ms: i64| jiff::Timestamp::from_millisecond(ms + 60_000).unwrap();
        assert_eq!(
            apply_retention(&store, cutoff(t0 - 60_000), keep).unwrap(),
            0
        );
        assert_eq!(apply_retention(&store, cutoff(t0 + 1), keep).unwrap(), 0);
        assert_eq!(
            apply_retention(&store, cutoff(t0 + 5_999), keep).unwrap(),
            0
        );
        assert_eq!(
            apply_retention(&store, cutoff(t0 + 6_000), keep).unwrap(),
            5
        );
        let left: Vec<String> = id_rows(&store.lock()).into_iter().map(|r| r.2).collect();
        assert_eq!(left, ["f"]);
        assert_eq!(
            apply_retention(&store, cutoff(t0 + 10_000), keep).unwrap(),
            1
        );
    }

    /// Two stores on one file writing in turn: each reads the last id when it writes, so it
    /// takes no id the other used and goes on after the other's newer ids. (That the read
    /// happens under the write lock, against writes at the same moment, is the immediate
    /// transaction's, which a test in turn cannot show.)
    #[test]
    fn two_writers_on_one_file_take_ids_after_each_other() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("hw.db");
        let (one, two) = (Store::open(&path).unwrap(), Store::open(&path).unwrap());
        let (t0, t1) = (1_700_000_000_000i64, 1_700_000_001_000i64);
        let rollup = Rollup::default();
        write_batch(&one, &[stamped(t0, "1a")], &rollup);
        write_batch(&two, &[stamped(t1, "2a"), stamped(t1, "2b")], &rollup);
        write_batch(&one, &[stamped(t1, "1b")], &rollup);
        write_batch(&two, &[stamped(t0, "2c")], &rollup);
        let rows = id_rows(&one.lock());
        let order: Vec<&str> = rows.iter().map(|r| r.2.as_str()).collect();
        assert_eq!(order, ["1a", "2a", "2b", "1b", "2c"]);
        let (f0, f1) = (first_id_at(t0), first_id_at(t1));
        let ids: Vec<i64> = rows.iter().map(|r| r.0).collect();
        assert_eq!(ids, [f0, f1, f1 + 1, f1 + 2, f1 + 3]);
    }

    #[test]
    fn insert_statements_have_numbered_parameters_for_each_size() {
        assert_eq!(insert_statements().len(), INSERT_ROWS.len());
        // The last size must be 1, or a batch's remainder would never be written.
        assert_eq!(INSERT_ROWS.last(), Some(&1));
        for (rows, sql) in insert_statements() {
            let rows = *rows;
            assert_eq!(sql.matches('(').count(), rows + 1, "{rows} rows");
            assert!(
                sql.ends_with(&format!("?{})", rows * EVENT_COLUMNS)),
                "{sql}"
            );
        }
    }
}
