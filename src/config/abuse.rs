//! A route's abuse controls: `[route.ip]`, `[route.user_agent]`, `[[route.limit]]` and
//! `[route.ban]`, and the lint that goes with them.
//!
//! Everything here is read from the route's own section; the lint also peeks at the route's
//! credential settings (`[[route.auth]]`, `[route.browser] token`) without reading them, since
//! a limit keyed by `key` or `session`, or a ban, only does something when those exist.

use std::time::Duration;

use http::HeaderName;
use ipnet::IpNet;
use toml::Value;

use super::reader::Section;
use super::server::parse_networks;
use super::units::parse_duration;
use crate::state::Rate;

/// A route's abuse controls.
#[derive(Debug, Clone, Default)]
pub struct AbuseConfig {
    /// `[route.ip]`.
    pub ip: Option<IpRules>,
    /// `[route.user_agent]`.
    pub user_agent: Option<UserAgentRules>,
    /// `[[route.limit]]`, in file order.
    pub limits: Vec<LimitConfig>,
    /// `[route.ban]`.
    pub ban: Option<BanConfig>,
}

/// What a rule does with a request it does not like.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RuleMode {
    /// Refuse it (403).
    #[default]
    Enforce,
    /// Let it through and flag its event, for lists you cannot fully trust yet.
    Alert,
}

/// `[route.ip]`: CIDR allow and deny lists. Deny wins.
#[derive(Debug, Clone)]
pub struct IpRules {
    /// When not empty, only these networks may call.
    pub allow: Vec<IpNet>,
    /// These networks may never call.
    pub deny: Vec<IpNet>,
    /// Enforce or alert.
    pub mode: RuleMode,
}

/// `[route.user_agent]`: the User-Agent must start with one of the prefixes.
#[derive(Debug, Clone)]
pub struct UserAgentRules {
    /// Accepted prefixes (compared without regard to ASCII case).
    pub allow_prefixes: Vec<String>,
    /// Enforce or alert.
    pub mode: RuleMode,
}

/// What a limit counts requests by.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LimitKey {
    /// The client address (an IPv6 client by its /64, the block one subscriber gets).
    Ip,
    /// The client's network: IPv4 by `/v4`, IPv6 by `/v6` (default /24 and /64).
    IpPrefix {
        /// IPv4 prefix length.
        v4: u8,
        /// IPv6 prefix length.
        v6: u8,
    },
    /// The API key that authenticated the request.
    Key,
    /// The browser session of the request's token.
    Session,
    /// All callers of the route together.
    Route,
    /// The value of a request header.
    Header(HeaderName),
}

impl LimitKey {
    /// True for keys that describe the caller's address: these run before the credential
    /// checks and count every request, failed ones included.
    pub fn is_per_ip(&self) -> bool {
        matches!(self, LimitKey::Ip | LimitKey::IpPrefix { .. })
    }

    /// The key as written in the config (`ip`, `header:x-user`, …).
    pub fn label(&self) -> String {
        match self {
            LimitKey::Ip => "ip".into(),
            LimitKey::IpPrefix { .. } => "ip_prefix".into(),
            LimitKey::Key => "key".into(),
            LimitKey::Session => "session".into(),
            LimitKey::Route => "route".into(),
            LimitKey::Header(h) => format!("header:{h}"),
        }
    }
}

/// One `[[route.limit]]`: `count` requests per `period` with bursts of up to `burst`.
#[derive(Debug, Clone)]
pub struct LimitConfig {
    /// The policy name in the `RateLimit` response fields; unique within the route.
    pub name: String,
    /// What requests are counted by.
    pub key: LimitKey,
    /// Requests per period.
    pub count: u32,
    /// The period.
    pub period: Duration,
    /// Requests allowed back to back. Default: `count`.
    pub burst: u32,
}

impl LimitConfig {
    /// The rate for the GCRA.
    pub fn rate(&self) -> Rate {
        Rate::new(self.count, self.period, self.burst)
    }
}

