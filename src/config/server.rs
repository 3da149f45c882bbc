//! `[server]` (the public listener) and `[storage]` (the SQLite file).

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use ipnet::IpNet;

use super::reader::Section;
use super::resolve_path;
use crate::secret::Secret;

/// `[server]`.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Address of the public listener. Default `0.0.0.0:8080`.
    pub listen: SocketAddr,
    /// Peers whose `X-Forwarded-For` is believed. Default: none.
    pub trusted_proxies: Vec<IpNet>,
    /// Key for browser tokens; generated and stored when absent.
    pub secret: Option<Secret>,
    /// Default request body limit for routes. Default 1 MiB.
    pub max_body: u64,
    /// Certificate and key for HTTPS; `None` serves plain HTTP.
    pub tls: Option<TlsFiles>,
    /// `Strict-Transport-Security` value sent over HTTPS; `None` sends none.
    pub hsts: Option<String>,
    /// Cap on open client connections; further clients wait in the listen backlog.
    pub max_connections: usize,
    /// Cap on open connections from one client address (0 = none); trusted proxies exempt.
    pub max_connections_per_ip: usize,
    /// Cap on the request bytes buffered by all requests together (bodies are read whole).
    pub max_buffered_body: u64,
    /// Time a client has to send a request's headers (and finish a TLS handshake).
    pub header_timeout: Duration,
    /// Time a client has to send a request body once the headers arrived.
    pub body_timeout: Duration,
    /// How long a connection (HTTP/1.1 or HTTP/2) with no request in flight is kept open.
    pub keepalive_timeout: Duration,
    /// How long a write to a client that does not read may stay blocked.
    pub send_timeout: Duration,
    /// How long a graceful shutdown waits for in-flight requests.
    pub shutdown_timeout: Duration,
    /// Listener threads, each with its own socket and runtime; default: one per CPU.
    pub workers: Option<usize>,
}

/// Certificate chain and private key files (PEM).
#[derive(Debug, Clone)]
pub struct TlsFiles {
    /// Certificate chain, leaf first.
    pub cert: PathBuf,
    /// Private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
}

/// `[storage]`.
#[derive(Debug, Clone)]
pub struct StorageConfig {
    /// The SQLite file, or `:memory:`.
    pub path: PathBuf,
    /// Audit events older than this are deleted. Default 30 days.
    pub keep: Duration,
    /// At most this many audit events are kept (the oldest go first). Default 1,000,000.
    pub max_events: u64,
    /// Store each allowed request as its own audit row (default); when false they are only
    /// counted per minute, route and outcome, and refusals keep their rows.
    pub audit_allowed: bool,
    /// Queued messages committed in one transaction at most (group commit); 1 commits each
    /// message on its own. Default 256.
    pub queue_commit_batch: usize,
}

impl StorageConfig {
    /// True for an in-memory store (nothing survives a restart).
    pub fn is_memory(&self) -> bool {
        self.path.as_os_str() == ":memory:"
    }
}

const DEFAULT_MAX_BODY: u64 = 1 << 20;
const DEFAULT_KEEP: Duration = Duration::from_secs(30 * 24 * 3600);
const DEFAULT_MAX_EVENTS: u64 = 1_000_000;
/// Default `[storage] queue_commit_batch`.
const DEFAULT_QUEUE_COMMIT_BATCH: usize = 256;

