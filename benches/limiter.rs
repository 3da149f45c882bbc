//! The limiter's cost per request: `cargo bench --bench limiter` (see docs/benchmarks.md).
//!
//! A route with API key auth and two limits, as the policy compiles it: a per-IP group
//! (`ip`, before the credentials) and a per-caller group (`key`, after them), each one
//! `LimitGuard::check` with its `RateLimit` fields, against the in-memory state. The key id is
//! set on the exchange the way the API key guard sets it. Measured for one warm caller and for
//! a new caller on every request (insertions into a full table, with eviction).

use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::pin::pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{Criterion, criterion_group, criterion_main};
use hookwarden::config::{LimitConfig, LimitKey};
use hookwarden::policy::guards::{LimitGuard, LimitScope};
use hookwarden::policy::{Exchange, Services};
use hookwarden::state::{MemoryState, Rate, State};

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

fn exchange(ip: IpAddr, key_id: String) -> Exchange {
    Exchange {
        request_id: "bench".into(),
        started: Instant::now(),
        method: http::Method::POST,
        path: "/chat".into(),
        query: None,
        original_query: None,
        headers: http::HeaderMap::new(),
        version: http::Version::HTTP_11,
        peer: SocketAddr::new(ip, 40000),
        client_ip: ip,
        forwarded_for: ip.to_string(),
        https: false,
        has_body: false,
        body: Bytes::new(),
        key_id: Some(key_id),
        session_id: None,
        flags: Vec::new(),
        response_headers: http::HeaderMap::new(),
    }
}

fn bench(c: &mut Criterion) {
    let services = Services {
        state: State::Memory(Arc::new(MemoryState::new(100_000))),
    };
    let ip_limit = limit("ip", LimitKey::Ip);
    let key_limit = limit("key", LimitKey::Key);
    let per_ip = LimitGuard::new("chat", &[&ip_limit], LimitScope::Route);
    let per_key = LimitGuard::new("chat", &[&key_limit], LimitScope::Route);

    let mut ex = exchange(IpAddr::V4(Ipv4Addr::new(203, 0, 113, 9)), "key_01".into());
    c.bench_function("key auth + two limits, one caller", |b| {
        b.iter(|| {
            ex.response_headers.clear();
            now(per_ip.check(&mut ex, &services)).unwrap();
            now(per_key.check(&mut ex, &services)).unwrap();
        })
    });

    let mut n: u32 = 0;
    c.bench_function("key auth + two limits, a new caller each request", |b| {
        b.iter(|| {
            n = n.wrapping_add(1);
            let mut ex = exchange(
                IpAddr::V4(Ipv4Addr::from(0x0b00_0000 + n)),
                format!("key_{n}"),
            );
            now(per_ip.check(&mut ex, &services)).unwrap();
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
