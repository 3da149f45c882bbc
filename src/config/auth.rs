//! `[[route.auth]]` (who may call a route: API keys, provider signatures) and
//! `[route.upstream] sign` (how the gateway signs what it forwards).
//!
//! Every method listed under a route must pass. Problems are reported as [`Issue`]s naming the
//! route, the auth entry and the key; secret values are never echoed.
//!
//! [`Issue`]: super::Issue

use std::time::Duration;

use http::HeaderName;

use super::reader::{Issue, Reader, Section, Severity};
use super::route::RouteConfig;
use super::server::StorageConfig;
use crate::secret::Secret;

/// One `[[route.auth]]` entry.
#[derive(Debug, Clone)]
pub enum AuthConfig {
    /// `type = "api_key"`: a key in a header, the query or `Authorization: Bearer`.
    ApiKey(ApiKeyConfig),
    /// `type = "signature"`: an HMAC signature over the request, provider by provider.
    Signature(SignatureConfig),
}

/// `type = "api_key"`.
#[derive(Debug, Clone)]
pub struct ApiKeyConfig {
    /// Where the caller puts the key.
    pub source: KeySource,
    /// Static keys from the config (several, for rotation).
    pub keys: Vec<Secret>,
    /// Whether keys issued with `hookwarden keys create` for the route count here. One entry
    /// per route at most: an issued key accepted by every entry would let one caller's key
    /// stand in for each credential a route with several entries requires.
    pub issued: bool,
}

/// Where an API key is read from. The credential is removed before forwarding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeySource {
    /// `header = "x-api-key"`: the whole value of this header.
    Header(HeaderName),
    /// `query = "secret-key"`: this query parameter (a URL secret).
    Query(String),
    /// `bearer = true`: `Authorization: Bearer <key>`.
    Bearer,
}

/// `type = "signature"`.
#[derive(Debug, Clone)]
pub struct SignatureConfig {
    /// The signing scheme.
    pub provider: Provider,
    /// Signing secrets; a signature made with any of them is accepted (rotation).
    pub secrets: Vec<Secret>,
    /// How far a signed timestamp may be from the gateway's clock, either way; also how long
    /// an accepted message id (or signature) is remembered for replay protection. Default 5 min.
    pub tolerance: Duration,
    /// Refuse a message already accepted within the window (`duplicate`). Default true.
    pub replay: bool,
}

/// A signature scheme.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Provider {
    /// Standard Webhooks: `webhook-id`, `webhook-timestamp`, `webhook-signature`.
    Standard,
    /// Svix: the Standard Webhooks scheme with `svix-*` headers.
    Svix,
    /// GitHub: `X-Hub-Signature-256: sha256=<hex>`.
    Github,
    /// Stripe: `Stripe-Signature: t=…,v1=…`.
    Stripe,
    /// Slack: `X-Slack-Signature: v0=<hex>` over `v0:{timestamp}:{body}`.
    Slack,
    /// Shopify: `X-Shopify-Hmac-Sha256: <base64>`.
    Shopify,
    /// Twilio: `X-Twilio-Signature`, HMAC-SHA1 over the public URL and the sorted POST
    /// parameters.
    Twilio {
        /// Scheme, host, port (and optional path prefix) as Twilio sees them, without a
        /// trailing slash; the request's path and query are appended.
        public_url: String,
    },
    /// Any other HMAC scheme.
    Hmac(HmacScheme),
}

impl Provider {
    /// The provider's name as written in the config.
    pub fn name(&self) -> &'static str {
        match self {
            Provider::Standard => "standard",
            Provider::Svix => "svix",
            Provider::Github => "github",
            Provider::Stripe => "stripe",
            Provider::Slack => "slack",
            Provider::Shopify => "shopify",
            Provider::Twilio { .. } => "twilio",
            Provider::Hmac(_) => "hmac",
        }
    }

    /// True when the secrets are `whsec_`-prefixed base64 (Standard Webhooks, Svix).
    pub fn base64_secrets(&self) -> bool {
        matches!(self, Provider::Standard | Provider::Svix)
    }
}

/// The accepted provider names, for messages.
pub const PROVIDERS: &str = "standard, svix, github, stripe, slack, shopify, twilio or hmac";

/// The generic scheme: `provider = "hmac"`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HmacScheme {
    /// The header carrying the signature(s).
    pub header: HeaderName,
    /// The hash. Default sha256.
    pub algorithm: Algorithm,
    /// How the signature is written. Default hex.
    pub encoding: Encoding,
    /// Text before each signature in the header (e.g. `sha256=`). Default none.
    pub prefix: String,
    /// What is signed. Default `{body}`.
    pub template: Vec<TemplatePart>,
    /// The header carrying the signed timestamp (Unix seconds), when the template has one.
    pub timestamp_header: Option<HeaderName>,
    /// The header carrying the signed message id, when the template has one.
    pub id_header: Option<HeaderName>,
}

/// An HMAC hash function.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Algorithm {
    /// HMAC-SHA1 (legacy senders only).
    Sha1,
    /// HMAC-SHA256.
    Sha256,
    /// HMAC-SHA512.
    Sha512,
}

/// How a signature is written in its header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    /// Hexadecimal, either case.
    Hex,
    /// Standard base64 with padding (URL-safe and unpadded forms are accepted too).
    Base64,
}

/// One piece of a signed-content template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TemplatePart {
    /// Literal text.
    Text(String),
    /// `{body}`: the raw request body.
    Body,
    /// `{timestamp}`: the timestamp header's value.
    Timestamp,
    /// `{id}`: the id header's value.
    Id,
}

/// `[route.upstream] sign = { scheme = "standard", secret = "whsec_…" }`.
#[derive(Debug, Clone)]
pub struct OutboundSignConfig {
    /// The scheme; only `standard` (Standard Webhooks headers) today.
    pub scheme: OutboundScheme,
    /// The signing secret, `whsec_` + base64.
    pub secret: Secret,
}

/// Outbound signing schemes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutboundScheme {
    /// Standard Webhooks: `webhook-id`, `webhook-timestamp`, `webhook-signature`.
    Standard,
}

const DEFAULT_TOLERANCE: Duration = Duration::from_secs(300);

/// Keys that only the generic scheme reads.
const HMAC_KEYS: &[&str] = &[
    "header",
    "algorithm",
    "encoding",
    "prefix",
    "template",
    "timestamp_header",
    "id_header",
];

/// Headers an API key cannot live in: the gateway manages them.
const RESERVED_KEY_HEADERS: &[&str] = &[
    "host",
    "content-length",
    "content-type",
    "transfer-encoding",
    "connection",
    "te",
    "upgrade",
    "x-forwarded-for",
    "x-request-id",
];