pub(super) fn read_server(section: Option<Section<'_, '_>>, base: &Path) -> ServerConfig {
    let mut cfg = ServerConfig {
        listen: SocketAddr::from(([0, 0, 0, 0], 8080)),
        trusted_proxies: Vec::new(),
        secret: None,
        max_body: DEFAULT_MAX_BODY,
        tls: None,
        hsts: None,
        max_connections: 10_000,
        max_connections_per_ip: 256,
        max_buffered_body: 256 << 20,
        header_timeout: Duration::from_secs(10),
        body_timeout: Duration::from_secs(30),
        keepalive_timeout: Duration::from_secs(60),
        send_timeout: Duration::from_secs(60),
        shutdown_timeout: Duration::from_secs(30),
        workers: None,
    };
    let Some(s) = section else {
        return cfg;
    };

    if let Some(listen) = s.string("listen") {
        match listen.parse::<SocketAddr>() {
            Ok(a) => cfg.listen = a,
            Err(_) => s.error(
                "listen",
                format!("\"{listen}\" is not an address and port"),
                "write e.g. \"0.0.0.0:8080\" or \"[::]:8080\"",
            ),
        }
    }
    if let Some(list) = s.string_list("trusted_proxies") {
        cfg.trusted_proxies = parse_networks(&s, "trusted_proxies", &list);
    }
    if let Some(secret) = s.secret("secret") {
        if secret.expose().len() < 32 {
            s.error(
                "secret",
                "is shorter than 32 characters, too short to sign browser tokens",
                "use 32 or more random characters, e.g. the output of `openssl rand -base64 32`",
            );
        }
        cfg.secret = Some(secret);
    }
    if let Some(n) = s.size("max_body") {
        cfg.max_body = n;
    }
    let cert = s.string("tls_cert");
    let key = s.string("tls_key");
    match (cert, key) {
        (Some(cert), Some(key)) => {
            let files = TlsFiles {
                cert: resolve_path(base, &cert),
                key: resolve_path(base, &key),
            };
            // Loaded here as `serve` loads them, so `check` finds what `serve` would stop at.
            if let Err(e) = crate::server::tls::Certificate::load(&files.cert, &files.key) {
                use crate::server::tls::TlsError;
                let (key, problem, fix) = match &e {
                    TlsError::Read { path, .. } if *path == files.key.display().to_string() => (
                        "tls_key",
                        e.to_string(),
                        "point tls_key to a readable PEM private key",
                    ),
                    TlsError::Read { .. } | TlsError::NoCertificate(_) => (
                        "tls_cert",
                        e.to_string(),
                        "point tls_cert to a readable PEM certificate (chain)",
                    ),
                    TlsError::NoKey(_) => (
                        "tls_key",
                        e.to_string(),
                        "point tls_key to the PEM private key of tls_cert",
                    ),
                    TlsError::Rustls(_) => (
                        "tls_key",
                        "is not the private key of tls_cert (or rustls refuses the pair)".into(),
                        "use the key the certificate was issued for; check that the two were not swapped",
                    ),
                };
                s.error(key, problem, fix);
            }
            cfg.tls = Some(files);
            cfg.hsts = Some("max-age=31536000".into());
        }
        (Some(_), None) => s.error(
            "tls_key",
            "is missing while tls_cert is set",
            "set both tls_cert and tls_key (PEM files) to serve HTTPS, or neither for HTTP",
        ),
        (None, Some(_)) => s.error(
            "tls_cert",
            "is missing while tls_key is set",
            "set both tls_cert and tls_key (PEM files) to serve HTTPS, or neither for HTTP",
        ),
        (None, None) => {}
    }
    if let Some(hsts) = s.string("hsts") {
        if cfg.tls.is_none() {
            s.warn(
                "hsts",
                "is set but the listener is plain HTTP, where browsers ignore it",
                "set tls_cert and tls_key, or remove hsts",
            );
        }
        cfg.hsts = (!hsts.is_empty()).then_some(hsts);
        if let Some(v) = &cfg.hsts
            && http::HeaderValue::from_str(v).is_err()
        {
            s.error(
                "hsts",
                "is not a valid header value",
                "e.g. \"max-age=31536000; includeSubDomains\", or \"\" to send none",
            );
        }
    }
    if let Some(n) = s.integer("max_connections", 1, 10_000_000) {
        cfg.max_connections = n as usize;
    }
    if let Some(n) = s.integer("max_connections_per_ip", 0, 10_000_000) {
        cfg.max_connections_per_ip = n as usize;
    }
    if let Some(n) = s.size("max_buffered_body") {
        cfg.max_buffered_body = n;
    }
    if let Some(d) = s.duration("header_timeout") {
        cfg.header_timeout = d;
    }
    if let Some(d) = s.duration("body_timeout") {
        cfg.body_timeout = d;
    }
    if let Some(d) = s.duration("keepalive_timeout") {
        cfg.keepalive_timeout = d;
    }
    if let Some(d) = s.duration("send_timeout") {
        cfg.send_timeout = d;
    }
    if let Some(d) = s.duration("shutdown_timeout") {
        cfg.shutdown_timeout = d;
    }
    if let Some(n) = s.integer("workers", 1, 1024) {
        cfg.workers = Some(n as usize);
    }
    for (key, d) in [
        ("header_timeout", cfg.header_timeout),
        ("body_timeout", cfg.body_timeout),
        ("keepalive_timeout", cfg.keepalive_timeout),
        ("send_timeout", cfg.send_timeout),
    ] {
        if d.is_zero() {
            s.error(
                key,
                "is zero, which would cut every connection",
                "use a positive duration such as \"10s\"",
            );
        }
    }
    if cfg.max_buffered_body < cfg.max_body {
        s.error(
            "max_buffered_body",
            "is smaller than max_body, so a single request at the limit could never be read",
            "raise max_buffered_body (default 256MiB) or lower max_body",
        );
    }
    s.finish();
    cfg
}

