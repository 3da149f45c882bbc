//! Memory under a flood of distinct addresses: requests from ever new forwarded addresses,
//! through the trusted proxy, at a route with per-address limits. The in-memory state must
//! stay within `[state] max_entries` and the process must not grow with the number of
//! addresses.
//!
//! `cargo test` floods with 20,000 addresses against a 4,096-entry table. `bench/flood-memory`
//! runs the same test in release with a million addresses and the default table size
//! (`HOOKWARDEN_FLOOD_ADDRESSES`, `HOOKWARDEN_FLOOD_MAX_ENTRIES`); it prints the numbers
//! recorded in docs/benchmarks.md.

mod common;

use std::net::Ipv4Addr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use bytes::Bytes;
use common::*;
use http_body_util::Full;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.replace('_', "").parse().ok())
        .unwrap_or(default)
}

/// This process's resident set size in KiB, from /proc/self/status.
fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS in /proc/self/status")
}

/// The n-th flooding address: distinct IPv4 addresses from 11.0.0.0 up, spread over 65,536
/// /24 networks (at most 16 per network for a million), so that every address is a new
/// caller for both per-IP limits.
fn address(n: usize) -> String {
    let n = n as u32;
    Ipv4Addr::from(0x0b00_0000u32 + (n % 65_536) * 256 + n / 65_536).to_string()
}

