//! The queue's writer: one thread that owns the queue's write connection and commits every
//! change to the queue table, with group commit.
//!
//! Accepts (from the listener threads), attempt results (from the delivery workers) and
//! operator actions arrive over one channel. The writer takes whatever is waiting, up to
//! `[storage] queue_commit_batch` operations, applies them in one transaction and commits it
//! once; then it answers every sender. A burst of concurrent accepts thus costs one fsync per
//! batch, not one per request, and a lone request pays no waiting time for a batch to fill:
//! batches form only from what arrived while the previous commit was on disk.
//!
//! A batch holding an accept is committed with `synchronous = FULL` (the WAL is fsynced
//! before the 202 goes out); batches holding only attempt results use `NORMAL` (written to
//! the WAL, which survives a crash of the process; after a power cut the last results may be
//! lost and those messages delivered again, which `X-Hookwarden-Delivery` lets the upstream
//! recognise).
//!
//! The writer also keeps the count of pending messages per route, which the accept path's
//! `max_queued` check needs: exact for what this process changes, recounted from the table
//! now and then for what other processes (`hookwarden queue …`) change.

use std::collections::HashMap;
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rusqlite::Connection;
use tokio::sync::oneshot;

use super::store::{self, AttemptRecord, Change, MessageState, NewMessage};
use crate::store::{Store, StoreError};

/// How often the pending counts are recounted from the table.
const RECOUNT_EVERY: Duration = Duration::from_secs(1);
/// How often delivered and dead messages past their retention are deleted.
const PURGE_EVERY: Duration = Duration::from_secs(60);
/// Rows deleted per purge statement, so the writer never holds the lock for long.
const PURGE_CHUNK: i64 = 5_000;

/// Why a message was not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AcceptError {
    /// The route already holds `max_queued` pending messages.
    #[error("the route's queue is full")]
    Full,
    /// The store refused the write.
    #[error("the queue store failed: {0}")]
    Store(String),
    /// The writer has stopped (the gateway is shutting down).
    #[error("the queue writer has stopped")]
    Stopped,
}

/// Retention per route: `(route, keep_delivered, keep_dead, max_queued)`. Delivered and dead
/// messages are each kept at most `max_queued` (the newest), besides their time limits.
pub type Retention = Vec<(String, Duration, Duration, u64)>;

/// What an operator action returns (downcast by the caller, who knows the type).
pub type AdminResult = Box<dyn std::any::Any + Send>;
/// An operator action's statements.
pub type AdminRun = Box<dyn FnOnce(&Connection) -> Result<AdminResult, StoreError> + Send>;

/// A request to the writer.
pub enum Op {
    /// Store a message unless its route holds `max_queued` pending messages.
    Insert {
        /// The message.
        msg: NewMessage,
        /// The route's cap.
        max_queued: u64,
        /// Answered after the commit.
        reply: oneshot::Sender<Result<(), AcceptError>>,
    },
    /// Record an attempt's result.
    Attempt {
        /// The route (for the pending count).
        route: Arc<str>,
        /// The result.
        record: AttemptRecord,
        /// True when the message was still pending (the record applied).
        reply: oneshot::Sender<Result<bool, String>>,
    },
    /// An operator action (retry, drop); the pending counts are recounted after it.
    Admin {
        /// The statements; what they return goes back to the sender.
        run: AdminRun,
        /// The result.
        reply: oneshot::Sender<Result<AdminResult, String>>,
    },
    /// Replace the retention settings used by the purge.
    SetRetention(Retention),
    /// Finish what is queued and exit.
    Stop,
}

/// The writer's state on its thread.
pub struct Writer {
    store: Store,
    batch_max: usize,
    pending: Arc<Mutex<HashMap<String, u64>>>,
    retention: Retention,
    durable: Option<bool>,
}

impl Writer {
    /// A writer on `store` (its own connection to the file), committing at most `batch_max`
    /// operations at once. `pending` receives the pending counts.
    pub fn new(
        store: Store,
        batch_max: usize,
        pending: Arc<Mutex<HashMap<String, u64>>>,
    ) -> Result<Writer, StoreError> {
        let counts = store::pending_counts(&store.lock())?;
        *pending.lock().unwrap_or_else(|p| p.into_inner()) = counts;
        Ok(Writer {
            store,
            batch_max: batch_max.max(1),
            pending,
            retention: Vec::new(),
            durable: None,
        })
    }