/// `[route.ban]`: an address that fails credentials `after_failures` times within `within` is
/// refused for `duration`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BanConfig {
    /// Failures that trigger a ban. Default 10.
    pub after_failures: u32,
    /// The window they are counted in, from the first failure. Default 1 minute.
    pub within: Duration,
    /// How long a ban lasts. Default 15 minutes.
    pub duration: Duration,
}

const KEY_FIX: &str =
    "use one of ip, ip_prefix, key, session, route or \"header:NAME\" (e.g. \"header:x-user-id\")";
const RATE_FIX: &str = "write requests/period, e.g. \"10/minute\", \"200/day\" or \"5/10s\"; periods: second, minute, hour, day or a duration";

/// Reads the abuse controls of the route section `s`.
pub(super) fn read_abuse(s: &Section<'_, '_>) -> AbuseConfig {
    let ip = s.table("ip").map(read_ip);
    let user_agent = s.table("user_agent").and_then(read_user_agent);
    let limits = read_limits(s);
    let ban = s.table("ban").and_then(read_ban);
    let cfg = AbuseConfig {
        ip: ip.flatten(),
        user_agent,
        limits,
        ban,
    };
    lint(s, &cfg);
    cfg
}

fn read_mode(s: &Section<'_, '_>) -> RuleMode {
    match s.string("mode").as_deref() {
        None | Some("enforce") => RuleMode::Enforce,
        Some("alert") => RuleMode::Alert,
        Some(other) => {
            s.error(
                "mode",
                format!("\"{other}\" is not a mode"),
                "use \"enforce\" (refuse with 403) or \"alert\" (let through and flag the event)",
            );
            RuleMode::Enforce
        }
    }
}

fn read_ip(s: Section<'_, '_>) -> Option<IpRules> {
    let allow_raw = s.string_list("allow").unwrap_or_default();
    let deny_raw = s.string_list("deny").unwrap_or_default();
    let allow = parse_networks(&s, "allow", &allow_raw);
    let deny = parse_networks(&s, "deny", &deny_raw);
    let mode = read_mode(&s);
    let empty = allow.is_empty() && deny.is_empty();
    if allow_raw.is_empty() && deny_raw.is_empty() {
        s.warn(
            "allow",
            "neither allow nor deny lists a network, so the section does nothing",
            "list the networks that may call in allow, or those that may not in deny",
        );
    }
    s.finish();
    (!empty).then_some(IpRules { allow, deny, mode })
}

fn read_user_agent(s: Section<'_, '_>) -> Option<UserAgentRules> {
    let prefixes = s.string_list("allow_prefixes");
    let mode = read_mode(&s);
    let out = match prefixes {
        None => {
            s.error(
                "allow_prefixes",
                "is required but missing",
                "list the User-Agent prefixes that may call, e.g. allow_prefixes = [\"Voiceflow\"]",
            );
            None
        }
        Some(list) if list.is_empty() => {
            s.error(
                "allow_prefixes",
                "is empty, so every request would be refused",
                "list at least one prefix, or remove the section",
            );
            None
        }
        Some(list) => {
            if list.iter().any(|p| p.trim().is_empty()) {
                s.error(
                    "allow_prefixes",
                    "contains an empty prefix, which matches every User-Agent",
                    "remove it; to allow everyone, remove the section",
                );
            }
            Some(UserAgentRules {
                allow_prefixes: list,
                mode,
            })
        }
    };
    s.finish();
    out
}

fn read_limits(route: &Section<'_, '_>) -> Vec<LimitConfig> {
    let mut out: Vec<LimitConfig> = Vec::new();
    for s in route.tables("limit") {
        if let Some(l) = read_limit(&s, &out) {
            out.push(l);
        }
        s.finish();
    }
    out
}

