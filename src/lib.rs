//! hookwarden: a self-hosted security gateway for chatbot and automation webhooks.
//!
//! The crate is the whole gateway; the `hookwarden` binary is a thin CLI over it. Module map,
//! in the order a request meets them:
//!
//! - [`server`]: listeners, TLS, HTTP/1.1 (our own connection loop) and HTTP/2 (hyper),
//!   connection limits, shutdown.
//! - [`http1`]: the HTTP/1.1 wire format both sides share (chunked coding, lengths).
//! - [`gateway`]: the request pipeline, phase by phase, and the gateway's own endpoints.
//! - [`policy`]: routes compiled into ordered guards; one file per guard under
//!   [`policy::guards`]; reason codes.
//! - [`forward`]: the upstream client, header rules, streamed response bodies.
//! - [`state`]: rate limits, single-use ids, failure counters and bans.
//! - [`store`]: the SQLite file.
//! - [`queue`]: durable async delivery (`mode = "async"` routes).
//! - [`events`]: one event per request and its sinks.
//! - [`config`]: the TOML schema, `${VAR}` expansion and lint; [`config_hash`]: the hash of
//!   tables keyed by config values.
//! - [`browser`]: browser widgets (origins, CORS, single-use tokens, the JS client).
//! - [`admin`]: the admin listener: admin API, `/metrics`, dashboard, config reload.
//! - [`decrypt`]: PHP `openssl_decrypt`-compatible body decryption.
//! - [`app`]: assembly of all the above; [`demo`]: the no-config demo. The CLI lives in the
//!   binary (`src/cli/`).

pub mod admin;
pub mod app;
pub mod browser;
pub mod config;
pub mod config_hash;
pub mod decrypt;
pub mod demo;
pub mod digits;
pub mod events;
pub mod forward;
pub mod gateway;
pub mod http1;
pub mod logging;
pub mod policy;
pub mod queue;
pub mod secret;
pub mod server;
pub mod state;
pub mod store;
pub mod urlenc;
