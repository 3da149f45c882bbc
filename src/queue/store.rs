//! The queue's table and every statement on it, shared by the writer thread, the delivery
//! workers, the admin API and `hookwarden queue`.
//!
//! One row per accepted message. `seq` (the rowid) gives the order of arrival; `id` is the
//! public id (the request id: in the 202 answer, `X-Request-Id`, `X-Hookwarden-Delivery` and
//! the audit log). A row is `pending` until delivered (`delivered`) or given up on (`dead`).
//! Rows hold what the upstream will get: method, forwarded query and headers (the client's,
//! after the guards removed the credentials they consumed; never the route's injected
//! secrets, which are added at sending time) and the body after guards and decryption.

use std::collections::HashMap;
use std::fmt;

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue};
use rusqlite::types::Value;
use rusqlite::{Connection, OptionalExtension, params, params_from_iter};
use serde::Serialize;

use crate::store::StoreError;

/// Schema of the queue (appended to the store's migrations).
pub const MIGRATION: &str = "
CREATE TABLE queue (
    seq INTEGER PRIMARY KEY,
    id TEXT NOT NULL UNIQUE,
    route TEXT NOT NULL,
    state TEXT NOT NULL,
    method TEXT NOT NULL,
    query TEXT,
    headers BLOB NOT NULL,
    body BLOB NOT NULL,
    client_ip TEXT NOT NULL,
    created_ms INTEGER NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    next_ms INTEGER NOT NULL,
    last_ms INTEGER,
    last_status INTEGER,
    last_error TEXT,
    done_ms INTEGER
) STRICT;
CREATE INDEX queue_route_state ON queue (route, state, seq);
CREATE INDEX queue_state_done ON queue (state, done_ms);
";

/// Where a message is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum MessageState {
    /// Waiting for (another) delivery attempt.
    Pending,
    /// The upstream answered 2xx.
    Delivered,
    /// Given up on: attempts exhausted or a permanent refusal.
    Dead,
}

impl MessageState {
    /// Every state.
    pub const ALL: [MessageState; 3] = [
        MessageState::Pending,
        MessageState::Delivered,
        MessageState::Dead,
    ];

    /// The stable code, as stored and shown.
    pub const fn as_str(self) -> &'static str {
        match self {
            MessageState::Pending => "pending",
            MessageState::Delivered => "delivered",
            MessageState::Dead => "dead",
        }
    }

    /// Parses a code.
    pub fn from_code(code: &str) -> Option<MessageState> {
        MessageState::ALL.into_iter().find(|s| s.as_str() == code)
    }
}

impl fmt::Display for MessageState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // `pad`, so that `{:<9}` in a table lines the columns up.
        f.pad(self.as_str())
    }
}

/// A message to store, as the accept path builds it.
#[derive(Debug, Clone)]
pub struct NewMessage {
    /// The public id (the request id).
    pub id: String,
    /// The route's name.
    pub route: std::sync::Arc<str>,
    /// The method.
    pub method: String,
    /// The forwarded query.
    pub query: Option<String>,
    /// The forwarded headers, encoded with [`encode_headers`].
    pub headers: Vec<u8>,
    /// The body after guards and decryption.
    pub body: Bytes,
    /// The client's address (for the event of a dead letter).
    pub client_ip: String,
    /// Arrival time, Unix milliseconds.
    pub created_ms: i64,
}

/// Stores `m` as pending, due now.
pub fn insert(conn: &Connection, m: &NewMessage) -> rusqlite::Result<()> {
    conn.prepare_cached(
        "INSERT INTO queue (id, route, state, method, query, headers, body, client_ip,
                            created_ms, next_ms)
         VALUES (?1, ?2, 'pending', ?3, ?4, ?5, ?6, ?7, ?8, ?8)",
    )?
    .execute(params![
        m.id,
        &*m.route,
        m.method,
        m.query,
        m.headers,
        &m.body[..],
        m.client_ip,
        m.created_ms,
    ])?;
    Ok(())
}