    /// Runs until [`Op::Stop`] or until every sender is gone.
    pub fn run(mut self, rx: Receiver<Op>) {
        let mut last_recount = Instant::now();
        let mut last_purge = Instant::now();
        let mut stopping = false;
        while !stopping {
            let first = match rx.recv_timeout(Duration::from_secs(1)) {
                Ok(op) => Some(op),
                Err(RecvTimeoutError::Timeout) => None,
                Err(RecvTimeoutError::Disconnected) => break,
            };
            let mut batch = Vec::new();
            if let Some(op) = first {
                batch.push(op);
                while batch.len() < self.batch_max {
                    match rx.try_recv() {
                        Ok(op) => batch.push(op),
                        Err(_) => break,
                    }
                }
            }
            let mut ops = Vec::with_capacity(batch.len());
            for op in batch {
                match op {
                    Op::Stop => stopping = true,
                    Op::SetRetention(r) => self.retention = r,
                    op => ops.push(op),
                }
            }
            if !ops.is_empty() {
                self.commit(ops);
            }
            if last_recount.elapsed() >= RECOUNT_EVERY {
                self.recount();
                last_recount = Instant::now();
            }
            if last_purge.elapsed() >= PURGE_EVERY {
                self.purge();
                last_purge = Instant::now();
            }
        }
        // Stopping: commit whatever is still waiting.
        let rest: Vec<Op> = rx
            .try_iter()
            .filter(|op| !matches!(op, Op::Stop | Op::SetRetention(_)))
            .collect();
        if !rest.is_empty() {
            self.commit(rest);
        }
    }

    /// Applies `ops` in one transaction and answers their senders after the commit.
    fn commit(&mut self, ops: Vec<Op>) {
        let durable = ops.iter().any(|op| matches!(op, Op::Insert { .. }));
        let mut conn = self.store.lock();
        if self.durable != Some(durable) {
            let mode = if durable { "FULL" } else { "NORMAL" };
            match conn.pragma_update(None, "synchronous", mode) {
                Ok(()) => self.durable = Some(durable),
                Err(e) => {
                    drop(conn);
                    fail_all(ops, &format!("cannot set synchronous = {mode}: {e}"));
                    return;
                }
            }
        }
        let tx = match conn.transaction() {
            Ok(tx) => tx,
            Err(e) => {
                fail_all(ops, &e.to_string());
                return;
            }
        };
        let mut counts = self
            .pending
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let mut answers: Vec<Answer> = Vec::with_capacity(ops.len());
        let mut recount = false;
        for op in ops {
            match op {
                Op::Insert {
                    msg,
                    max_queued,
                    reply,
                } => {
                    let n = counts.get(&*msg.route).copied().unwrap_or(0);
                    let result = if n >= max_queued {
                        Err(AcceptError::Full)
                    } else {
                        match store::insert(&tx, &msg) {
                            Ok(()) => {
                                counts.insert(msg.route.to_string(), n + 1);
                                Ok(())
                            }
                            Err(e) => Err(AcceptError::Store(e.to_string())),
                        }
                    };
                    answers.push(Answer::Insert(reply, result));
                }
                Op::Attempt {
                    route,
                    record,
                    reply,
                } => {
                    let result = store::record_attempt(&tx, &record).map_err(|e| e.to_string());
                    let finished = !matches!(record.change, Change::Retry { .. });
                    if matches!(result, Ok(true))
                        && finished
                        && let Some(n) = counts.get_mut(&*route)
                    {
                        *n = n.saturating_sub(1);
                    }
                    answers.push(Answer::Attempt(reply, result));
                }
                Op::Admin { run, reply } => {
                    recount = true;
                    answers.push(Answer::Admin(reply, run(&tx).map_err(|e| e.to_string())));
                }
                Op::SetRetention(_) | Op::Stop => {}
            }
        }
        match tx.commit() {
            Ok(()) => {
                if recount && let Ok(c) = store::pending_counts(&conn) {
                    counts = c;
                }
                drop(conn);
                *self.pending.lock().unwrap_or_else(|p| p.into_inner()) = counts;
                for a in answers {
                    a.send();
                }
            }
            Err(e) => {
                drop(conn);
                let msg = e.to_string();
                tracing::error!(error = %msg, "queue: commit failed");
                for a in answers {
                    a.fail(&msg);
                }
            }
        }
    }

    fn recount(&self) {
        let counts = store::pending_counts(&self.store.lock());
        match counts {
            Ok(c) => *self.pending.lock().unwrap_or_else(|p| p.into_inner()) = c,
            Err(e) => tracing::warn!(error = %e, "queue: cannot recount pending messages"),
        }
    }

    fn purge(&self) {
        let now = jiff::Timestamp::now().as_millisecond();
        for (route, keep_delivered, keep_dead, max_kept) in &self.retention {
            for (state, keep) in [
                (MessageState::Delivered, keep_delivered),
                (MessageState::Dead, keep_dead),
            ] {
                // Finished messages keep their bodies; without a count bound, a client who can
                // make the upstream refuse its messages (dead letters, kept for days) could grow
                // the file without end while `max_queued` only bounds the pending ones.
                match store::trim(&self.store.lock(), route, state, *max_kept) {
                    Ok(0) => {}
                    Ok(n) => {
                        tracing::warn!(route = %route, state = %state, deleted = n, max_queued = max_kept, "queue retention: over max_queued finished messages, oldest deleted");
                    }
                    Err(e) => tracing::warn!(error = %e, "queue retention failed"),
                }
                let keep_ms = i64::try_from(keep.as_millis()).unwrap_or(i64::MAX);
                let before = now.saturating_sub(keep_ms);
                loop {
                    let n = store::purge(&self.store.lock(), route, state, before, PURGE_CHUNK);
                    match n {
                        Ok(n) if (n as i64) < PURGE_CHUNK => {
                            if n > 0 {
                                tracing::info!(route = %route, state = %state, deleted = n, "queue retention");
                            }
                            break;
                        }
                        Ok(_) => {}
                        Err(e) => {
                            tracing::warn!(error = %e, "queue retention failed");
                            break;
                        }
                    }
                }
            }
        }
    }
}