fn read_limit(s: &Section<'_, '_>, earlier: &[LimitConfig]) -> Option<LimitConfig> {
    let key = s
        .required_string("key", &format!("say what to count requests by: {KEY_FIX}"))
        .and_then(|k| parse_key(s, &k));
    let rate = s
        .required_string("rate", RATE_FIX)
        .and_then(|r| match parse_rate(&r) {
            Ok(rate) => Some(rate),
            Err(problem) => {
                s.error("rate", problem, RATE_FIX);
                None
            }
        });
    let burst = match s.integer("burst", 0, 1_000_000_000) {
        Some(0) => {
            s.error(
                "burst",
                "is 0, so no request could ever pass",
                "leave it out (it defaults to the rate's count) or use 1 or more",
            );
            None
        }
        other => other.map(|b| b as u32),
    };
    let v4 = s.integer("prefix_v4", 1, 32).map(|n| n as u8);
    let v6 = s.integer("prefix_v6", 1, 128).map(|n| n as u8);
    let name = s.string("name");
    let mut key = key?;
    match &mut key {
        LimitKey::IpPrefix { v4: a, v6: b } => {
            *a = v4.unwrap_or(*a);
            *b = v6.unwrap_or(*b);
        }
        other => {
            for (k, set) in [("prefix_v4", v4.is_some()), ("prefix_v6", v6.is_some())] {
                if set {
                    s.error(
                        k,
                        format!(
                            "only applies to key = \"ip_prefix\", not \"{}\"",
                            other.label()
                        ),
                        "remove it, or use key = \"ip_prefix\"",
                    );
                }
            }
        }
    }
    let taken = |n: &str| earlier.iter().any(|l| l.name == n);
    let name = match name {
        Some(n) if !is_valid_policy_name(&n) => {
            s.error(
                "name",
                format!("\"{n}\" is not a valid limit name"),
                "use 1-64 letters, digits, '-', '_', '.' or ':'",
            );
            return None;
        }
        Some(n) if taken(&n) => {
            s.error(
                "name",
                format!("\"{n}\" is used by two limits of this route"),
                "give every limit of a route its own name",
            );
            return None;
        }
        Some(n) => n,
        None => {
            let base = key.label();
            let mut n = base.clone();
            let mut i = 2;
            while taken(&n) {
                n = format!("{base}-{i}");
                i += 1;
            }
            n
        }
    };
    let (count, period) = rate?;
    Some(LimitConfig {
        name,
        key,
        count,
        period,
        burst: burst.unwrap_or(count),
    })
}

fn parse_key(s: &Section<'_, '_>, k: &str) -> Option<LimitKey> {
    let key = match k {
        "ip" => LimitKey::Ip,
        "ip_prefix" => LimitKey::IpPrefix { v4: 24, v6: 64 },
        "key" => LimitKey::Key,
        "session" => LimitKey::Session,
        "route" => LimitKey::Route,
        other => match other.strip_prefix("header:") {
            Some(name) if name.trim().is_empty() => {
                s.error(
                    "key",
                    "\"header:\" needs a header name",
                    "write e.g. key = \"header:x-user-id\"",
                );
                return None;
            }
            Some(name) => match HeaderName::from_bytes(name.trim().as_bytes()) {
                Ok(h) => LimitKey::Header(h),
                Err(_) => {
                    s.error(
                        "key",
                        format!("\"{name}\" is not a valid header name"),
                        "use letters, digits and '-', e.g. \"header:x-user-id\"",
                    );
                    return None;
                }
            },
            None => {
                s.error("key", format!("\"{other}\" is not a limit key"), KEY_FIX);
                return None;
            }
        },
    };
    Some(key)
}

