//! What an attempt's result means, and how long to wait before the next one. Pure functions:
//! the clock and the randomness are parameters.

use std::time::Duration;

use http::HeaderMap;

use crate::config::DeliveryConfig;

/// The longest `Retry-After` honoured; beyond it the upstream's value is taken as a mistake.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(86_400);

/// How an attempt ended, as far as the queue is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// 2xx: delivered.
    Delivered,
    /// A failure worth another attempt: 408, 429, 5xx, anything else that is not a 4xx,
    /// timeouts and connection errors.
    Retry,
    /// A 4xx other than 408 and 429: the upstream refuses the message itself, and sending it
    /// again would get the same answer.
    Permanent,
}

/// The verdict for an upstream status.
pub fn classify(status: u16) -> Verdict {
    match status {
        200..=299 => Verdict::Delivered,
        408 | 429 => Verdict::Retry,
        400..=499 => Verdict::Permanent,
        _ => Verdict::Retry,
    }
}

/// The wait after the `failed`-th failed attempt (1 for the first): `backoff` doubled at each
/// further failure, at most `max_backoff`, spread by ±20 % with `jitter` in `[0, 1)` (so
/// messages that failed together do not all come back together), and never shorter than the
/// upstream's `Retry-After` (honoured up to [`MAX_RETRY_AFTER`], even beyond `max_backoff`:
/// it is the upstream's own statement of when it can take the message).
pub fn delay(
    cfg: &DeliveryConfig,
    failed: u32,
    retry_after: Option<Duration>,
    jitter: f64,
) -> Duration {
    let exp = failed.saturating_sub(1).min(63);
    let base = cfg
        .backoff
        .checked_mul(1u32 << exp.min(31))
        .unwrap_or(cfg.max_backoff)
        .min(cfg.max_backoff);
    let base = if exp > 31 { cfg.max_backoff } else { base };
    let spread = 0.8 + 0.4 * jitter.clamp(0.0, 1.0);
    // Checked: a config is bounded (`MAX_DURATION`), but a wait is never worth a panic.
    let computed = Duration::try_from_secs_f64(base.as_secs_f64() * spread)
        .unwrap_or(cfg.max_backoff)
        .min(cfg.max_backoff);
    match retry_after {
        Some(after) => computed.max(after.min(MAX_RETRY_AFTER)),
        None => computed,
    }
}

/// The upstream's `Retry-After`, as seconds or an HTTP date (RFC 9110 §10.2.3), relative to
/// `now` (Unix seconds). A date in the past means "now"; an unparsable value is ignored.
pub fn retry_after(headers: &HeaderMap, now: jiff::Timestamp) -> Option<Duration> {
    let v = headers
        .get(http::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim();
    if let Ok(secs) = v.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let when = jiff::fmt::rfc2822::parse(v).ok()?.timestamp();
    let d = when.duration_since(now);
    Some(Duration::try_from(d).unwrap_or(Duration::ZERO))
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn cfg(backoff_ms: u64, max_ms: u64) -> DeliveryConfig {
        DeliveryConfig {
            backoff: Duration::from_millis(backoff_ms),
            max_backoff: Duration::from_millis(max_ms),
            ..DeliveryConfig::default()
        }
    }

    #[test]
    fn statuses_are_classified_as_documented() {
        for s in [200, 201, 202, 204, 299] {
            assert_eq!(classify(s), Verdict::Delivered, "{s}");
        }
        for s in [408, 429, 500, 502, 503, 504, 599, 301, 302, 100] {
            assert_eq!(classify(s), Verdict::Retry, "{s}");
        }
        for s in [400, 401, 403, 404, 405, 409, 410, 413, 415, 422, 499] {
            assert_eq!(classify(s), Verdict::Permanent, "{s}");
        }
    }

    #[test]
    fn backoff_doubles_up_to_the_maximum() {
        let c = cfg(1000, 600_000);
        // jitter 0.5 is the middle of the spread: exactly the nominal value.
        let nominal: Vec<u64> = (1..=12)
            .map(|n| delay(&c, n, None, 0.5).as_millis() as u64)
            .collect();
        assert_eq!(
            nominal,
            [
                1000, 2000, 4000, 8000, 16_000, 32_000, 64_000, 128_000, 256_000, 512_000, 600_000,
                600_000
            ]
        );
        assert_eq!(delay(&c, 1000, None, 0.5), Duration::from_secs(600));
        assert_eq!(delay(&c, u32::MAX, None, 0.0), Duration::from_secs(480));
    }

    /// A wait that cannot be scaled (the largest `Duration`) is the maximum, not a panic that
    /// would stop the route's deliveries for good.
    #[test]
    fn the_largest_waits_do_not_panic() {
        let c = DeliveryConfig {
            backoff: Duration::MAX,
            max_backoff: Duration::MAX,
            ..DeliveryConfig::default()
        };
        for failed in [1, 2, 40] {
            assert_eq!(delay(&c, failed, None, 1.0), Duration::MAX);
        }
    }

    #[test]
    fn jitter_spreads_by_twenty_percent_and_never_passes_the_maximum() {
        let c = cfg(1000, 600_000);
        assert_eq!(delay(&c, 1, None, 0.0), Duration::from_millis(800));
        assert_eq!(delay(&c, 1, None, 0.75), Duration::from_millis(1100));
        assert!(delay(&c, 1, None, 0.999_999) < Duration::from_millis(1200));
        assert_eq!(delay(&c, 11, None, 0.0), Duration::from_secs(480));
        assert_eq!(delay(&c, 11, None, 0.99), Duration::from_secs(600));
    }

    #[test]
    fn retry_after_is_a_floor_even_beyond_max_backoff_up_to_a_day() {
        let c = cfg(1000, 10_000);
        assert_eq!(
            delay(&c, 1, Some(Duration::from_secs(3)), 0.5),
            Duration::from_secs(3)
        );
        // A shorter Retry-After does not shorten the backoff.
        assert_eq!(
            delay(&c, 4, Some(Duration::from_secs(1)), 0.5),
            Duration::from_secs(8)
        );
        assert_eq!(
            delay(&c, 1, Some(Duration::from_secs(60)), 0.5),
            Duration::from_secs(60)
        );
        assert_eq!(
            delay(&c, 1, Some(Duration::from_secs(10 * 86_400)), 0.5),
            MAX_RETRY_AFTER
        );
    }

    #[test]
    fn retry_after_reads_seconds_and_http_dates() {
        let now = jiff::Timestamp::from_second(784_111_777).unwrap(); // Sun, 06 Nov 1994 08:49:37 GMT
        let mut h = HeaderMap::new();
        assert_eq!(retry_after(&h, now), None);
        h.insert("retry-after", HeaderValue::from_static("120"));
        assert_eq!(retry_after(&h, now), Some(Duration::from_secs(120)));
        // The IMF-fixdate example of RFC 9110 §5.6.7, 30 s after `now`.
        h.insert(
            "retry-after",
            HeaderValue::from_static("Sun, 06 Nov 1994 08:50:07 GMT"),
        );
        assert_eq!(retry_after(&h, now), Some(Duration::from_secs(30)));
        h.insert(
            "retry-after",
            HeaderValue::from_static("Sun, 06 Nov 1994 08:00:00 GMT"),
        );
        assert_eq!(retry_after(&h, now), Some(Duration::ZERO));
        h.insert("retry-after", HeaderValue::from_static("soon"));
        assert_eq!(retry_after(&h, now), None);
        h.insert("retry-after", HeaderValue::from_static("-5"));
        assert_eq!(retry_after(&h, now), None);
    }
}
