//! Config reload: re-read the config file, and swap it in only if it is entirely valid.
//!
//! Triggered by `POST /api/reload` and by SIGHUP in `hookwarden serve`. A config with errors is
//! refused with the same issues `hookwarden check` prints, and the running one keeps serving.
//! What a reload changes: the routes and their policies, listener-wide request settings,
//! alert rules, retention, and the admin token; async routes added get a delivery worker,
//! removed ones lose theirs (their messages stay in the store). What needs a restart (and is reported as
//! such): listen addresses, TLS files, connection limits, workers, the store's path.

use std::path::PathBuf;
use std::sync::Arc;

use arc_swap::ArcSwap;
use serde::Serialize;

use crate::app::gateway_settings;
use crate::config::{self, Config, ConfigError, Issue, Severity};
use crate::events::alerts::AlertEngine;
use crate::events::metrics::Metrics;
use crate::gateway::Gateway;
use crate::policy::RouteTable;
use crate::queue::Queue;
use crate::secret::Secret;
use crate::store::events::Retention;

/// Why a reload was refused. The running config is unchanged in every case.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    /// The gateway was started without a config file (the demo, tests).
    #[error("this gateway was not started from a config file; there is nothing to reload")]
    NoSource,
    /// The file could not be read or is not TOML.
    #[error("{0}")]
    Unreadable(String),
    /// The file has errors.
    #[error("{}", config::render_issues(.0))]
    Invalid(Vec<Issue>),
    /// The routes could not be compiled (e.g. an unreadable CA file).
    #[error("{0}")]
    Compile(String),
}

/// What a successful reload did.
#[derive(Debug, Clone, Serialize)]
pub struct Reloaded {
    /// Routes now served.
    pub routes: usize,
    /// Alert rules now active.
    pub alerts: usize,
    /// Warnings of the new config (as `check` prints them).
    pub warnings: Vec<String>,
    /// Settings that changed but only take effect after a restart.
    pub restart_needed: Vec<&'static str>,
}

/// Re-reads the config and swaps it into the running gateway.
pub struct Reloader {
    source: Option<PathBuf>,
    current: ArcSwap<Config>,
    /// The config the process started with: settings fixed at start keep its values, so
    /// `restart_needed` compares against it, not against the last file loaded.
    started: Arc<Config>,
    gateway: Arc<Gateway>,
    alerts: Arc<AlertEngine>,
    retention: Arc<ArcSwap<Retention>>,
    admin_token: ArcSwap<Option<Secret>>,
    metrics: Arc<Metrics>,
    serial: std::sync::Mutex<()>,
    queue: Option<Queue>,
    /// The TLS listener's certificate, read again at every reload.
    certificate: Option<Arc<crate::server::tls::Certificate>>,
}

impl std::fmt::Debug for Reloader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reloader")
            .field("source", &self.source)
            .finish_non_exhaustive()
    }
}

impl Reloader {
    /// A reloader for a gateway started with `config` (read from `source`, if any).
    pub fn new(
        source: Option<PathBuf>,
        config: Config,
        gateway: Arc<Gateway>,
        alerts: Arc<AlertEngine>,
        retention: Arc<ArcSwap<Retention>>,
        metrics: Arc<Metrics>,
    ) -> Self {
        let token = config.admin.as_ref().map(|a| a.token.clone());
        let started = Arc::new(config);
        Reloader {
            source,
            current: ArcSwap::new(started.clone()),
            started,
            gateway,
            alerts,
            retention,
            admin_token: ArcSwap::from_pointee(token),
            metrics,
            serial: std::sync::Mutex::new(()),
            queue: None,
            certificate: None,
        }
    }

    /// Keeps the delivery queue's workers in line with the routes on every reload.
    pub fn with_queue(mut self, queue: Queue) -> Self {
        self.queue = Some(queue);
        self
    }

    /// The TLS listener's certificate, so a reload serves renewed files.
    pub fn with_certificate(
        mut self,
        certificate: Option<Arc<crate::server::tls::Certificate>>,
    ) -> Self {
        self.certificate = certificate;
        self
    }

    /// The config in force.
    pub fn current(&self) -> Arc<Config> {
        self.current.load_full()
    }

    /// The admin token in force.
    pub fn admin_token(&self) -> Option<Secret> {
        (**self.admin_token.load()).clone()
    }

    /// Re-reads the config file; swaps it in when valid. Blocking (reads files): call it from
    /// `spawn_blocking` in async code.
    pub fn reload(&self) -> Result<Reloaded, ReloadError> {
        let _one_at_a_time = self.serial.lock().unwrap_or_else(|p| p.into_inner());
        let result = self.try_reload();
        self.metrics.reload(result.is_ok());
        match &result {
            Ok(r) => tracing::info!(
                routes = r.routes,
                alerts = r.alerts,
                warnings = r.warnings.len(),
                restart_needed = %r.restart_needed.join(","),
                "config reloaded"
            ),
            Err(e) => {
                tracing::warn!("config reload refused; the running config stays in force:\n{e}")
            }
        }
        result
    }

