//! Events: one record per request, allowed or denied, fanned out to the sinks.
//!
//! The request path builds an [`Event`] and hands it to the [`Emitter`], which writes the
//! request log line, runs the inline observers (counters that cost a few atomic operations:
//! metrics, alert windows) and offers the event to every subscriber over a bounded channel
//! without waiting: a slow sink can never hold up a request. What a full subscriber could not
//! take is counted per subscriber and handed to its overflow handler (the audit writer
//! aggregates it into counts), so nothing is dropped silently.
//!
//! Sinks, one concern per file: [`metrics`] (Prometheus), [`alerts`] (rules and sliding
//! windows), [`notifier`] (delivery of alerts); the audit writer is `store::events`.

pub mod alerts;
pub mod latency_histogram;
pub mod metrics;
pub mod notifier;

use std::borrow::Cow;
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio::sync::mpsc;

use crate::policy::Reason;

/// What became of a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Outcome {
    /// Passed every guard and was forwarded (whatever the upstream answered).
    Allowed,
    /// Refused by a guard or by routing.
    Denied,
    /// Allowed, but the upstream could not be reached or was too slow.
    Failed,
}

impl Outcome {
    /// The stable code.
    pub const fn as_str(self) -> &'static str {
        match self {
            Outcome::Allowed => "allowed",
            Outcome::Denied => "denied",
            Outcome::Failed => "failed",
        }
    }

    /// Parses a stable code.
    pub fn from_code(code: &str) -> Option<Outcome> {
        [Outcome::Allowed, Outcome::Denied, Outcome::Failed]
            .into_iter()
            .find(|o| o.as_str() == code)
    }
}

/// The longest User-Agent kept in an event.
pub const USER_AGENT_MAX: usize = 200;

/// One request, as the audit log records it. Never holds a secret, a token or a body.
#[derive(Debug, Clone)]
pub struct Event {
    /// When the request's headers arrived.
    pub time: jiff::Timestamp,
    /// The request id (also in the error body and `X-Request-Id`).
    pub request_id: String,
    /// The route, when the path matched one.
    pub route: Option<Arc<str>>,
    /// The client address.
    pub client_ip: IpAddr,
    /// The method: the standard ones borrowed, so an event does not allocate for them.
    pub method: Cow<'static, str>,
    /// The status sent to the client.
    pub status: u16,
    /// Allowed, denied or failed.
    pub outcome: Outcome,
    /// Why it was denied or failed.
    pub reason: Option<Reason>,
    /// Which step failed, for reasons with several (never a secret).
    pub detail: Option<&'static str>,
    /// Findings that did not decide the outcome: alert-mode mismatches on an allowed request,
    /// or `banned` on the refusal that started a ban.
    pub flags: Vec<Reason>,
    /// The API key that authenticated the request (its id, never the key).
    pub key_id: Option<String>,
    /// The browser session.
    pub session_id: Option<String>,
    /// Time from request headers to response headers.
    pub latency: Duration,
    /// The upstream's status, when it answered.
    pub upstream_status: Option<u16>,
    /// Time the upstream took to send response headers.
    pub upstream_latency: Option<Duration>,
    /// The client's User-Agent, truncated.
    pub user_agent: Option<String>,
}

/// Longest method kept in an event: methods are tokens of any length (up to the head's
/// limit), and one the gateway does not serve is still logged and stored.
pub const METHOD_MAX: usize = 32;

/// The request's method as an event keeps it: at most [`METHOD_MAX`] characters, so that
/// requests anyone can send (no route, no credentials) cannot write 60 KB rows.
pub fn event_method(m: &http::Method) -> Cow<'static, str> {
    use http::Method;
    let standard = match *m {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        Method::PATCH => "PATCH",
        Method::CONNECT => "CONNECT",
        Method::TRACE => "TRACE",
        _ => {
            let s = m.as_str();
            // Tokens are ASCII: any byte offset is a character boundary.
            return Cow::Owned(s.get(..METHOD_MAX).unwrap_or(s).to_owned());
        }
    };
    Cow::Borrowed(standard)
}

