//! `[route.delivery]`: how an async route (`mode = "async"`) delivers the messages it queued.
//!
//! Read only for async routes; on a sync route the table is an error (it would do nothing).
//! Every key has a default, so `mode = "async"` alone gives a working queue.

use std::time::Duration;

use super::abuse::parse_rate;
use super::reader::{Issue, Reader, Section, Severity};
use super::route::{RouteConfig, RouteMode};
use super::server::StorageConfig;

/// Default `attempts`.
pub const DEFAULT_ATTEMPTS: u32 = 12;
/// Default `backoff`.
pub const DEFAULT_BACKOFF: Duration = Duration::from_secs(1);
/// Default `max_backoff`.
pub const DEFAULT_MAX_BACKOFF: Duration = Duration::from_secs(600);
/// Default `concurrency`.
pub const DEFAULT_CONCURRENCY: u32 = 1;
/// Default `max_queued`.
pub const DEFAULT_MAX_QUEUED: u64 = 100_000;
/// Default `keep_delivered`.
pub const DEFAULT_KEEP_DELIVERED: Duration = Duration::from_secs(3600);
/// Default `keep_dead`.
pub const DEFAULT_KEEP_DEAD: Duration = Duration::from_secs(30 * 86_400);

/// `[route.delivery]`, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliveryConfig {
    /// Attempts per message, the first included; then the message is dead-lettered.
    pub attempts: u32,
    /// Wait before the first retry; doubled at each further one.
    pub backoff: Duration,
    /// Longest computed wait between two attempts.
    pub max_backoff: Duration,
    /// Deliveries in flight at once for the route; 1 keeps arrival order.
    pub concurrency: u32,
    /// Pending messages at most; beyond it new requests get 503 (`queue_full`). Delivered and
    /// dead messages are each kept at most this many too.
    pub max_queued: u64,
    /// Deliveries started at most per period (`count`, `period`), spaced evenly; `None`: as
    /// fast as the upstream answers.
    pub rate: Option<(u32, Duration)>,
    /// How long a delivered message (and its body) stays in the store, for inspection and
    /// redelivery; zero deletes it once delivered.
    pub keep_delivered: Duration,
    /// How long a dead-lettered message stays in the store before it is deleted.
    pub keep_dead: Duration,
}

impl Default for DeliveryConfig {
    fn default() -> Self {
        DeliveryConfig {
            attempts: DEFAULT_ATTEMPTS,
            backoff: DEFAULT_BACKOFF,
            max_backoff: DEFAULT_MAX_BACKOFF,
            concurrency: DEFAULT_CONCURRENCY,
            max_queued: DEFAULT_MAX_QUEUED,
            rate: None,
            keep_delivered: DEFAULT_KEEP_DELIVERED,
            keep_dead: DEFAULT_KEEP_DEAD,
        }
    }
}

/// Reads a route's `mode` and, for async routes, its `[route.delivery]` table (defaults when
/// absent). Returns the mode and the delivery settings (`None` for sync routes).
pub(super) fn read_mode(s: &Section<'_, '_>) -> (RouteMode, Option<DeliveryConfig>) {
    let mode = match s.string("mode").as_deref() {
        None | Some("sync") => RouteMode::Sync,
        Some("async") => RouteMode::Async,
        Some(other) => {
            s.error(
                "mode",
                format!("\"{other}\" is not a route mode"),
                "use \"sync\" (proxy and stream the answer back) or \"async\" (store, answer 202, deliver with retries)",
            );
            RouteMode::Sync
        }
    };
    let table = s.table("delivery");
    match mode {
        RouteMode::Sync => {
            if table.is_some() {
                s.error(
                    "delivery",
                    "only applies to async routes, and this route is sync",
                    "set mode = \"async\" to queue this route's requests, or remove [route.delivery]",
                );
            }
            (mode, None)
        }
        RouteMode::Async => (mode, Some(table.map(read_delivery).unwrap_or_default())),
    }
}

