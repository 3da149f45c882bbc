//! `[[alert]]`: rules that count matching events in a sliding window and notify a webhook.

use std::time::Duration;

use http::Uri;

use super::reader::Section;
use crate::events::Outcome;
use crate::policy::Reason;
use crate::secret::Secret;

/// What an alert rule counts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AlertMatch {
    /// Events whose reason (or alert-mode flag) is one of these.
    Reasons(Vec<Reason>),
    /// Events with this outcome.
    Outcome(Outcome),
}

/// The body sent to the alert's `url`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AlertFormat {
    /// A JSON object with the rule, counts and the latest matching event.
    Json,
    /// `{"text": "..."}`, as Slack (and Mattermost, Discord's Slack endpoint) incoming webhooks take.
    Slack,
}

impl AlertFormat {
    /// The config spelling.
    pub const fn as_str(self) -> &'static str {
        match self {
            AlertFormat::Json => "json",
            AlertFormat::Slack => "slack",
        }
    }
}

/// One `[[alert]]`.
#[derive(Debug, Clone)]
pub struct AlertConfig {
    /// Unique name, in notifications, metrics and the alert record.
    pub name: String,
    /// What is counted.
    pub matches: AlertMatch,
    /// Only events of this route count; `None`: every route.
    pub route: Option<String>,
    /// Matching events within `window` that trigger a notification.
    pub threshold: u32,
    /// The sliding window. Default 5 minutes.
    pub window: Duration,
    /// Quiet time after a notification. Default 15 minutes.
    pub cooldown: Duration,
    /// Where the notification is POSTed (often carries a token, as Slack's do: kept secret).
    pub url: Secret,
    /// JSON or Slack text. Default JSON.
    pub format: AlertFormat,
    /// Delivery attempts before giving up. Default 5.
    pub attempts: u32,
    /// First retry delay, doubled at each attempt. Default 1 s.
    pub backoff: Duration,
}

/// The largest threshold accepted (the window keeps one timestamp per counted event).
pub const MAX_THRESHOLD: i64 = 100_000;

pub(super) fn read_alerts(
    sections: Vec<Section<'_, '_>>,
    route_names: &[&str],
) -> Vec<AlertConfig> {
    let mut seen: Vec<String> = Vec::new();
    sections
        .into_iter()
        .filter_map(|s| read_alert(s, route_names, &mut seen))
        .collect()
}