/// Parses `N/period`: a whole number of requests, then a unit (`second`, `minute`, `hour`,
/// `day`, singular, plural or abbreviated) or a duration (`10s`, `1h30m`).
pub fn parse_rate(input: &str) -> Result<(u32, Duration), String> {
    let Some((n, per)) = input.split_once('/') else {
        return Err(format!("\"{input}\" is not a rate"));
    };
    let count: u32 = match n.trim().parse() {
        Ok(0) => {
            return Err(format!(
                "\"{input}\" allows no request at all; to refuse everything, remove the route"
            ));
        }
        Ok(c) if c <= 1_000_000_000 => c,
        _ if !n.trim().is_empty() && n.trim().bytes().all(|b| b.is_ascii_digit()) => {
            return Err(format!(
                "\"{input}\" allows more than 1000000000 requests per period"
            ));
        }
        _ => {
            return Err(format!(
                "\"{input}\" does not start with a number of requests"
            ));
        }
    };
    let per = per.trim();
    let period = match per {
        "s" | "sec" | "second" | "seconds" => Duration::from_secs(1),
        "m" | "min" | "minute" | "minutes" => Duration::from_secs(60),
        "h" | "hour" | "hours" => Duration::from_secs(3600),
        "d" | "day" | "days" => Duration::from_secs(86_400),
        other => match parse_duration(other) {
            Ok(d) if d >= Duration::from_secs(1) => d,
            Ok(_) => return Err(format!("\"{input}\" has a period under one second")),
            Err(_) => return Err(format!("\"{input}\" has an unknown period \"{other}\"")),
        },
    };
    Ok((count, period))
}

fn is_valid_policy_name(n: &str) -> bool {
    (1..=64).contains(&n.len())
        && n.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'))
}

fn read_ban(s: Section<'_, '_>) -> Option<BanConfig> {
    // At least 1: 0 would ban before any failure.
    let after_failures = match s.integer("after_failures", 1, 1_000_000) {
        Some(n) => Some(n as u32),
        None => Some(10),
    };
    let within = s.duration("within").unwrap_or(Duration::from_secs(60));
    let duration = s.duration("duration").unwrap_or(Duration::from_secs(900));
    for (key, d) in [("within", within), ("duration", duration)] {
        if d.is_zero() {
            s.error(key, "is zero", "use a positive duration such as \"1m\"");
        }
    }
    s.finish();
    Some(BanConfig {
        after_failures: after_failures?,
        within,
        duration,
    })
    .filter(|b| !b.within.is_zero() && !b.duration.is_zero())
}

/// True when the route has `[[route.auth]]` with `type = "api_key"`.
fn has_api_key_auth(s: &Section<'_, '_>) -> bool {
    let Some(Value::Array(auth)) = s.peek("auth") else {
        return false;
    };
    auth.iter().any(|a| {
        a.get("type")
            .and_then(Value::as_str)
            .is_some_and(|t| t == "api_key")
    })
}

/// The headers the route's credential checks take out of the request before the caller
/// limits run (lower case): an API key's header, `Authorization` for a bearer key, and the
/// browser token's header.
fn consumed_headers(s: &Section<'_, '_>) -> Vec<String> {
    let mut out = Vec::new();
    if let Some(Value::Array(auth)) = s.peek("auth") {
        for a in auth {
            if a.get("type").and_then(Value::as_str) != Some("api_key") {
                continue;
            }
            if let Some(h) = a.get("header").and_then(Value::as_str) {
                out.push(h.to_ascii_lowercase());
            }
            if a.get("bearer").and_then(Value::as_bool) == Some(true) {
                out.push("authorization".into());
            }
        }
    }
    if has_browser_token(s) {
        out.push("x-hookwarden-token".into());
    }
    out
}

/// True when the route has any `[[route.auth]]`.
fn has_auth(s: &Section<'_, '_>) -> bool {
    matches!(s.peek("auth"), Some(Value::Array(a)) if !a.is_empty())
}

/// True when the route has `[route.browser] token = true`.
fn has_browser_token(s: &Section<'_, '_>) -> bool {
    s.peek("browser")
        .and_then(|b| b.get("token"))
        .and_then(Value::as_bool)
        .unwrap_or(false)
}

