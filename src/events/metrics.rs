//! Prometheus metrics: request counters and latency histograms fed by every event, gauges read
//! when `/metrics` is scraped.
//!
//! Each gateway has its own recorder (not the process-global one), so several gateways in one
//! process (tests, the demo) never mix their numbers; the admin router renders it on scrape.
//! The two latency histograms every request feeds are counted by [`LatencyHistogram`] and
//! appended to the recorder's text.
//!
//! | metric | type | labels |
//! |---|---|---|
//! | `hookwarden_requests_total` | counter | `route`, `outcome`, `reason` (`""` when none) |
//! | `hookwarden_request_duration_seconds` | histogram | `route` |
//! | `hookwarden_upstream_latency_seconds` | histogram | `route` |
//! | `hookwarden_active_connections` | gauge | |
//! | `hookwarden_state_entries` | gauge | |
//! | `hookwarden_audit_backlog` | gauge | |
//! | `hookwarden_audit_aggregated_total` | counter | |
//! | `hookwarden_event_sink_backlog`, `hookwarden_event_sink_dropped_total` | gauge, counter | `sink` |
//! | `hookwarden_alerts_total` | counter | `alert`, `result` (`sent`, `failed`) |
//! | `hookwarden_config_reloads_total` | counter | `result` (`ok`, `error`) |
//! | `hookwarden_state_redis_up`, `hookwarden_state_local_fallback` | gauge (0/1) | (Redis state only) |
//! | `hookwarden_state_redis_errors_total`, `hookwarden_state_fallback_operations_total` | counter | (Redis state only) |
//! | `hookwarden_queue_depth` | gauge | `route`, `state` (`pending`, `dead`) |
//! | `hookwarden_queue_oldest_age_seconds` | gauge | `route` (oldest pending message) |
//! | `hookwarden_deliveries_total` | counter | `route`, `outcome` (`delivered`, `retry`, `dead`): one per attempt |
//! | `hookwarden_delivery_attempts` | histogram | `route`, `outcome` (`delivered`, `dead`): attempts a finished message took |

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::{Arc, RwLock};

use metrics::{
    Counter, Unit, counter, describe_counter, describe_gauge, describe_histogram, gauge, histogram,
    with_local_recorder,
};
use metrics_exporter_prometheus::{
    Matcher, PrometheusBuilder, PrometheusHandle, PrometheusRecorder,
};

use super::latency_histogram::{LatencyHistogram, escape_label_value};
use super::{Event, Observer, SinkStats};
use crate::config_hash::ConfigKeyHash;
use crate::policy::Reason;
use crate::state::StateStats;

/// Histogram buckets in seconds: from 5 ms (a local refusal) to 60 s (an AI agent thinking).
pub const LATENCY_BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0,
];

