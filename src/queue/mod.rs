//! Durable async delivery: routes with `mode = "async"` store every request that passed the
//! guards, answer `202 {"status":"queued","id":"…"}` once it is on disk, and deliver it to the
//! upstream in the background, with retries.
//!
//! ```text
//!  listener thread                writer thread                 background runtime
//!  ───────────────                ─────────────                 ──────────────────
//!  guards passed ─► Op::Insert ─► group commit (FULL) ─► reply ─► 202
//!                                        ▲                      notify ─► route worker
//!                                        │                                  │ oldest due message
//!                                        └── Op::Attempt (NORMAL) ◄── upstream: 2xx | retry | dead
//! ```
//!
//! - [`store`]: the table and its statements (shared with `hookwarden queue` and the admin API);
//! - `writer`: the thread that owns the queue's writes, with group commit;
//! - `worker`: one delivery task per async route;
//! - [`backoff`]: what a result means and how long to wait.
//!
//! Delivery is at least once: a message is marked delivered after the upstream's 2xx, so a
//! crash between the two sends it again. Every attempt carries the same
//! `X-Hookwarden-Delivery: <id>` and `X-Request-Id: <id>` (and, with outbound signing, the
//! same `webhook-id`), so the upstream can recognise a repeat.

pub mod backoff;
pub mod store;
mod worker;
mod writer;

use std::collections::HashMap;
use std::sync::mpsc::Sender;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio::sync::{Notify, oneshot, watch};
use tokio::task::JoinHandle;

use crate::config::{DeliveryConfig, RouteMode, StorageConfig};
use crate::events::metrics::{Metrics, QueueGauge};
use crate::forward::forwarded_headers;
use crate::gateway::Gateway;
use crate::policy::{Exchange, RoutePolicy};
use crate::store::{Store, StoreError};
pub use store::{ListFilter, Listed, MessageState, RouteSummary};
pub use writer::AcceptError;
use writer::{AdminResult, Op, Writer};

/// Why an operation on the queue failed.
#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    /// The store failed.
    #[error("queue store: {0}")]
    Store(String),
    /// The writer has stopped.
    #[error("the queue writer has stopped")]
    Stopped,
    /// The writer thread could not be started.
    #[error("cannot start the queue writer: {0}")]
    Thread(std::io::Error),
}

impl From<StoreError> for QueueError {
    fn from(e: StoreError) -> Self {
        QueueError::Store(e.to_string())
    }
}

/// The delivery queue. Cheap to clone.
#[derive(Clone)]
pub struct Queue {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Queue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Queue")
    }
}

struct Inner {
    tx: Sender<Op>,
    /// For the workers' reads, apart from the writer's connection.
    reader: Store,
    /// Pending messages per route, kept by the writer.
    pending: Arc<Mutex<HashMap<String, u64>>>,
    /// Wakes a route's worker when a message arrives; read lock-free on the accept path.
    notifiers: ArcSwap<HashMap<Arc<str>, Arc<Notify>>>,
    workers: Mutex<HashMap<Arc<str>, WorkerHandle>>,
    deps: Mutex<Option<worker::Deps>>,
    writer: Mutex<Option<std::thread::JoinHandle<()>>>,
}

struct WorkerHandle {
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl Queue {
    /// Opens the queue on the store at `storage.path` (its own write and read connections;
    /// an in-memory store shares `store`'s) and starts the writer thread. Workers start with
    /// [`Queue::start`].
    pub fn open(storage: &StorageConfig, store: &Store) -> Result<Queue, QueueError> {
        let (write, reader) = if storage.is_memory() {
            (store.clone(), store.clone())
        } else {
            (Store::open(&storage.path)?, Store::open(&storage.path)?)
        };
        Queue::open_on(write, reader, storage.queue_commit_batch)
    }

    /// Like [`Queue::open`] on given connections (`write` is used by the writer only).
    pub fn open_on(write: Store, reader: Store, commit_batch: usize) -> Result<Queue, QueueError> {
        let pending: Arc<Mutex<HashMap<String, u64>>> = Arc::default();
        let writer = Writer::new(write, commit_batch, pending.clone())?;
        let (tx, rx) = std::sync::mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("hookwarden-queue".into())
            .spawn(move || writer.run(rx))
            .map_err(QueueError::Thread)?;
        Ok(Queue {
            inner: Arc::new(Inner {
                tx,
                reader,
                pending,
                notifiers: ArcSwap::from_pointee(HashMap::new()),
                workers: Mutex::new(HashMap::new()),
                deps: Mutex::new(None),
                writer: Mutex::new(Some(thread)),
            }),
        })
    }

    /// Stores an exchange that passed every guard of an async `route`: the forwarded headers
    /// and query, the body after guards and decryption. Takes the exchange's headers and body
    /// and hands the message to the writer at once; the returned future resolves once the
    /// message is committed to disk (or refused). It owns what it needs, so it can run on
    /// after the request that made it is gone: the writer stores the message either way.
    pub fn accept(
        &self,
        route: &RoutePolicy,
        ex: &mut Exchange,
    ) -> impl Future<Output = Result<(), AcceptError>> + Send + 'static {
        let max_queued = route
            .delivery
            .as_ref()
            .map_or(crate::config::DeliveryConfig::default().max_queued, |d| {
                d.max_queued
            });
        let headers = forwarded_headers(ex);
        let msg = store::NewMessage {
            id: ex.request_id.clone(),
            route: route.name.clone(),
            method: ex.method.to_string(),
            query: ex.query.clone(),
            headers: store::encode_headers(&headers),
            body: std::mem::take(&mut ex.body),
            client_ip: ex.client_ip.to_string(),
            created_ms: jiff::Timestamp::now().as_millisecond(),
        };
        let (reply, rx) = oneshot::channel();
        let handed = self.inner.tx.send(Op::Insert {
            msg,
            max_queued,
            reply,
        });
        let inner = self.inner.clone();
        let name = route.name.clone();
        async move {
            handed.map_err(|_| AcceptError::Stopped)?;
            rx.await.map_err(|_| AcceptError::Stopped)??;
            if let Some(n) = inner.notifiers.load().get(&name) {
                n.notify_one();
            }
            Ok(())
        }
    }

