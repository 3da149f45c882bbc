//! `[route.decrypt]` end to end: bodies encrypted at test time by real PHP
//! (`tests/vectors/php_openssl_encrypt.php`, `openssl_encrypt` with every cipher, exact, short
//! and long keys, random and all-zero IVs) are decrypted by the gateway and compared with the
//! plaintext on the upstream side; then everything that must be refused, with nothing
//! forwarded and the failed step in the audit event.

mod common;

use std::process::Command;

use bytes::Bytes;
use common::*;
use hookwarden::policy::Reason;
use http_body_util::Full;
use serde_json::Value;

/// Runs the PHP script and returns (plaintext, vectors).
fn php_vectors() -> (String, Vec<Value>) {
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/vectors/php_openssl_encrypt.php"
    );
    let out = Command::new("php")
        .arg(script)
        .output()
        .unwrap_or_else(|e| {
            panic!("php-cli is needed to make the test vectors ({e}); scripts/test installs it")
        });
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    (
        v["plaintext"].as_str().unwrap().to_owned(),
        v["vectors"].as_array().unwrap().clone(),
    )
}

fn toml_str(s: &str) -> String {
    serde_json::to_string(s).unwrap()
}

fn route_name(cipher: &str, kind: &str) -> String {
    format!("{}-{kind}", cipher.replace('-', ""))
}

fn query(v: &Value, extra: &str) -> String {
    let mut q = vec![];
    if let Some(iv) = v["iv"].as_str() {
        q.push(format!("iv={iv}"));
    }
    if let Some(tag) = v["tag"].as_str() {
        q.push(format!("tag={tag}"));
    }
    if !extra.is_empty() {
        q.push(extra.to_owned());
    }
    q.join("&")
}

fn post(url: &str, body: &str, content_type: &str) -> http::Request<Full<Bytes>> {
    req("POST", url)
        .header("content-type", content_type)
        .body(Full::new(Bytes::from(body.to_owned())))
        .unwrap()
}

#[tokio::test]
async fn php_openssl_encrypt_output_is_decrypted_for_every_cipher_key_and_iv() {
    let (plaintext, vectors) = php_vectors();
    assert_eq!(vectors.len(), 63);
    let mut cfg = String::new();
    let mut seen = std::collections::HashSet::new();
    for v in &vectors {
        let (cipher, kind) = (
            v["cipher"].as_str().unwrap(),
            v["key_kind"].as_str().unwrap(),
        );
        if seen.insert((cipher.to_owned(), kind.to_owned())) {
            cfg.push_str(&format!(
                r#"
[[route]]
name = "{name}"
path = "/vcc/{name}"
[route.upstream]
url = "{{upstream}}/hook?from=vcc"
[route.decrypt]
cipher = "{cipher}"
key = {key}
require_json = true
"#,
                name = route_name(cipher, kind),
                key = toml_str(v["key"].as_str().unwrap()),
            ));
        }
    }
    let up = Upstream::start().await;
    let gw = Gateway::start(&cfg, &up).await;
    for (i, v) in vectors.iter().enumerate() {
        let name = route_name(
            v["cipher"].as_str().unwrap(),
            v["key_kind"].as_str().unwrap(),
        );
        let url = gw.url(&format!("/vcc/{name}?{}", query(v, "campaign=7")));
        let got = send(post(&url, v["body"].as_str().unwrap(), "text/plain")).await;
        assert_eq!(got.status, 200, "vector {i} {v}: {}", got.text());
        let seen = &up.requests()[i];
        assert_eq!(
            std::str::from_utf8(&seen.body).unwrap(),
            plaintext,
            "vector {i} {v}"
        );
        assert_eq!(seen.headers["content-type"], "application/json");
        assert_eq!(seen.headers["content-length"], plaintext.len().to_string());
        // The IV and tag were consumed; the upstream's own query and the rest are kept.
        assert_eq!(
            seen.query.as_deref(),
            Some("from=vcc&campaign=7"),
            "vector {i}"
        );
    }
    assert_eq!(up.count(), vectors.len());
}