fn lint(s: &Section<'_, '_>, cfg: &AbuseConfig) {
    // Limits written but refused are errors already: "no limits" would be a second, wrong one.
    let written = s
        .peek("limit")
        .and_then(toml::Value::as_array)
        .is_some_and(|a| !a.is_empty());
    if cfg.limits.is_empty() && !written {
        s.warn(
            "limit",
            "route has no [[route.limit]]: a leaked URL can be called without bound",
            "add limits, e.g. [[route.limit]] key = \"ip\", rate = \"60/minute\" and [[route.limit]] key = \"route\", rate = \"600/minute\"",
        );
    }
    for l in &cfg.limits {
        let key = format!("limit[{}]", l.name);
        if l.key == LimitKey::Key && !has_api_key_auth(s) {
            s.warn(
                &key,
                "is keyed by the API key, but the route has no api_key auth, so it never applies",
                "add [[route.auth]] type = \"api_key\", or key the limit by ip or route",
            );
        }
        if let LimitKey::Header(name) = &l.key
            && consumed_headers(s).contains(&name.as_str().to_ascii_lowercase())
        {
            s.warn(
                &key,
                "counts a header the route's credential check removes before the limits run, so every caller would share one bucket",
                "key the limit by the credential instead: key = \"key\" for an API key, key = \"session\" for a browser token",
            );
        }
        if l.key == LimitKey::Session && !has_browser_token(s) {
            s.warn(
                &key,
                "is keyed by the browser session, but the route has no [route.browser] token = true, so it never applies",
                "set token = true in [route.browser], or key the limit by ip or route",
            );
        }
    }
    let has_session = cfg.limits.iter().any(|l| l.key == LimitKey::Session);
    let has_per_ip = cfg.limits.iter().any(|l| l.key.is_per_ip());
    if has_session && !has_per_ip {
        s.warn(
            "limit",
            "has a session limit but no per-IP limit: every token request starts a new session, so a script can take a fresh budget for each call",
            "add an ip limit too, e.g. [[route.limit]] key = \"ip\", rate = \"30/minute\" (it also limits the token endpoint)",
        );
    } else if !has_per_ip && !cfg.limits.is_empty() && has_browser_token(s) {
        // (A route without limits at all has its own warning.)
        s.warn(
            "limit",
            "has token = true but no per-IP limit: one client can fetch and spend tokens as fast as it likes, and every spend holds a slot in the state table until the token expires, even one a later limit refuses",
            "add an ip limit, e.g. [[route.limit]] key = \"ip\", rate = \"30/minute\" (it also limits the token endpoint)",
        );
    }
    if cfg.ban.is_some() && !has_auth(s) && !has_browser_token(s) {
        s.warn(
            "ban",
            "counts failed credentials, but the route checks none, so nobody is ever banned",
            "add [[route.auth]] or [route.browser] token = true, or remove [route.ban]",
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{ConfigError, Issue, Loaded, Severity, load_str};

    fn load(route_extra: &str) -> Result<Loaded, ConfigError> {
        let text = format!(
            "[[route]]\nname = \"chat\"\npath = \"/chat\"\n[route.upstream]\nurl = \"http://127.0.0.1:5678/hook\"\n{route_extra}"
        );
        load_str(&text, "t", std::path::Path::new("/tmp"), &|_| None)
    }

    fn abuse(route_extra: &str) -> AbuseConfig {
        load(route_extra)
            .unwrap_or_else(|e| panic!("{e}"))
            .config
            .routes
            .remove(0)
            .abuse
    }

    fn errors(route_extra: &str) -> Vec<Issue> {
        load(route_extra).unwrap_err().issues().to_vec()
    }

    fn warnings(route_extra: &str) -> Vec<Issue> {
        load(route_extra).unwrap_or_else(|e| panic!("{e}")).warnings
    }

    #[test]
    fn rates_in_every_form() {
        let min = Duration::from_secs(60);
        assert_eq!(parse_rate("5/minute"), Ok((5, min)));
        assert_eq!(parse_rate("5/minutes"), Ok((5, min)));
        assert_eq!(parse_rate("5 / min"), Ok((5, min)));
        assert_eq!(parse_rate("10/second"), Ok((10, Duration::from_secs(1))));
        assert_eq!(parse_rate("100/hour"), Ok((100, Duration::from_secs(3600))));
        assert_eq!(
            parse_rate("200/day"),
            Ok((200, Duration::from_secs(86_400)))
        );
        assert_eq!(parse_rate("5/10s"), Ok((5, Duration::from_secs(10))));
        assert_eq!(parse_rate("3/1h30m"), Ok((3, Duration::from_secs(5400))));
    }

    #[test]
    fn bad_rates_say_what_is_wrong() {
        for (bad, says) in [
            ("10", "is not a rate"),
            ("ten/minute", "does not start with a number"),
            ("-1/minute", "does not start with a number"),
            ("0/minute", "allows no request at all"),
            ("99999999999999/second", "more than 1000000000 requests"),
            ("1000000001/day", "more than 1000000000 requests"),
            ("10/fortnight", "unknown period \"fortnight\""),
            ("10/500ms", "under one second"),
        ] {
            let e = parse_rate(bad).unwrap_err();
            assert!(e.contains(says), "{bad}: {e}");
        }
    }

    #[test]
    fn a_full_section_is_read_with_defaults() {
        let a = abuse(
            r#"
[route.ip]
allow = ["203.0.113.0/24", "2001:db8::/32"]
deny = ["203.0.113.7"]
mode = "alert"
[route.user_agent]
allow_prefixes = ["Voiceflow"]
[[route.limit]]
key = "ip"
rate = "10/minute"
[[route.limit]]
key = "ip"
rate = "200/day"
burst = 20
[[route.limit]]
key = "ip_prefix"
rate = "100/minute"
prefix_v6 = 48
[[route.limit]]
key = "header:X-User-Id"
rate = "5/10s"
name = "per-user"
[route.ban]
"#,
        );
        let ip = a.ip.unwrap();
        assert_eq!(ip.mode, RuleMode::Alert);
        assert_eq!(ip.allow.len(), 2);
        assert_eq!(ip.deny[0].to_string(), "203.0.113.7/32");
        let ua = a.user_agent.unwrap();
        assert_eq!(ua.mode, RuleMode::Enforce);
        assert_eq!(ua.allow_prefixes, ["Voiceflow"]);
        let names: Vec<&str> = a.limits.iter().map(|l| l.name.as_str()).collect();
        assert_eq!(names, ["ip", "ip-2", "ip_prefix", "per-user"]);
        assert_eq!(a.limits[0].burst, 10, "burst defaults to the count");
        assert_eq!(a.limits[1].burst, 20);
        assert_eq!(a.limits[1].period, Duration::from_secs(86_400));
        assert_eq!(a.limits[2].key, LimitKey::IpPrefix { v4: 24, v6: 48 });
        assert_eq!(
            a.limits[3].key,
            LimitKey::Header(HeaderName::from_static("x-user-id"))
        );
        assert_eq!(
            a.ban,
            Some(BanConfig {
                after_failures: 10,
                within: Duration::from_secs(60),
                duration: Duration::from_secs(900),
            })
        );
    }

    #[test]
    fn limit_errors_name_the_limit_and_the_fix() {
        let issues = errors(
            r#"
[[route.limit]]
key = "user"
rate = "10/minute"
[[route.limit]]
key = "header:"
rate = "10/minute"
[[route.limit]]
key = "ip"
rate = "10 per minute"
[[route.limit]]
key = "ip"
rate = "10/minute"
burst = 0
[[route.limit]]
key = "route"
rate = "10/minute"
prefix_v4 = 16
[[route.limit]]
rate = "10/minute"
[[route.limit]]
key = "header:bad name"
rate = "1/s"
"#,
        );
        let got: Vec<(&str, &str)> = issues
            .iter()
            .filter(|i| i.severity == Severity::Error)
            .map(|i| (i.key.as_str(), i.problem.as_str()))
            .collect();
        assert_eq!(
            got,
            [
                ("route[chat].limit[#1].key", "\"user\" is not a limit key"),
                (
                    "route[chat].limit[#2].key",
                    "\"header:\" needs a header name"
                ),
                (
                    "route[chat].limit[#3].rate",
                    "\"10 per minute\" is not a rate"
                ),
                (
                    "route[chat].limit[#4].burst",
                    "is 0, so no request could ever pass"
                ),
                (
                    "route[chat].limit[#5].prefix_v4",
                    "only applies to key = \"ip_prefix\", not \"route\""
                ),
                ("route[chat].limit[#6].key", "is required but missing"),
                (
                    "route[chat].limit[#7].key",
                    "\"bad name\" is not a valid header name"
                ),
            ]
        );
        assert_eq!(issues[0].fix, KEY_FIX);
        // Every limit refused: errors, and no "no limits" warning on top.
        assert!(
            !issues
                .iter()
                .any(|i| i.problem.contains("no [[route.limit]]")),
            "{issues:?}"
        );
    }

    #[test]
    fn ip_and_user_agent_errors() {
        let issues = errors(
            r#"
[route.ip]
allow = ["203.0.113.0/33", "example.com"]
mode = "block"
[route.user_agent]
allow_prefixes = ["", "n8n"]
"#,
        );
        let got: Vec<&str> = issues
            .iter()
            .filter(|i| i.severity == Severity::Error)
            .map(|i| i.key.as_str())
            .collect();
        assert_eq!(
            got,
            [
                "route[chat].ip.allow",
                "route[chat].ip.allow",
                "route[chat].ip.mode",
                "route[chat].user_agent.allow_prefixes",
            ]
        );
        assert!(issues[0].problem.contains("203.0.113.0/33"), "{issues:?}");
        let issues = errors("[route.user_agent]\nmode = \"alert\"\n");
        assert_eq!(issues[0].problem, "is required but missing");
    }

    #[test]
    fn ban_errors_and_duplicate_names() {
        let issues = errors(
            r#"
[[route.limit]]
key = "ip"
rate = "1/s"
name = "a"
[[route.limit]]
key = "route"
rate = "1/s"
name = "a"
[route.ban]
after_failures = 0
within = "0s"
"#,
        );
        let got: Vec<(&str, &str)> = issues
            .iter()
            .filter(|i| i.severity == Severity::Error)
            .map(|i| (i.key.as_str(), i.problem.as_str()))
            .collect();
        assert_eq!(
            got,
            [
                (
                    "route[chat].limit[#2].name",
                    "\"a\" is used by two limits of this route"
                ),
                ("route[chat].ban.after_failures", "0 is out of range"),
                ("route[chat].ban.within", "is zero"),
            ]
        );
    }

    /// A header limit on the API key's own header would see no header at all (the key check
    /// takes it out first): every caller in the one "missing" bucket.
    #[test]
    fn a_header_limit_on_a_consumed_credential_is_warned_about() {
        let w = warnings(
            "[[route.auth]]\ntype = \"api_key\"\nheader = \"X-Api-Key\"\nkeys = [\"k-0123456789abcdef\"]\n\
             [[route.limit]]\nkey = \"header:x-api-key\"\nrate = \"1/s\"\n",
        );
        assert!(
            w.iter()
                .any(|i| i.key.ends_with("limit[header:x-api-key]")
                    && i.fix.contains("key = \"key\"")),
            "{w:?}"
        );
        let fine = warnings(
            "[[route.auth]]\ntype = \"api_key\"\nheader = \"X-Api-Key\"\nkeys = [\"k-0123456789abcdef\"]\n\
             [[route.limit]]\nkey = \"header:x-tenant\"\nrate = \"1/s\"\n",
        );
        assert!(fine.iter().all(|i| !i.key.contains("header:")), "{fine:?}");
    }

    #[test]
    fn a_route_without_limits_is_warned_about() {
        let w = warnings("");
        assert_eq!(w.len(), 1, "{w:?}");
        assert_eq!(w[0].key, "route[chat].limit");
        assert_eq!(
            w[0].problem,
            "route has no [[route.limit]]: a leaked URL can be called without bound"
        );
        assert!(warnings("[[route.limit]]\nkey = \"route\"\nrate = \"1/s\"\n").is_empty());
        // An empty list is no limit either.
        let text = "[[route]]\nname = \"chat\"\npath = \"/chat\"\nlimit = []\n[route.upstream]\nurl = \"http://127.0.0.1:5678/hook\"\n";
        let w = load_str(text, "t", std::path::Path::new("/tmp"), &|_| None)
            .unwrap_or_else(|e| panic!("{e}"))
            .warnings;
        assert!(w.iter().any(|i| i.key == "route[chat].limit"), "{w:?}");
    }

    #[test]
    fn key_and_session_limits_without_their_credentials_are_warned_about() {
        let w = warnings(
            "[[route.limit]]\nkey = \"key\"\nrate = \"1/s\"\n[[route.limit]]\nkey = \"session\"\nrate = \"1/s\"\n",
        );
        let got: Vec<&str> = w.iter().map(|i| i.key.as_str()).collect();
        assert_eq!(
            got,
            [
                "route[chat].limit[key]",
                "route[chat].limit[session]",
                "route[chat].limit"
            ]
        );
        assert!(w[0].problem.contains("no api_key auth"), "{w:?}");
        assert!(w[1].problem.contains("token = true"), "{w:?}");
        assert!(w[2].problem.contains("no per-IP limit"), "{w:?}");
        let w = warnings("[route.ban]\n[[route.limit]]\nkey = \"ip\"\nrate = \"1/s\"\n");
        assert_eq!(w[0].key, "route[chat].ban");
        assert!(w[0].problem.contains("nobody is ever banned"), "{w:?}");
    }

    /// Every spend of a browser token holds a state slot until the token expires, even when a
    /// later limit refuses the request; only a per-IP limit (which also guards the token
    /// endpoint) stops one client from filling the table.
    #[test]
    fn token_routes_without_a_per_ip_limit_are_warned_about() {
        let browser =
            "[route.browser]\nallowed_origins = [\"https://shop.example.com\"]\ntoken = true\n";
        let w = warnings(&format!(
            "{browser}[[route.limit]]\nkey = \"route\"\nrate = \"1/minute\"\n"
        ));
        assert!(
            w.iter().any(|i| i.key == "route[chat].limit"
                && i.problem.contains("token = true but no per-IP limit")),
            "{w:?}"
        );
        for per_ip in ["ip", "ip_prefix"] {
            let w = warnings(&format!(
                "{browser}[[route.limit]]\nkey = \"route\"\nrate = \"1/minute\"\n[[route.limit]]\nkey = \"{per_ip}\"\nrate = \"9/minute\"\n"
            ));
            assert!(
                !w.iter().any(|i| i.problem.contains("per-IP")),
                "{per_ip}: {w:?}"
            );
        }
    }

    #[test]
    fn credential_sections_are_recognised_for_the_lint() {
        // The auth and browser sections are read elsewhere; the lint only peeks at them.
        let table: toml::Table = r#"
auth = [{ type = "api_key", header = "x-api-key" }]
browser = { token = true }
"#
        .parse()
        .unwrap();
        let reader = crate::config::Reader::new(&|_| None);
        let s = reader.root(&table);
        assert!(has_api_key_auth(&s));
        assert!(has_auth(&s));
        assert!(has_browser_token(&s));
        let table: toml::Table = "auth = [{ type = \"signature\" }]\nbrowser = { token = false }"
            .parse()
            .unwrap();
        let s = reader.root(&table);
        assert!(!has_api_key_auth(&s));
        assert!(has_auth(&s));
        assert!(!has_browser_token(&s));
    }

    #[test]
    fn an_empty_ip_section_is_a_warning_and_no_rule() {
        let loaded =
            load("[route.ip]\nmode = \"enforce\"\n[[route.limit]]\nkey = \"ip\"\nrate = \"1/s\"\n")
                .unwrap();
        assert_eq!(loaded.warnings[0].key, "route[chat].ip.allow");
        assert!(loaded.config.routes[0].abuse.ip.is_none());
    }
}
