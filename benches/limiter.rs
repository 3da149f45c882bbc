//! The limiter's cost per request: `cargo bench --bench limiter` (see docs/benchmarks.md).
//!
//! A route with API key auth and two limits, as the policy compiles it: a per-IP group
//! (`ip`, before the credentials), the API key guard (a static key in a header), and a
//! per-caller group (`key`, after it), each `LimitGuard::check` with its `RateLimit` fields,
//! against the in-memory state. Measured for one warm caller and for a new caller on every
//! request (insertions into a full table, with eviction).

use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::pin::pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use hookwarden::browser::token::TokenKey;
use hookwarden::config::{ApiKeyConfig, KeySource, LimitConfig, LimitKey};
use hookwarden::policy::guards::{ApiKeyGuard, LimitGuard, LimitScope};
use hookwarden::policy::{Exchange, Services};
use hookwarden::secret::Secret;
use hookwarden::state::{MemoryState, Rate, State};
use hookwarden::store::keys::KeyCache;

/// Runs a future that never waits (the memory state answers at once).
fn now<F: Future>(f: F) -> F::Output {
    let mut f = pin!(f);
    match f.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(v) => v,
        Poll::Pending => panic!("the memory state never waits"),
    }
}

fn limit(name: &str, key: LimitKey) -> LimitConfig {
    // High enough never to refuse during a run: the allowed path, with both fields.
    LimitConfig {
        name: name.into(),
        key,
        count: 1_000_000_000,
        period: Duration::from_secs(1),
        burst: 1_000_000_000,
    }
}

const KEY: &str = "hw_bench_0123456789abcdef0123456789abcdef";

fn exchange(ip: IpAddr) -> Exchange {
    let mut headers = http::HeaderMap::new();
    headers.insert("x-api-key", http::HeaderValue::from_static(KEY));
    Exchange::new(
        http::Method::POST,
        "/chat",
        None,
        headers,
        SocketAddr::new(ip, 40000),
    )
}

fn bench(c: &mut Criterion) {
    let services = Services {
        state: State::Memory(Arc::new(MemoryState::new(100_000))),
        keys: KeyCache::empty(),
        tokens: TokenKey::from_secret(b"0123456789abcdef0123456789abcdef").unwrap(),
    };
    let api_key = ApiKeyGuard::new(
        &Arc::from("chat"),
        &ApiKeyConfig {
            source: KeySource::Header(http::HeaderName::from_static("x-api-key")),
            keys: vec![Secret::new(KEY)],
            issued: true,
        },
    );
    let ip_limit = limit("ip", LimitKey::Ip);
    let key_limit = limit("key", LimitKey::Key);
    let per_ip = LimitGuard::new("chat", &[&ip_limit], LimitScope::Route);
    let per_key = LimitGuard::new("chat", &[&key_limit], LimitScope::Route);

    let ip = IpAddr::V4(Ipv4Addr::new(203, 0, 113, 9));
    c.bench_function("key auth + two limits, one caller", |b| {
        b.iter(|| {
            let mut ex = exchange(ip);
            now(per_ip.check(&mut ex, &services)).unwrap();
            api_key.check(&mut ex, &services.keys).unwrap();
            now(per_key.check(&mut ex, &services)).unwrap();
        })
    });

    let mut n: u32 = 0;
    c.bench_function("key auth + two limits, a new caller each request", |b| {
        b.iter(|| {
            n = n.wrapping_add(1);
            let mut ex = exchange(IpAddr::V4(Ipv4Addr::from(0x0b00_0000 + n)));
            now(per_ip.check(&mut ex, &services)).unwrap();
            api_key.check(&mut ex, &services.keys).unwrap();
            now(per_key.check(&mut ex, &services)).unwrap();
        })
    });

    let m = MemoryState::new(100_000);
    let rate = Rate::new(1_000_000_000, Duration::from_secs(1), 1_000_000_000);
    c.bench_function("state: rate_many, two keys", |b| {
        b.iter(|| {
            m.rate_many(&[
                ("rl:chat:ip:203.0.113.9", rate),
                ("rl:chat:key:key_01", rate),
            ])
        })
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