    /// Records an attempt (through the writer). True when the message was still pending.
    pub(crate) async fn record(
        &self,
        route: Arc<str>,
        record: store::AttemptRecord,
    ) -> Result<bool, QueueError> {
        let (reply, rx) = oneshot::channel();
        self.inner
            .tx
            .send(Op::Attempt {
                route,
                record,
                reply,
            })
            .map_err(|_| QueueError::Stopped)?;
        rx.await
            .map_err(|_| QueueError::Stopped)?
            .map_err(QueueError::Store)
    }

    /// Runs an operator action on the writer and wakes every worker afterwards.
    async fn admin<T: Send + 'static>(
        &self,
        f: impl FnOnce(&rusqlite::Connection) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, QueueError> {
        let (reply, rx) = oneshot::channel();
        let run =
            Box::new(move |c: &rusqlite::Connection| f(c).map(|v| Box::new(v) as AdminResult));
        self.inner
            .tx
            .send(Op::Admin { run, reply })
            .map_err(|_| QueueError::Stopped)?;
        let any = rx
            .await
            .map_err(|_| QueueError::Stopped)?
            .map_err(QueueError::Store)?;
        for n in self.inner.notifiers.load().values() {
            n.notify_one();
        }
        any.downcast::<T>()
            .map(|b| *b)
            .map_err(|_| QueueError::Store("unexpected result type".into()))
    }

    /// Makes message `id` due now (a dead or delivered one pending again, attempts reset).
    /// Returns the state it had, `None` when there is no such message.
    pub async fn retry(&self, id: &str) -> Result<Option<MessageState>, QueueError> {
        let id = id.to_owned();
        self.admin(move |c| store::retry(c, &id, jiff::Timestamp::now().as_millisecond()))
            .await
    }

    /// Makes every dead message of `route` pending again. Returns how many.
    pub async fn retry_dead(&self, route: &str) -> Result<u64, QueueError> {
        let route = route.to_owned();
        self.admin(move |c| store::retry_dead(c, &route, jiff::Timestamp::now().as_millisecond()))
            .await
    }

    /// Deletes message `id`. Returns its route and state, `None` when there is no such message.
    pub async fn drop_message(
        &self,
        id: &str,
    ) -> Result<Option<(String, MessageState)>, QueueError> {
        let id = id.to_owned();
        self.admin(move |c| store::drop_message(c, &id)).await
    }

    /// Deletes every message of `route` in `state`. Returns how many.
    pub async fn drop_all(&self, route: &str, state: MessageState) -> Result<u64, QueueError> {
        let route = route.to_owned();
        self.admin(move |c| store::drop_all(c, &route, state)).await
    }

    /// Messages matching `f` (read connection; never headers or bodies).
    pub async fn list(&self, f: ListFilter) -> Result<Vec<Listed>, QueueError> {
        let reader = self.inner.reader.clone();
        tokio::task::spawn_blocking(move || store::list(&reader.lock(), &f))
            .await
            .map_err(|e| QueueError::Store(e.to_string()))?
            .map_err(QueueError::from)
    }

    /// Counts per route (every async route of the current config included).
    pub async fn summary(&self) -> Result<Vec<RouteSummary>, QueueError> {
        let reader = self.inner.reader.clone();
        let also = self.async_routes();
        tokio::task::spawn_blocking(move || {
            store::summary(
                &reader.lock(),
                jiff::Timestamp::now().as_millisecond(),
                &also,
            )
        })
        .await
        .map_err(|e| QueueError::Store(e.to_string()))?
        .map_err(QueueError::from)
    }