#[tokio::test]
async fn a_plus_turned_into_a_space_in_transit_is_restored() {
    let (plaintext, vectors) = php_vectors();
    let v = vectors
        .iter()
        .find(|v| v["cipher"] == "aes-256-ctr" && v["body"].as_str().unwrap().contains('+'))
        .expect("a vector with a '+' (every run has many)");
    let cfg = format!(
        r#"
[[route]]
name = "vcc"
path = "/vcc"
[route.upstream]
url = "{{upstream}}/hook"
[route.decrypt]
cipher = "aes-256-ctr"
key = {}
require_json = true
"#,
        toml_str(v["key"].as_str().unwrap())
    );
    let up = Upstream::start().await;
    let gw = Gateway::start(&cfg, &up).await;
    let mangled = format!("{}\r\n", v["body"].as_str().unwrap().replace('+', " "));
    let got = send(post(
        &gw.url(&format!("/vcc?{}", query(v, ""))),
        &mangled,
        "application/x-www-form-urlencoded",
    ))
    .await;
    assert_eq!(got.status, 200, "{}", got.text());
    assert_eq!(up.only().body, Bytes::from(plaintext));
    assert_eq!(up.only().query, None);
}

/// A GCM route and a CBC route with known keys, for the refusals.
const REFUSALS: &str = r#"
[[route]]
name = "gcm"
path = "/gcm"
[route.upstream]
url = "{upstream}/hook"
[route.decrypt]
cipher = "aes-256-gcm"
key = "0123456789abcdef0123456789abcdef"

[[route]]
name = "cbc"
path = "/cbc"
[route.upstream]
url = "{upstream}/hook"
[route.decrypt]
cipher = "aes-128-cbc"
key = "0123456789abcdef"
require_json = true

[[route]]
name = "ctr"
path = "/ctr"
[route.upstream]
url = "{upstream}/hook"
[route.decrypt]
cipher = "aes-256-ctr"
key = "0123456789abcdef0123456789abcdef"
require_json = true
"#;

