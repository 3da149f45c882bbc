//! `[route.browser]`: calls from web pages (allowed origins, single-use tokens).

use std::time::Duration;

use super::reader::Section;
use crate::browser::origin::Origin;

/// What part of the client address a browser token is bound to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenBind {
    /// The exact address: safest, but a phone moving between cells or Wi-Fi loses its token.
    Ip,
    /// The address's /24 (IPv4) or /64 (IPv6): the default. Carrier NAT pools and IPv6 privacy
    /// addresses usually stay inside it, so mobile users keep working, while a token lifted
    /// off one network is useless from another.
    Prefix,
    /// Not bound to an address.
    None,
}

impl TokenBind {
    /// The config value.
    pub const fn as_str(self) -> &'static str {
        match self {
            TokenBind::Ip => "ip",
            TokenBind::Prefix => "prefix",
            TokenBind::None => "none",
        }
    }
}

/// `[route.browser]`.
#[derive(Debug, Clone)]
pub struct BrowserConfig {
    /// Canonical origins (`scheme://host[:port]`) allowed to call the route. Empty refuses
    /// every request.
    pub allowed_origins: Vec<Origin>,
    /// Require a single-use token from `/_hookwarden/token`. Default false.
    pub token: bool,
    /// Lifetime of each token. Default 10 minutes.
    pub token_ttl: Duration,
    /// What part of the client address a token is bound to. Default `prefix`.
    pub token_bind: TokenBind,
}

/// Default `token_ttl`.
pub const DEFAULT_TOKEN_TTL: Duration = Duration::from_secs(600);

pub(super) fn read_browser(s: Section<'_, '_>) -> BrowserConfig {
    let mut allowed_origins: Vec<Origin> = Vec::new();
    let listed = s.string_list("allowed_origins");
    for raw in listed.iter().flatten() {
        match Origin::parse(raw) {
            Ok(o) if !allowed_origins.contains(&o) => allowed_origins.push(o),
            Ok(_) => {}
            Err(e) => s.error(
                "allowed_origins",
                format!("\"{raw}\" is not a usable origin: {e}"),
                "write each origin exactly as the browser shows it, scheme://host[:port] with no path, e.g. \"https://shop.example.com\"; list every origin separately (no wildcards)",
            ),
        }
    }
    for o in &allowed_origins {
        if let Some(rest) = o.as_str().strip_prefix("http://") {
            let host = match rest.rfind(':') {
                Some(i) if !rest.ends_with(']') => &rest[..i],
                _ => rest,
            };
            let local = host == "localhost"
                || host.ends_with(".localhost")
                || host.starts_with("127.")
                || host == "[::1]";
            if !local {
                s.warn(
                    "allowed_origins",
                    format!("\"{o}\" is plain http: anyone on the network path can change that page and call the route as it"),
                    "serve the page over https and list the https origin",
                );
            }
        }
    }
    if listed.as_ref().is_none_or(Vec::is_empty) {
        s.warn(
            "allowed_origins",
            "is empty, so this browser route refuses every request (origin_denied)",
            "list the pages' origins, e.g. allowed_origins = [\"https://shop.example.com\"]",
        );
    }
    let token = s.bool("token").unwrap_or(false);
    let token_ttl = s.duration("token_ttl").unwrap_or(DEFAULT_TOKEN_TTL);
    if token_ttl.is_zero() {
        s.error(
            "token_ttl",
            "is zero, so every token would be expired on arrival",
            "use a positive duration such as \"10m\"",
        );
    } else if token_ttl > Duration::from_secs(24 * 3600) {
        s.error(
            "token_ttl",
            "is longer than a day",
            "use a short lifetime such as \"10m\"; the client fetches a new token when one expires",
        );
    }
    let token_bind = match s.string("token_bind").as_deref() {
        None | Some("prefix") => TokenBind::Prefix,
        Some("ip") => TokenBind::Ip,
        Some("none") => TokenBind::None,
        Some(other) => {
            s.error(
                "token_bind",
                format!("\"{other}\" is not a token binding"),
                "use \"prefix\" (default: the client's /24 or /64), \"ip\" (the exact address) or \"none\"",
            );
            TokenBind::Prefix
        }
    };
    if !token {
        s.warn(
            "token",
            "is off (the default): only the Origin header is checked, and any non-browser client can send any Origin",
            "set token = true and use /_hookwarden/client.js, so every call needs a fresh single-use token",
        );
    }
    s.finish();
    BrowserConfig {
        allowed_origins,
        token,
        token_ttl,
        token_bind,
    }
}

