//! The config file: schema, loading, `${VAR}` expansion and lint.
//!
//! Loading is two steps, as in ripgrep: the TOML text is parsed into a table, then each section
//! is read by its own function into checked, typed values (`ServerConfig`, `RouteConfig`, …).
//! Every problem found on the way is an [`Issue`] naming the key, the problem and the fix; all of
//! them are collected so `hookwarden check` can report the whole file at once. Warnings (risky
//! but valid setups) travel with a successfully loaded config.

mod abuse;
mod admin;
mod alert;
mod auth;
mod browser;
mod decrypt;
mod delivery;
mod expand;
mod reader;
mod route;
mod server;
mod state;
pub mod units;

use std::path::{Path, PathBuf};

pub use abuse::{
    AbuseConfig, BanConfig, IpRules, LimitConfig, LimitKey, RuleMode, UserAgentRules, parse_rate,
};
pub use admin::{AdminConfig, MIN_TOKEN_LEN};
pub use alert::{AlertConfig, AlertFormat, AlertMatch};
pub use auth::{
    Algorithm, ApiKeyConfig, AuthConfig, Encoding, HmacScheme, KeySource, OutboundScheme,
    OutboundSignConfig, PROVIDERS, Provider, SignatureConfig, TemplatePart, parse_template,
};
pub use browser::{BrowserConfig, DEFAULT_TOKEN_TTL, TokenBind};
pub use decrypt::DecryptConfig;
pub use delivery::DeliveryConfig;
pub use reader::{Issue, Reader, Section, Severity};
pub use route::{ErrorBodies, RouteConfig, RouteMode, UpstreamConfig};
pub use server::{ServerConfig, StorageConfig, TlsFiles};
pub use state::{OnError, RedisConfig, StateBackend, StateConfig};

/// A loaded, validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// `[server]`: the public listener.
    pub server: ServerConfig,
    /// `[storage]`: the SQLite store.
    pub storage: StorageConfig,
    /// `[state]`: limits, bans and single-use ids.
    pub state: StateConfig,
    /// `[[route]]`, in file order.
    pub routes: Vec<RouteConfig>,
    /// `[admin]`: the admin listener; `None` when the section is absent.
    pub admin: Option<AdminConfig>,
    /// `[[alert]]`, in file order.
    pub alerts: Vec<AlertConfig>,
}

/// A config together with the warnings found while loading it.
#[derive(Debug, Clone)]
pub struct Loaded {
    /// The config.
    pub config: Config,
    /// Risky or suspicious settings; the config is usable.
    pub warnings: Vec<Issue>,
}

/// Why a config could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file is not valid TOML.
    #[error("{path} is not valid TOML: {message}")]
    Syntax {
        /// The file (or `<config>` for text).
        path: String,
        /// The parser's message, with line and column.
        message: String,
    },
    /// The file is valid TOML but its contents are not a usable config.
    #[error("{} in the config:\n{}", count_errors(.0), render_issues(.0))]
    Invalid(Vec<Issue>),
}

impl ConfigError {
    /// The issues, when the config was readable TOML.
    pub fn issues(&self) -> &[Issue] {
        match self {
            ConfigError::Invalid(i) => i,
            _ => &[],
        }
    }
}

fn count_errors(issues: &[Issue]) -> String {
    let n = issues
        .iter()
        .filter(|i| i.severity == Severity::Error)
        .count();
    if n == 1 {
        "1 error".into()
    } else {
        format!("{n} errors")
    }
}

/// Renders issues one per paragraph, as `check` prints them.
pub fn render_issues(issues: &[Issue]) -> String {
    issues
        .iter()
        .map(|i| i.to_string())
        .collect::<Vec<_>>()
        .join("\n")
}

/// Reads and validates the config file at `path`, expanding `${VAR}` from the process
/// environment. Relative paths in the file are relative to the file's directory.
pub fn load_file(path: &Path) -> Result<Loaded, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_owned(),
        source,
    })?;
    let base = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    load_str(&text, &path.display().to_string(), base, &|name| {
        std::env::var(name).ok()
    })
}