/// A User-Agent field's value as an event keeps it: bytes that are not UTF-8 replaced (a
/// value with one non-ASCII byte must not disappear from the audit log, or a scanner could
/// erase its fingerprint with it), at most [`USER_AGENT_MAX`] characters.
pub fn event_user_agent(value: &[u8]) -> String {
    if value.is_ascii() {
        // The usual case; header values hold no ASCII control but tab.
        return truncate_user_agent(std::str::from_utf8(value).unwrap_or_default());
    }
    // Four bytes a character at most: what is cut cannot reach the kept characters.
    let text = String::from_utf8_lossy(&value[..value.len().min(4 * USER_AGENT_MAX)]);
    // Control characters (C1's CSI among them) and bidirectional overrides are replaced too:
    // `hookwarden events` prints this to terminals, and the dashboard shows it.
    let cleaned: String = text
        .chars()
        .map(|c| if is_unsafe_to_show(c) { '\u{fffd}' } else { c })
        .collect();
    truncate_user_agent(&cleaned)
}

/// Characters that change how a terminal or a bidirectional text shows what follows.
pub fn is_unsafe_to_show(c: char) -> bool {
    c.is_control()
        || matches!(c, '\u{200b}'..='\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}' | '\u{feff}')
}

/// Truncates a User-Agent to [`USER_AGENT_MAX`] characters.
pub fn truncate_user_agent(ua: &str) -> String {
    match ua.char_indices().nth(USER_AGENT_MAX) {
        Some((i, _)) => ua[..i].to_owned(),
        None => ua.to_owned(),
    }
}

/// Fans events out: the request log line, the inline observers, then every subscriber.
#[derive(Default)]
pub struct Emitter {
    sinks: ArcSwap<Sinks>,
}

impl std::fmt::Debug for Emitter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Emitter")
    }
}

/// Called with every event on the request path: must be quick and never wait on I/O.
pub type Observer = Arc<dyn Fn(&Event) + Send + Sync>;

#[derive(Default)]
struct Sinks {
    observers: Vec<Observer>,
    subscribers: Vec<Arc<Subscriber>>,
}

struct Subscriber {
    name: &'static str,
    tx: mpsc::Sender<Arc<Event>>,
    capacity: usize,
    dropped: AtomicU64,
    overflow: Option<Observer>,
}

/// A subscriber's queue, for the metrics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SinkStats {
    /// The subscriber's name.
    pub name: &'static str,
    /// Events waiting in its queue.
    pub queued: usize,
    /// Events it could not take since start (handed to its overflow handler, if any).
    pub dropped: u64,
}

impl Emitter {
    /// An emitter with no subscribers.
    pub fn new() -> Self {
        Emitter::default()
    }

    /// Adds a subscriber with a queue of `capacity` events. Events that do not fit are not
    /// waited for; they are counted in [`Emitter::stats`].
    pub fn subscribe(&self, name: &'static str, capacity: usize) -> mpsc::Receiver<Arc<Event>> {
        self.add_subscriber(name, capacity, None)
    }

    /// Like [`Emitter::subscribe`], and events that do not fit are passed to `overflow`
    /// (on the request path: it must be quick).
    pub fn subscribe_with_overflow(
        &self,
        name: &'static str,
        capacity: usize,
        overflow: Observer,
    ) -> mpsc::Receiver<Arc<Event>> {
        self.add_subscriber(name, capacity, Some(overflow))
    }

    fn add_subscriber(
        &self,
        name: &'static str,
        capacity: usize,
        overflow: Option<Observer>,
    ) -> mpsc::Receiver<Arc<Event>> {
        let (tx, rx) = mpsc::channel(capacity);
        let sub = Arc::new(Subscriber {
            name,
            tx,
            capacity,
            dropped: AtomicU64::new(0),
            overflow,
        });
        self.sinks.rcu(|old| Sinks {
            observers: old.observers.clone(),
            subscribers: old
                .subscribers
                .iter()
                .cloned()
                .chain([sub.clone()])
                .collect(),
        });
        rx
    }

    /// Adds an observer called inline with every event.
    pub fn observe(&self, observer: Observer) {
        self.sinks.rcu(|old| Sinks {
            observers: old
                .observers
                .iter()
                .cloned()
                .chain([observer.clone()])
                .collect(),
            subscribers: old.subscribers.clone(),
        });
    }