fn read_delivery(s: Section<'_, '_>) -> DeliveryConfig {
    let mut cfg = DeliveryConfig::default();
    if let Some(n) = s.integer("attempts", 1, 10_000) {
        cfg.attempts = n as u32;
    }
    for (key, slot) in [
        ("backoff", &mut cfg.backoff),
        ("max_backoff", &mut cfg.max_backoff),
    ] {
        match s.duration(key) {
            Some(d) if d.is_zero() => s.error(
                key,
                "is zero, so a failing upstream would be retried in a tight loop",
                "use a positive duration such as \"1s\"",
            ),
            Some(d) => *slot = d,
            None => {}
        }
    }
    if cfg.max_backoff < cfg.backoff {
        s.error(
            "max_backoff",
            format!(
                "({:?}) is shorter than backoff ({:?})",
                cfg.max_backoff, cfg.backoff
            ),
            "make max_backoff at least as long as backoff, e.g. backoff = \"1s\", max_backoff = \"10m\"",
        );
    }
    if let Some(n) = s.integer("concurrency", 1, 1024) {
        cfg.concurrency = n as u32;
    }
    if let Some(n) = s.integer("max_queued", 1, 1_000_000_000) {
        cfg.max_queued = n as u64;
    }
    if let Some(r) = s.string("rate") {
        match parse_rate(&r) {
            Ok(rate) => cfg.rate = Some(rate),
            Err(e) => s.error(
                "rate",
                e,
                "write \"N/period\", e.g. \"10/second\" or \"100/minute\"; omit it to deliver as fast as the upstream answers",
            ),
        }
    }
    if let Some(d) = s.duration("keep_delivered") {
        cfg.keep_delivered = d;
    }
    if let Some(d) = s.duration("keep_dead") {
        if d < Duration::from_secs(60) {
            s.error(
                "keep_dead",
                "is shorter than a minute, so dead letters would vanish before anyone could look at them",
                "use e.g. \"7d\" or \"30d\"",
            );
        } else {
            cfg.keep_dead = d;
        }
    }
    s.finish();
    cfg
}

