//! `[state]`: where limits, single-use ids, failure counters and bans are kept: in this
//! process (`backend = "memory"`, the default) or in a Redis shared by several instances
//! (`backend = "redis"`).

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::reader::{Issue, Section, Severity};
use super::resolve_path;
use super::server::ServerConfig;
use crate::secret::Secret;

/// `[state]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StateConfig {
    /// Most keys the in-memory state holds; beyond it the entries closest to expiring are
    /// dropped. An entry takes 32 bytes plus the hash table's slack, about 90 bytes at worst:
    /// the default 1,000,000 needs up to about 90 MB. Default 1,000,000. With Redis, this
    /// sizes the fallback table of `on_error = "local"`.
    pub max_entries: usize,
    /// Where the state lives.
    pub backend: StateBackend,
}

/// `[state] backend`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StateBackend {
    /// In this process only (the default).
    Memory,
    /// In Redis, shared by every instance pointed at it.
    Redis(RedisConfig),
}

/// The settings of `backend = "redis"`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedisConfig {
    /// `url`: `redis://[user[:password]@]host[:port][/db]`, `rediss://…` (TLS) or
    /// `unix:///path/redis.sock`. Held as a secret since it may carry a password.
    pub url: Secret,
    /// `ca_file`: with `rediss://`, the CA certificates (PEM) to trust for Redis instead of the
    /// public web PKI.
    pub ca_file: Option<PathBuf>,
    /// `password`, when kept apart from the URL.
    pub password: Option<Secret>,
    /// Where the server is, without credentials, for log lines (`host:port/db`, with
    /// `rediss://` in front for TLS).
    pub endpoint: String,
    /// What to do while Redis cannot be reached. Default [`OnError::Deny`].
    pub on_error: OnError,
    /// Prepended to every key. Default `"hookwarden:"`.
    pub prefix: String,
    /// How long one Redis call may take before it counts as failed. Default 250 ms.
    pub timeout: Duration,
    /// How long a connection attempt may take. Default 1 s.
    pub connect_timeout: Duration,
}

/// `[state] on_error`: what an instance does while Redis is unreachable or too slow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnError {
    /// Fail closed: requests that need the state are refused (503 `state_unavailable`).
    Deny,
    /// Fail open to this instance's own memory: limits, bans and single-use ids hold per
    /// instance until Redis answers again.
    Local,
}

impl OnError {
    /// The config spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            OnError::Deny => "deny",
            OnError::Local => "local",
        }
    }
}

/// Default `prefix`.
pub const DEFAULT_PREFIX: &str = "hookwarden:";
/// Default `timeout`.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_millis(250);
/// Default `connect_timeout`.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// Longest `prefix` accepted: keys stay small whatever is configured.
pub const MAX_PREFIX_LEN: usize = 64;

impl Default for StateConfig {
    fn default() -> Self {
        StateConfig {
            max_entries: 1_000_000,
            backend: StateBackend::Memory,
        }
    }
}

impl StateConfig {
    /// The Redis settings, when the backend is Redis.
    pub fn redis(&self) -> Option<&RedisConfig> {
        match &self.backend {
            StateBackend::Redis(r) => Some(r),
            StateBackend::Memory => None,
        }
    }
}

/// The keys that only mean something with `backend = "redis"`.
const REDIS_KEYS: [&str; 7] = [
    "url",
    "password",
    "ca_file",
    "on_error",
    "prefix",
    "timeout",
    "connect_timeout",
];