/// POSTs to `url` from `addresses` distinct forwarded addresses ([`address`]) over
/// `concurrency` connections, with `headers`; returns how many answers had status `counted`.
async fn flood(
    client: &Client<HttpConnector, Full<Bytes>>,
    url: &str,
    addresses: usize,
    concurrency: usize,
    headers: &'static [(&'static str, &'static str)],
    counted: u16,
) -> usize {
    let next = Arc::new(AtomicUsize::new(0));
    let hits = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let (next, hits, client, url) =
            (next.clone(), hits.clone(), client.clone(), url.to_owned());
        tasks.push(tokio::spawn(async move {
            loop {
                let n = next.fetch_add(1, Ordering::Relaxed);
                if n >= addresses {
                    return;
                }
                let mut b = req("POST", &url).header("x-forwarded-for", address(n));
                for (k, v) in headers {
                    b = b.header(*k, *v);
                }
                let got = send_with(&client, b.body(Full::new(Bytes::new())).unwrap()).await;
                if got.status == counted {
                    hits.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    hits.load(Ordering::Relaxed)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_distinct_addresses_keeps_memory_bounded() {
    let addresses = env_usize("HOOKWARDEN_FLOOD_ADDRESSES", 20_000);
    let max_entries = env_usize("HOOKWARDEN_FLOOD_MAX_ENTRIES", 4_096);
    let concurrency = env_usize("HOOKWARDEN_FLOOD_CONCURRENCY", 32);
    // A leaked URL under attack: every address is new, so each one creates state in the
    // per-IP limits (ip, and ip_prefix per /24), while the route's budget keeps all but the
    // first request away from the upstream. A GCRA entry lives as long as its theoretical
    // arrival time is ahead, one interval after a single request: 6 s for 10/minute, but
    // 864 s for the daily budget, so every address of the run is still live at its end and
    // the table has to hold them or evict.
    let cfg = format!(
        r#"
[server]
trusted_proxies = ["127.0.0.1"]
[state]
max_entries = {max_entries}
[[route]]
name = "leaked"
path = "/leaked"
[route.upstream]
url = "{{upstream}}/leaked"
[[route.limit]]
key = "ip"
rate = "10/minute"
[[route.limit]]
key = "ip"
rate = "100/day"
name = "daily"
[[route.limit]]
key = "ip_prefix"
rate = "100/minute"
[[route.limit]]
key = "route"
rate = "1/day"
"#
    );
    let up = Upstream::start().await;
    let o = Gateway::start_observed(&cfg, &up).await;
    drop(o.events); // nobody reads them here; the emitter drops what does not fit
    let url = o.gw.url("/leaked");
    let state = o.core.services().state.clone();

    // Warm up: connections, buffers and the allocator's first arenas.
    let client = client();
    for i in 0..200 {
        let r = req("POST", &url)
            .header("x-forwarded-for", format!("10.9.{i}.1"))
            .body(Full::new(Bytes::new()))
            .unwrap();
        send_with(&client, r).await;
    }
    let rss_before = rss_kib();
    let entries_before = state.local_entries();

    let started = Instant::now();
    let refused = flood(&client, &url, addresses, concurrency, &[], 429).await;
    let elapsed = started.elapsed();
    let rss_after = rss_kib();
    let entries_after = state.local_entries();
    let capacity = state.local_capacity();

    println!(
        "flood: {addresses} distinct addresses in {:.1} s ({:.0} req/s, {concurrency} connections)",
        elapsed.as_secs_f64(),
        addresses as f64 / elapsed.as_secs_f64()
    );
    println!(
        "state: {entries_before} entries before, {entries_after} after (max_entries {max_entries}, table cap {capacity})"
    );
    println!(
        "rss: {} KiB before, {} KiB after, growth {} KiB ({:.1} MiB)",
        rss_before,
        rss_after,
        rss_after.saturating_sub(rss_before),
        rss_after.saturating_sub(rss_before) as f64 / 1024.0
    );

    assert!(entries_after <= capacity, "{entries_after} > {capacity}");
    assert_eq!(refused, addresses, "all refused by the route budget");
    assert_eq!(
        up.count(),
        1,
        "only the first request of all reached the upstream"
    );
    // The table's share is bounded by max_entries (48 bytes an entry at most, with the hash
    // table's slack); everything else the flood may touch is per connection, not per
    // address. 64 MiB of headroom covers allocator noise, not a table that grows with the
    // number of addresses (20,000 in the default run, a million in the benchmark).
    let table_bound_kib = (capacity as u64 * 96) / 1024;
    let growth = rss_after.saturating_sub(rss_before);
    assert!(
        growth <= table_bound_kib + 64 * 1024,
        "RSS grew by {growth} KiB for {addresses} addresses"
    );
}

/// A flood of wrong keys from ever new addresses fills the table with per-address counters:
/// it must not push an authenticated caller's budget out (which would hand the caller a
/// fresh one). DESIGN.md: garbage must never spend, nor here reset, the budget a legitimate
/// caller is held to.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_unauthenticated_addresses_does_not_reset_a_key_budget() {
    let addresses = env_usize("HOOKWARDEN_FLOOD_ADDRESSES", 8_000);
    let cfg = r#"
[server]
trusted_proxies = ["127.0.0.1"]
[state]
max_entries = 1024
[[route]]
name = "agent"
path = "/agent"
[route.upstream]
url = "{upstream}/agent"
[[route.auth]]
type = "api_key"
header = "x-api-key"
keys = ["the-one-good-key-0123456789abcdef"]
[[route.limit]]
key = "ip"
rate = "1/day"
[[route.limit]]
key = "key"
rate = "2/hour"
"#;
    let up = Upstream::start().await;
    let gw = Gateway::start(cfg, &up).await;
    let url = gw.url("/agent");
    let client = client();
    let call = |from: String, key: &'static str| {
        req("POST", &url)
            .header("x-forwarded-for", from)
            .header("x-api-key", key)
            .body(Full::new(Bytes::new()))
            .unwrap()
    };
    let good = "the-one-good-key-0123456789abcdef";
    assert_eq!(
        send_with(&client, call("10.1.0.1".into(), good))
            .await
            .status,
        200
    );

    const WRONG_KEY: &[(&str, &str)] = &[("x-api-key", "a-wrong-key-0123456789abcdef")];
    let refused = flood(&client, &url, addresses, 16, WRONG_KEY, 401).await;
    assert_eq!(
        refused, addresses,
        "not every wrong key was refused with 401"
    );
    // The key has one call left this hour, whatever the flood did to the table.
    assert_eq!(
        send_with(&client, call("10.1.0.2".into(), good))
            .await
            .status,
        200
    );
    let got = send_with(&client, call("10.1.0.3".into(), good)).await;
    got.assert_error(429, "rate_limited");
    assert_eq!(up.count(), 2);
}