/// Validates config text. `origin` names it in messages; `base` resolves relative paths;
/// `env` supplies `${VAR}` values.
pub fn load_str(
    text: &str,
    origin: &str,
    base: &Path,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Loaded, ConfigError> {
    let table: toml::Table = text
        .parse()
        .map_err(|e: toml::de::Error| ConfigError::Syntax {
            path: origin.to_owned(),
            message: syntax_message(&e, text),
        })?;
    let reader = Reader::new(env);
    let root = reader.root(&table);
    let server = server::read_server(root.table("server"), base);
    let storage = server::read_storage(root.table("storage"), base);
    let (state, shared_state) = state::read_state(root.table("state"), base);
    let route_sections = root.tables("route");
    if route_sections.is_empty() {
        reader.push(Issue {
            severity: Severity::Error,
            key: "route".into(),
            problem: "no routes are configured, so every request would be refused".into(),
            fix: "add a [[route]] section with name, path and [route.upstream] url".into(),
        });
    }
    let mut seen = route::Seen::default();
    let routes: Vec<RouteConfig> = route_sections
        .into_iter()
        .filter_map(|s| route::read_route(s, &server, base, &mut seen))
        .collect();
    auth::lint(&reader, &routes, &storage);
    delivery::lint(&reader, &routes, &storage);
    let admin = root
        .table("admin")
        .and_then(|s| admin::read_admin(s, &server));
    let route_names: Vec<&str> = seen.names.iter().map(String::as_str).collect();
    let alerts = alert::read_alerts(root.tables("alert"), &route_names);
    root.finish();
    if let Some(w) = browser::lint_token_secret(&server, &storage, &routes) {
        reader.push(w);
    }
    if let Some(e) = state::lint_shared_secret(&server, shared_state) {
        reader.push(e);
    }

    if reader.has_errors() {
        return Err(ConfigError::Invalid(reader.into_issues()));
    }
    let warnings = reader.into_issues();
    Ok(Loaded {
        config: Config {
            server,
            storage,
            state,
            routes,
            admin,
            alerts,
        },
        warnings,
    })
}

/// Reads only `[storage]` of the config file at `path`, for commands that need the store but
/// not a runnable config (`hookwarden events`): secrets of other sections need not be set.
pub fn load_storage(path: &Path) -> Result<StorageConfig, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_owned(),
        source,
    })?;
    let base = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let table: toml::Table = text
        .parse()
        .map_err(|e: toml::de::Error| ConfigError::Syntax {
            path: path.display().to_string(),
            message: syntax_message(&e, &text),
        })?;
    let env = |name: &str| std::env::var(name).ok();
    let reader = Reader::new(&env);
    let root = reader.root(&table);
    let storage = server::read_storage(root.table("storage"), base);
    if reader.has_errors() {
        return Err(ConfigError::Invalid(reader.into_issues()));
    }
    Ok(storage)
}

/// The parser's message with its line and column, without the source line the parser would
/// quote: that line may hold a secret.
fn syntax_message(e: &toml::de::Error, text: &str) -> String {
    let msg = e.message().trim_end();
    match e.span() {
        Some(span) => {
            let before = &text[..span.start.min(text.len())];
            let line = before.matches('\n').count() + 1;
            let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
            format!("line {line}, column {column}: {msg}")
        }
        None => msg.to_owned(),
    }
}