/// Reads a route's `[[route.auth]]` entries, and decides which `api_key` entry takes the
/// route's issued keys (one at most, see [`ApiKeyConfig::issued`]).
pub(super) fn read_auths(route: &Section<'_, '_>) -> Vec<AuthConfig> {
    let mut chosen = false;
    // Each entry read, with its `issued` as written (None: not given).
    let mut auths: Vec<(AuthConfig, Option<bool>)> = Vec::new();
    for s in route.tables("auth") {
        // Peeked: `read_api_key` reads it (and reports a wrong type or a signature entry's).
        let issued = match s.peek("issued") {
            Some(toml::Value::Boolean(b)) => Some(*b),
            _ => None,
        };
        if issued == Some(true)
            && matches!(s.peek("type"), Some(t) if t.as_str() == Some("api_key"))
        {
            if chosen {
                s.error(
                    "issued",
                    "another api_key entry of this route already takes issued keys",
                    "set issued = true on one entry only: an issued key must not stand in for \
                     several of the credentials the route requires",
                );
            }
            chosen = true;
        }
        if let Some(a) = read_auth(s) {
            auths.push((a, issued));
        }
    }
    // Unless one entry asked: the first entry without static keys (it can only be meant for
    // issued ones), else the first; never one that refused.
    let candidate = |a: &AuthConfig, issued: Option<bool>| {
        matches!(a, AuthConfig::ApiKey(_)) && issued != Some(false)
    };
    let default = auths
        .iter()
        .position(|(a, i)| {
            candidate(a, *i) && matches!(a, AuthConfig::ApiKey(k) if k.keys.is_empty())
        })
        .or_else(|| auths.iter().position(|(a, i)| candidate(a, *i)));
    let auths: Vec<AuthConfig> = auths
        .into_iter()
        .enumerate()
        .map(|(n, (mut a, issued))| {
            if let AuthConfig::ApiKey(k) = &mut a {
                k.issued = if chosen {
                    issued == Some(true)
                } else {
                    default == Some(n)
                };
            }
            a
        })
        .collect();
    lint_issued(route, &auths, chosen);
    auths
}

/// An `api_key` entry without static keys that does not take issued keys can never pass (an
/// error); a route whose entries all have static keys takes issued keys on the first unless
/// told (a warning naming it, since callers may send theirs elsewhere).
fn lint_issued(route: &Section<'_, '_>, auths: &[AuthConfig], chosen: bool) {
    let keys: Vec<(usize, &ApiKeyConfig)> = auths
        .iter()
        .enumerate()
        .filter_map(|(i, a)| match a {
            AuthConfig::ApiKey(k) => Some((i, k)),
            AuthConfig::Signature(_) => None,
        })
        .collect();
    for (i, k) in &keys {
        if k.keys.is_empty() && !k.issued {
            route.error(
                &format!("auth[#{}]", i + 1),
                "has no static keys and does not take the route's issued keys, so no request could ever pass it",
                "set issued = true on this entry and issued = false on the other, or give it keys = [\"${API_KEY}\"]",
            );
        }
    }
    if !chosen
        && keys.len() > 1
        && keys.iter().all(|(_, k)| !k.keys.is_empty())
        && let Some((i, _)) = keys.iter().find(|(_, k)| k.issued)
    {
        route.warn(
            &format!("auth[#{}].issued", i + 1),
            "keys issued for this route count on this entry only (the first: every api_key entry of the route has static keys)",
            "set issued = true on the entry where callers send issued keys, or issued = false on every entry if there are none",
        );
    }
}

fn read_auth(s: Section<'_, '_>) -> Option<AuthConfig> {
    let ty = s.string("type");
    match ty.as_deref() {
        Some("api_key") => read_api_key(s),
        Some("signature") => read_signature(s),
        Some(other) => {
            s.error(
                "type",
                format!("\"{other}\" is not an auth type"),
                "use type = \"api_key\" (a key in a header, the query or a bearer token) or type = \"signature\" (a provider's signed webhooks)",
            );
            None
        }
        None => {
            // Guess from the other keys, so the fix says exactly what to add.
            let fix = if s.has("provider") || s.has("secrets") {
                "add type = \"signature\""
            } else if s.has("header") || s.has("query") || s.has("bearer") || s.has("keys") {
                "add type = \"api_key\""
            } else {
                "add type = \"api_key\" or type = \"signature\""
            };
            if s.has("type") {
                // Present but not a string: the reader already reported it.
                return None;
            }
            s.error("type", "is required but missing", fix);
            None
        }
    }
}

fn read_api_key(s: Section<'_, '_>) -> Option<AuthConfig> {
    let header = s.string("header");
    let query = s.string("query");
    let bearer = s.bool("bearer").unwrap_or(false);
    // Read so the key is known; `read_auths` decides which entry takes issued keys.
    let _ = s.bool("issued");
    let set = usize::from(header.is_some()) + usize::from(query.is_some()) + usize::from(bearer);
    let mut source = None;
    if set == 0 {
        s.error(
            "header",
            "the API key has no place: none of header, query or bearer is set",
            "set one of header = \"x-api-key\", query = \"secret-key\" or bearer = true",
        );
    } else if set > 1 {
        let mut named = Vec::new();
        if header.is_some() {
            named.push("header");
        }
        if query.is_some() {
            named.push("query");
        }
        if bearer {
            named.push("bearer");
        }
        s.error(
            named[1],
            format!(
                "{} are both set, so it is unclear where the key is",
                named.join(" and ")
            ),
            "keep exactly one of header, query or bearer; add a second [[route.auth]] if callers use both",
        );
    } else if let Some(h) = header {
        source = read_key_header(&s, &h).map(KeySource::Header);
    } else if let Some(q) = query {
        if q.is_empty() {
            s.error(
                "query",
                "is empty",
                "name the query parameter, e.g. query = \"secret-key\"",
            );
        } else {
            source = Some(KeySource::Query(q));
        }
    } else {
        source = Some(KeySource::Bearer);
    }
    let keys = s.secret_list("keys").unwrap_or_default();
    for (i, k) in keys.iter().enumerate() {
        if s.refuse_padded("keys", Some(i + 1), k) {
            continue;
        }
        if k.is_empty() {
            s.error(
                "keys",
                format!("key {} is empty, so an empty credential would pass", i + 1),
                "remove it, or check the environment variable that sets it",
            );
        } else if k.expose().chars().count() < 16 {
            s.warn(
                "keys",
                format!(
                    "key {} is shorter than 16 characters and could be guessed",
                    i + 1
                ),
                "use a long random key, e.g. `openssl rand -hex 32`, or issue one with `hookwarden keys create`",
            );
        }
    }
    s.finish();
    Some(AuthConfig::ApiKey(ApiKeyConfig {
        source: source?,
        keys,
        issued: false,
    }))
}