/// The gateway's metrics.
pub struct Metrics {
    recorder: PrometheusRecorder,
    handle: PrometheusHandle,
    /// Handles of the per-request metrics, looked up once per label set: building a metric key
    /// and searching the registry on every request costs allocations and hashing the handles
    /// avoid. One map for the counter and the route's histograms, used under its read lock:
    /// a second map and cloned handles cost 460 instructions a request (callgrind).
    requests: RwLock<HashMap<RequestLabels, RequestMetrics, ConfigKeyHash>>,
    /// Each route's latency histograms, in the order routes were first seen, for rendering.
    route_latencies: RwLock<Vec<Arc<RouteLatencies>>>,
    /// Routes the queue gauges were last set for: a route that no longer has messages (or no
    /// longer exists) is set to zero once, instead of keeping its last value for ever.
    queue_routes: std::sync::Mutex<Vec<String>>,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct RequestLabels {
    route: Option<Arc<str>>,
    outcome: super::Outcome,
    reason: Option<Reason>,
}

/// The metrics one request feeds: its label set's counter and its route's histograms (every
/// label set of a route shares them).
struct RequestMetrics {
    requests: Counter,
    latencies: Arc<RouteLatencies>,
}

/// One route's histograms (`route` is the label value, `""` for requests no route took).
struct RouteLatencies {
    route: String,
    duration: LatencyHistogram,
    upstream: LatencyHistogram,
}

/// The histograms counted by [`LatencyHistogram`] instead of the exporter: name and help text.
const DURATION: (&str, &str) = (
    "hookwarden_request_duration_seconds",
    "Time from request headers to response headers, by route.",
);
const UPSTREAM: (&str, &str) = (
    "hookwarden_upstream_latency_seconds",
    "Time the upstream took to send response headers, by route.",
);

impl RequestMetrics {
    fn record(&self, e: &Event) {
        self.requests.increment(1);
        self.latencies.duration.record(e.latency);
        if let Some(up) = e.upstream_latency {
            self.latencies.upstream.record(up);
        }
    }
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

/// Buckets of the attempts histogram: attempts a message took until delivered or dead.
pub const ATTEMPT_BUCKETS: &[f64] = &[1.0, 2.0, 3.0, 4.0, 6.0, 8.0, 12.0, 16.0, 24.0, 50.0, 100.0];

/// One route's queue, read at scrape time.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct QueueGauge {
    /// The route.
    pub route: String,
    /// Pending messages.
    pub pending: u64,
    /// Dead letters.
    pub dead: u64,
    /// Age of the oldest pending message, in seconds (0 when none).
    pub oldest_pending_seconds: f64,
}

/// Values read at scrape time.
#[derive(Debug, Clone, Default)]
pub struct Gauges {
    /// Open client connections on the public listener.
    pub active_connections: usize,
    /// Entries in the limiter/state table of this process.
    pub state_entries: usize,
    /// The event subscribers' queues.
    pub sinks: Vec<SinkStats>,
    /// The shared state's health (Redis).
    pub state: StateStats,
    /// The delivery queue, per route.
    pub queue: Vec<QueueGauge>,
}

impl Metrics {
    /// A fresh recorder with the latency buckets and descriptions set.
    pub fn new() -> Arc<Metrics> {
        let builder = match PrometheusBuilder::new().set_buckets_for_metric(
            Matcher::Full("hookwarden_delivery_attempts".into()),
            ATTEMPT_BUCKETS,
        ) {
            Ok(b) => b,
            Err(_) => unreachable!("ATTEMPT_BUCKETS is not empty"),
        };
        let recorder = builder.build_recorder();
        let handle = recorder.handle();
        let m = Metrics {
            recorder,
            handle,
            requests: RwLock::default(),
            route_latencies: RwLock::default(),
            queue_routes: std::sync::Mutex::default(),
        };
        m.with(|| {
            describe_counter!(
                "hookwarden_requests_total",
                "Requests by route, outcome (allowed, denied, failed) and reason code."
            );
            describe_gauge!(
                "hookwarden_active_connections",
                "Open client connections on the public listener."
            );
            describe_gauge!(
                "hookwarden_state_entries",
                "Entries in this process's limiter/state table."
            );
            describe_gauge!(
                "hookwarden_audit_backlog",
                "Events waiting for the audit writer."
            );
            describe_counter!(
                "hookwarden_audit_aggregated_total",
                "Events the audit writer could not take one by one; stored as counts only."
            );
            describe_gauge!(
                "hookwarden_event_sink_backlog",
                "Events waiting in each event subscriber's queue."
            );
            describe_counter!(
                "hookwarden_event_sink_dropped_total",
                "Events a subscriber's full queue could not take."
            );
            describe_counter!(
                "hookwarden_alerts_total",
                "Alert notifications by rule and result (sent, failed)."
            );
            describe_counter!(
                "hookwarden_config_reloads_total",
                "Config reloads by result (ok, error)."
            );
            describe_gauge!(
                "hookwarden_state_redis_up",
                "1 while the Redis state answers, 0 while it is marked down."
            );
            describe_gauge!(
                "hookwarden_state_local_fallback",
                "1 while this instance answers limits, bans and single-use ids from its own memory (on_error = local, Redis down)."
            );
            describe_counter!(
                "hookwarden_state_redis_errors_total",
                "Redis state calls that failed or timed out."
            );
            describe_counter!(
                "hookwarden_state_fallback_operations_total",
                "State operations answered from this instance's memory because Redis could not be used."
            );
            describe_gauge!(
                "hookwarden_queue_depth",
                "Messages in the delivery queue by route and state (pending, dead)."
            );
            describe_gauge!(
                "hookwarden_queue_oldest_age_seconds",
                Unit::Seconds,
                "Age of the oldest pending message, by route (0 when none)."
            );
            describe_counter!(
                "hookwarden_deliveries_total",
                "Delivery attempts by route and outcome (delivered, retry, dead)."
            );
            describe_histogram!(
                "hookwarden_delivery_attempts",
                "Attempts a message took until delivered or dead-lettered, by route and outcome."
            );
        });
        Arc::new(m)
    }

