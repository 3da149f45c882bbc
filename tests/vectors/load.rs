//! Loads the signature vectors of this folder. Shared by the unit tests
//! (`src/policy/guards/signature/vectors.rs`) and the end-to-end tests
//! (`tests/auth_signature.rs`) through `#[path]`, so both read the very same cases.
#![allow(dead_code)]

use std::collections::BTreeMap;

use serde::Deserialize;

/// Every vector file, by provider.
pub const FILES: &[(&str, &str)] = &[
    ("standard", include_str!("standard.toml")),
    ("svix", include_str!("svix.toml")),
    ("github", include_str!("github.toml")),
    ("stripe", include_str!("stripe.toml")),
    ("slack", include_str!("slack.toml")),
    ("shopify", include_str!("shopify.toml")),
    ("twilio", include_str!("twilio.toml")),
    ("hmac", include_str!("hmac.toml")),
];

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    source: String,
    auth: String,
    sig_header: String,
    sig_offset: usize,
    vector: Vec<Vector>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Vector {
    name: String,
    auth: Option<String>,
    body: String,
    path: Option<String>,
    query: Option<String>,
    content_type: Option<String>,
    now: Option<i64>,
    headers: BTreeMap<String, String>,
    expect: String,
    reserialized: Option<String>,
    reserialized_expect: Option<String>,
    sign: Option<SignSpec>,
    sig_header: Option<String>,
    sig_offset: Option<usize>,
}

/// What the signer must be given to reproduce a vector's headers.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignSpec {
    pub id: Option<String>,
    pub timestamp: Option<i64>,
    pub url: Option<String>,
}

/// One request and what must become of it.
#[derive(Debug, Clone)]
pub struct Case {
    pub provider: &'static str,
    pub source: String,
    pub name: String,
    /// The `[[route.auth]]` entry, TOML.
    pub auth: String,
    pub body: String,
    pub path: String,
    pub query: Option<String>,
    pub content_type: Option<String>,
    pub now: i64,
    pub headers: Vec<(String, String)>,
    /// `ok` or a reason code.
    pub expect: String,
    pub reserialized: Option<(String, String)>,
    pub sign: Option<SignSpec>,
    pub sig_header: String,
    pub sig_offset: usize,
}

impl Case {
    /// The headers with the first signature character at `sig_offset` changed to another
    /// valid character of both the hex and the base64 alphabets.
    pub fn flipped_headers(&self) -> Vec<(String, String)> {
        self.headers
            .iter()
            .map(|(k, v)| {
                if k.eq_ignore_ascii_case(&self.sig_header) {
                    let mut b = v.clone().into_bytes();
                    b[self.sig_offset] = if b[self.sig_offset] == b'0' {
                        b'1'
                    } else {
                        b'0'
                    };
                    (k.clone(), String::from_utf8(b).unwrap())
                } else {
                    (k.clone(), v.clone())
                }
            })
            .collect()
    }

    /// A config text for a route with this case's auth entry.
    pub fn route_toml(&self, upstream: &str) -> String {
        format!(
            "[[route]]\nname = \"{p}\"\npath = \"{path}\"\n[route.upstream]\nurl = \"{upstream}/{p}\"\n[[route.auth]]\n{auth}",
            p = self.provider,
            path = self.path,
            auth = self.auth
        )
    }
}

/// Every case of every file.
pub fn cases() -> Vec<Case> {
    let mut out = Vec::new();
    for (provider, text) in FILES {
        let file: File =
            toml::from_str(text).unwrap_or_else(|e| panic!("tests/vectors/{provider}.toml: {e}"));
        assert!(
            !file.source.is_empty(),
            "{provider}: every file cites its source"
        );
        for v in file.vector {
            out.push(Case {
                provider,
                source: file.source.clone(),
                auth: v.auth.unwrap_or_else(|| file.auth.clone()),
                path: v.path.unwrap_or_else(|| "/hook".into()),
                query: v.query,
                content_type: v.content_type,
                now: v.now.unwrap_or(0),
                headers: v.headers.into_iter().collect(),
                reserialized: v.reserialized.map(|b| {
                    let expect = v
                        .reserialized_expect
                        .unwrap_or_else(|| "signature_invalid".into());
                    (b, expect)
                }),
                sign: v.sign,
                sig_header: v.sig_header.unwrap_or_else(|| file.sig_header.clone()),
                sig_offset: v.sig_offset.unwrap_or(file.sig_offset),
                expect: v.expect,
                body: v.body,
                name: v.name,
            });
        }
    }
    out
}