/// Pending messages per route.
pub fn pending_counts(conn: &Connection) -> Result<HashMap<String, u64>, StoreError> {
    let mut stmt = conn.prepare(
        "SELECT route, COUNT(*) FROM queue WHERE state = 'pending' GROUP BY route ORDER BY route",
    )?;
    let rows = stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))?;
    let mut out = HashMap::new();
    for row in rows {
        let (route, n) = row?;
        out.insert(route, n.max(0) as u64);
    }
    Ok(out)
}

/// A pending message as the delivery worker schedules it (no body).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Due {
    /// Arrival order.
    pub seq: i64,
    /// Attempts made so far.
    pub attempts: u32,
    /// When the next attempt may start, Unix milliseconds.
    pub next_ms: i64,
}

/// The first `limit` pending messages of `route`, in arrival order.
pub fn pending(conn: &Connection, route: &str, limit: usize) -> Result<Vec<Due>, StoreError> {
    let mut stmt = conn.prepare_cached(
        "SELECT seq, attempts, next_ms FROM queue
          WHERE route = ?1 AND state = 'pending' ORDER BY seq LIMIT ?2",
    )?;
    let rows = stmt.query_map(params![route, limit as i64], |r| {
        Ok(Due {
            seq: r.get(0)?,
            attempts: r.get::<_, i64>(1)?.clamp(0, i64::from(u32::MAX)) as u32,
            next_ms: r.get(2)?,
        })
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// The first `limit` pending messages of `route` that are due at `now_ms`, in arrival order
/// (for routes with concurrency above 1, where a message waiting for its retry must not hide
/// the due ones behind it).
pub fn pending_due(
    conn: &Connection,
    route: &str,
    now_ms: i64,
    limit: usize,
) -> Result<Vec<Due>, StoreError> {
    let mut stmt = conn.prepare_cached(
        "SELECT seq, attempts, next_ms FROM queue
          WHERE route = ?1 AND state = 'pending' AND next_ms <= ?2 ORDER BY seq LIMIT ?3",
    )?;
    let rows = stmt.query_map(params![route, now_ms, limit as i64], |r| {
        Ok(Due {
            seq: r.get(0)?,
            attempts: r.get::<_, i64>(1)?.clamp(0, i64::from(u32::MAX)) as u32,
            next_ms: r.get(2)?,
        })
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// A pending message with what an attempt needs.
#[derive(Debug, Clone)]
pub struct Stored {
    /// Arrival order.
    pub seq: i64,
    /// The public id.
    pub id: String,
    /// The method.
    pub method: String,
    /// The forwarded query.
    pub query: Option<String>,
    /// The forwarded headers.
    pub headers: HeaderMap,
    /// The body.
    pub body: Bytes,
    /// The client's address.
    pub client_ip: String,
    /// Arrival time, Unix milliseconds.
    pub created_ms: i64,
    /// Attempts made so far.
    pub attempts: u32,
}

/// Message `seq`, if it is still pending.
pub fn load_pending(conn: &Connection, seq: i64) -> Result<Option<Stored>, StoreError> {
    Ok(conn
        .prepare_cached(
            "SELECT id, method, query, headers, body, client_ip, created_ms, attempts
               FROM queue WHERE seq = ?1 AND state = 'pending'",
        )?
        .query_row([seq], |r| {
            let headers: Vec<u8> = r.get(3)?;
            let body: Vec<u8> = r.get(4)?;
            Ok(Stored {
                seq,
                id: r.get(0)?,
                method: r.get(1)?,
                query: r.get(2)?,
                headers: decode_headers(&headers),
                body: Bytes::from(body),
                client_ip: r.get(5)?,
                created_ms: r.get(6)?,
                attempts: r.get::<_, i64>(7)?.clamp(0, i64::from(u32::MAX)) as u32,
            })
        })
        .optional()?)
}

/// What an attempt led to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// 2xx: the message is delivered (deleted at once when `keep` is false).
    Delivered {
        /// Keep the row (`keep_delivered` above zero).
        keep: bool,
    },
    /// Failed, to be tried again at `next_ms`.
    Retry {
        /// When.
        next_ms: i64,
    },
    /// Failed for good.
    Dead,
}

/// The result of one attempt, recorded on its message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttemptRecord {
    /// The message.
    pub seq: i64,
    /// Attempts made, this one included.
    pub attempts: u32,
    /// When the attempt ended, Unix milliseconds.
    pub at_ms: i64,
    /// The upstream's status, when it answered.
    pub status: Option<u16>,
    /// Why it failed (never a secret).
    pub error: Option<String>,
    /// What becomes of the message.
    pub change: Change,
}

/// Records an attempt on a message that is still pending. Returns false when the message is
/// no longer pending (dropped or retried by an operator meanwhile).
pub fn record_attempt(conn: &Connection, a: &AttemptRecord) -> rusqlite::Result<bool> {
    let n = match a.change {
        Change::Delivered { keep: false } => conn
            .prepare_cached("DELETE FROM queue WHERE seq = ?1 AND state = 'pending'")?
            .execute([a.seq])?,
        Change::Delivered { keep: true } => conn
            .prepare_cached(
                "UPDATE queue SET state = 'delivered', attempts = ?2, last_ms = ?3,
                        last_status = ?4, last_error = NULL, done_ms = ?3
                  WHERE seq = ?1 AND state = 'pending'",
            )?
            .execute(params![a.seq, a.attempts, a.at_ms, a.status])?,
        Change::Retry { next_ms } => conn
            .prepare_cached(
                "UPDATE queue SET attempts = ?2, last_ms = ?3, last_status = ?4, last_error = ?5,
                        next_ms = ?6
                  WHERE seq = ?1 AND state = 'pending'",
            )?
            .execute(params![
                a.seq, a.attempts, a.at_ms, a.status, a.error, next_ms
            ])?,
        Change::Dead => conn
            .prepare_cached(
                "UPDATE queue SET state = 'dead', attempts = ?2, last_ms = ?3, last_status = ?4,
                        last_error = ?5, done_ms = ?3
                  WHERE seq = ?1 AND state = 'pending'",
            )?
            .execute(params![a.seq, a.attempts, a.at_ms, a.status, a.error])?,
    };
    Ok(n > 0)
}

/// Makes message `id` due now: a dead or delivered message becomes pending again with its
/// attempts reset; a pending one is tried at once. Returns the state it had, or `None` when
/// there is no such message.
pub fn retry(conn: &Connection, id: &str, now_ms: i64) -> Result<Option<MessageState>, StoreError> {
    let state: Option<String> = conn
        .query_row("SELECT state FROM queue WHERE id = ?1", [id], |r| r.get(0))
        .optional()?;
    let Some(state) = state.as_deref().and_then(MessageState::from_code) else {
        return Ok(None);
    };
    match state {
        MessageState::Pending => conn.execute(
            "UPDATE queue SET next_ms = ?2 WHERE id = ?1",
            params![id, now_ms],
        )?,
        MessageState::Dead | MessageState::Delivered => conn.execute(
            "UPDATE queue SET state = 'pending', attempts = 0, next_ms = ?2, done_ms = NULL
              WHERE id = ?1",
            params![id, now_ms],
        )?,
    };
    Ok(Some(state))
}

/// Makes every dead message of `route` pending again (attempts reset). Returns how many.
pub fn retry_dead(conn: &Connection, route: &str, now_ms: i64) -> Result<u64, StoreError> {
    Ok(conn.execute(
        "UPDATE queue SET state = 'pending', attempts = 0, next_ms = ?2, done_ms = NULL
          WHERE route = ?1 AND state = 'dead'",
        params![route, now_ms],
    )? as u64)
}

/// Deletes message `id`, whatever its state. Returns the route and state it had.
pub fn drop_message(
    conn: &Connection,
    id: &str,
) -> Result<Option<(String, MessageState)>, StoreError> {
    let row: Option<(String, String)> = conn
        .query_row(
            "DELETE FROM queue WHERE id = ?1 RETURNING route, state",
            [id],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()?;
    Ok(row.and_then(|(route, s)| MessageState::from_code(&s).map(|s| (route, s))))
}

/// Deletes every message of `route` in `state`. Returns how many.
pub fn drop_all(conn: &Connection, route: &str, state: MessageState) -> Result<u64, StoreError> {
    Ok(conn.execute(
        "DELETE FROM queue WHERE route = ?1 AND state = ?2",
        params![route, state.as_str()],
    )? as u64)
}

/// Deletes messages of `route` in `state` (delivered or dead) finished before `before_ms`, at
/// most `limit`. Returns how many.
pub fn purge(
    conn: &Connection,
    route: &str,
    state: MessageState,
    before_ms: i64,
    limit: i64,
) -> Result<u64, StoreError> {
    Ok(conn.execute(
        "DELETE FROM queue WHERE seq IN (
            SELECT seq FROM queue WHERE route = ?1 AND state = ?2 AND done_ms < ?3 LIMIT ?4)",
        params![route, state.as_str(), before_ms, limit],
    )? as u64)
}

/// Deletes the oldest messages of `route` in `state` beyond the newest `keep`. Returns how
/// many.
pub fn trim(
    conn: &Connection,
    route: &str,
    state: MessageState,
    keep: u64,
) -> Result<u64, StoreError> {
    let keep = i64::try_from(keep).unwrap_or(i64::MAX);
    Ok(conn.execute(
        "DELETE FROM queue WHERE seq IN (
            SELECT seq FROM queue WHERE route = ?1 AND state = ?2
            ORDER BY seq DESC LIMIT -1 OFFSET ?3)",
        params![route, state.as_str(), keep],
    )? as u64)
}

/// A message as `hookwarden queue list` and the admin API show it: never its headers or body.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Listed {
    /// The public id.
    pub id: String,
    /// Arrival order (for paging with `before`).
    pub seq: i64,
    /// The route.
    pub route: String,
    /// `pending`, `delivered` or `dead`.
    pub state: MessageState,
    /// The method.
    pub method: String,
    /// Body size in bytes.
    pub size: u64,
    /// Arrival (RFC 3339).
    pub created: String,
    /// Attempts made.
    pub attempts: u32,
    /// Next attempt (pending messages).
    pub next_attempt: Option<String>,
    /// Last attempt.
    pub last_attempt: Option<String>,
    /// The upstream's last status.
    pub last_status: Option<u16>,
    /// Why the last attempt failed.
    pub last_error: Option<String>,
    /// When it was delivered or dead-lettered.
    pub done: Option<String>,
}

/// Which messages to list.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ListFilter {
    /// Only this route.
    pub route: Option<String>,
    /// Only this state.
    pub state: Option<MessageState>,
    /// Only messages that arrived before this one (`seq`), for paging.
    pub before: Option<i64>,
    /// At most this many.
    pub limit: u32,
}

/// Messages matching `f`, oldest first (pending messages in delivery order).
pub fn list(conn: &Connection, f: &ListFilter) -> Result<Vec<Listed>, StoreError> {
    let mut sql = String::from(
        "SELECT id, seq, route, state, method, length(body), created_ms, attempts, next_ms,
                last_ms, last_status, last_error, done_ms
           FROM queue WHERE 1 = 1",
    );
    let mut args: Vec<Value> = Vec::new();
    if let Some(r) = &f.route {
        args.push(Value::Text(r.clone()));
        sql.push_str(&format!(" AND route = ?{}", args.len()));
    }
    if let Some(s) = f.state {
        args.push(Value::Text(s.as_str().into()));
        sql.push_str(&format!(" AND state = ?{}", args.len()));
    }
    if let Some(b) = f.before {
        args.push(Value::Integer(b));
        sql.push_str(&format!(" AND seq < ?{}", args.len()));
    }
    // The newest `limit` before the cursor, shown oldest first.
    args.push(Value::Integer(i64::from(f.limit.max(1))));
    let sql = format!(
        "SELECT * FROM ({sql} ORDER BY seq DESC LIMIT ?{}) ORDER BY seq",
        args.len()
    );
    let mut stmt = conn.prepare(&sql)?;
    let rows = stmt.query_map(params_from_iter(args), |r| {
        let state: String = r.get(3)?;
        let state = MessageState::from_code(&state).unwrap_or(MessageState::Dead);
        let next_ms: i64 = r.get(8)?;
        Ok(Listed {
            id: r.get(0)?,
            seq: r.get(1)?,
            route: r.get(2)?,
            state,
            method: r.get(4)?,
            size: r.get::<_, i64>(5)?.max(0) as u64,
            created: format_ms(r.get(6)?),
            attempts: r.get::<_, i64>(7)?.clamp(0, i64::from(u32::MAX)) as u32,
            next_attempt: (state == MessageState::Pending).then(|| format_ms(next_ms)),
            last_attempt: r.get::<_, Option<i64>>(9)?.map(format_ms),
            last_status: r.get(10)?,
            last_error: r.get(11)?,
            done: r.get::<_, Option<i64>>(12)?.map(format_ms),
        })
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// One route's queue at a glance.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct RouteSummary {
    /// The route.
    pub route: String,
    /// Pending messages.
    pub pending: u64,
    /// Dead letters.
    pub dead: u64,
    /// Delivered messages still kept.
    pub delivered: u64,
    /// Age of the oldest pending message, in seconds.
    pub oldest_pending_seconds: Option<f64>,
}

/// Counts per route and state, with the age of each route's oldest pending message at
/// `now_ms`. Routes in `also` are included even without messages.
pub fn summary(
    conn: &Connection,
    now_ms: i64,
    also: &[String],
) -> Result<Vec<RouteSummary>, StoreError> {
    let mut by_route: HashMap<String, RouteSummary> = also
        .iter()
        .map(|r| {
            (
                r.clone(),
                RouteSummary {
                    route: r.clone(),
                    ..RouteSummary::default()
                },
            )
        })
        .collect();
    let mut stmt = conn.prepare(
        "SELECT route, state, COUNT(*), MIN(created_ms) FROM queue GROUP BY route, state",
    )?;
    let mut rows = stmt.query([])?;
    while let Some(r) = rows.next()? {
        let route: String = r.get(0)?;
        let state: String = r.get(1)?;
        let n = r.get::<_, i64>(2)?.max(0) as u64;
        let oldest: Option<i64> = r.get(3)?;
        let s = by_route
            .entry(route.clone())
            .or_insert_with(|| RouteSummary {
                route,
                ..RouteSummary::default()
            });
        match MessageState::from_code(&state) {
            Some(MessageState::Pending) => {
                s.pending = n;
                s.oldest_pending_seconds =
                    oldest.map(|c| (now_ms.saturating_sub(c)).max(0) as f64 / 1000.0);
            }
            Some(MessageState::Dead) => s.dead = n,
            Some(MessageState::Delivered) => s.delivered = n,
            None => {}
        }
    }
    let mut out: Vec<RouteSummary> = by_route.into_values().collect();
    out.sort_by(|a, b| a.route.cmp(&b.route));
    Ok(out)
}

fn format_ms(ms: i64) -> String {
    jiff::Timestamp::from_millisecond(ms)
        .map(|t| t.to_string())
        .unwrap_or_else(|_| ms.to_string())
}

/// Encodes headers as `name: value` lines. Header values never contain a line break (HTTP
/// forbids control characters in them), so a newline separates them unambiguously; values
/// are kept as bytes, since HTTP allows non-UTF-8 ones.
pub fn encode_headers(headers: &HeaderMap) -> Vec<u8> {
    let mut out = Vec::with_capacity(headers.len() * 32);
    for (name, value) in headers {
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.push(b'\n');
    }
    out
}

/// Decodes [`encode_headers`]' format; lines that are not a valid header are skipped.
pub fn decode_headers(bytes: &[u8]) -> HeaderMap {
    let mut out = HeaderMap::new();
    for line in bytes.split(|b| *b == b'\n') {
        let Some(colon) = line.iter().position(|b| *b == b':') else {
            continue;
        };
        let (name, rest) = line.split_at(colon);
        let value = rest[1..].strip_prefix(b" ").unwrap_or(&rest[1..]);
        if let (Ok(n), Ok(v)) = (HeaderName::from_bytes(name), HeaderValue::from_bytes(value)) {
            out.append(n, v);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Store;
    use std::path::Path;

    fn msg(id: &str, route: &str, created_ms: i64) -> NewMessage {
        NewMessage {
            id: id.into(),
            route: route.into(),
            method: "POST".into(),
            query: Some("a=1".into()),
            headers: b"content-type: application/json\n".to_vec(),
            body: Bytes::from_static(b"{\"n\":1}"),
            client_ip: "203.0.113.9".into(),
            created_ms,
        }
    }

    #[test]
    fn headers_round_trip_with_repeats_and_non_utf8_values() {
        let mut h = HeaderMap::new();
        h.append("x-a", HeaderValue::from_static("1"));
        h.append("x-a", HeaderValue::from_static("2"));
        h.insert("x-latin1", HeaderValue::from_bytes(b"caf\xe9: ok").unwrap());
        h.insert("content-type", HeaderValue::from_static("text/plain"));
        let back = decode_headers(&encode_headers(&h));
        assert_eq!(back, h);
        assert_eq!(decode_headers(b"garbage\n: no name\nx-b: 1\n").len(), 1);
    }

    #[test]
    fn pending_messages_come_in_arrival_order_and_attempts_are_recorded() {
        let s = Store::open(Path::new(":memory:")).unwrap();
        let c = s.lock();
        for (i, id) in ["a", "b", "c"].iter().enumerate() {
            insert(&c, &msg(id, "hooks", 1000 + i as i64)).unwrap();
        }
        insert(&c, &msg("x", "other", 1)).unwrap();
        let due = pending(&c, "hooks", 10).unwrap();
        assert_eq!(due.len(), 3);
        assert_eq!(pending_due(&c, "hooks", 1001, 10).unwrap(), due[..2]);
        assert!(due.windows(2).all(|w| w[0].seq < w[1].seq));
        let first = load_pending(&c, due[0].seq).unwrap().unwrap();
        assert_eq!(first.id, "a");
        assert_eq!(first.query.as_deref(), Some("a=1"));
        assert_eq!(first.headers["content-type"], "application/json");

        let retry = AttemptRecord {
            seq: due[0].seq,
            attempts: 1,
            at_ms: 2000,
            status: Some(503),
            error: Some("HTTP 503".into()),
            change: Change::Retry { next_ms: 5000 },
        };
        assert!(record_attempt(&c, &retry).unwrap());
        assert_eq!(
            pending(&c, "hooks", 1).unwrap()[0],
            Due {
                seq: due[0].seq,
                attempts: 1,
                next_ms: 5000
            }
        );
        let dead = AttemptRecord {
            change: Change::Dead,
            attempts: 2,
            ..retry.clone()
        };
        assert!(record_attempt(&c, &dead).unwrap());
        // Recording again on a message that is no longer pending changes nothing.
        assert!(!record_attempt(&c, &dead).unwrap());
        let delivered = AttemptRecord {
            seq: due[1].seq,
            change: Change::Delivered { keep: true },
            status: Some(200),
            error: None,
            ..retry.clone()
        };
        assert!(record_attempt(&c, &delivered).unwrap());
        let gone = AttemptRecord {
            seq: due[2].seq,
            change: Change::Delivered { keep: false },
            ..delivered.clone()
        };
        assert!(record_attempt(&c, &gone).unwrap());
        assert!(load_pending(&c, due[2].seq).unwrap().is_none());

        let sum = summary(&c, 10_000, &["empty".into()]).unwrap();
        let names: Vec<&str> = sum.iter().map(|s| s.route.as_str()).collect();
        assert_eq!(names, ["empty", "hooks", "other"]);
        assert_eq!((sum[1].pending, sum[1].dead, sum[1].delivered), (0, 1, 1));
        assert_eq!(sum[2].pending, 1);
        assert_eq!(sum[2].oldest_pending_seconds, Some(9.999));
        let dead_list = list(
            &c,
            &ListFilter {
                state: Some(MessageState::Dead),
                limit: 10,
                ..ListFilter::default()
            },
        )
        .unwrap();
        assert_eq!(dead_list.len(), 1);
        assert_eq!(dead_list[0].id, "a");
        assert_eq!(dead_list[0].last_error.as_deref(), Some("HTTP 503"));
        assert_eq!(dead_list[0].size, 7);
        assert_eq!(dead_list[0].next_attempt, None);
    }

    #[test]
    fn retry_and_drop() {
        let s = Store::open(Path::new(":memory:")).unwrap();
        let c = s.lock();
        insert(&c, &msg("a", "hooks", 1)).unwrap();
        insert(&c, &msg("b", "hooks", 2)).unwrap();
        let due = pending(&c, "hooks", 10).unwrap();
        for d in &due {
            let a = AttemptRecord {
                seq: d.seq,
                attempts: 12,
                at_ms: 3,
                status: Some(500),
                error: Some("HTTP 500".into()),
                change: Change::Dead,
            };
            record_attempt(&c, &a).unwrap();
        }
        assert_eq!(retry(&c, "nope", 9).unwrap(), None);
        assert_eq!(retry(&c, "a", 9).unwrap(), Some(MessageState::Dead));
        assert_eq!(
            pending(&c, "hooks", 10).unwrap(),
            [Due {
                seq: due[0].seq,
                attempts: 0,
                next_ms: 9
            }]
        );
        assert_eq!(retry(&c, "a", 11).unwrap(), Some(MessageState::Pending));
        assert_eq!(pending(&c, "hooks", 10).unwrap()[0].next_ms, 11);
        assert_eq!(retry_dead(&c, "hooks", 12).unwrap(), 1);
        assert_eq!(pending_counts(&c).unwrap()["hooks"], 2);
        assert_eq!(
            drop_message(&c, "a").unwrap(),
            Some(("hooks".into(), MessageState::Pending))
        );
        assert_eq!(drop_message(&c, "a").unwrap(), None);
        assert_eq!(drop_all(&c, "hooks", MessageState::Dead).unwrap(), 0);
        assert_eq!(drop_all(&c, "hooks", MessageState::Pending).unwrap(), 1);
        assert!(pending_counts(&c).unwrap().is_empty());
    }

    #[test]
    fn purge_deletes_only_old_finished_messages_of_the_route() {
        let s = Store::open(Path::new(":memory:")).unwrap();
        let c = s.lock();
        for (id, done) in [("old", 100), ("new", 900)] {
            insert(&c, &msg(id, "hooks", 1)).unwrap();
            let seq = pending(&c, "hooks", 1).unwrap()[0].seq;
            record_attempt(
                &c,
                &AttemptRecord {
                    seq,
                    attempts: 1,
                    at_ms: done,
                    status: Some(400),
                    error: None,
                    change: Change::Dead,
                },
            )
            .unwrap();
        }
        insert(&c, &msg("waiting", "hooks", 1)).unwrap();
        assert_eq!(purge(&c, "hooks", MessageState::Dead, 500, 100).unwrap(), 1);
        assert_eq!(
            purge(&c, "hooks", MessageState::Delivered, 5000, 100).unwrap(),
            0
        );
        let left: Vec<String> = list(
            &c,
            &ListFilter {
                limit: 10,
                ..ListFilter::default()
            },
        )
        .unwrap()
        .into_iter()
        .map(|m| m.id)
        .collect();
        assert_eq!(left, ["new", "waiting"]);
    }

    #[test]
    fn trim_keeps_the_newest_finished_messages_and_every_pending_one() {
        let s = Store::open(Path::new(":memory:")).unwrap();
        let c = s.lock();
        for i in 0..5 {
            let id = format!("dead-{i}");
            insert(&c, &msg(&id, "hooks", 1)).unwrap();
            let seq = pending(&c, "hooks", 1).unwrap()[0].seq;
            record_attempt(
                &c,
                &AttemptRecord {
                    seq,
                    attempts: 1,
                    at_ms: 100 + i,
                    status: Some(400),
                    error: None,
                    change: Change::Dead,
                },
            )
            .unwrap();
        }
        insert(&c, &msg("waiting", "hooks", 1)).unwrap();
        insert(&c, &msg("other-route", "other", 1)).unwrap();
        assert_eq!(trim(&c, "hooks", MessageState::Dead, 2).unwrap(), 3);
        assert_eq!(trim(&c, "hooks", MessageState::Dead, 2).unwrap(), 0);
        let mut left: Vec<String> = list(
            &c,
            &ListFilter {
                limit: 10,
                ..ListFilter::default()
            },
        )
        .unwrap()
        .into_iter()
        .map(|m| m.id)
        .collect();
        left.sort();
        assert_eq!(left, ["dead-3", "dead-4", "other-route", "waiting"]);
    }
}