/// Reads `[state]`; the flag says whether a shared backend was asked for (even one whose
/// settings are wrong), for [`lint_shared_secret`].
pub(super) fn read_state(section: Option<Section<'_, '_>>, base: &Path) -> (StateConfig, bool) {
    let mut cfg = StateConfig::default();
    let Some(s) = section else {
        return (cfg, false);
    };
    if let Some(n) = s.integer("max_entries", 1_024, 1_000_000_000) {
        cfg.max_entries = n as usize;
    }
    // (a shared backend was asked for, the Redis keys are read)
    let (shared, redis_keys) = match s.string("backend").as_deref() {
        None | Some("memory") => (false, false),
        Some("redis") => (true, true),
        Some(other)
            if other.eq_ignore_ascii_case("redis") || other.eq_ignore_ascii_case("memory") =>
        {
            s.error(
                "backend",
                format!("\"{other}\" is not a state backend (names are lower case)"),
                format!("write backend = \"{}\"", other.to_ascii_lowercase()),
            );
            (false, other.eq_ignore_ascii_case("redis"))
        }
        Some(other) => {
            s.error(
                "backend",
                format!("\"{other}\" is not a state backend"),
                "use \"memory\" (this process only, the default) or \"redis\" (shared by several instances)",
            );
            // Read the Redis keys anyway so their own mistakes are reported too.
            (false, true)
        }
    };
    if redis_keys {
        if let Some(r) = read_redis(&s, base) {
            cfg.backend = StateBackend::Redis(r);
        }
    } else {
        for key in REDIS_KEYS {
            if s.has(key) {
                s.warn(
                    key,
                    "has no effect: the state backend is \"memory\"",
                    "set backend = \"redis\" to share the state between instances, or remove it",
                );
            }
        }
    }
    s.finish();
    (cfg, shared)
}

fn read_redis(s: &Section<'_, '_>, base: &Path) -> Option<RedisConfig> {
    let on_error = match s.string("on_error").as_deref() {
        None | Some("deny") => Some(OnError::Deny),
        Some("local") => Some(OnError::Local),
        Some(other) => {
            s.error(
                "on_error",
                format!("\"{other}\" is not an on_error mode"),
                "use \"deny\" (refuse with 503 state_unavailable while Redis is unreachable, the default) or \"local\" (fall back to this instance's memory)",
            );
            None
        }
    };
    let prefix = s.string("prefix").unwrap_or_else(|| DEFAULT_PREFIX.into());
    let prefix_ok = !prefix.is_empty()
        && prefix.len() <= MAX_PREFIX_LEN
        && prefix.bytes().all(|b| b.is_ascii_graphic());
    if !prefix_ok {
        s.error(
            "prefix",
            format!(
                "must be 1 to {MAX_PREFIX_LEN} printable ASCII characters without spaces"
            ),
            "use e.g. \"hookwarden:\" or \"hookwarden:prod:\"; instances that share state need the same prefix",
        );
    }
    let timeout = bounded_duration(
        s,
        "timeout",
        DEFAULT_TIMEOUT,
        Duration::from_millis(1),
        Duration::from_secs(30),
    );
    if let Some(t) = timeout
        && t > Duration::from_secs(2)
    {
        s.warn(
            "timeout",
            "is long: while Redis hangs, every request that needs the state waits this long",
            "keep it short (the default is \"250ms\"; Redis answers in well under a millisecond on a LAN)",
        );
    }
    let connect_timeout = bounded_duration(
        s,
        "connect_timeout",
        DEFAULT_CONNECT_TIMEOUT,
        Duration::from_millis(1),
        Duration::from_secs(60),
    );
    let password = s.secret("password");
    let ca_file = s.string("ca_file").map(|p| resolve_path(base, &p));
    if let Some(path) = &ca_file
        && let Err(e) = crate::forward::tls::read_ca_file(path)
    {
        s.error(
            "ca_file",
            e.to_string(),
            "point it to a PEM file with the CA certificate(s) that signed Redis's certificate",
        );
    }
    let url = match s.secret("url") {
        Some(u) => u,
        None => {
            s.error(
                "url",
                "is required with backend = \"redis\"",
                "set url = \"redis://host:6379/0\" (or \"${REDIS_URL}\"); every instance points at the same Redis",
            );
            return None;
        }
    };
    let endpoint = match check_url(&url, password.is_some()) {
        Ok(e) => e,
        Err((problem, fix)) => {
            s.error("url", problem, fix);
            return None;
        }
    };
    if let Some(db) = endpoint
        .rsplit_once('/')
        .and_then(|(_, d)| d.parse::<u32>().ok())
        .filter(|&d| d > 15 && !endpoint.starts_with("unix:"))
    {
        s.warn(
            "url",
            format!("names database {db}; a Redis has 16 (0 to 15) unless its `databases` setting says more, and refuses any other (every request needing the state would then be refused)"),
            "use /0 to /15, or raise `databases` in the Redis config",
        );
    }
    if ca_file.is_some() && !endpoint.starts_with("rediss://") {
        s.error(
            "ca_file",
            "is set but the url does not use TLS",
            "use a rediss:// url, or remove ca_file",
        );
    }
    Some(RedisConfig {
        url,
        ca_file,
        password,
        endpoint,
        on_error: on_error?,
        prefix: prefix_ok.then_some(prefix)?,
        timeout: timeout?,
        connect_timeout: connect_timeout?,
    })
}