fn read_key_header(s: &Section<'_, '_>, raw: &str) -> Option<HeaderName> {
    let Ok(name) = HeaderName::from_bytes(raw.as_bytes()) else {
        s.error(
            "header",
            format!("\"{raw}\" is not a valid header name"),
            "use letters, digits and '-', e.g. header = \"x-api-key\"",
        );
        return None;
    };
    if RESERVED_KEY_HEADERS.contains(&name.as_str()) {
        s.error(
            "header",
            format!("{name} is managed by the gateway and cannot carry a key"),
            "use a header of its own, e.g. header = \"x-api-key\"",
        );
        return None;
    }
    if name == http::header::AUTHORIZATION {
        s.warn(
            "header",
            "header = \"authorization\" takes the whole header value as the key",
            "for `Authorization: Bearer <key>` write bearer = true instead",
        );
    }
    Some(name)
}

fn read_signature(s: Section<'_, '_>) -> Option<AuthConfig> {
    let provider_name = s.required_string(
        "provider",
        format!("set provider = one of {PROVIDERS}").as_str(),
    );
    let secrets = s.secret_list("secrets");
    // Standard Webhooks and Svix secrets are base64, which is read without surrounding
    // whitespace; every other scheme keys its HMAC with the bytes as written.
    let padding_matters = !matches!(provider_name.as_deref(), Some("standard" | "svix"));
    for (i, secret) in secrets.iter().flatten().enumerate() {
        if padding_matters {
            s.refuse_padded("secrets", Some(i + 1), secret);
        }
    }
    let tolerance = s.duration("tolerance").unwrap_or(DEFAULT_TOLERANCE);
    if tolerance.is_zero() {
        s.error(
            "tolerance",
            "is zero, so every timestamp would be out of the window",
            "use a few minutes, e.g. tolerance = \"5m\"",
        );
    }
    let replay = s.bool("replay").unwrap_or(true);

    let provider = match provider_name.as_deref() {
        None => None,
        Some("standard") => Some(Provider::Standard),
        Some("svix") => Some(Provider::Svix),
        Some("github") => Some(Provider::Github),
        Some("stripe") => Some(Provider::Stripe),
        Some("slack") => Some(Provider::Slack),
        Some("shopify") => Some(Provider::Shopify),
        Some("twilio") => read_twilio(&s),
        Some("hmac") => read_hmac(&s).map(Provider::Hmac),
        Some(other) => {
            s.error(
                "provider",
                format!("\"{other}\" is not a known provider"),
                format!(
                    "use one of {PROVIDERS}; provider = \"hmac\" describes any other HMAC scheme"
                ),
            );
            None
        }
    };
    if let Some(p) = &provider {
        if !matches!(p, Provider::Twilio { .. }) && s.has("public_url") {
            s.error(
                "public_url",
                "only applies to provider = \"twilio\"",
                "remove it",
            );
        }
        if !matches!(p, Provider::Hmac(_)) {
            for key in HMAC_KEYS {
                if s.has(key) {
                    s.error(
                        key,
                        format!(
                            "only applies to provider = \"hmac\"; {} defines its own headers and encoding",
                            p.name()
                        ),
                        "remove it, or use provider = \"hmac\" to describe a custom scheme",
                    );
                }
            }
        }
    }

    let secrets = match secrets {
        None => {
            s.error(
                "secrets",
                "is required but missing",
                "set secrets = [\"${WEBHOOK_SECRET}\"] with the provider's signing secret",
            );
            None
        }
        Some(list) if list.is_empty() => {
            s.error(
                "secrets",
                "is empty, so no signature could ever match",
                "list the provider's signing secret, e.g. secrets = [\"${WEBHOOK_SECRET}\"]",
            );
            None
        }
        Some(list) => Some(list),
    };
    if let (Some(p), Some(list)) = (&provider, &secrets) {
        for (i, secret) in list.iter().enumerate() {
            if secret.is_empty() {
                s.error(
                    "secrets",
                    format!("secret {} is empty", i + 1),
                    "check the environment variable that sets it",
                );
            } else if p.base64_secrets()
                && crate::policy::guards::signature::decode_whsec(secret.expose()).is_none()
            {
                s.error(
                    "secrets",
                    format!(
                        "secret {} is not a Standard Webhooks secret (\"whsec_\" followed by base64)",
                        i + 1
                    ),
                    "copy the signing secret exactly as the provider shows it, e.g. \"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\"",
                );
            }
        }
    }
    s.finish();
    Some(AuthConfig::Signature(SignatureConfig {
        provider: provider?,
        secrets: secrets?,
        tolerance,
        replay,
    }))
}

fn read_twilio(s: &Section<'_, '_>) -> Option<Provider> {
    let raw = s.required_string(
        "public_url",
        "set public_url = \"https://hooks.example.com\": the scheme, host and port Twilio calls (the gateway may sit behind a proxy, so it cannot guess them)",
    )?;
    let fix = "write the scheme, host and optional port Twilio calls, e.g. public_url = \"https://hooks.example.com\"; the request's path and query are appended";
    let Ok(uri) = raw.parse::<http::Uri>() else {
        s.error("public_url", format!("\"{raw}\" is not a URL"), fix);
        return None;
    };
    if !matches!(uri.scheme_str(), Some("http" | "https")) || uri.host().is_none() {
        s.error(
            "public_url",
            format!("\"{raw}\" is not an http:// or https:// URL with a host"),
            fix,
        );
        return None;
    }
    if uri.query().is_some() || raw.contains('#') {
        s.error(
            "public_url",
            "has a query or fragment; the request's own query is appended to it",
            fix,
        );
        return None;
    }
    Some(Provider::Twilio {
        public_url: raw.trim_end_matches('/').to_owned(),
    })
}