/// A warning when browser tokens would not survive a restart: no `server.secret` and an
/// in-memory store, so the generated key dies with the process.
pub(super) fn lint_token_secret(
    server: &super::ServerConfig,
    storage: &super::StorageConfig,
    routes: &[super::RouteConfig],
) -> Option<super::Issue> {
    let uses_tokens = routes
        .iter()
        .any(|r| r.browser.as_ref().is_some_and(|b| b.token));
    (uses_tokens && server.secret.is_none() && storage.is_memory()).then(|| super::Issue {
        severity: super::Severity::Warning,
        key: "server.secret".into(),
        problem:
            "is not set and the store is in memory, so browser tokens stop working at every restart"
                .into(),
        fix: "set server.secret (32+ random characters), or keep the store in a file".into(),
    })
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use crate::config::{ConfigError, Loaded, Severity, load_str};

    fn load(browser: &str) -> Result<Loaded, ConfigError> {
        let text = format!(
            "[[route]]\nname = \"chat\"\npath = \"/chat\"\n[route.upstream]\nurl = \"http://127.0.0.1:9/x\"\n[[route.limit]]\nkey = \"ip\"\nrate = \"60/minute\"\n[route.browser]\n{browser}"
        );
        load_str(&text, "t", Path::new("/tmp"), &|_| None)
    }

    #[test]
    fn origins_are_canonicalised_and_defaults_apply() {
        let loaded = load(
            "allowed_origins = [\"HTTPS://Shop.Example.com:443\", \"https://shop.example.com\", \"http://127.0.0.1:8081\"]\ntoken = true",
        )
        .unwrap();
        let b = loaded.config.routes[0].browser.as_ref().unwrap();
        let origins: Vec<&str> = b.allowed_origins.iter().map(|o| o.as_str()).collect();
        assert_eq!(
            origins,
            ["https://shop.example.com", "http://127.0.0.1:8081"]
        );
        assert!(b.token);
        assert_eq!(b.token_ttl, super::DEFAULT_TOKEN_TTL);
        assert_eq!(b.token_bind, super::TokenBind::Prefix);
        assert!(loaded.warnings.is_empty(), "{:?}", loaded.warnings);
    }

    #[test]
    fn bad_origins_are_errors_that_name_the_key_and_the_fix() {
        let err = load(
            "allowed_origins = [\"https://*.example.com\", \"https://shop.example.com/\", \"null\"]\ntoken = true",
        )
        .unwrap_err();
        let issues = err.issues();
        assert_eq!(issues.len(), 3, "{err}");
        for i in issues {
            assert_eq!(i.key, "route[chat].browser.allowed_origins");
            assert!(i.fix.contains("scheme://host[:port]"), "{}", i.fix);
        }
        assert!(
            issues[0].problem.contains("wildcards"),
            "{}",
            issues[0].problem
        );
        assert!(issues[1].problem.contains("path"), "{}", issues[1].problem);
        assert!(issues[2].problem.contains("null"), "{}", issues[2].problem);
    }

    #[test]
    fn plain_http_origins_off_this_machine_are_warned_about() {
        let loaded = load(
            "allowed_origins = [\"http://shop.example.com\", \"http://localhost:3000\", \"http://127.0.0.1:8081\", \"http://[::1]:8080\", \"https://shop.example.com\"]\ntoken = true",
        )
        .unwrap();
        let w: Vec<&str> = loaded.warnings.iter().map(|w| w.problem.as_str()).collect();
        assert_eq!(w.len(), 1, "{w:?}");
        assert!(
            w[0].contains("\"http://shop.example.com\" is plain http"),
            "{w:?}"
        );
    }

    #[test]
    fn no_origins_is_a_warning_and_the_section_still_denies() {
        let loaded = load("token = true").unwrap();
        let w = &loaded.warnings;
        assert_eq!(w.len(), 1, "{w:?}");
        assert_eq!(w[0].severity, Severity::Warning);
        assert_eq!(w[0].key, "route[chat].browser.allowed_origins");
        assert!(
            loaded.config.routes[0]
                .browser
                .as_ref()
                .unwrap()
                .allowed_origins
                .is_empty()
        );
    }

    #[test]
    fn origin_only_routes_get_a_warning_about_forged_origins() {
        let loaded = load("allowed_origins = [\"https://shop.example.com\"]").unwrap();
        assert_eq!(loaded.warnings.len(), 1);
        assert_eq!(loaded.warnings[0].key, "route[chat].browser.token");
    }

    #[test]
    fn an_in_memory_store_without_a_secret_is_a_warning_for_token_routes() {
        let text = "[storage]\npath = \":memory:\"\n[[route]]\nname = \"chat\"\npath = \"/chat\"\n[route.upstream]\nurl = \"http://127.0.0.1:9/x\"\n[[route.limit]]\nkey = \"ip\"\nrate = \"9/minute\"\n[route.browser]\nallowed_origins = [\"https://a.example\"]\ntoken = true\n";
        let loaded = load_str(text, "t", Path::new("/tmp"), &|_| None).unwrap();
        let keys: Vec<&str> = loaded.warnings.iter().map(|w| w.key.as_str()).collect();
        assert_eq!(keys, ["server.secret"]);
        let with_secret = format!("[server]\nsecret = \"{}\"\n{text}", "s".repeat(32));
        let loaded = load_str(&with_secret, "t", Path::new("/tmp"), &|_| None).unwrap();
        assert!(loaded.warnings.is_empty(), "{:?}", loaded.warnings);
    }

    #[test]
    fn token_settings_are_checked() {
        let err = load(
            "allowed_origins = [\"https://a.example\"]\ntoken = true\ntoken_ttl = \"0s\"\ntoken_bind = \"subnet\"\nallowed_origin = 1",
        )
        .unwrap_err();
        let keys: Vec<&str> = err.issues().iter().map(|i| i.key.as_str()).collect();
        assert_eq!(
            keys,
            [
                "route[chat].browser.token_ttl",
                "route[chat].browser.token_bind",
                "route[chat].browser.allowed_origin"
            ],
            "{err}"
        );
        assert_eq!(err.issues()[2].fix, "did you mean `allowed_origins`?");
        let loaded = load(
            "allowed_origins = [\"https://a.example\"]\ntoken = true\ntoken_ttl = \"30s\"\ntoken_bind = \"ip\"",
        )
        .unwrap();
        let b = loaded.config.routes[0].browser.as_ref().unwrap();
        assert_eq!(b.token_ttl, std::time::Duration::from_secs(30));
        assert_eq!(b.token_bind, super::TokenBind::Ip);
    }
}
