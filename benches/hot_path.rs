//! Micro-benchmarks of the per-request work the gateway does before and around forwarding.
//! Run with `cargo bench --bench hot_path`; results are recorded in docs/benchmarks.md.

use std::hint::black_box;
use std::net::SocketAddr;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use http::{HeaderMap, HeaderValue};

use hookwarden::policy::{client_ip, path};
use hookwarden::state::MemoryState;
use hookwarden::state::gcra::{Gcra, Rate};

fn bench_path(c: &mut Criterion) {
    c.bench_function("path::check_path plain", |b| {
        b.iter(|| path::check_path(black_box("/hooks/stripe")))
    });
    c.bench_function("path::check_path escaped", |b| {
        b.iter(|| path::check_path(black_box("/hooks/%73tripe/v1.2")))
    });
}

fn bench_client_ip(c: &mut Criterion) {
    let peer: SocketAddr = "10.0.0.2:4000".parse().unwrap();
    let trusted = vec!["10.0.0.0/8".parse().unwrap()];
    let mut headers = HeaderMap::new();
    headers.insert(
        "x-forwarded-for",
        HeaderValue::from_static("6.6.6.6, 198.51.100.1, 10.0.0.7"),
    );
    c.bench_function("client_ip::resolve behind two trusted hops", |b| {
        b.iter(|| client_ip::resolve(black_box(peer), black_box(&headers), black_box(&trusted)))
    });
    let untrusted: SocketAddr = "203.0.113.9:4000".parse().unwrap();
    c.bench_function("client_ip::resolve direct client", |b| {
        b.iter(|| {
            client_ip::resolve(
                black_box(untrusted),
                black_box(&headers),
                black_box(&trusted),
            )
        })
    });
}

fn bench_rate(c: &mut Criterion) {
    let rate = Rate::new(10, Duration::from_secs(60), 10);
    c.bench_function("gcra::decide", |b| {
        let mut tat = 0u64;
        let mut now = 1_000_000_000u64;
        b.iter(|| {
            now += 7_000_000_000;
            let (d, t) = Gcra::decide(black_box(rate), tat, now);
            tat = t;
            d
        })
    });
    let state = MemoryState::new(1_000_000);
    let keys: Vec<String> = (0..10_000)
        .map(|i| format!("rl:chat:ip:10.1.{}.{}", i / 256, i % 256))
        .collect();
    c.bench_function("MemoryState::rate over 10k keys", |b| {
        let mut i = 0;
        b.iter(|| {
            i = (i + 1) % keys.len();
            state.rate(black_box(&keys[i]), rate)
        })
    });
}

criterion_group!(benches, bench_path, bench_client_ip, bench_rate);
criterion_main!(benches);