    /// Logs `event`, runs the observers and offers it to every subscriber without waiting.
    pub fn emit(&self, event: Event) {
        log_event(&event);
        let sinks = self.sinks.load();
        for o in &sinks.observers {
            o(&event);
        }
        if sinks.subscribers.is_empty() {
            return;
        }
        let event = Arc::new(event);
        for s in &sinks.subscribers {
            if let Err(mpsc::error::TrySendError::Full(ev)) = s.tx.try_send(event.clone()) {
                s.dropped.fetch_add(1, Ordering::Relaxed);
                match &s.overflow {
                    Some(f) => f(&ev),
                    None => {
                        tracing::debug!(sink = s.name, "event sink is behind; event not queued")
                    }
                }
            }
        }
    }

    /// Queue length and drop count of every subscriber.
    pub fn stats(&self) -> Vec<SinkStats> {
        self.sinks
            .load()
            .subscribers
            .iter()
            .map(|s| SinkStats {
                name: s.name,
                queued: s.capacity.saturating_sub(s.tx.capacity()),
                dropped: s.dropped.load(Ordering::Relaxed),
            })
            .collect()
    }
}

fn log_event(e: &Event) {
    let denied = e.outcome != Outcome::Allowed;
    let enabled = if denied {
        tracing::enabled!(target: "hookwarden::request", tracing::Level::WARN)
    } else {
        tracing::enabled!(target: "hookwarden::request", tracing::Level::INFO)
    };
    if !enabled {
        return;
    }
    if crate::logging::write_line(|line, format, ansi| request_line(line, e, format, ansi)) {
        return;
    }
    // Another subscriber (tests, embedding): the same fields through `tracing`.
    let latency_ms = e.latency.as_micros() as f64 / 1000.0;
    let route = e.route.as_deref().unwrap_or("-");
    let reason = e.reason.map(Reason::as_str).unwrap_or("-");
    let key_id = e.key_id.as_deref().unwrap_or("-");
    let session_id = e.session_id.as_deref().unwrap_or("-");
    if denied {
        tracing::warn!(
            target: "hookwarden::request",
            request_id = %e.request_id,
            route,
            method = %e.method,
            status = e.status,
            outcome = e.outcome.as_str(),
            reason,
            detail = e.detail.unwrap_or("-"),
            latency_ms,
            client_ip = %e.client_ip,
            key_id,
            session_id,
            "request"
        );
    } else {
        tracing::info!(
            target: "hookwarden::request",
            request_id = %e.request_id,
            route,
            method = %e.method,
            status = e.status,
            outcome = e.outcome.as_str(),
            latency_ms,
            client_ip = %e.client_ip,
            key_id,
            session_id,
            "request"
        );
    }
}