fn bounded_duration(
    s: &Section<'_, '_>,
    key: &'static str,
    default: Duration,
    min: Duration,
    max: Duration,
) -> Option<Duration> {
    match s.duration(key) {
        None if s.peek(key).is_some() => None,
        None => Some(default),
        Some(d) if d < min || d > max => {
            s.error(
                key,
                "is out of range",
                format!(
                    "use a duration from {} to {}",
                    super::units::format_duration(min),
                    super::units::format_duration(max)
                ),
            );
            None
        }
        Some(d) => Some(d),
    }
}

/// Checks a Redis URL without echoing it (it may carry a password); returns the endpoint to
/// name in logs, or the problem and the fix.
fn check_url(url: &Secret, separate_password: bool) -> Result<String, (String, String)> {
    const FORM: &str =
        "write redis://[user[:password]@]host[:port][/db], or unix:///path/to/redis.sock";
    let Some(parsed) = redis::parse_redis_url(url.expose()) else {
        return Err(("is not a Redis URL".into(), FORM.into()));
    };
    let scheme = parsed.scheme();
    let tls = matches!(scheme, "rediss" | "valkeys");
    if tls && parsed.fragment().is_some() {
        return Err((
            "has a #fragment (such as #insecure); certificate checks cannot be switched off".into(),
            "remove the fragment; for a private CA, set state.ca_file to its certificate".into(),
        ));
    }
    if separate_password && parsed.password().is_some() {
        return Err((
            "carries a password while state.password is set too".into(),
            "keep the password in one place: remove it from the URL or remove state.password"
                .into(),
        ));
    }
    let endpoint = if matches!(scheme, "unix" | "redis+unix" | "valkey+unix") {
        if parsed.path().is_empty() || parsed.path() == "/" {
            return Err((
                "names no socket path".into(),
                "write unix:///path/to/redis.sock".into(),
            ));
        }
        format!("unix:{}", parsed.path())
    } else {
        let Some(host) = parsed.host_str().filter(|h| !h.is_empty()) else {
            return Err(("names no host".into(), FORM.into()));
        };
        if matches!(host, "0.0.0.0" | "[::]" | "::") {
            return Err((
                format!("names the wildcard address {host}, which cannot be connected to"),
                "use the Redis server's address, e.g. redis://10.0.0.5:6379/0".into(),
            ));
        }
        let db = parsed.path().trim_matches('/');
        if !db.is_empty() && db.parse::<u32>().is_err() {
            return Err((
                "has a path that is not a database number".into(),
                "end the URL with /0 to /15 (the database), or with nothing for database 0".into(),
            ));
        }
        let port = parsed.port().unwrap_or(6379);
        format!(
            "{}{host}:{port}/{}",
            if tls { "rediss://" } else { "" },
            if db.is_empty() { "0" } else { db }
        )
    };
    // The crate's own reading must agree (protocol parameter, encodings, …).
    if let Err(e) = redis::IntoConnectionInfo::into_connection_info(parsed) {
        // Only the description: the detail may be a value from the URL.
        let text = e.to_string();
        let description = text.split(" - ").next().unwrap_or("invalid");
        return Err((format!("is not usable: {description}"), FORM.into()));
    }
    Ok(endpoint)
}