    /// The queue's gauges for `/metrics`.
    pub async fn gauges(&self) -> Vec<QueueGauge> {
        match self.summary().await {
            Ok(s) => s
                .into_iter()
                .map(|r| QueueGauge {
                    route: r.route,
                    pending: r.pending,
                    dead: r.dead,
                    oldest_pending_seconds: r.oldest_pending_seconds.unwrap_or(0.0),
                })
                .collect(),
            Err(e) => {
                tracing::warn!(error = %e, "queue: cannot read the gauges");
                Vec::new()
            }
        }
    }

    /// Pending messages of `route`, as the writer counts them.
    pub fn pending(&self, route: &str) -> u64 {
        self.inner
            .pending
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(route)
            .copied()
            .unwrap_or(0)
    }

    /// Names of the routes with a running worker.
    fn async_routes(&self) -> Vec<String> {
        let mut v: Vec<String> = self
            .inner
            .workers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .keys()
            .map(|k| k.to_string())
            .collect();
        v.sort();
        v
    }

    /// Starts a delivery worker for every async route of `gateway` (on the current Tokio
    /// runtime, which must be the app's background one) and warns about messages of routes
    /// that are not async in this config.
    pub fn start(&self, gateway: &Arc<Gateway>, metrics: Arc<Metrics>) {
        *self.inner.deps.lock().unwrap_or_else(|p| p.into_inner()) = Some(worker::Deps {
            gateway: Arc::downgrade(gateway),
            metrics,
        });
        self.sync_routes();
        let counts = self
            .inner
            .pending
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let running = self.async_routes();
        for (route, n) in counts {
            if n > 0 && !running.contains(&route) {
                tracing::warn!(
                    route = %route,
                    pending = n,
                    "the queue holds messages for a route that is not an async route in this config; \
                     they are kept until the route is back (mode = \"async\") or dropped with `hookwarden queue drop`"
                );
            }
        }
    }

    /// Brings the workers in line with the gateway's current routes: a worker for every async
    /// route, none for the others (their pending messages stay in the store). Called at start
    /// and after every reload.
    pub fn sync_routes(&self) {
        let Some(deps) = self
            .inner
            .deps
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
        else {
            return;
        };
        let Some(gateway) = deps.gateway.upgrade() else {
            return;
        };
        let table = gateway.routes();
        let wanted: HashMap<Arc<str>, DeliveryConfig> = table
            .routes()
            .filter(|r| r.mode == RouteMode::Async)
            .filter_map(|r| r.delivery.clone().map(|d| (r.name.clone(), d)))
            .collect();
        let mut workers = self.inner.workers.lock().unwrap_or_else(|p| p.into_inner());
        workers.retain(|name, w| {
            let keep = wanted.contains_key(name) && !w.task.is_finished();
            if !keep {
                let _ = w.stop.send(true);
            }
            keep
        });
        let mut notifiers: HashMap<Arc<str>, Arc<Notify>> = (**self.inner.notifiers.load())
            .iter()
            .filter(|(k, _)| wanted.contains_key(*k))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        for name in wanted.keys() {
            if workers.contains_key(name) {
                continue;
            }
            let notify = notifiers
                .entry(name.clone())
                .or_insert_with(|| Arc::new(Notify::new()))
                .clone();
            let (stop, stop_rx) = watch::channel(false);
            let task = tokio::spawn(worker::run(
                self.clone(),
                deps.clone(),
                name.clone(),
                notify,
                stop_rx,
            ));
            workers.insert(name.clone(), WorkerHandle { stop, task });
        }
        self.inner.notifiers.store(Arc::new(notifiers));
        let retention = wanted
            .iter()
            .map(|(n, d)| (n.to_string(), d.keep_delivered, d.keep_dead, d.max_queued))
            .collect();
        let _ = self.inner.tx.send(Op::SetRetention(retention));
    }

    /// Stops the workers (attempts in flight get a few seconds to finish), then the writer,
    /// which commits what it still holds. At most `timeout` in all.
    pub async fn shutdown(&self, timeout: Duration) {
        let deadline = tokio::time::Instant::now() + timeout;
        let workers: Vec<WorkerHandle> = self
            .inner
            .workers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .drain()
            .map(|(_, w)| w)
            .collect();
        for w in &workers {
            let _ = w.stop.send(true);
        }
        for w in workers {
            let abort = w.task.abort_handle();
            if tokio::time::timeout_at(deadline, w.task).await.is_err() {
                abort.abort();
            }
        }
        let _ = self.inner.tx.send(Op::Stop);
        let thread = self
            .inner
            .writer
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if let Some(t) = thread {
            let joined = tokio::task::spawn_blocking(move || t.join());
            if tokio::time::timeout_at(deadline, joined).await.is_err() {
                tracing::warn!("queue writer did not finish in time");
            }
        }
    }
}