/// Warns about async routes whose queue cannot survive a restart.
pub(super) fn lint(reader: &Reader<'_>, routes: &[RouteConfig], storage: &StorageConfig) {
    if !storage.is_memory() {
        return;
    }
    for r in routes.iter().filter(|r| r.mode == RouteMode::Async) {
        reader.push(Issue {
            severity: Severity::Warning,
            key: format!("route[{}].mode", r.name),
            problem: "queues messages in an in-memory store ([storage] path = \":memory:\"): \
                      messages accepted with 202 are lost when the gateway stops"
                .into(),
            fix: "set [storage] path to a file, e.g. path = \"hookwarden.db\"".into(),
        });
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::config::{ConfigError, Loaded, load_str};

    fn load(route_extra: &str, rest: &str) -> Result<Loaded, ConfigError> {
        let text = format!(
            "{rest}\n[[route]]\nname = \"hooks\"\npath = \"/hooks\"\n{route_extra}\n[route.upstream]\nurl = \"http://127.0.0.1:5678/hook\"\n"
        );
        load_str(&text, "t", Path::new("/tmp"), &|_| None)
    }

    fn errors(e: &ConfigError) -> Vec<(String, String)> {
        e.issues()
            .iter()
            .filter(|i| i.severity == Severity::Error)
            .map(|i| (i.key.clone(), i.problem.clone()))
            .collect()
    }

    #[test]
    fn async_mode_alone_gets_the_documented_defaults() {
        let l = load("mode = \"async\"", "").unwrap();
        let r = &l.config.routes[0];
        assert_eq!(r.mode, RouteMode::Async);
        let d = r.delivery.as_ref().unwrap();
        assert_eq!(d, &DeliveryConfig::default());
        assert_eq!(d.attempts, 12);
        assert_eq!(d.backoff, Duration::from_secs(1));
        assert_eq!(d.max_backoff, Duration::from_secs(600));
        assert_eq!(d.concurrency, 1);
        assert_eq!(d.max_queued, 100_000);
        assert_eq!(d.rate, None);
    }

    #[test]
    fn sync_routes_have_no_delivery_settings() {
        let l = load("", "").unwrap();
        assert_eq!(l.config.routes[0].mode, RouteMode::Sync);
        assert!(l.config.routes[0].delivery.is_none());
    }

    #[test]
    fn every_key_is_read() {
        let l = load(
            "mode = \"async\"\n[route.delivery]\nattempts = 3\nbackoff = \"50ms\"\nmax_backoff = \"2s\"\nconcurrency = 4\nmax_queued = 10\nrate = \"5/second\"\nkeep_delivered = \"0s\"\nkeep_dead = \"7d\"",
            "",
        )
        .unwrap();
        let d = l.config.routes[0].delivery.clone().unwrap();
        assert_eq!(
            d,
            DeliveryConfig {
                attempts: 3,
                backoff: Duration::from_millis(50),
                max_backoff: Duration::from_secs(2),
                concurrency: 4,
                max_queued: 10,
                rate: Some((5, Duration::from_secs(1))),
                keep_delivered: Duration::ZERO,
                keep_dead: Duration::from_secs(7 * 86_400),
            }
        );
    }

    #[test]
    fn a_delivery_table_on_a_sync_route_is_an_error_with_a_fix() {
        let e = load("[route.delivery]\nattempts = 3", "").unwrap_err();
        let errors: Vec<_> = e
            .issues()
            .iter()
            .filter(|i| i.severity == Severity::Error)
            .collect();
        assert_eq!(errors.len(), 1, "{e}");
        assert_eq!(errors[0].key, "route[hooks].delivery");
        assert!(errors[0].fix.contains("mode = \"async\""), "{e}");
    }

    #[test]
    fn bad_values_name_their_key() {
        let e = load(
            "mode = \"async\"\n[route.delivery]\nattempts = 0\nbackoff = \"0s\"\nconcurrency = 5000\nrate = \"fast\"\nkeep_dead = \"1s\"\natempts = 2",
            "",
        )
        .unwrap_err();
        let keys: Vec<String> = errors(&e).into_iter().map(|(k, _)| k).collect();
        assert_eq!(
            keys,
            [
                "route[hooks].delivery.attempts",
                "route[hooks].delivery.backoff",
                "route[hooks].delivery.concurrency",
                "route[hooks].delivery.rate",
                "route[hooks].delivery.keep_dead",
                "route[hooks].delivery.atempts",
            ],
            "{e}"
        );
        assert!(e.to_string().contains("did you mean `attempts`?"), "{e}");
    }

    #[test]
    fn max_backoff_below_backoff_is_an_error() {
        let e = load(
            "mode = \"async\"\n[route.delivery]\nbackoff = \"1m\"\nmax_backoff = \"10s\"",
            "",
        )
        .unwrap_err();
        assert_eq!(errors(&e)[0].0, "route[hooks].delivery.max_backoff");
    }

    #[test]
    fn an_unknown_mode_lists_both_modes() {
        let e = load("mode = \"queue\"", "").unwrap_err();
        assert_eq!(e.issues()[0].key, "route[hooks].mode");
        assert!(e.issues()[0].fix.contains("\"async\""));
    }

    #[test]
    fn an_async_route_on_an_in_memory_store_is_warned_about() {
        let mode_warnings = |l: &Loaded| -> Vec<String> {
            l.warnings
                .iter()
                .filter(|i| i.key.ends_with(".mode"))
                .map(|i| i.key.clone())
                .collect()
        };
        let l = load("mode = \"async\"", "[storage]\npath = \":memory:\"").unwrap();
        assert_eq!(mode_warnings(&l), ["route[hooks].mode"]);
        assert!(l.warnings[..].iter().any(|i| i.problem.contains("lost")));
        let l = load("mode = \"async\"", "").unwrap();
        assert!(mode_warnings(&l).is_empty(), "{:?}", l.warnings);
    }
}