fn read_hmac(s: &Section<'_, '_>) -> Option<HmacScheme> {
    let header = s
        .required_string(
            "header",
            "name the header that carries the signature, e.g. header = \"x-signature\"",
        )
        .and_then(|h| header_name(s, "header", &h));
    let algorithm = match s.string("algorithm").as_deref() {
        None | Some("sha256") => Algorithm::Sha256,
        Some("sha1") => Algorithm::Sha1,
        Some("sha512") => Algorithm::Sha512,
        Some(other) => {
            s.error(
                "algorithm",
                format!("\"{other}\" is not a supported algorithm"),
                "use \"sha256\" (default), \"sha512\" or \"sha1\"",
            );
            Algorithm::Sha256
        }
    };
    let encoding = match s.string("encoding").as_deref() {
        None | Some("hex") => Encoding::Hex,
        Some("base64") => Encoding::Base64,
        Some(other) => {
            s.error(
                "encoding",
                format!("\"{other}\" is not a supported encoding"),
                "use \"hex\" (default) or \"base64\"",
            );
            Encoding::Hex
        }
    };
    let prefix = s.string("prefix").unwrap_or_default();
    let template = match s.string("template") {
        None => Some(vec![TemplatePart::Body]),
        Some(t) => match parse_template(&t) {
            Ok(parts) => Some(parts),
            Err(problem) => {
                s.error(
                    "template",
                    problem,
                    "write the signed content with {body}, {timestamp} and {id}, e.g. template = \"{timestamp}.{body}\"; write {{ and }} for literal braces",
                );
                None
            }
        },
    };
    let timestamp_header = s
        .string("timestamp_header")
        .and_then(|h| header_name(s, "timestamp_header", &h));
    let id_header = s
        .string("id_header")
        .and_then(|h| header_name(s, "id_header", &h));
    // One field cannot carry two things: the signature check would read the timestamp or id
    // as a signature (or the reverse), and no request could pass.
    for (key, other) in [
        ("timestamp_header", &timestamp_header),
        ("id_header", &id_header),
    ] {
        if let (Some(h), Some(o)) = (&header, other)
            && h == o
        {
            s.error(
                key,
                format!("is the signature's own header ({h})"),
                "name the header the sender puts it in, which is not the signature's",
            );
        }
    }
    let template = template?;
    // The id is free text: right next to another placeholder, the signed text does not say
    // where it ends, and bytes moved across the boundary make a "new" message (another id for
    // the replay check, or another body) that still verifies.
    if template.windows(2).any(|w| {
        !matches!(w[0], TemplatePart::Text(_))
            && !matches!(w[1], TemplatePart::Text(_))
            && (w[0] == TemplatePart::Id || w[1] == TemplatePart::Id)
    }) {
        s.error(
            "template",
            "puts {id} right next to another placeholder, so the signed text does not show where the id ends and a captured message could be sent again with bytes moved across that boundary",
            "put a separator the id cannot contain between them, e.g. template = \"{id}.{timestamp}.{body}\"",
        );
    }
    let uses = |p: &TemplatePart| template.contains(p);
    if !uses(&TemplatePart::Body) {
        s.error(
            "template",
            "does not contain {body}, so the body would not be signed and could be anything",
            "add {body}, e.g. template = \"{timestamp}.{body}\"",
        );
    }
    match (uses(&TemplatePart::Timestamp), &timestamp_header) {
        (true, None) => s.error(
            "timestamp_header",
            "is missing, but the template uses {timestamp}",
            "name the header that carries the timestamp, e.g. timestamp_header = \"x-timestamp\"",
        ),
        (false, Some(_)) => s.error(
            "timestamp_header",
            "is set, but the template does not sign {timestamp}, so the timestamp could be forged",
            "add {timestamp} to the template, e.g. template = \"{timestamp}.{body}\"",
        ),
        _ => {}
    }
    match (uses(&TemplatePart::Id), &id_header) {
        (true, None) => s.error(
            "id_header",
            "is missing, but the template uses {id}",
            "name the header that carries the message id, e.g. id_header = \"x-message-id\"",
        ),
        (false, Some(_)) => s.error(
            "id_header",
            "is set, but the template does not sign {id}, so the id could be forged",
            "add {id} to the template, e.g. template = \"{id}.{timestamp}.{body}\"",
        ),
        _ => {}
    }
    Some(HmacScheme {
        header: header?,
        algorithm,
        encoding,
        prefix,
        template,
        timestamp_header,
        id_header,
    })
}

fn header_name(s: &Section<'_, '_>, key: &str, raw: &str) -> Option<HeaderName> {
    match HeaderName::from_bytes(raw.as_bytes()) {
        Ok(h) => Some(h),
        Err(_) => {
            s.error(
                key,
                format!("\"{raw}\" is not a valid header name"),
                "use letters, digits and '-'",
            );
            None
        }
    }
}

/// Parses a signed-content template: `{body}`, `{timestamp}`, `{id}`, literal text, and `{{` /
/// `}}` for literal braces.
pub fn parse_template(t: &str) -> Result<Vec<TemplatePart>, String> {
    let mut parts = Vec::new();
    let mut text = String::new();
    let mut rest = t;
    while let Some(c) = rest.chars().next() {
        if let Some(r) = rest.strip_prefix("{{") {
            text.push('{');
            rest = r;
        } else if let Some(r) = rest.strip_prefix("}}") {
            text.push('}');
            rest = r;
        } else if c == '{' {
            let Some(end) = rest.find('}') else {
                return Err(format!("\"{t}\" has a '{{' without a closing '}}'"));
            };
            let part = match &rest[1..end] {
                "body" => TemplatePart::Body,
                "timestamp" => TemplatePart::Timestamp,
                "id" => TemplatePart::Id,
                other => {
                    return Err(format!(
                        "\"{{{other}}}\" is not a placeholder (known: {{body}}, {{timestamp}}, {{id}})"
                    ));
                }
            };
            if !text.is_empty() {
                parts.push(TemplatePart::Text(std::mem::take(&mut text)));
            }
            parts.push(part);
            rest = &rest[end + 1..];
        } else if c == '}' {
            return Err(format!("\"{t}\" has a '}}' without an opening '{{'"));
        } else {
            text.push(c);
            rest = &rest[c.len_utf8()..];
        }
    }
    if !text.is_empty() {
        parts.push(TemplatePart::Text(text));
    }
    Ok(parts)
}

/// Reads `[route.upstream] sign`.
pub(super) fn read_outbound_sign(s: Section<'_, '_>) -> Option<OutboundSignConfig> {
    let scheme = match s.string("scheme").as_deref() {
        None | Some("standard") => Some(OutboundScheme::Standard),
        Some(other) => {
            s.error(
                "scheme",
                format!("\"{other}\" is not an outbound signing scheme"),
                "use scheme = \"standard\" (Standard Webhooks headers, verifiable with any Standard Webhooks or Svix library)",
            );
            None
        }
    };
    let secret = s.secret("secret");
    let fix = "use \"whsec_\" followed by base64 of 24 or more random bytes, e.g. the output of `echo whsec_$(openssl rand -base64 32)`";
    match &secret {
        None => s.error("secret", "is required but missing", fix),
        Some(sec) => match crate::policy::guards::signature::decode_whsec(sec.expose()) {
            None => s.error(
                "secret",
                "is not a Standard Webhooks secret (\"whsec_\" followed by base64)",
                fix,
            ),
            Some(bytes) if bytes.len() < 16 => s.warn(
                "secret",
                format!(
                    "decodes to only {} bytes, which is weak for an HMAC key",
                    bytes.len()
                ),
                fix,
            ),
            Some(_) => {}
        },
    }
    s.finish();
    Some(OutboundSignConfig {
        scheme: scheme?,
        secret: secret?,
    })
}