    /// Runs `f` with this gateway's recorder as the target of the `metrics` macros.
    pub fn with<T>(&self, f: impl FnOnce() -> T) -> T {
        with_local_recorder(&self.recorder, f)
    }

    /// Counts one request.
    pub fn observe(&self, e: &Event) {
        let labels = RequestLabels {
            route: e.route.clone(),
            outcome: e.outcome,
            reason: e.reason,
        };
        if let Some(m) = self
            .requests
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(&labels)
        {
            m.record(e);
            return;
        }
        let route = labels.route.as_deref().unwrap_or("").to_owned();
        let reason = labels.reason.map(Reason::as_str).unwrap_or("");
        let outcome = labels.outcome.as_str();
        let latencies = self.route_latencies(&route);
        let m = RequestMetrics {
            requests: self.with(|| {
                counter!(
                    "hookwarden_requests_total",
                    "route" => route,
                    "outcome" => outcome,
                    "reason" => reason,
                )
            }),
            latencies,
        };
        m.record(e);
        self.requests
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .entry(labels)
            .or_insert(m);
    }

    /// The route's histograms, made the first time the route is seen.
    fn route_latencies(&self, route: &str) -> Arc<RouteLatencies> {
        let mut all = self
            .route_latencies
            .write()
            .unwrap_or_else(|p| p.into_inner());
        if let Some(r) = all.iter().find(|r| r.route == route) {
            return r.clone();
        }
        let r = Arc::new(RouteLatencies {
            route: route.to_owned(),
            duration: LatencyHistogram::default(),
            upstream: LatencyHistogram::default(),
        });
        all.push(r.clone());
        r
    }

    /// Folds the histograms' recent samples into their buckets. The Prometheus recorder keeps
    /// raw samples until this runs (or a scrape renders them), so it runs periodically whether
    /// or not anyone scrapes `/metrics`: otherwise memory grows with every request.
    pub fn run_upkeep(&self) {
        self.handle.run_upkeep();
    }

    /// An observer for the emitter.
    pub fn observer(self: &Arc<Self>) -> Observer {
        let m = self.clone();
        Arc::new(move |e: &Event| m.observe(e))
    }

    /// Counts an alert notification.
    pub fn alert(&self, name: &str, result: &'static str) {
        let name = name.to_owned();
        self.with(|| {
            counter!("hookwarden_alerts_total", "alert" => name, "result" => result).increment(1)
        });
    }

    /// Counts a config reload.
    pub fn reload(&self, ok: bool) {
        let result = if ok { "ok" } else { "error" };
        self.with(|| counter!("hookwarden_config_reloads_total", "result" => result).increment(1));
    }

    /// Counts one delivery attempt of a queued message: `delivered`, `retry` or `dead`.
    pub fn delivery(&self, route: &str, outcome: &'static str) {
        let route = route.to_owned();
        self.with(|| {
            counter!("hookwarden_deliveries_total", "route" => route, "outcome" => outcome)
                .increment(1)
        });
    }

    /// Records the attempts a message took until it was delivered or dead-lettered.
    pub fn delivery_finished(&self, route: &str, outcome: &'static str, attempts: u32) {
        let route = route.to_owned();
        self.with(|| {
            histogram!("hookwarden_delivery_attempts", "route" => route, "outcome" => outcome)
                .record(f64::from(attempts))
        });
    }