fn read_alert(
    mut s: Section<'_, '_>,
    route_names: &[&str],
    seen: &mut Vec<String>,
) -> Option<AlertConfig> {
    let name = s.required_string(
        "name",
        "give the alert a unique name, e.g. name = \"bad-keys\"",
    );
    if let Some(n) = &name {
        let valid = (1..=64).contains(&n.len())
            && n.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if valid {
            s.set_path(format!("alert[{n}]"));
            if seen.contains(n) {
                s.error(
                    "name",
                    "is used by two alerts",
                    "give every alert its own name",
                );
            }
            seen.push(n.clone());
        } else {
            s.error(
                "name",
                format!("\"{n}\" is not a valid alert name"),
                "use 1-64 letters, digits, '-' or '_'",
            );
        }
    }
    let has_reasons = s.has("reasons");
    let has_outcome = s.has("outcome");
    let reasons = s.string_list("reasons").and_then(|list| {
        let mut out = Vec::new();
        let mut bad = false;
        for code in &list {
            match Reason::from_code(code) {
                Some(r) if !out.contains(&r) => out.push(r),
                Some(_) => {}
                None => {
                    bad = true;
                    s.error(
                        "reasons",
                        format!("\"{code}\" is not a reason code"),
                        format!(
                            "use codes from the reason table, e.g. {}",
                            suggest_reasons(code)
                        ),
                    );
                }
            }
        }
        if out.is_empty() && !bad {
            s.error(
                "reasons",
                "is empty, so the rule would never fire",
                "list reason codes, e.g. [\"key_invalid\", \"signature_invalid\"]",
            );
        }
        (!bad && !out.is_empty()).then_some(out)
    });
    let outcome = s
        .string("outcome")
        .and_then(|o| match Outcome::from_code(&o) {
            Some(x) => Some(x),
            None => {
                s.error(
                    "outcome",
                    format!("\"{o}\" is not an outcome"),
                    "use \"denied\", \"failed\" or \"allowed\"",
                );
                None
            }
        });
    let matches = match (has_reasons, has_outcome) {
        (true, true) => {
            s.error(
                "outcome",
                "is set together with reasons; a rule counts either reasons or an outcome",
                "keep one of `reasons` and `outcome`",
            );
            None
        }
        (true, false) => reasons.map(AlertMatch::Reasons),
        (false, true) => outcome.map(AlertMatch::Outcome),
        (false, false) => {
            s.error(
                "reasons",
                "is missing: the rule must say what it counts",
                "set reasons = [\"key_invalid\", …] or outcome = \"denied\"",
            );
            None
        }
    };
    let route = s.string("route");
    if let Some(r) = &route
        && !route_names.contains(&r.as_str())
    {
        s.error(
            "route",
            format!("\"{r}\" is not the name of a configured route"),
            if route_names.is_empty() {
                "remove it to count events of every route".to_owned()
            } else {
                format!("use one of: {}", route_names.join(", "))
            },
        );
    }
    let threshold = s.integer("threshold", 1, MAX_THRESHOLD).unwrap_or(1) as u32;
    let window = s.duration("window").unwrap_or(Duration::from_secs(300));
    let cooldown = s.duration("cooldown").unwrap_or(Duration::from_secs(900));
    if cooldown.is_zero() {
        s.warn(
            "cooldown",
            "is zero: every match past the threshold sends a notification, so a client that keeps failing on purpose sends one to your channel per request",
            "keep a cooldown, e.g. cooldown = \"5m\" (the default is 15m)",
        );
    }
    if window.is_zero() {
        s.error(
            "window",
            "is zero",
            "use a positive duration such as \"5m\"",
        );
    }
    let url = s
        .required_string(
            "url",
            "set the webhook to notify, e.g. url = \"${ALERT_WEBHOOK_URL}\"",
        )
        .and_then(|raw| check_url(&s, raw));
    let format = match s.string("format").as_deref() {
        None | Some("json") => AlertFormat::Json,
        Some("slack") => AlertFormat::Slack,
        Some(other) => {
            s.error(
                "format",
                format!("\"{other}\" is not an alert format"),
                "use \"json\" or \"slack\"",
            );
            AlertFormat::Json
        }
    };
    let attempts = s.integer("attempts", 1, 20).unwrap_or(5) as u32;
    let backoff = s.duration("backoff").unwrap_or(Duration::from_secs(1));
    s.finish();
    Some(AlertConfig {
        name: name?,
        matches: matches?,
        route,
        threshold,
        window,
        cooldown,
        url: url?,
        format,
        attempts,
        backoff,
    })
}

/// Validates the URL without echoing it: webhook URLs (Slack's among them) carry their token.
fn check_url(s: &Section<'_, '_>, raw: String) -> Option<Secret> {
    let fix = "use the full http:// or https:// URL of the webhook to notify";
    let Ok(uri) = raw.parse::<Uri>() else {
        s.error("url", "is not a valid URL", fix);
        return None;
    };
    if !matches!(uri.scheme_str(), Some("http" | "https")) || uri.host().is_none() {
        s.error("url", "is not an http:// or https:// URL with a host", fix);
        return None;
    }
    // As for upstream URLs: the notifier sends no credentials from the URL (they would be
    // dropped silently), and a fragment is never sent.
    if super::route::has_userinfo(&uri) {
        s.error(
            "url",
            "carries user:password credentials, which are not sent",
            "use a URL whose path or query carries the secret (as Slack's and most chat webhooks do)",
        );
        return None;
    }
    if super::route::refuse_fragment(s, &raw) {
        return None;
    }
    Some(Secret::new(raw))
}

fn suggest_reasons(code: &str) -> String {
    let mut near: Vec<&str> = Reason::ALL
        .iter()
        .map(|r| r.as_str())
        .filter(|c| {
            let stem = code.split('_').next().unwrap_or(code);
            !stem.is_empty() && c.contains(stem)
        })
        .collect();
    if near.is_empty() {
        near = vec!["key_invalid", "signature_invalid", "rate_limited"];
    }
    near.truncate(4);
    near.iter()
        .map(|c| format!("\"{c}\""))
        .collect::<Vec<_>>()
        .join(", ")
}