enum Answer {
    Insert(
        oneshot::Sender<Result<(), AcceptError>>,
        Result<(), AcceptError>,
    ),
    Attempt(oneshot::Sender<Result<bool, String>>, Result<bool, String>),
    Admin(
        oneshot::Sender<Result<AdminResult, String>>,
        Result<AdminResult, String>,
    ),
}

impl Answer {
    fn send(self) {
        match self {
            Answer::Insert(tx, r) => drop(tx.send(r)),
            Answer::Attempt(tx, r) => drop(tx.send(r)),
            Answer::Admin(tx, r) => drop(tx.send(r)),
        }
    }

    /// The transaction did not commit: nothing of it happened.
    fn fail(self, msg: &str) {
        match self {
            Answer::Insert(tx, r) => {
                let r = match r {
                    Err(AcceptError::Full) => Err(AcceptError::Full),
                    _ => Err(AcceptError::Store(msg.to_owned())),
                };
                drop(tx.send(r));
            }
            Answer::Attempt(tx, _) => drop(tx.send(Err(msg.to_owned()))),
            Answer::Admin(tx, _) => drop(tx.send(Err(msg.to_owned()))),
        }
    }
}

fn fail_all(ops: Vec<Op>, msg: &str) {
    tracing::error!(error = %msg, "queue: cannot write");
    for op in ops {
        match op {
            Op::Insert { reply, .. } => drop(reply.send(Err(AcceptError::Store(msg.to_owned())))),
            Op::Attempt { reply, .. } => drop(reply.send(Err(msg.to_owned()))),
            Op::Admin { reply, .. } => drop(reply.send(Err(msg.to_owned()))),
            Op::SetRetention(_) | Op::Stop => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn msg(id: &str) -> NewMessage {
        NewMessage {
            id: id.into(),
            route: "hooks".into(),
            method: "POST".into(),
            query: None,
            headers: Vec::new(),
            body: Bytes::from_static(b"{}"),
            client_ip: "127.0.0.1".into(),
            created_ms: 1,
        }
    }

    fn synchronous(store: &Store) -> i64 {
        store
            .lock()
            .pragma_query_value(None, "synchronous", |r| r.get(0))
            .unwrap()
    }

    #[test]
    fn accepts_commit_with_fsync_results_without_and_the_cap_holds() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("q.db")).unwrap();
        let pending: Arc<Mutex<HashMap<String, u64>>> = Arc::default();
        let writer = Writer::new(store.clone(), 16, pending.clone()).unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        // Queued before the writer runs: taken as one batch.
        let mut replies = Vec::new();
        for id in ["a", "b", "c"] {
            let (reply, r) = oneshot::channel();
            tx.send(Op::Insert {
                msg: msg(id),
                max_queued: 2,
                reply,
            })
            .unwrap();
            replies.push(r);
        }
        let thread = std::thread::spawn(move || writer.run(rx));
        let results: Vec<_> = replies
            .into_iter()
            .map(|r| r.blocking_recv().unwrap())
            .collect();
        assert_eq!(results, [Ok(()), Ok(()), Err(AcceptError::Full)]);
        assert_eq!(
            synchronous(&store),
            2,
            "accepts must be committed with FULL"
        );
        assert_eq!(pending.lock().unwrap()["hooks"], 2);

        let seq = store::pending(&store.lock(), "hooks", 1).unwrap()[0].seq;
        let (reply, r) = oneshot::channel();
        tx.send(Op::Attempt {
            route: "hooks".into(),
            record: AttemptRecord {
                seq,
                attempts: 1,
                at_ms: 2,
                status: Some(200),
                error: None,
                change: Change::Delivered { keep: false },
            },
            reply,
        })
        .unwrap();
        assert_eq!(r.blocking_recv().unwrap(), Ok(true));
        assert_eq!(synchronous(&store), 1, "attempt results need no fsync");
        assert_eq!(pending.lock().unwrap()["hooks"], 1);

        // Room for one more again.
        let (reply, r) = oneshot::channel();
        tx.send(Op::Insert {
            msg: msg("d"),
            max_queued: 2,
            reply,
        })
        .unwrap();
        assert_eq!(r.blocking_recv().unwrap(), Ok(()));
        tx.send(Op::Stop).unwrap();
        thread.join().unwrap();
        assert_eq!(store::pending_counts(&store.lock()).unwrap()["hooks"], 2);
    }
}