    /// The Prometheus text exposition, with the gauges set to `g`.
    pub fn render(&self, g: &Gauges) -> String {
        self.with(|| {
            gauge!("hookwarden_active_connections").set(g.active_connections as f64);
            gauge!("hookwarden_state_entries").set(g.state_entries as f64);
            for s in &g.sinks {
                gauge!("hookwarden_event_sink_backlog", "sink" => s.name).set(s.queued as f64);
                counter!("hookwarden_event_sink_dropped_total", "sink" => s.name)
                    .absolute(s.dropped);
                if s.name == "audit" {
                    gauge!("hookwarden_audit_backlog").set(s.queued as f64);
                    counter!("hookwarden_audit_aggregated_total").absolute(s.dropped);
                }
            }
            if let Some(r) = &g.state.redis {
                gauge!("hookwarden_state_redis_up").set(f64::from(u8::from(r.up)));
                gauge!("hookwarden_state_local_fallback")
                    .set(f64::from(u8::from(r.local_fallback)));
                counter!("hookwarden_state_redis_errors_total").absolute(r.errors);
                counter!("hookwarden_state_fallback_operations_total")
                    .absolute(r.fallback_operations);
            }
            let mut last = self.queue_routes.lock().unwrap_or_else(|p| p.into_inner());
            let gone = last
                .iter()
                .filter(|r| !g.queue.iter().any(|q| &q.route == *r))
                .map(|r| QueueGauge {
                    route: r.clone(),
                    pending: 0,
                    dead: 0,
                    oldest_pending_seconds: 0.0,
                })
                .collect::<Vec<_>>();
            for q in g.queue.iter().chain(&gone) {
                for (state, n) in [("pending", q.pending), ("dead", q.dead)] {
                    gauge!("hookwarden_queue_depth", "route" => q.route.clone(), "state" => state)
                        .set(n as f64);
                }
                gauge!("hookwarden_queue_oldest_age_seconds", "route" => q.route.clone())
                    .set(q.oldest_pending_seconds);
            }
            *last = g.queue.iter().map(|q| q.route.clone()).collect();
        });
        let mut text = self.handle.render();
        let routes = self
            .route_latencies
            .read()
            .unwrap_or_else(|p| p.into_inner());
        for ((name, help), pick) in [
            (
                DURATION,
                (|r| &r.duration) as fn(&RouteLatencies) -> &LatencyHistogram,
            ),
            (UPSTREAM, |r| &r.upstream),
        ] {
            let mut family = String::new();
            let mut any = false;
            for r in routes.iter() {
                let labels = format!("route=\"{}\"", escape_label_value(&r.route));
                any |= pick(r).render(&mut family, name, &labels);
            }
            // As the exporter does: no family before its first sample.
            if !any {
                continue;
            }
            if !text.is_empty() && !text.ends_with("\n\n") {
                text.push('\n');
            }
            let _ = writeln!(text, "# HELP {name} {help}\n# TYPE {name} histogram");
            text.push_str(&family);
        }
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The latency families appear with their first sample, as the exporter's own do: no
    /// HELP and TYPE lines over nothing.
    #[test]
    fn latency_families_appear_with_their_first_sample() {
        let m = Metrics::new();
        let text = m.render(&Gauges::default());
        assert!(
            !text.contains("hookwarden_request_duration_seconds"),
            "{text}"
        );
        assert!(
            !text.contains("hookwarden_upstream_latency_seconds"),
            "{text}"
        );
    }

    /// A route whose queue empties (or that a reload removed) drops out of the queue summary:
    /// its gauges must go to zero, not keep their last value.
    #[test]
    fn queue_gauges_of_a_route_that_left_the_summary_go_to_zero() {
        let m = Metrics::new();
        let busy = Gauges {
            queue: vec![QueueGauge {
                route: "orders".into(),
                pending: 5,
                dead: 2,
                oldest_pending_seconds: 30.0,
            }],
            ..Gauges::default()
        };
        let text = m.render(&busy);
        assert!(
            text.contains(r#"hookwarden_queue_depth{route="orders",state="pending"} 5"#),
            "{text}"
        );
        let text = m.render(&Gauges::default());
        for line in [
            r#"hookwarden_queue_depth{route="orders",state="pending"} 0"#,
            r#"hookwarden_queue_depth{route="orders",state="dead"} 0"#,
            r#"hookwarden_queue_oldest_age_seconds{route="orders"} 0"#,
        ] {
            assert!(text.contains(line), "{line} missing in:\n{text}");
        }
    }
}