/// Encrypts with real PHP.
fn php_encrypt(cipher: &str, key: &str, iv_hex: &str, plaintext: &str) -> (String, Option<String>) {
    let code = format!(
        r#"$tag = null; $b = str_ends_with("{cipher}", "gcm") ? openssl_encrypt($argv[1], "{cipher}", $argv[2], 0, hex2bin($argv[3]), $tag) : openssl_encrypt($argv[1], "{cipher}", $argv[2], 0, hex2bin($argv[3])); echo json_encode([$b, $tag === null ? null : bin2hex($tag)]);"#
    );
    let out = Command::new("php")
        .args(["-r", &code, "--", plaintext, key, iv_hex])
        .output()
        .expect("php-cli (scripts/test installs it)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: (String, Option<String>) = serde_json::from_slice(&out.stdout).unwrap();
    v
}

async fn refused(gw: &Gateway, url: &str, body: &str) -> String {
    let got = send(post(&gw.url(url), body, "text/plain")).await;
    let ev = gw
        .assert_refused(&got, 400, "bad_request", Reason::DecryptFailed)
        .await;
    // Nothing about the failure reaches the client beyond the generic code.
    assert_eq!(got.json().as_object().unwrap().len(), 2);
    ev.detail
        .expect("the failed step is in the audit event")
        .to_owned()
}

#[tokio::test]
async fn everything_that_does_not_decrypt_is_refused_and_never_forwarded() {
    let up = Upstream::start().await;
    let gw = Gateway::start(REFUSALS, &up).await;
    let pt = r#"{"event":"sms","to":"+3612345678"}"#;
    let iv12 = "a1".repeat(12);
    let iv16 = "b2".repeat(16);
    let (gcm_body, gcm_tag) =
        php_encrypt("aes-256-gcm", "0123456789abcdef0123456789abcdef", &iv12, pt);
    let gcm_tag = gcm_tag.unwrap();
    let (cbc_body, _) = php_encrypt("aes-128-cbc", "0123456789abcdef", &iv16, pt);

    // The genuine messages pass, so the refusals below are about what was changed.
    let ok = send(post(
        &gw.url(&format!("/gcm?iv={iv12}&tag={gcm_tag}")),
        &gcm_body,
        "text/plain",
    ))
    .await;
    assert_eq!(ok.status, 200);
    let ok = send(post(
        &gw.url(&format!("/cbc?iv={iv16}")),
        &cbc_body,
        "text/plain",
    ))
    .await;
    assert_eq!(ok.status, 200);
    assert_eq!(up.count(), 2);

    let raw = {
        use base64::Engine;
        base64::engine::general_purpose::STANDARD
            .decode(&gcm_body)
            .unwrap()
    };
    let b64 = |b: &[u8]| {
        use base64::Engine;
        base64::engine::general_purpose::STANDARD.encode(b)
    };
    let mut flipped = raw.clone();
    flipped[3] ^= 0x01;
    let truncated = &raw[..raw.len() - 1];
    let mut other_tag = hex::decode(&gcm_tag).unwrap();
    other_tag[0] ^= 0x80;

    let gcm = |iv: &str, tag: &str| format!("/gcm?iv={iv}&tag={tag}");
    assert_eq!(
        refused(&gw, &gcm(&iv12, &gcm_tag), &b64(&flipped)).await,
        "authentication tag mismatch"
    );
    assert_eq!(
        refused(&gw, &gcm(&iv12, &gcm_tag), &b64(truncated)).await,
        "authentication tag mismatch"
    );
    assert_eq!(
        refused(&gw, &gcm(&iv12, &hex::encode(&other_tag)), &gcm_body).await,
        "authentication tag mismatch"
    );
    assert_eq!(
        refused(&gw, &gcm(&"a2".repeat(12), &gcm_tag), &gcm_body).await,
        "authentication tag mismatch"
    );
    assert_eq!(
        refused(&gw, &format!("/gcm?iv={iv12}"), &gcm_body).await,
        "tag is missing"
    );
    assert_eq!(
        refused(&gw, &gcm(&iv12, "abcd"), &gcm_body).await,
        "tag is not 16 bytes of hex"
    );
    assert_eq!(
        refused(&gw, &gcm(&"a1".repeat(8), &gcm_tag), &gcm_body).await,
        "iv has the wrong length"
    );
    assert_eq!(
        refused(&gw, &gcm("xyz", &gcm_tag), &gcm_body).await,
        "iv is not hex"
    );
    assert_eq!(
        refused(&gw, &gcm(&iv12, &gcm_tag), "this is not base64!").await,
        "body is not base64"
    );
    assert_eq!(refused(&gw, &gcm(&iv12, &gcm_tag), "").await, "empty body");

    // CBC: an IV of 15 bytes is refused rather than NUL-padded as PHP would.
    assert_eq!(
        refused(&gw, &format!("/cbc?iv={}", "b2".repeat(15)), &cbc_body).await,
        "iv has the wrong length"
    );
    let cbc_raw = {
        use base64::Engine;
        base64::engine::general_purpose::STANDARD
            .decode(&cbc_body)
            .unwrap()
    };
    assert_eq!(
        refused(
            &gw,
            &format!("/cbc?iv={iv16}"),
            &b64(&cbc_raw[..cbc_raw.len() - 3])
        )
        .await,
        "ciphertext length is not a multiple of the block size"
    );
    // A wrong key: bad padding or, when the garbage happens to end in valid padding, not JSON.
    let (wrong_key_body, _) = php_encrypt("aes-128-cbc", "fedcba9876543210", &iv16, pt);
    let detail = refused(&gw, &format!("/cbc?iv={iv16}"), &wrong_key_body).await;
    assert!(
        detail == "bad padding" || detail == "plaintext is not JSON",
        "{detail}"
    );
    // A wrong IV only garbles the first block: caught by require_json.
    assert_eq!(
        refused(&gw, &format!("/cbc?iv={}", "c3".repeat(16)), &cbc_body).await,
        "plaintext is not JSON"
    );
    // CTR has no integrity at all: a wrong key is only caught by require_json.
    let (ctr_body, _) = php_encrypt("aes-256-ctr", "not the right key, not at all!!!", &iv16, pt);
    assert_eq!(
        refused(&gw, &format!("/ctr?iv={iv16}"), &ctr_body).await,
        "plaintext is not JSON"
    );

    assert_eq!(up.count(), 2, "a refused body reached the upstream");
}

#[test]
fn check_explains_weak_keys_and_bad_settings() {
    let run = |cfg: &str| -> (i32, String) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(&path, cfg).unwrap();
        let out = Command::new(bin())
            .args(["check", "--config"])
            .arg(&path)
            .env_clear()
            .env("VCC_KEY", "sk-live-very-secret")
            .output()
            .unwrap();
        (
            out.status.code().unwrap(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    };
    let base = |decrypt: &str| {
        format!(
            "[[route]]\nname = \"vcc\"\npath = \"/vcc\"\n[route.upstream]\nurl = \"https://x.example/h\"\n[route.decrypt]\n{decrypt}\n"
        )
    };
    let (code, out) = run(&base(
        "cipher = \"aes-256-ctr\"\nkey = \"${VCC_KEY}\"\nrequire_json = true",
    ));
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("warning: route[vcc].decrypt.key: is 19 bytes, shorter than the 32 bytes aes-256-ctr uses"), "{out}");
    assert!(!out.contains("sk-live-very-secret"), "{out}");
    let (code, out) = run(&base("cipher = \"aes-256-ecb\"\nkey = \"k\""));
    assert_eq!(code, 1);
    assert!(
        out.contains("error: route[vcc].decrypt.cipher: \"aes-256-ecb\" is not a supported cipher"),
        "{out}"
    );
    let (code, out) = run(&base(
        "cipher = \"aes-128-cbc\"\nkey = \"${VCC_KEY}\"\nkey_encoding = \"hex\"",
    ));
    assert_eq!(code, 1);
    assert!(
        out.contains("error: route[vcc].decrypt.key: is not valid hex"),
        "{out}"
    );
    assert!(!out.contains("sk-live-very-secret"), "{out}");
    let (_, out) = run(&base(
        "cipher = \"aes-128-ctr\"\nkey = \"0123456789abcdef\"",
    ));
    assert!(
        out.contains("warning: route[vcc].decrypt.require_json: is false with a CTR cipher"),
        "{out}"
    );
}

/// The whole VCC Live set-up from the README: the URL secret in `?secret-key=`, the IV in
/// `?iv=`, an AES-256-CTR body from PHP; the secret is checked before any decryption.
#[tokio::test]
async fn vcc_live_style_url_secret_then_decryption() {
    let cfg = r#"
[[route]]
name = "vcc"
path = "/hooks/vcc"
content_types = ["text/plain", "application/x-www-form-urlencoded", "application/octet-stream"]
[route.upstream]
url = "{upstream}/webhook/vcc"
[[route.auth]]
type = "api_key"
query = "secret-key"
keys = ["${VCC_SECRET_KEY}"]
[[route.limit]]
key = "ip"
rate = "600/minute"
[route.decrypt]
cipher = "aes-256-ctr"
key = "${VCC_BODY_KEY}"
require_json = true
"#;
    let env = |name: &str| match name {
        "VCC_SECRET_KEY" => Some("url-secret-4f1c2a9e7b".to_owned()),
        "VCC_BODY_KEY" => Some("0123456789abcdef0123456789abcdef".to_owned()),
        _ => None,
    };
    let up = Upstream::start().await;
    let gw = Gateway::start_with_env(cfg, &up, &env).await;
    let pt = r#"{"call_id":"c-77","status":"ANSWERED","duration":93}"#;
    let iv = "0f".repeat(16);
    let (body, _) = php_encrypt("aes-256-ctr", "0123456789abcdef0123456789abcdef", &iv, pt);

    let ok = send(post(
        &gw.url(&format!(
            "/hooks/vcc?secret-key=url-secret-4f1c2a9e7b&iv={iv}&campaign=12"
        )),
        &body,
        "text/plain",
    ))
    .await;
    assert_eq!(ok.status, 200, "{}", ok.text());
    let seen = up.only();
    assert_eq!(seen.path, "/webhook/vcc");
    assert_eq!(seen.body, Bytes::from(pt));
    assert_eq!(seen.headers["content-type"], "application/json");
    // Both the URL secret and the IV were consumed; the rest of the query is kept.
    assert_eq!(seen.query.as_deref(), Some("campaign=12"));

    // A wrong secret is refused as such, before any decryption: even a body that would not
    // decrypt yields key_invalid, not decrypt_failed.
    let got = send(post(
        &gw.url(&format!("/hooks/vcc?secret-key=guessed&iv={iv}")),
        "certainly not base64 !!!",
        "text/plain",
    ))
    .await;
    gw.assert_refused(&got, 401, "unauthorized", Reason::KeyInvalid)
        .await;
    let got = send(post(
        &gw.url(&format!("/hooks/vcc?iv={iv}")),
        &body,
        "text/plain",
    ))
    .await;
    gw.assert_refused(&got, 401, "unauthorized", Reason::CredentialMissing)
        .await;
    // The right secret with a tampered body is a decryption failure.
    let got = send(post(
        &gw.url(&format!(
            "/hooks/vcc?secret-key=url-secret-4f1c2a9e7b&iv={}",
            "0e".repeat(16)
        )),
        &body,
        "text/plain",
    ))
    .await;
    gw.assert_refused(&got, 400, "bad_request", Reason::DecryptFailed)
        .await;
    assert_eq!(up.count(), 1);
}