/// Resolves `p` against `base` unless it is absolute.
pub(crate) fn resolve_path(base: &Path, p: &str) -> PathBuf {
    let p = Path::new(p);
    if p.is_absolute() {
        p.to_owned()
    } else {
        base.join(p)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(text: &str) -> Result<Loaded, ConfigError> {
        load_str(text, "test.toml", Path::new("/tmp"), &|name| match name {
            "N8N_SECRET" => Some("n8n-header-secret".into()),
            _ => None,
        })
    }

    const MINIMAL: &str = r#"
[[route]]
name = "chat"
path = "/chat"
[route.upstream]
url = "https://n8n.example.com/webhook/abc"
"#;

    #[test]
    fn minimal_config_gets_documented_defaults() {
        let loaded = load(MINIMAL).unwrap();
        let c = &loaded.config;
        assert_eq!(c.server.listen.to_string(), "0.0.0.0:8080");
        assert_eq!(c.server.max_body, 1024 * 1024);
        assert_eq!(c.routes.len(), 1);
        let r = &c.routes[0];
        assert_eq!(r.methods, vec![http::Method::POST]);
        assert_eq!(r.max_body, 1024 * 1024);
        assert_eq!(r.upstream.timeout, std::time::Duration::from_secs(60));
        assert_eq!(c.storage.path, PathBuf::from("/tmp/hookwarden.db"));
    }

    /// Configs a review found accepted silently: each is now an error or a warning naming
    /// the key, and none echoes the upstream URL.
    #[test]
    fn configs_that_could_never_work_are_named() {
        let route = |extra: &str, url: &str| {
            format!(
                "[[route]]\nname = \"chat\"\npath = \"/chat\"\n{extra}\n[route.upstream]\nurl = \"{url}\"\n"
            )
        };
        for (text, key, problem) in [
            (
                route("", "http://127.0.0.1:85301/x"),
                "route[chat].upstream.url",
                "port",
            ),
            (
                route("", "http://127.0.0.1:0/x"),
                "route[chat].upstream.url",
                "port",
            ),
            (
                route("", "https://h.example/x#frag?y=1"),
                "route[chat].upstream.url",
                "fragment",
            ),
            (
                route("content_types = []", "https://h.example/x"),
                "route[chat].content_types",
                "empty",
            ),
            (
                "[server]\nheader_timeout = \"18446744073709551615s\"\n".to_owned()
                    + &route("", "https://h.example/x"),
                "server.header_timeout",
                "longer than",
            ),
        ] {
            let err = load(&text).unwrap_err();
            let issue = err
                .issues()
                .iter()
                .find(|i| i.key == key)
                .unwrap_or_else(|| panic!("{key} not named: {err}"));
            assert!(issue.problem.contains(problem), "{key}: {}", issue.problem);
            assert!(!err.to_string().contains("85301"), "{err}");
        }
        let nested = load(&route(
            "[[route.auth]]\ntype = \"api_key\"\nkeys = [\"${NOPE:-${ALSO}}\"]",
            "https://h.example/x",
        ))
        .unwrap_err();
        assert!(nested.to_string().contains("nesting"), "{nested}");
        let warned = load(&route("max_body = \"0B\"", "https://h.example/x")).unwrap();
        assert!(
            warned
                .warnings
                .iter()
                .any(|w| w.key == "route[chat].max_body"),
            "{:?}",
            warned.warnings
        );
    }

    /// TLS files are loaded by the check as `serve` loads them: missing, swapped or
    /// mismatched files name the key that is wrong.
    #[test]
    fn tls_files_that_serve_could_not_use_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        let one = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
        let other = rcgen::KeyPair::generate().unwrap();
        let write = |name: &str, text: &str| {
            let p = dir.path().join(name);
            std::fs::write(&p, text).unwrap();
            p.display().to_string()
        };
        let cert = write("cert.pem", &one.cert.pem());
        let key = write("key.pem", &one.signing_key.serialize_pem());
        let wrong = write("other.pem", &other.serialize_pem());
        let cfg = |c: &str, k: &str| {
            format!("[server]\ntls_cert = \"{c}\"\ntls_key = \"{k}\"\n{MINIMAL}")
        };
        assert!(load(&cfg(&cert, &key)).is_ok());
        for (c, k, named) in [
            (cert.clone(), wrong.clone(), "server.tls_key"),
            (key.clone(), cert.clone(), "server.tls_cert"),
            (
                "/nonexistent/cert.pem".to_owned(),
                key.clone(),
                "server.tls_cert",
            ),
            (
                cert.clone(),
                "/nonexistent/key.pem".to_owned(),
                "server.tls_key",
            ),
        ] {
            let err = load(&cfg(&c, &k)).unwrap_err();
            assert!(
                err.issues().iter().any(|i| i.key == named),
                "{c} / {k}: {err}"
            );
        }
    }

    #[test]
    fn no_routes_is_an_error_with_a_fix() {
        let err = load("[server]\nlisten = \"127.0.0.1:1\"").unwrap_err();
        let issues = err.issues();
        assert_eq!(issues.len(), 1);
        assert_eq!(issues[0].key, "route");
        assert!(issues[0].fix.contains("[[route]]"));
    }

    #[test]
    fn syntax_errors_give_the_place_but_not_the_line() {
        let err = load("[server]\nsecret = \"hunter2-very-secret\" oops\n").unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("line 2, column"), "{msg}");
        assert!(!msg.contains("hunter2"), "{msg}");
    }

    #[test]
    fn syntax_errors_name_the_file() {
        let err = load("[server\nlisten=").unwrap_err();
        let msg = err.to_string();
        assert!(msg.starts_with("test.toml is not valid TOML"), "{msg}");
    }

    #[test]
    fn all_errors_are_reported_at_once() {
        let err = load(
            r#"
[server]
listen = "nope"
max_body = "1 lots"
lisen = 1
[[route]]
name = "a"
path = "chat"
[route.upstream]
url = "ftp://x"
"#,
        )
        .unwrap_err();
        let keys: Vec<&str> = err
            .issues()
            .iter()
            .filter(|i| i.severity == Severity::Error)
            .map(|i| i.key.as_str())
            .collect();
        assert_eq!(
            keys,
            [
                "server.listen",
                "server.max_body",
                "server.lisen",
                "route[a].path",
                "route[a].upstream.url"
            ],
            "{err}"
        );
        assert_eq!(err.issues()[2].fix, "did you mean `listen`?");
    }

    #[test]
    fn missing_variable_is_named_and_its_key_too() {
        let err = load(
            r#"
[[route]]
name = "chat"
path = "/chat"
[route.upstream]
url = "https://example.com/hook"
headers = { "X-Auth" = "${MISSING_VAR}" }
"#,
        )
        .unwrap_err();
        let i = &err.issues()[0];
        assert_eq!(i.key, "route[chat].upstream.headers.X-Auth");
        assert_eq!(i.problem, "environment variable MISSING_VAR is not set");
    }

    #[test]
    fn expanded_secrets_never_appear_in_messages() {
        // The header value comes from the environment and is invalid (a newline is not allowed
        // in a header): the message must say so without echoing it.
        let err = load_str(
            r#"
[[route]]
name = "chat"
path = "/chat"
[route.upstream]
url = "https://example.com/hook"
headers = { "X-Auth" = "${BAD}" }
"#,
            "t",
            Path::new("/tmp"),
            &|_| Some("top-secret\nvalue".into()),
        )
        .unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("route[chat].upstream.headers.X-Auth"), "{msg}");
        assert!(!msg.contains("top-secret"), "{msg}");
    }

    #[test]
    fn ipv4_mapped_networks_become_ipv4_and_too_short_ones_are_flagged() {
        let text = MINIMAL.replace(
            "[[route]]",
            "[server]\ntrusted_proxies = [\"::ffff:10.0.0.0/104\", \"::ffff:0:0/80\"]\n[[route]]",
        );
        let loaded = load(&text).unwrap();
        let nets: Vec<String> = loaded
            .config
            .server
            .trusted_proxies
            .iter()
            .map(|n| n.to_string())
            .collect();
        assert_eq!(nets, ["10.0.0.0/8", "::/80"]);
        let w: Vec<&str> = loaded.warnings.iter().map(|w| w.key.as_str()).collect();
        assert!(
            w.contains(&"server.trusted_proxies"),
            "{:?}",
            loaded.warnings
        );
    }

    /// Trusting every address as a proxy lets any client name its own address: warned, in
    /// each spelling of "everything".
    #[test]
    fn trusting_everyone_as_a_proxy_is_warned_about() {
        for all in ["0.0.0.0/0", "::/0", "::ffff:0:0/96"] {
            let text = MINIMAL.replace(
                "[[route]]",
                &format!("[server]\ntrusted_proxies = [\"10.0.0.0/8\", \"{all}\"]\n[[route]]"),
            );
            let loaded = load(&text).unwrap();
            assert!(
                loaded
                    .warnings
                    .iter()
                    .any(|w| w.key == "server.trusted_proxies"
                        && w.problem.contains("trusts every address")),
                "{all}: {:?}",
                loaded.warnings
            );
        }
        let text = MINIMAL.replace(
            "[[route]]",
            "[server]\ntrusted_proxies = [\"10.0.0.0/8\", \"2001:db8::/32\"]\n[[route]]",
        );
        let loaded = load(&text).unwrap();
        assert!(
            !loaded
                .warnings
                .iter()
                .any(|w| w.problem.contains("trusts every")),
            "{:?}",
            loaded.warnings
        );
    }
}