/// Parses CIDR networks (a bare address means just that address).
pub(crate) fn parse_networks(s: &Section<'_, '_>, key: &str, list: &[String]) -> Vec<IpNet> {
    let mut out = Vec::with_capacity(list.len());
    for item in list {
        let item = item.trim();
        let parsed = item
            .parse::<IpNet>()
            .map(|n| match n {
                // IPv4-mapped networks are written the IPv4 way so that they match the
                // canonicalised client address.
                IpNet::V6(v6) => match v6.addr().to_ipv4_mapped() {
                    Some(v4) if v6.prefix_len() >= 96 => {
                        IpNet::new(IpAddr::V4(v4), v6.prefix_len() - 96).unwrap_or(n)
                    }
                    _ => n,
                },
                n => n,
            })
            .or_else(|_| {
                item.parse::<IpAddr>()
                    .map(|a| IpNet::from(a.to_canonical()))
            });
        match parsed {
            Ok(IpNet::V6(v6)) if v6.prefix_len() < 96 && v6.addr().to_ipv4_mapped().is_some() => {
                s.warn(
                    key,
                    format!("\"{item}\" is an IPv4-mapped network shorter than /96: IPv4 clients are matched as IPv4 addresses, so it only matches IPv6 ones"),
                    "write the IPv4 network instead, e.g. \"10.0.0.0/8\"",
                );
                out.push(IpNet::V6(v6.trunc()));
            }
            Ok(n) => {
                if n.prefix_len() == 0 && key.ends_with("trusted_proxies") {
                    s.warn(
                        key,
                        format!("\"{item}\" trusts every address as a proxy: any client can name its own address in X-Forwarded-For and so get past IP rules, per-IP limits and bans"),
                        "list only your load balancers' addresses, e.g. \"10.0.0.0/8\" or \"192.0.2.10\"",
                    );
                }
                if n.trunc() != n {
                    // nginx warns the same way: `10.0.0.1/8` is often meant as one address.
                    s.warn(
                        key,
                        format!(
                            "\"{item}\" has host bits set, so it means all of {}",
                            n.trunc()
                        ),
                        format!(
                            "write \"{}\" for the network, or \"{}\" for the one address",
                            n.trunc(),
                            n.addr()
                        ),
                    );
                }
                out.push(n.trunc());
            }
            Err(_) => s.error(
                key,
                format!("\"{item}\" is not an IP address or CIDR network"),
                "write e.g. \"10.0.0.0/8\", \"203.0.113.7\" or \"2001:db8::/32\"",
            ),
        }
    }
    out
}

/// What `serve` would stop at when it opens the store at `path`: a directory, a directory that
/// does not exist, or a file that is not a SQLite database (the config file itself, say).
fn check_store_path(s: &Section<'_, '_>, path: &Path) {
    let shown = path.display();
    if path.is_dir() {
        s.error(
            "path",
            format!("{shown} is a directory"),
            "name a file in it, e.g. \"<directory>/hookwarden.db\"",
        );
        return;
    }
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty())
        && !dir.is_dir()
    {
        s.error(
            "path",
            format!("the directory {} does not exist", dir.display()),
            "create it (writable by the gateway), or point path to a file in an existing directory",
        );
        return;
    }
    // An empty or new file is fine (SQLite starts a database in it); anything else must
    // start with SQLite's header.
    let mut head = [0u8; 16];
    let read = std::fs::File::open(path).and_then(|mut f| {
        use std::io::Read;
        f.read(&mut head)
    });
    if let Ok(n) = read
        && n > 0
        && head[..n] != SQLITE_HEADER[..n]
    {
        s.error(
            "path",
            format!("{shown} exists and is not a SQLite database"),
            "point path to the gateway's store file, or to a file name that does not exist yet",
        );
    }
}

/// The first bytes of every SQLite database file.
const SQLITE_HEADER: &[u8; 16] = b"SQLite format 3\0";

pub(super) fn read_storage(section: Option<Section<'_, '_>>, base: &Path) -> StorageConfig {
    let mut cfg = StorageConfig {
        path: resolve_path(base, "hookwarden.db"),
        keep: DEFAULT_KEEP,
        max_events: DEFAULT_MAX_EVENTS,
        audit_allowed: true,
        queue_commit_batch: DEFAULT_QUEUE_COMMIT_BATCH,
    };
    let Some(s) = section else {
        return cfg;
    };
    if let Some(p) = s.string("path") {
        if p == ":memory:" {
            cfg.path = PathBuf::from(p);
        } else if p.trim().is_empty() {
            s.error(
                "path",
                "is empty",
                "write a file name such as \"hookwarden.db\" (relative to the config file), or \":memory:\" for a store that lives only as long as the process",
            );
        } else {
            cfg.path = resolve_path(base, &p);
            check_store_path(&s, &cfg.path);
        }
    }
    if let Some(d) = s.duration("keep") {
        if d < Duration::from_secs(60) {
            s.error(
                "keep",
                "is shorter than a minute, so the audit log would be empty most of the time",
                "use e.g. \"30d\" or \"7d\"",
            );
        } else {
            cfg.keep = d;
        }
    }
    if let Some(n) = s.integer("max_events", 1000, 1_000_000_000) {
        cfg.max_events = n as u64;
    }
    if let Some(b) = s.bool("audit_allowed") {
        cfg.audit_allowed = b;
    }
    if let Some(n) = s.integer("queue_commit_batch", 1, 10_000) {
        cfg.queue_commit_batch = n as usize;
    }
    s.finish();
    cfg
}