    fn try_reload(&self) -> Result<Reloaded, ReloadError> {
        let path = self.source.as_ref().ok_or(ReloadError::NoSource)?;
        let loaded = match config::load_file(path) {
            Ok(l) => l,
            Err(ConfigError::Invalid(issues)) => return Err(ReloadError::Invalid(issues)),
            Err(e) => return Err(ReloadError::Unreadable(e.to_string())),
        };
        let new = loaded.config;
        let routes = RouteTable::compile(&new).map_err(|e| ReloadError::Compile(e.to_string()))?;
        let restart_needed = restart_needed(&self.started, &new);
        // The files were read by the config check already; read again here, just before the
        // swap, so what is served is what the check accepted (or the reload is refused).
        if let (Some(certificate), Some(files)) = (&self.certificate, &new.server.tls) {
            certificate
                .reload(&files.cert, &files.key)
                .map_err(|e| ReloadError::Unreadable(format!("server.tls_cert/tls_key: {e}")))?;
        }

        self.gateway.swap(routes, gateway_settings(&new.server));
        if let Some(q) = &self.queue {
            q.sync_routes();
        }
        self.alerts.set_rules(&new.alerts);
        self.retention.store(Arc::new(Retention {
            keep: new.storage.keep,
            max_events: new.storage.max_events,
            audit_allowed: new.storage.audit_allowed,
        }));
        if let Some(admin) = &new.admin {
            self.admin_token.store(Arc::new(Some(admin.token.clone())));
        }
        let reloaded = Reloaded {
            routes: new.routes.len(),
            alerts: new.alerts.len(),
            warnings: loaded
                .warnings
                .iter()
                .filter(|i| i.severity == Severity::Warning)
                .map(|i| i.to_string())
                .collect(),
            restart_needed,
        };
        self.current.store(Arc::new(new));
        Ok(reloaded)
    }
}

/// Settings fixed at start (`old`: the values the process started with) whose new value
/// differs.
fn restart_needed(old: &Config, new: &Config) -> Vec<&'static str> {
    let mut out = Vec::new();
    let tls = |c: &Config| c.server.tls.is_some();
    let checks: [(&'static str, bool); 16] = [
        ("server.listen", old.server.listen != new.server.listen),
        (
            "server.max_connections_per_ip",
            old.server.max_connections_per_ip != new.server.max_connections_per_ip,
        ),
        (
            "server.keepalive_timeout",
            old.server.keepalive_timeout != new.server.keepalive_timeout,
        ),
        (
            "server.send_timeout",
            old.server.send_timeout != new.server.send_timeout,
        ),
        (
            "server.max_buffered_body",
            old.server.max_buffered_body != new.server.max_buffered_body,
        ),
        // Read by the connection limit (proxies are exempt from the per-address cap), which is
        // fixed at start; the requests' client addresses follow the new list at once.
        (
            "server.trusted_proxies (for max_connections_per_ip)",
            old.server.trusted_proxies != new.server.trusted_proxies,
        ),
        // Turning TLS on or off changes the listener; new files are read by the reload.
        ("server.tls_cert/tls_key", tls(old) != tls(new)),
        (
            "server.max_connections",
            old.server.max_connections != new.server.max_connections,
        ),
        (
            "server.header_timeout",
            old.server.header_timeout != new.server.header_timeout,
        ),
        (
            "server.shutdown_timeout",
            old.server.shutdown_timeout != new.server.shutdown_timeout,
        ),
        ("server.workers", old.server.workers != new.server.workers),
        ("storage.path", old.storage.path != new.storage.path),
        (
            "storage.queue_commit_batch",
            old.storage.queue_commit_batch != new.storage.queue_commit_batch,
        ),
        (
            "admin.listen",
            old.admin.as_ref().map(|a| a.listen) != new.admin.as_ref().map(|a| a.listen),
        ),
        ("server.secret", old.server.secret != new.server.secret),
        ("state", old.state != new.state),
    ];
    for (key, changed) in checks {
        if changed {
            out.push(key);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(state: &str) -> Config {
        let text = format!(
            "[server]\nsecret = \"0123456789abcdef0123456789abcdef\"\n[state]\n{state}\n[[route]]\nname = \"a\"\npath = \"/a\"\n[route.upstream]\nurl = \"http://127.0.0.1:9/\"\n"
        );
        crate::config::load_str(&text, "t", std::path::Path::new("/tmp"), &|_| None)
            .unwrap()
            .config
    }

    #[test]
    fn a_changed_state_backend_needs_a_restart() {
        let memory = config("");
        let redis = config("backend = \"redis\"\nurl = \"redis://10.0.0.5\"");
        let other_prefix =
            config("backend = \"redis\"\nurl = \"redis://10.0.0.5\"\nprefix = \"other:\"");
        assert_eq!(restart_needed(&memory, &memory), Vec::<&str>::new());
        assert_eq!(restart_needed(&memory, &redis), ["state"]);
        assert_eq!(restart_needed(&redis, &other_prefix), ["state"]);
    }

    /// The connection settings fixed at start are reported when a reload changes them (a
    /// review found these applied silently as if they had been taken).
    #[test]
    fn changed_connection_settings_need_a_restart() {
        let base = config("");
        let mut changed = base.clone();
        changed.server.max_connections_per_ip = 2;
        changed.server.keepalive_timeout = std::time::Duration::from_secs(5);
        changed.server.send_timeout = std::time::Duration::from_secs(5);
        changed.server.max_buffered_body = 2048;
        changed.server.trusted_proxies = vec!["10.0.0.0/8".parse().unwrap()];
        assert_eq!(
            restart_needed(&base, &changed),
            [
                "server.max_connections_per_ip",
                "server.keepalive_timeout",
                "server.send_timeout",
                "server.max_buffered_body",
                "server.trusted_proxies (for max_connections_per_ip)",
            ]
        );
    }
}