/// Cross-section checks: signing secrets shared by routes (replay protection remembers
/// messages per route, so one route's message could be replayed to the other), and API key
/// routes whose keys can only come from the store when the store is in memory (the CLI
/// cannot reach it, so no key could ever be valid).
pub(super) fn lint(reader: &Reader<'_>, routes: &[RouteConfig], storage: &StorageConfig) {
    lint_shared_signing_secrets(reader, routes);
    lint_shared_key_sources(reader, routes);
    if !storage.is_memory() {
        return;
    }
    for r in routes {
        for (i, a) in r.auth.iter().enumerate() {
            if let AuthConfig::ApiKey(k) = a
                && k.keys.is_empty()
            {
                reader.push(Issue {
                    severity: Severity::Warning,
                    key: format!("route[{}].auth[#{}].keys", r.name, i + 1),
                    problem: "no static keys, and storage.path is \":memory:\", where `hookwarden keys create` cannot issue any: every request will be refused".into(),
                    fix: "add keys = [\"${API_KEY}\"], or set [storage] path to a file".into(),
                });
            }
        }
    }
}

/// Refuses two `api_key` entries of a route that read the same credential: each entry removes
/// what it read before forwarding, so the later one finds nothing and every request fails.
fn lint_shared_key_sources(reader: &Reader<'_>, routes: &[RouteConfig]) {
    fn place(source: &KeySource) -> (&'static str, String) {
        match source {
            KeySource::Header(h) => ("header", h.as_str().to_owned()),
            KeySource::Bearer => ("header", "authorization".to_owned()),
            KeySource::Query(q) => ("query parameter", q.clone()),
        }
    }
    for r in routes {
        let mut seen: Vec<(usize, (&'static str, String))> = Vec::new();
        for (i, a) in r.auth.iter().enumerate() {
            let AuthConfig::ApiKey(k) = a else {
                continue;
            };
            let here = place(&k.source);
            if let Some((first, (kind, name))) = seen.iter().find(|(_, p)| *p == here) {
                reader.push(Issue {
                    severity: Severity::Error,
                    key: format!("route[{}].auth[#{}]", r.name, i + 1),
                    problem: format!(
                        "reads the same {kind} ({name}) as auth[#{}]; that entry removes it before this one looks, so no request could pass",
                        first + 1
                    ),
                    fix: "give each entry its own header or query parameter, or list all the keys in one entry".into(),
                });
            } else {
                seen.push((i, here));
            }
        }
    }
}

/// Warns when two routes accept signatures made with the same secret: a message sent to one
/// verifies on the other too, and each route's replay protection only knows its own.
fn lint_shared_signing_secrets(reader: &Reader<'_>, routes: &[RouteConfig]) {
    // Each secret (as a digest, never echoed) with the first route that uses it.
    let mut seen: Vec<([u8; 32], &str)> = Vec::new();
    for r in routes {
        for (i, a) in r.auth.iter().enumerate() {
            let AuthConfig::Signature(sig) = a else {
                continue;
            };
            // Twilio signs the URL too: a message for one route does not verify on another.
            if matches!(sig.provider, Provider::Twilio { .. }) {
                continue;
            }
            for secret in &sig.secrets {
                // Compared as the key bytes signatures are made with: a Standard Webhooks or
                // Svix secret with or without its `whsec_` marker is one secret.
                let key = match sig.provider.base64_secrets() {
                    true => crate::policy::guards::signature::decode_whsec(secret.expose()),
                    false => None,
                };
                let d = crate::store::keys::digest(key.as_deref().unwrap_or(secret.as_bytes()));
                match seen.iter().find(|(s, _)| *s == d) {
                    Some((_, first)) if *first != r.name => {
                        reader.push(Issue {
                            severity: Severity::Warning,
                            key: format!("route[{}].auth[#{}].secrets", r.name, i + 1),
                            problem: format!(
                                "shares a signing secret with route \"{first}\": a message sent to one verifies on the other, and each route remembers only its own messages, so one route's message can be replayed to the other within the tolerance"
                            ),
                            fix: "give each route its own signing secret (most providers make one per endpoint)".into(),
                        });
                    }
                    Some(_) => {}
                    None => seen.push((d, &r.name)),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{ConfigError, Loaded, load_str};
    use std::path::Path;

    fn load(auth: &str) -> Result<Loaded, ConfigError> {
        let text = format!(
            r#"
[[route]]
name = "hook"
path = "/hook"
[route.upstream]
url = "http://127.0.0.1:9/x"
[[route.limit]]
key = "ip"
rate = "60/minute"
{auth}
"#
        );
        load_str(&text, "t", Path::new("/tmp"), &|v| {
            (v == "KEY").then(|| "env-supplied-secret-key-value".to_owned())
        })
    }

    fn issues(auth: &str) -> Vec<(String, String, String)> {
        match load(auth) {
            Ok(l) => l
                .warnings
                .into_iter()
                .map(|i| (i.key, i.problem, i.fix))
                .collect(),
            Err(e) => e
                .issues()
                .iter()
                .map(|i| (i.key.clone(), i.problem.clone(), i.fix.clone()))
                .collect(),
        }
    }

    fn auth(auth: &str) -> Vec<AuthConfig> {
        load(auth)
            .unwrap_or_else(|e| panic!("{e}"))
            .config
            .routes
            .remove(0)
            .auth
    }

    #[test]
    fn api_key_sources_are_read() {
        let a = auth(
            r#"
[[route.auth]]
type = "api_key"
header = "X-Make-ApiKey"
keys = ["${KEY}", "another-long-static-key"]
[[route.auth]]
type = "api_key"
query = "secret-key"
keys = ["${KEY}"]
[[route.auth]]
type = "api_key"
bearer = true
keys = ["${KEY}"]
"#,
        );
        let sources: Vec<KeySource> = a
            .iter()
            .map(|a| match a {
                AuthConfig::ApiKey(k) => k.source.clone(),
                AuthConfig::Signature(_) => panic!("not a key"),
            })
            .collect();
        assert_eq!(
            sources,
            [
                KeySource::Header(HeaderName::from_static("x-make-apikey")),
                KeySource::Query("secret-key".into()),
                KeySource::Bearer
            ]
        );
        let AuthConfig::ApiKey(first) = &a[0] else {
            unreachable!()
        };
        assert_eq!(first.keys[0].expose(), "env-supplied-secret-key-value");
    }

    /// Two api_key entries of a route reading one credential (header names in any case, or
    /// `bearer` and an Authorization header): no request could pass, so it is an error.
    #[test]
    fn two_api_key_entries_reading_one_credential_are_refused() {
        let two = |a: &str, b: &str| {
            issues(&format!(
                "[[route.auth]]\ntype = \"api_key\"\n{a}\nkeys = [\"${{KEY}}\"]\n[[route.auth]]\ntype = \"api_key\"\n{b}\nkeys = [\"another-long-static-key\"]\n"
            ))
        };
        let i = two("header = \"x-a\"", "header = \"X-A\"");
        assert!(
            i.iter().any(|(k, p, _)| k == "route[hook].auth[#2]"
                && p.contains("same header (x-a) as auth[#1]")),
            "{i:?}"
        );
        let i = two("bearer = true", "header = \"Authorization\"");
        assert!(
            i.iter().any(|(k, _, _)| k == "route[hook].auth[#2]"),
            "{i:?}"
        );
        let i = two("query = \"k\"", "query = \"k\"");
        assert!(
            i.iter()
                .any(|(_, p, _)| p.contains("same query parameter (k)")),
            "{i:?}"
        );
        let i = two("header = \"x-a\"", "header = \"x-b\"");
        assert!(
            !i.iter().any(|(_, p, _)| p.contains("reads the same")),
            "{i:?}"
        );
    }

    /// Two routes that accept the same signing secret: one route's message can be replayed
    /// to the other, so `check` warns, naming the second route and never the secret.
    #[test]
    fn a_signing_secret_shared_by_routes_is_warned_about() {
        let route = |name: &str, secret: &str| {
            format!(
                "[[route]]\nname = \"{name}\"\npath = \"/{name}\"\n[route.upstream]\nurl = \"http://127.0.0.1:9/x\"\n[[route.limit]]\nkey = \"route\"\nrate = \"9/minute\"\n[[route.auth]]\ntype = \"signature\"\nprovider = \"github\"\nsecrets = [\"{secret}\"]\n"
            )
        };
        let shared = "a-shared-github-secret-0123456789";
        let text = route("one", shared)
            + &route("two", "another-secret-0123456789abc")
            + &route("three", shared);
        let loaded = load_str(&text, "t", Path::new("/tmp"), &|_| None).unwrap();
        let w: Vec<_> = loaded
            .warnings
            .iter()
            .filter(|w| w.problem.contains("signing secret"))
            .collect();
        assert_eq!(w.len(), 1, "{w:?}");
        assert_eq!(w[0].key, "route[three].auth[#1].secrets");
        assert!(w[0].problem.contains("route \"one\""), "{w:?}");
        assert!(!w[0].to_string().contains(shared));

        // Twilio signs the URL: sharing its auth token across routes is no replay risk.
        let twilio = |name: &str| {
            format!(
                "[[route]]\nname = \"{name}\"\npath = \"/{name}\"\n[route.upstream]\nurl = \"http://127.0.0.1:9/x\"\n[[route.limit]]\nkey = \"route\"\nrate = \"9/minute\"\n[[route.auth]]\ntype = \"signature\"\nprovider = \"twilio\"\npublic_url = \"https://hooks.example.com\"\nsecrets = [\"{shared}\"]\n"
            )
        };
        let loaded = load_str(
            &(twilio("t1") + &twilio("t2")),
            "t",
            Path::new("/tmp"),
            &|_| None,
        )
        .unwrap();
        assert!(
            !loaded
                .warnings
                .iter()
                .any(|w| w.problem.contains("signing secret")),
            "{:?}",
            loaded.warnings
        );
        // A Standard Webhooks secret with and without its `whsec_` marker is one secret.
        let standard = |name: &str, secret: &str| {
            format!(
                "[[route]]\nname = \"{name}\"\npath = \"/{name}\"\n[route.upstream]\nurl = \"http://127.0.0.1:9/x\"\n[[route.limit]]\nkey = \"route\"\nrate = \"9/minute\"\n[[route.auth]]\ntype = \"signature\"\nprovider = \"standard\"\nsecrets = [\"{secret}\"]\n"
            )
        };
        let b64 = "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
        let text = standard("s1", &format!("whsec_{b64}")) + &standard("s2", b64);
        let loaded = load_str(&text, "t", Path::new("/tmp"), &|_| None).unwrap();
        assert!(
            loaded
                .warnings
                .iter()
                .any(|w| w.problem.contains("signing secret")),
            "{:?}",
            loaded.warnings
        );
    }

    /// Which entries take the route's issued keys: one at most, so a caller's issued key can
    /// never stand in for two of the credentials a route requires.
    #[test]
    fn one_api_key_entry_takes_issued_keys() {
        let taking = |a: &[AuthConfig]| -> Vec<bool> {
            a.iter()
                .filter_map(|a| match a {
                    AuthConfig::ApiKey(k) => Some(k.issued),
                    AuthConfig::Signature(_) => None,
                })
                .collect()
        };
        // Each entry reads its own header (two reading one are an error of their own).
        let n = std::cell::Cell::new(0);
        let entry = |extra: &str| {
            n.set(n.get() + 1);
            format!(
                "[[route.auth]]\ntype = \"api_key\"\nheader = \"x-api-key-{}\"\n{extra}\n",
                n.get()
            )
        };
        let stat = "keys = [\"a-static-key-0123456789\"]";
        let stat_refusing = format!("{stat}\nissued = false");
        // By default the first entry without static keys: it can only be meant for issued
        // ones.
        let a = auth(&format!("{}{}", entry(""), entry(stat)));
        assert_eq!(taking(&a), [true, false]);
        let a = auth(&format!("{}{}", entry(stat), entry("")));
        assert_eq!(taking(&a), [false, true]);
        // Every entry with static keys: the first, and a warning naming it.
        let i = issues(&format!("{}{}", entry(stat), entry(stat)));
        assert!(
            i.iter().any(|(k, p, _)| k.ends_with("auth[#1].issued")
                && p.contains("count on this entry only")),
            "{i:?}"
        );
        let a = auth(&format!("{}{}", entry(stat), entry(stat)));
        assert_eq!(taking(&a), [true, false]);
        // The one that asks (and no warning then).
        let a = auth(&format!(
            "{}{}",
            entry(stat),
            entry(&format!("{stat}\nissued = true"))
        ));
        assert_eq!(taking(&a), [false, true]);
        let i = issues(&format!(
            "{}{}",
            entry(stat),
            entry(&format!("{stat}\nissued = true"))
        ));
        assert!(
            !i.iter()
                .any(|(_, p, _)| p.contains("count on this entry only")),
            "{i:?}"
        );
        // The first that does not refuse.
        let a = auth(&format!("{}{}", entry(&stat_refusing), entry("")));
        assert_eq!(taking(&a), [false, true]);
        let a = auth(&entry(&stat_refusing));
        assert_eq!(taking(&a), [false]);
        // An entry that could never pass: no static keys, and another entry takes the issued
        // ones (or it refuses them).
        for text in [
            format!("{}{}", entry(""), entry("")),
            format!("{}{}", entry(stat), entry("issued = false")),
            entry("issued = false"),
        ] {
            let i = issues(&text);
            assert!(
                i.iter()
                    .any(|(_, p, _)| p.contains("no request could ever pass it")),
                "{text}: {i:?}"
            );
        }
        // Two that ask: an error naming the second.
        let i = issues(&format!(
            "{}{}",
            entry("issued = true"),
            entry("issued = true")
        ));
        assert!(
            i.iter()
                .any(|(k, p, _)| k.ends_with("auth[#2].issued") && p.contains("already takes")),
            "{i:?}"
        );
        // Not a boolean, or on a signature entry: reported.
        let i = issues(&entry("issued = \"yes\""));
        assert!(i.iter().any(|(k, _, _)| k.ends_with("issued")), "{i:?}");
        let i = issues(
            "[[route.auth]]\ntype = \"signature\"\nprovider = \"github\"\nsecrets = [\"0123456789abcdef0123\"]\nissued = true\n",
        );
        assert!(i.iter().any(|(k, _, _)| k.ends_with("issued")), "{i:?}");
    }

    #[test]
    fn missing_type_is_reported_with_a_guess() {
        let i = issues("[[route.auth]]\nprovider = \"github\"\nsecrets = [\"s\"]");
        assert_eq!(i.len(), 1, "{i:?}");
        assert_eq!(i[0].0, "route[hook].auth[#1].type");
        assert_eq!(i[0].1, "is required but missing");
        assert_eq!(i[0].2, "add type = \"signature\"");
        let i = issues("[[route.auth]]\nheader = \"x-api-key\"");
        assert_eq!(i[0].2, "add type = \"api_key\"");
    }

    #[test]
    fn key_place_must_be_exactly_one() {
        let i = issues("[[route.auth]]\ntype = \"api_key\"\nkeys = [\"${KEY}\"]");
        assert_eq!(i[0].0, "route[hook].auth[#1].header");
        assert!(i[0].1.contains("none of header, query or bearer"), "{i:?}");
        let i = issues(
            "[[route.auth]]\ntype = \"api_key\"\nheader = \"x-api-key\"\nbearer = true\nkeys = [\"${KEY}\"]",
        );
        assert_eq!(i.len(), 1, "{i:?}");
        assert_eq!(i[0].0, "route[hook].auth[#1].bearer");
        assert_eq!(
            i[0].1,
            "header and bearer are both set, so it is unclear where the key is"
        );
    }

    #[test]
    fn bad_key_values_are_reported_without_echoing_them() {
        let i = issues(
            "[[route.auth]]\ntype = \"api_key\"\nheader = \"x-api-key\"\nkeys = [\"\", \"short-secret\"]",
        );
        assert_eq!(i[0].0, "route[hook].auth[#1].keys");
        assert!(i[0].1.starts_with("key 1 is empty"), "{i:?}");
        assert!(i[1].1.starts_with("key 2 is shorter"), "{i:?}");
        assert!(
            i.iter()
                .all(|(_, p, f)| !p.contains("short-secret") && !f.contains("short-secret"))
        );
        let i = issues("[[route.auth]]\ntype = \"api_key\"\nheader = \"content-length\"");
        assert!(i[0].1.contains("managed by the gateway"), "{i:?}");
    }

    #[test]
    fn unknown_provider_and_type_are_named() {
        let i = issues(
            "[[route.auth]]\ntype = \"signature\"\nprovider = \"gitlab\"\nsecrets = [\"x\"]",
        );
        assert_eq!(i.len(), 1, "{i:?}");
        assert_eq!(i[0].0, "route[hook].auth[#1].provider");
        assert_eq!(i[0].1, "\"gitlab\" is not a known provider");
        assert!(i[0].2.contains("hmac"));
        let i = issues("[[route.auth]]\ntype = \"jwt\"");
        assert_eq!(i[0].1, "\"jwt\" is not an auth type");
    }

    #[test]
    fn twilio_needs_a_public_url() {
        let i = issues(
            "[[route.auth]]\ntype = \"signature\"\nprovider = \"twilio\"\nsecrets = [\"tok\"]",
        );
        assert_eq!(i.len(), 1, "{i:?}");
        assert_eq!(i[0].0, "route[hook].auth[#1].public_url");
        assert_eq!(i[0].1, "is required but missing");
        let i = issues(
            "[[route.auth]]\ntype = \"signature\"\nprovider = \"twilio\"\nsecrets = [\"tok\"]\npublic_url = \"hooks.example.com\"",
        );
        assert!(i[0].1.contains("not an http:// or https:// URL"), "{i:?}");
        let a = auth(
            "[[route.auth]]\ntype = \"signature\"\nprovider = \"twilio\"\nsecrets = [\"tok\"]\npublic_url = \"https://hooks.example.com/\"",
        );
        let AuthConfig::Signature(sig) = &a[0] else {
            unreachable!()
        };
        assert_eq!(
            sig.provider,
            Provider::Twilio {
                public_url: "https://hooks.example.com".into()
            }
        );
        let i = issues(
            "[[route.auth]]\ntype = \"signature\"\nprovider = \"github\"\nsecrets = [\"tok\"]\npublic_url = \"https://x\"",
        );
        assert_eq!(i[0].1, "only applies to provider = \"twilio\"");
    }

    #[test]
    fn standard_secrets_must_be_whsec_base64() {
        let i = issues(
            "[[route.auth]]\ntype = \"signature\"\nprovider = \"standard\"\nsecrets = [\"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\", \"not base64!\"]",
        );
        assert_eq!(i.len(), 1, "{i:?}");
        assert!(
            i[0].1
                .starts_with("secret 2 is not a Standard Webhooks secret")
        );
        assert!(!i[0].1.contains("not base64!"));
    }

    #[test]
    fn signature_defaults() {
        let a = auth(
            "[[route.auth]]\ntype = \"signature\"\nprovider = \"github\"\nsecrets = [\"${KEY}\"]",
        );
        let AuthConfig::Signature(sig) = &a[0] else {
            unreachable!()
        };
        assert_eq!(sig.tolerance, Duration::from_secs(300));
        assert!(sig.replay);
        assert_eq!(sig.provider, Provider::Github);
        let i = issues("[[route.auth]]\ntype = \"signature\"\nprovider = \"github\"");
        assert_eq!(i[0].0, "route[hook].auth[#1].secrets");
        let i = issues(
            "[[route.auth]]\ntype = \"signature\"\nprovider = \"github\"\nsecrets = [\"s\"]\ntolerance = \"0s\"",
        );
        assert_eq!(i[0].0, "route[hook].auth[#1].tolerance");
    }

    /// The timestamp or id in the signature's own header: no request could pass.
    #[test]
    fn hmac_timestamp_or_id_in_the_signature_header_is_refused() {
        for (ts, id, key) in [
            ("x-sig", "x-id", "timestamp_header"),
            ("x-ts", "X-Sig", "id_header"),
        ] {
            let i = issues(&format!(
                "[[route.auth]]\ntype = \"signature\"\nprovider = \"hmac\"\nsecrets = [\"s\"]\nheader = \"X-Sig\"\ntemplate = \"{{id}}.{{timestamp}}.{{body}}\"\ntimestamp_header = \"{ts}\"\nid_header = \"{id}\"\n"
            ));
            assert!(
                i.iter()
                    .any(|(k, p, _)| k.ends_with(&format!("auth[#1].{key}"))
                        && p == "is the signature's own header (x-sig)"),
                "{key}: {i:?}"
            );
        }
    }

    #[test]
    fn hmac_options_are_read_and_checked() {
        let a = auth(
            r#"
[[route.auth]]
type = "signature"
provider = "hmac"
secrets = ["s"]
header = "X-Signature"
algorithm = "sha512"
encoding = "base64"
prefix = "v1="
template = "{id}:{timestamp}:{body}"
timestamp_header = "x-ts"
id_header = "x-id"
"#,
        );
        let AuthConfig::Signature(SignatureConfig {
            provider: Provider::Hmac(h),
            ..
        }) = &a[0]
        else {
            panic!("not hmac")
        };
        assert_eq!(h.header, "x-signature");
        assert_eq!(h.algorithm, Algorithm::Sha512);
        assert_eq!(h.encoding, Encoding::Base64);
        assert_eq!(h.prefix, "v1=");
        assert_eq!(
            h.template,
            [
                TemplatePart::Id,
                TemplatePart::Text(":".into()),
                TemplatePart::Timestamp,
                TemplatePart::Text(":".into()),
                TemplatePart::Body
            ]
        );

        let base = "[[route.auth]]\ntype = \"signature\"\nprovider = \"hmac\"\nsecrets = [\"s\"]\n";
        let i = issues(&format!("{base}algorithm = \"md5\"\nheader = \"x-s\""));
        assert_eq!(i[0].0, "route[hook].auth[#1].algorithm");
        let i = issues(&format!(
            "{base}header = \"x-s\"\ntemplate = \"{{ts}}.{{body}}\""
        ));
        assert!(i[0].1.contains("\"{ts}\" is not a placeholder"), "{i:?}");
        let i = issues(&format!(
            "{base}header = \"x-s\"\ntemplate = \"{{timestamp}}.{{body}}\""
        ));
        assert_eq!(i[0].0, "route[hook].auth[#1].timestamp_header");
        let i = issues(&format!(
            "{base}header = \"x-s\"\ntimestamp_header = \"x-ts\""
        ));
        assert!(i[0].1.contains("could be forged"), "{i:?}");
        let i = issues(&format!(
            "{base}header = \"x-s\"\ntemplate = \"{{timestamp}}\"\ntimestamp_header = \"x-ts\""
        ));
        assert!(i[0].1.contains("does not contain {body}"), "{i:?}");
        let i = issues(base);
        assert_eq!(i[0].0, "route[hook].auth[#1].header");
        let i = issues(
            "[[route.auth]]\ntype = \"signature\"\nprovider = \"github\"\nsecrets = [\"s\"]\nprefix = \"x\"",
        );
        assert_eq!(i[0].0, "route[hook].auth[#1].prefix");
        assert!(i[0].1.starts_with("only applies to provider = \"hmac\""));
    }

    #[test]
    fn templates_parse_with_escapes() {
        assert_eq!(
            parse_template("{{{body}}}").unwrap(),
            [
                TemplatePart::Text("{".into()),
                TemplatePart::Body,
                TemplatePart::Text("}".into())
            ]
        );
        assert!(parse_template("{body").is_err());
        assert!(parse_template("body}").is_err());
    }

    #[test]
    fn outbound_sign_is_read_and_checked() {
        let text = |sign: &str| {
            format!(
                "[[route]]\nname = \"h\"\npath = \"/h\"\n[[route.limit]]\nkey = \"ip\"\nrate = \"9/minute\"\n[route.upstream]\nurl = \"http://127.0.0.1:9/\"\nsign = {sign}\n"
            )
        };
        let loaded = load_str(
            &text(r#"{ scheme = "standard", secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw" }"#),
            "t",
            Path::new("/tmp"),
            &|_| None,
        )
        .unwrap();
        let sign = loaded.config.routes[0].upstream.sign.as_ref().unwrap();
        assert_eq!(sign.scheme, OutboundScheme::Standard);
        let err = load_str(
            &text(r#"{ scheme = "github", secret = "plain" }"#),
            "t",
            Path::new("/tmp"),
            &|_| None,
        )
        .unwrap_err();
        let keys: Vec<&str> = err.issues().iter().map(|i| i.key.as_str()).collect();
        assert_eq!(
            keys,
            [
                "route[h].upstream.sign.scheme",
                "route[h].upstream.sign.secret"
            ]
        );
        assert!(!err.to_string().contains("plain\""));
    }

    #[test]
    fn memory_store_without_static_keys_is_a_warning() {
        let text = "[storage]\npath = \":memory:\"\n[[route]]\nname = \"h\"\npath = \"/h\"\n[route.upstream]\nurl = \"http://127.0.0.1:9/\"\n[[route.limit]]\nkey = \"ip\"\nrate = \"9/minute\"\n[[route.auth]]\ntype = \"api_key\"\nbearer = true\n";
        let loaded = load_str(text, "t", Path::new("/tmp"), &|_| None).unwrap();
        assert_eq!(loaded.warnings.len(), 1);
        assert_eq!(loaded.warnings[0].key, "route[h].auth[#1].keys");
    }
}