/// `server.secret` must be set explicitly with a shared state: a token minted by one
/// instance is checked by another, and the state's key names are derived from it.
pub(super) fn lint_shared_secret(server: &ServerConfig, shared: bool) -> Option<Issue> {
    (shared && server.secret.is_none()).then(|| Issue {
        severity: Severity::Error,
        key: "server.secret".into(),
        problem: "is required with [state] backend = \"redis\": a browser token minted by one instance is checked by another, and the shared state's key names are derived from it".into(),
        fix: "set the same secret on every instance, e.g. secret = \"${HOOKWARDEN_SECRET}\" with 32+ random characters (`openssl rand -base64 32`)".into(),
    })
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use crate::config::{ConfigError, Loaded, Severity, load_str};

    use super::*;

    const SECRET: &str = "0123456789abcdef0123456789abcdef";

    fn load(state: &str) -> Result<Loaded, ConfigError> {
        load_with_server(&format!("secret = \"{SECRET}\""), state)
    }

    fn load_with_server(server: &str, state: &str) -> Result<Loaded, ConfigError> {
        let text = format!(
            "[server]\n{server}\n[state]\n{state}\n[[route]]\nname = \"chat\"\npath = \"/chat\"\n[route.upstream]\nurl = \"http://127.0.0.1:9/x\"\n[[route.limit]]\nkey = \"ip\"\nrate = \"60/minute\"\n"
        );
        load_str(&text, "t", Path::new("/tmp"), &|name| match name {
            "REDIS_URL" => Some("redis://:s3cr3t-pw@10.0.0.5:6380/2".into()),
            _ => None,
        })
    }

    /// The one error of a config, as (key, problem, fix).
    fn only_error(state: &str) -> (String, String, String) {
        let err = load(state).unwrap_err();
        let errors: Vec<_> = err
            .issues()
            .iter()
            .filter(|i| i.severity == Severity::Error)
            .collect();
        assert_eq!(errors.len(), 1, "{err}");
        let i = errors[0];
        (i.key.clone(), i.problem.clone(), i.fix.clone())
    }

    #[test]
    fn memory_is_the_default() {
        let c = load("").unwrap().config;
        assert_eq!(c.state.backend, StateBackend::Memory);
        assert_eq!(c.state.max_entries, 1_000_000);
    }

    #[test]
    fn redis_gets_documented_defaults() {
        let c = load("backend = \"redis\"\nurl = \"redis://10.0.0.5\"")
            .unwrap()
            .config;
        let r = c.state.redis().unwrap();
        assert_eq!(r.url.expose(), "redis://10.0.0.5");
        assert_eq!(r.endpoint, "10.0.0.5:6379/0");
        assert_eq!(r.on_error, OnError::Deny);
        assert_eq!(r.prefix, "hookwarden:");
        assert_eq!(r.timeout, Duration::from_millis(250));
        assert_eq!(r.connect_timeout, Duration::from_secs(1));
        assert_eq!(r.password, None);
    }

    #[test]
    fn every_redis_setting_is_read() {
        let c = load(
            "backend = \"redis\"\nurl = \"${REDIS_URL}\"\non_error = \"local\"\nprefix = \"hw:prod:\"\ntimeout = \"50ms\"\nconnect_timeout = \"3s\"\nmax_entries = 5000",
        )
        .unwrap()
        .config;
        let r = c.state.redis().unwrap();
        assert_eq!(r.endpoint, "10.0.0.5:6380/2");
        assert_eq!(r.on_error, OnError::Local);
        assert_eq!(r.prefix, "hw:prod:");
        assert_eq!(r.timeout, Duration::from_millis(50));
        assert_eq!(r.connect_timeout, Duration::from_secs(3));
        assert_eq!(c.state.max_entries, 5000);
    }

    #[test]
    fn tls_urls_take_an_optional_ca_file() {
        let c = load("backend = \"redis\"\nurl = \"rediss://cache.example.com:6380\"")
            .unwrap()
            .config;
        let r = c.state.redis().unwrap();
        assert_eq!(r.endpoint, "rediss://cache.example.com:6380/0");
        assert_eq!(r.ca_file, None);

        let dir = tempfile::tempdir().unwrap();
        let ca = dir.path().join("ca.pem");
        std::fs::write(&ca, "not a certificate").unwrap();
        let (key, problem, _) = only_error(&format!(
            "backend = \"redis\"\nurl = \"rediss://cache\"\nca_file = \"{}\"",
            ca.display()
        ));
        assert_eq!(key, "state.ca_file");
        assert!(problem.contains("holds no PEM certificate"), "{problem}");
        let missing = dir.path().join("missing.pem");
        let (key, problem, _) = only_error(&format!(
            "backend = \"redis\"\nurl = \"rediss://cache\"\nca_file = \"{}\"",
            missing.display()
        ));
        assert_eq!(key, "state.ca_file");
        assert!(problem.starts_with("cannot read"), "{problem}");
        let err = load(&format!(
            "backend = \"redis\"\nurl = \"redis://cache\"\nca_file = \"{}\"",
            missing.display()
        ))
        .unwrap_err();
        assert!(
            err.issues()
                .iter()
                .any(|i| i.key == "state.ca_file"
                    && i.problem == "is set but the url does not use TLS"),
            "{err}"
        );
    }

    #[test]
    fn unix_sockets_are_accepted() {
        let c = load("backend = \"redis\"\nurl = \"unix:///run/redis/redis.sock\"")
            .unwrap()
            .config;
        assert_eq!(
            c.state.redis().unwrap().endpoint,
            "unix:/run/redis/redis.sock"
        );
    }

    #[test]
    fn an_unknown_backend_is_named_with_the_choices() {
        let (key, problem, fix) = only_error("backend = \"memcached\"\nurl = \"redis://h\"");
        assert_eq!(key, "state.backend");
        assert_eq!(problem, "\"memcached\" is not a state backend");
        assert!(
            fix.contains("\"memory\"") && fix.contains("\"redis\""),
            "{fix}"
        );
    }

    #[test]
    fn an_on_error_typo_is_named_with_the_choices() {
        let (key, problem, fix) =
            only_error("backend = \"redis\"\nurl = \"redis://h\"\non_error = \"allow\"");
        assert_eq!(key, "state.on_error");
        assert_eq!(problem, "\"allow\" is not an on_error mode");
        assert!(
            fix.contains("\"deny\"") && fix.contains("\"local\""),
            "{fix}"
        );
    }

    #[test]
    fn redis_needs_a_url() {
        let (key, problem, fix) = only_error("backend = \"redis\"");
        assert_eq!(key, "state.url");
        assert_eq!(problem, "is required with backend = \"redis\"");
        assert!(fix.contains("redis://"), "{fix}");
    }

    #[test]
    fn bad_urls_are_explained_without_being_echoed() {
        for (url, problem) in [
            ("http://:hunter2-pw@cache:6379", "is not a Redis URL"),
            ("cache:6379", "is not a Redis URL"),
            (
                "redis://:hunter2-pw@0.0.0.0:6379",
                "names the wildcard address 0.0.0.0, which cannot be connected to",
            ),
            (
                "redis://:hunter2-pw@cache:6379/zero",
                "has a path that is not a database number",
            ),
            (
                "rediss://:hunter2-pw@cache:6379/#insecure",
                "has a #fragment (such as #insecure); certificate checks cannot be switched off",
            ),
            (
                "redis://:hunter2-pw@cache:6379/0?protocol=9",
                "is not usable: Invalid protocol version",
            ),
            ("unix://", "names no socket path"),
        ] {
            let err = load(&format!("backend = \"redis\"\nurl = \"{url}\"")).unwrap_err();
            let issue = &err.issues()[0];
            assert_eq!(issue.key, "state.url", "{url}");
            assert_eq!(issue.problem, problem, "{url}");
            assert!(!err.to_string().contains("hunter2"), "{err}");
        }
    }

    #[test]
    fn the_password_is_kept_in_one_place() {
        let (key, problem, _) = only_error(
            "backend = \"redis\"\nurl = \"redis://:a@cache\"\npassword = \"b-password\"",
        );
        assert_eq!(key, "state.url");
        assert_eq!(
            problem,
            "carries a password while state.password is set too"
        );
        let c = load("backend = \"redis\"\nurl = \"redis://cache\"\npassword = \"b-password\"")
            .unwrap()
            .config;
        let r = c.state.redis().unwrap();
        assert_eq!(r.password.as_ref().unwrap().expose(), "b-password");
        assert_eq!(format!("{r:?}").matches("b-password").count(), 0, "{r:?}");
    }

    #[test]
    fn prefix_and_timeouts_are_bounded() {
        let (key, _, _) = only_error("backend = \"redis\"\nurl = \"redis://h\"\nprefix = \"\"");
        assert_eq!(key, "state.prefix");
        let (key, _, _) =
            only_error("backend = \"redis\"\nurl = \"redis://h\"\nprefix = \"has space\"");
        assert_eq!(key, "state.prefix");
        let long = "p".repeat(65);
        let (key, _, _) = only_error(&format!(
            "backend = \"redis\"\nurl = \"redis://h\"\nprefix = \"{long}\""
        ));
        assert_eq!(key, "state.prefix");
        let (key, problem, fix) =
            only_error("backend = \"redis\"\nurl = \"redis://h\"\ntimeout = \"0s\"");
        assert_eq!(key, "state.timeout");
        assert_eq!(problem, "is out of range");
        assert_eq!(fix, "use a duration from 1ms to 30s");
        let (key, _, _) =
            only_error("backend = \"redis\"\nurl = \"redis://h\"\nconnect_timeout = \"2m\"");
        assert_eq!(key, "state.connect_timeout");
    }

    #[test]
    fn a_long_timeout_is_a_warning() {
        let loaded = load("backend = \"redis\"\nurl = \"redis://h\"\ntimeout = \"5s\"").unwrap();
        let w: Vec<&str> = loaded.warnings.iter().map(|i| i.key.as_str()).collect();
        assert!(w.contains(&"state.timeout"), "{w:?}");
    }

    #[test]
    fn redis_settings_without_redis_are_a_warning() {
        let loaded = load("url = \"redis://h\"\non_error = \"local\"").unwrap();
        let w: Vec<(&str, &str)> = loaded
            .warnings
            .iter()
            .map(|i| (i.key.as_str(), i.problem.as_str()))
            .collect();
        assert!(
            w.contains(&(
                "state.url",
                "has no effect: the state backend is \"memory\""
            )),
            "{w:?}"
        );
        assert!(w.iter().any(|(k, _)| *k == "state.on_error"), "{w:?}");
    }

    #[test]
    fn unknown_keys_get_a_suggestion() {
        let (key, problem, fix) =
            only_error("backend = \"redis\"\nurl = \"redis://h\"\non_eror = \"deny\"");
        assert_eq!(key, "state.on_eror");
        assert_eq!(problem, "unknown key");
        assert_eq!(fix, "did you mean `on_error`?");
    }

    #[test]
    fn redis_requires_an_explicit_server_secret() {
        let err = load_with_server("", "backend = \"redis\"\nurl = \"redis://h\"").unwrap_err();
        let i = &err.issues()[0];
        assert_eq!(i.severity, Severity::Error);
        assert_eq!(i.key, "server.secret");
        assert!(i.problem.contains("backend = \"redis\""), "{}", i.problem);
        assert!(i.fix.contains("same secret on every instance"), "{}", i.fix);
        // The memory backend does not need one.
        assert!(load_with_server("", "").is_ok());
    }
}