/// The request log line, in the same shape `tracing`'s formatters give it (JSON: flattened
/// fields with `timestamp`, `level` and `message`; text: `time LEVEL request key=value …`).
fn request_line(out: &mut String, e: &Event, format: crate::logging::LogFormat, ansi: bool) {
    let denied = e.outcome != Outcome::Allowed;
    let level = if denied { "WARN" } else { "INFO" };
    let now = jiff::Timestamp::now();
    let latency_us = e.latency.as_micros();
    let route = e.route.as_deref().unwrap_or("-");
    let reason = e.reason.map(Reason::as_str).unwrap_or("-");
    match format {
        crate::logging::LogFormat::Json => {
            out.push_str(r#"{"timestamp":""#);
            push_timestamp(out, now);
            out.push_str(r#"","level":""#);
            out.push_str(level);
            out.push_str(r#"","message":"request","request_id":"#);
            json_str(out, &e.request_id);
            out.push_str(r#","route":"#);
            json_str(out, route);
            out.push_str(r#","method":"#);
            json_str(out, &e.method);
            out.push_str(r#","status":"#);
            crate::digits::push_decimal(out, e.status.into());
            out.push_str(r#","outcome":""#);
            out.push_str(e.outcome.as_str());
            out.push('"');
            if denied {
                out.push_str(r#","reason":""#);
                out.push_str(reason);
                out.push_str(r#"","detail":"#);
                json_str(out, e.detail.unwrap_or("-"));
            }
            out.push_str(r#","latency_ms":"#);
            push_ms(out, latency_us);
            out.push_str(r#","client_ip":""#);
            crate::policy::client_ip::push_ip(out, e.client_ip);
            out.push_str(r#"","key_id":"#);
            json_str_or_dash(out, e.key_id.as_deref());
            out.push_str(r#","session_id":"#);
            json_str_or_dash(out, e.session_id.as_deref());
            out.push('}');
        }
        crate::logging::LogFormat::Text => {
            let key_id = e.key_id.as_deref().unwrap_or("-");
            let session_id = e.session_id.as_deref().unwrap_or("-");
            // Written piece by piece: `write!` with `{:?}` fields cost about 3,000
            // instructions a request (callgrind), more than the rest of the event.
            push_timestamp(out, now);
            out.push_str(match (ansi, denied) {
                (false, true) => "  WARN",
                (false, false) => "  INFO",
                (true, true) => " \x1b[33m WARN\x1b[0m",
                (true, false) => " \x1b[32m INFO\x1b[0m",
            });
            out.push_str(" request request_id=");
            out.push_str(&e.request_id);
            out.push_str(" route=");
            push_debug_str(out, route);
            out.push_str(" method=");
            out.push_str(&e.method);
            out.push_str(" status=");
            crate::digits::push_decimal(out, e.status.into());
            out.push_str(" outcome=");
            push_debug_str(out, e.outcome.as_str());
            if denied {
                out.push_str(" reason=");
                push_debug_str(out, reason);
                out.push_str(" detail=");
                push_debug_str(out, e.detail.unwrap_or("-"));
            }
            out.push_str(" latency_ms=");
            push_ms(out, latency_us);
            out.push_str(" client_ip=");
            crate::policy::client_ip::push_ip(out, e.client_ip);
            out.push_str(" key_id=");
            push_debug_str(out, key_id);
            out.push_str(" session_id=");
            push_debug_str(out, session_id);
        }
    }
}

/// Appends `s` as `{:?}` writes it: quoted, with escapes. Text of printable ASCII without a
/// quote or backslash, the usual case, needs none and is copied as it is.
fn push_debug_str(out: &mut String, s: &str) {
    if s.bytes()
        .all(|b| (0x20..0x7f).contains(&b) && b != b'"' && b != b'\\')
    {
        out.push('"');
        out.push_str(s);
        out.push('"');
    } else {
        use std::fmt::Write as _;
        let _ = write!(out, "{s:?}");
    }
}

/// Appends `now` as `jiff` displays it with six fractional digits
/// (`2026-11-24T13:40:01.123456Z`). The part up to the second is formatted once per second
/// per thread: date formatting would otherwise be the most expensive part of the line.
fn push_timestamp(out: &mut String, now: jiff::Timestamp) {
    use std::cell::RefCell;
    thread_local! {
        static SECOND: RefCell<(i64, String)> = const { RefCell::new((i64::MIN, String::new())) };
    }
    let second = now.as_second();
    SECOND.with_borrow_mut(|(cached, text)| {
        if *cached != second {
            text.clear();
            let whole = jiff::Timestamp::from_second(second).unwrap_or(now);
            let _ = std::fmt::Write::write_fmt(text, format_args!("{whole:.0}"));
            // `{:.0}` ends in `Z`; the fraction goes before it.
            text.pop();
            *cached = second;
        }
        out.push_str(text);
    });
    // Before 1970 the fraction is negative; such clocks are not worth a special case.
    let mut micros = now.subsec_microsecond().unsigned_abs();
    let mut digits = [b'0'; 6];
    for d in digits.iter_mut().rev() {
        *d = b'0' + (micros % 10) as u8;
        micros /= 10;
    }
    out.push('.');
    out.extend(digits.iter().map(|&b| char::from(b)));
    out.push('Z');
}

/// Appends a duration in microseconds as milliseconds, as `f64`'s `Display` would show
/// `us / 1000.0` (`1.25`, `3`, `0.007`), without floating-point formatting.
fn push_ms(out: &mut String, us: u128) {
    let (ms, frac) = (us / 1000, us % 1000);
    crate::digits::push_decimal(out, u64::try_from(ms).unwrap_or(u64::MAX));
    if frac != 0 {
        let digits = [frac / 100, frac / 10 % 10, frac % 10].map(|d| char::from(b'0' + d as u8));
        let len = 3 - digits.iter().rev().take_while(|&&c| c == '0').count();
        out.push('.');
        out.extend(&digits[..len]);
    }
}

/// True when `bytes` hold a quote, a backslash or a control character. Tested sixteen bytes
/// at a time without stopping early inside a block, which the compiler turns into vector
/// compares: a byte-by-byte search that stops at the first hit cost about five instructions
/// a byte, and every request line has at least three strings to check (request id, route,
/// method).
fn needs_escape(bytes: &[u8]) -> bool {
    bytes.chunks(16).any(|block| {
        block.iter().fold(false, |hit, &b| {
            hit | (b == b'"') | (b == b'\\') | (b < 0x20)
        })
    })
}

/// Appends `s` as a JSON string, or `"-"` for none: most requests carry no key or session,
/// and the placeholder needs no escaping check (about 75 instructions a field).
fn json_str_or_dash(out: &mut String, s: Option<&str>) {
    match s {
        Some(s) => json_str(out, s),
        None => out.push_str(r#""-""#),
    }
}

/// Appends `s` as a JSON string.
fn json_str(out: &mut String, s: &str) {
    out.push('"');
    if !needs_escape(s.as_bytes()) {
        out.push_str(s);
        out.push('"');
        return;
    }
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => {
                let _ = std::fmt::Write::write_fmt(out, format_args!("\\u{:04x}", c as u32));
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

#[cfg(test)]
mod line_tests {
    use super::*;

    /// The text line as it was written with `write!` before it was written piece by piece:
    /// the oracle the new writer must match byte for byte.
    fn text_line_with_fmt(e: &Event, ansi: bool) -> String {
        use std::fmt::Write as _;
        let denied = e.outcome != Outcome::Allowed;
        let level = if denied { "WARN" } else { "INFO" };
        let route = e.route.as_deref().unwrap_or("-");
        let reason = e.reason.map(Reason::as_str).unwrap_or("-");
        let key_id = e.key_id.as_deref().unwrap_or("-");
        let session_id = e.session_id.as_deref().unwrap_or("-");
        let lvl = match (ansi, denied) {
            (false, _) => format!("{level:>5}"),
            (true, true) => "\x1b[33m WARN\x1b[0m".to_owned(),
            (true, false) => "\x1b[32m INFO\x1b[0m".to_owned(),
        };
        let mut out = String::new();
        let _ = write!(
            out,
            " {lvl} request request_id={} route={route:?} method={} status={} outcome={:?}",
            e.request_id,
            e.method,
            e.status,
            e.outcome.as_str()
        );
        if denied {
            let _ = write!(
                out,
                " reason={reason:?} detail={:?}",
                e.detail.unwrap_or("-")
            );
        }
        out.push_str(" latency_ms=");
        push_ms(&mut out, e.latency.as_micros());
        let _ = write!(
            out,
            " client_ip={} key_id={key_id:?} session_id={session_id:?}",
            e.client_ip
        );
        out
    }

    #[test]
    fn the_text_line_is_what_the_formatter_wrote() {
        let base = Event {
            time: jiff::Timestamp::now(),
            request_id: "0193a2b4c5d6e7f8091a2b3c4d5e6f70".into(),
            route: Some("hook".into()),
            client_ip: "203.0.113.9".parse().unwrap(),
            method: "POST".into(),
            status: 200,
            outcome: Outcome::Allowed,
            reason: None,
            detail: None,
            flags: Vec::new(),
            key_id: None,
            session_id: None,
            latency: Duration::from_micros(1_234),
            upstream_status: Some(200),
            upstream_latency: None,
            user_agent: None,
        };
        let mut denied = base.clone();
        denied.outcome = Outcome::Denied;
        denied.status = 401;
        denied.reason = Some(Reason::KeyInvalid);
        denied.detail = Some("unknown key");
        denied.key_id = Some("key_3f9a1c2b7d4e".into());
        denied.session_id = Some("s\"q\\u\u{e9}\u{7}".into());
        denied.route = Some("r\u{202e}x".into());
        denied.client_ip = "2001:db8::1".parse().unwrap();
        let mut unrouted = base.clone();
        unrouted.route = None;
        unrouted.latency = Duration::from_secs(90);
        for e in [&base, &denied, &unrouted] {
            for ansi in [false, true] {
                let mut line = String::new();
                request_line(&mut line, e, crate::logging::LogFormat::Text, ansi);
                // The timestamp (read anew by each) ends at the first space.
                let (_, rest) = line.split_at(line.find(' ').unwrap());
                assert_eq!(rest, text_line_with_fmt(e, ansi));
            }
        }
    }

    /// A User-Agent is kept whatever its bytes, but nothing in it may steer a terminal or
    /// reorder text when `hookwarden events` or the dashboard shows it.
    #[test]
    fn user_agents_are_kept_without_terminal_or_bidi_controls() {
        assert_eq!(event_user_agent(b"curl/8.5"), "curl/8.5");
        assert_eq!(event_user_agent(b"sqlmap \xe9"), "sqlmap \u{fffd}");
        assert_eq!(event_user_agent("caf\u{e9}".as_bytes()), "caf\u{e9}");
        assert_eq!(
            event_user_agent("a\u{9b}2Jb\u{202e}c\u{200b}d".as_bytes()),
            "a\u{fffd}2Jb\u{fffd}c\u{fffd}d"
        );
        let long = "\u{e9}".repeat(500);
        assert_eq!(
            event_user_agent(long.as_bytes()).chars().count(),
            USER_AGENT_MAX
        );
    }

    #[test]
    fn event_methods_are_bounded() {
        let long = http::Method::from_bytes("X".repeat(60_000).as_bytes()).unwrap();
        assert_eq!(event_method(&long), "X".repeat(METHOD_MAX));
        assert_eq!(event_method(&http::Method::POST), "POST");
        assert!(matches!(
            event_method(&http::Method::POST),
            Cow::Borrowed("POST")
        ));
        let custom = http::Method::from_bytes(b"PURGE").unwrap();
        assert_eq!(event_method(&custom), "PURGE");
    }

    #[test]
    fn milliseconds_read_as_the_float_formatter_writes_them() {
        for us in [
            0u128,
            1,
            7,
            10,
            999,
            1000,
            1250,
            1234,
            60_000_000,
            123_456_789,
        ] {
            let mut s = String::new();
            push_ms(&mut s, us);
            assert_eq!(s, format!("{}", us as f64 / 1000.0), "{us} µs");
        }
    }

    #[test]
    fn timestamps_read_as_jiff_writes_them() {
        for (second, nanos) in [
            (0, 0),
            (1_795_000_000, 123_456_789),
            (1_795_000_059, 999_999_999),
        ] {
            let t = jiff::Timestamp::new(second, nanos).unwrap();
            // Twice: the second call takes the cached part.
            for _ in 0..2 {
                let mut s = String::new();
                push_timestamp(&mut s, t);
                assert_eq!(s, format!("{t:.6}"));
            }
        }
    }

    #[test]
    fn a_character_to_escape_is_found_at_any_place() {
        for len in [1, 15, 16, 17, 31, 32, 33, 40] {
            let plain = "a".repeat(len);
            assert!(!needs_escape(plain.as_bytes()), "{len}");
            for at in 0..len {
                for special in [b'"', b'\\', b'\n', 0x00, 0x1f] {
                    let mut bytes = plain.clone().into_bytes();
                    bytes[at] = special;
                    assert!(needs_escape(&bytes), "{special:#x} at {at} of {len}");
                }
            }
        }
        // The first characters that need no escape: space, DEL, non-ASCII.
        assert!(!needs_escape(" \u{7f}é".as_bytes()));
    }

    #[test]
    fn json_strings_are_escaped() {
        let mut s = String::new();
        json_str(&mut s, "a\"b\\c\nd");
        assert_eq!(s, r#""a\"b\\c\u000ad""#);
        let v: serde_json::Value = serde_json::from_str(&s).unwrap();
        assert_eq!(v, "a\"b\\c\nd");
    }
}
