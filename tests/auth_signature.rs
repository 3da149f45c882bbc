//! Provider signatures through a real gateway: the published vectors, live signatures for every
//! scheme and their near misses, messages signed at test time by the reference Standard
//! Webhooks library (Python), replay protection, outbound signing checked by that library, and
//! `hookwarden sign` output sent back to the gateway. Every refusal also asserts that the
//! upstream received nothing.

mod common;
#[path = "vectors/load.rs"]
mod load;

use std::process::{Command, Stdio};
use std::time::Duration;

use bytes::Bytes;
use common::*;
use hookwarden::config::{AuthConfig, SignatureConfig};
use hookwarden::policy::guards::signature::{SignInput, sign};
use hookwarden::secret::Secret;
use http_body_util::Full;
use load::Case;

fn now() -> i64 {
    jiff::Timestamp::now().as_second()
}

/// The signature config a case's TOML describes (for signing at test time).
fn signature_config(case: &Case) -> SignatureConfig {
    let text = case.route_toml("http://127.0.0.1:9");
    let loaded = hookwarden::config::load_str(&text, "t", std::path::Path::new("/tmp"), &|_| None)
        .unwrap_or_else(|e| panic!("{}: {e}", case.name));
    match &loaded.config.routes[0].auth[0] {
        AuthConfig::Signature(s) => s.clone(),
        AuthConfig::ApiKey(_) => unreachable!(),
    }
}

fn other_secret(cfg: &SignatureConfig) -> Secret {
    Secret::new(if cfg.provider.base64_secrets() {
        "whsec_b3RoZXItc2VjcmV0LWJ5dGVzLTEyMzQ1Njc4OTA="
    } else {
        "another-secret-entirely"
    })
}

fn primary_cases() -> Vec<Case> {
    load::cases()
        .into_iter()
        .filter(|c| c.expect == "ok" && c.sign.is_some())
        .collect()
}

async fn send_case(gw: &Gateway, case: &Case, headers: &[(String, String)], body: &str) -> Got {
    let target = match &case.query {
        Some(q) => format!("{}?{q}", case.path),
        None => case.path.clone(),
    };
    let mut b = req("POST", &gw.url(&target));
    if let Some(ct) = &case.content_type {
        b = b.header("content-type", ct.as_str());
    }
    for (k, v) in headers {
        b = b.header(k.as_str(), v.as_str());
    }
    send(b.body(Full::new(Bytes::from(body.to_owned()))).unwrap()).await
}

/// Signs `body` for `case` at `ts` with `secrets`.
fn live_headers(
    case: &Case,
    cfg: &SignatureConfig,
    secrets: &[Secret],
    body: &str,
    ts: i64,
    id: &str,
) -> Vec<(String, String)> {
    let spec = case.sign.clone().unwrap_or_default();
    sign(
        &cfg.provider,
        secrets,
        &SignInput {
            body: body.as_bytes(),
            timestamp: ts,
            id,
            url: spec.url.as_deref(),
        },
    )
    .unwrap_or_else(|e| panic!("{}: {e}", case.name))
}

fn flip(case: &Case, headers: &[(String, String)]) -> Vec<(String, String)> {
    let c = Case {
        headers: headers.to_vec(),
        ..case.clone()
    };
    c.flipped_headers()
}

fn assert_duplicate(got: &Got) {
    assert_eq!(got.status, 200, "{}", got.text());
    assert_eq!(got.json()["status"], "duplicate", "{}", got.text());
}

#[tokio::test]
async fn published_vectors_are_judged_the_same_end_to_end() {
    for case in load::cases() {
        let up = Upstream::start().await;
        // The published examples carry their own (old) timestamps: a wide tolerance lets the
        // gateway check their signatures with the real clock.
        let text = format!("{}tolerance = \"36500d\"\n", case.route_toml("{upstream}"));
        let (gw, events) = Gateway::start_with_events(&text, &up, &|_| None).await;
        let got = send_case(&gw, &case, &case.headers, &case.body).await;
        let label = format!("{}: {}", case.provider, case.name);
        if case.expect == "ok" {
            assert_eq!(got.status, 200, "{label}: {}", got.text());
            let seen = up.only();
            assert_eq!(
                std::str::from_utf8(&seen.body).unwrap(),
                case.body,
                "{label}"
            );
            assert_eq!(seen.path, format!("/{}", case.provider), "{label}");
            // Sent again: a duplicate, not forwarded.
            let again = send_case(&gw, &case, &case.headers, &case.body).await;
            assert_duplicate(&again);
            let id = again.json()["request_id"].as_str().unwrap().to_owned();
            assert_eq!(events.reason(&id).await, "duplicate", "{label}");
            assert_eq!(up.count(), 1, "{label}");
        } else {
            let id = got.assert_error(401, "unauthorized");
            assert_eq!(events.reason(&id).await, case.expect, "{label}");
            assert_eq!(up.count(), 0, "{label}");
        }
    }
}

#[tokio::test]
async fn every_scheme_live_with_its_near_misses() {
    for case in primary_cases() {
        let label = format!("{}: {}", case.provider, case.name);
        let cfg = signature_config(&case);
        let real = cfg.secrets.clone();
        let up = Upstream::start().await;
        let (gw, events) =
            Gateway::start_with_events(&case.route_toml("{upstream}"), &up, &|_| None).await;
        let refused = |got: Got, reason: &'static str| {
            let events = events.clone();
            let label = label.clone();
            async move {
                let id = got.assert_error(401, "unauthorized");
                assert_eq!(events.reason(&id).await, reason, "{label}");
            }
        };

        // Signed now: forwarded once, then a duplicate.
        let t = now();
        let good = live_headers(&case, &cfg, &real, &case.body, t, "msg_live_1");
        let got = send_case(&gw, &case, &good, &case.body).await;
        assert_eq!(got.status, 200, "{label}: {}", got.text());
        assert_eq!(up.count(), 1);
        let again = send_case(&gw, &case, &good, &case.body).await;
        assert_duplicate(&again);
        assert_eq!(up.count(), 1, "{label}: a duplicate was forwarded");

        // One flipped signature character.
        let h = live_headers(&case, &cfg, &real, &case.body, t, "msg_live_2");
        refused(
            send_case(&gw, &case, &flip(&case, &h), &case.body).await,
            "signature_invalid",
        )
        .await;

        // The body re-serialised (same JSON, other bytes) after signing.
        if let Some((other_body, expect)) = &case.reserialized {
            let got = send_case(&gw, &case, &h, other_body).await;
            if expect == "ok" {
                // Twilio signs the sorted parameters, not the bytes: the reordered form is the
                // same message, already accepted, so a duplicate.
                assert_duplicate(&got);
            } else {
                refused(got, "signature_invalid").await;
            }
        }

        // Stale and future timestamps, for schemes that sign one.
        let timed = good.iter().any(|(k, _)| {
            let k = k.to_ascii_lowercase();
            k.contains("timestamp") || k == "x-hook-time" || k == "stripe-signature"
        });
        if timed {
            let tol = cfg.tolerance.as_secs() as i64;
            for (ts, id) in [(t - tol - 30, "msg_stale"), (t + tol + 30, "msg_future")] {
                let h = live_headers(&case, &cfg, &real, &case.body, ts, id);
                refused(
                    send_case(&gw, &case, &h, &case.body).await,
                    "timestamp_out_of_window",
                )
                .await;
            }
        }

        // Each header missing.
        let h = live_headers(&case, &cfg, &real, &case.body, t, "msg_live_3");
        for i in 0..h.len() {
            let mut rest = h.clone();
            let (name, _) = rest.remove(i);
            let got = send_case(&gw, &case, &rest, &case.body).await;
            let id = got.assert_error(401, "unauthorized");
            assert_eq!(
                events.reason(&id).await,
                "signature_missing",
                "{label}: without {name}"
            );
        }

        // Each header sent twice, the second copy with another value: the gateway would check
        // the first and forward both, and the upstream might read the other.
        for i in 0..h.len() {
            let mut twice =
                live_headers(&case, &cfg, &real, &case.body, t, &format!("msg_rep_{i}"));
            let (name, value) = twice[i].clone();
            twice.push((name.clone(), format!("{value}0")));
            let got = send_case(&gw, &case, &twice, &case.body).await;
            let id = got.assert_error(401, "unauthorized");
            assert_eq!(
                events.reason(&id).await,
                "signature_invalid",
                "{label}: {name} twice"
            );
        }

        // Signed with another secret.
        let h = live_headers(
            &case,
            &cfg,
            &[other_secret(&cfg)],
            &case.body,
            t,
            "msg_live_4",
        );
        refused(
            send_case(&gw, &case, &h, &case.body).await,
            "signature_invalid",
        )
        .await;

        assert_eq!(
            up.count(),
            1,
            "{label}: a refused request reached the upstream"
        );
        drop(gw);

        // Rotation: with two secrets configured, a message signed with either passes. (Replay
        // protection is off here: it keys on the signed content, and the Twilio JSON case
        // cannot vary its content without another fixture URL.)
        let rotated = case.route_toml("{upstream}").replace(
            "secrets = [",
            &format!(
                "replay = false\nsecrets = [\"{}\", ",
                other_secret(&cfg).expose()
            ),
        );
        let up = Upstream::start().await;
        let gw = Gateway::start(&rotated, &up).await;
        for (n, secrets) in [real.clone(), vec![other_secret(&cfg)]].iter().enumerate() {
            let body = if case.content_type.as_deref() == Some("application/json")
                && case.provider == "twilio"
            {
                // The JSON Twilio case signs a URL bound to this exact body.
                case.body.clone()
            } else if case.content_type.as_deref() == Some("application/x-www-form-urlencoded") {
                format!("{}&n={n}", case.body)
            } else if case.body.contains('{') {
                case.body.replacen('{', &format!("{{\"n\":{n},"), 1)
            } else {
                // Two messages, not one message twice: replay protection keys on the signed
                // content, whichever secret signed it.
                format!("{} #{n}", case.body)
            };
            let id = format!("msg_rot_{n}");
            let h = live_headers(&case, &cfg, secrets, &body, now(), &id);
            let got = send_case(&gw, &case, &h, &body).await;
            assert_eq!(
                got.status,
                200,
                "{label}: rotation secret {n}: {}",
                got.text()
            );
        }
        assert_eq!(up.count(), 2, "{label}");
    }
}

/// Signs with the reference Python library (`standardwebhooks`); returns the signature header.
fn python_sign(secret: &str, id: &str, ts: i64, body: &str) -> String {
    let script = r#"
import sys
from datetime import datetime, timezone
from standardwebhooks.webhooks import Webhook
secret, msg_id, ts, body = sys.argv[1:5]
print(Webhook(secret).sign(msg_id=msg_id, timestamp=datetime.fromtimestamp(int(ts), tz=timezone.utc), data=body))
"#;
    let out = Command::new("python3")
        .args(["-c", script, secret, id, &ts.to_string(), body])
        .output()
        .expect("python3 runs");
    assert!(
        out.status.success(),
        "python3 standardwebhooks failed (scripts/test installs it): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

const STANDARD: &str = r#"
[[route]]
name = "std"
path = "/std"
[route.upstream]
url = "{upstream}/std"
[[route.auth]]
type = "signature"
provider = "standard"
secrets = ["whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD"]
tolerance = "2m"

[[route]]
name = "noreplay"
path = "/noreplay"
[route.upstream]
url = "{upstream}/noreplay"
[[route.auth]]
type = "signature"
provider = "standard"
secrets = ["whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD"]
replay = false

[[route]]
name = "failing"
path = "/failing"
[route.upstream]
url = "{upstream}/status/503"
[[route.auth]]
type = "signature"
provider = "standard"
secrets = ["whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD"]

[[route]]
name = "both"
path = "/both"
[route.upstream]
url = "{upstream}/both"
[[route.auth]]
type = "api_key"
header = "x-api-key"
keys = ["caller-key-0123456789abcdef"]
[[route.auth]]
type = "signature"
provider = "standard"
secrets = ["whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD"]
"#;
const STD_SECRET: &str = "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD";

#[tokio::test]
async fn messages_signed_by_the_reference_library_pass_and_replays_do_not() {
    let up = Upstream::start().await;
    let (gw, events) = Gateway::start_with_events(STANDARD, &up, &|_| None).await;
    let body = r#"{"type":"invoice.paid","data":{"amount":4200}}"#;
    let t = now();
    let sig = python_sign(STD_SECRET, "msg_py_1", t, body);
    let got = send(standard_message(&gw.url("/std"), "msg_py_1", t, &sig, body)).await;
    assert_eq!(got.status, 200, "{}", got.text());
    assert_eq!(&up.only().body[..], body.as_bytes());

    // The sender retries with the same id, a fresh timestamp and signature: a duplicate.
    let sig2 = python_sign(STD_SECRET, "msg_py_1", t + 1, body);
    let got = send(standard_message(
        &gw.url("/std"),
        "msg_py_1",
        t + 1,
        &sig2,
        body,
    ))
    .await;
    assert_duplicate(&got);
    assert_eq!(up.count(), 1);

    // Reference-signed but stale or early (tolerance 2m): refused.
    for ts in [t - 180, t + 180] {
        let sig = python_sign(STD_SECRET, "msg_py_2", ts, body);
        let got = send(standard_message(
            &gw.url("/std"),
            "msg_py_2",
            ts,
            &sig,
            body,
        ))
        .await;
        let id = got.assert_error(401, "unauthorized");
        assert_eq!(events.reason(&id).await, "timestamp_out_of_window");
    }
    // Reference-signed, body re-serialised on the way.
    let sig = python_sign(STD_SECRET, "msg_py_3", t, body);
    let got = send(standard_message(
        &gw.url("/std"),
        "msg_py_3",
        t,
        &sig,
        &body.replace(':', ": "),
    ))
    .await;
    let id = got.assert_error(401, "unauthorized");
    assert_eq!(events.reason(&id).await, "signature_invalid");
    // The refused msg_py_3 was not claimed: its genuine delivery still goes through.
    let got = send(standard_message(&gw.url("/std"), "msg_py_3", t, &sig, body)).await;
    assert_eq!(got.status, 200);
    assert_eq!(up.count(), 2);
}

#[tokio::test]
async fn replay_protection_can_be_switched_off() {
    let up = Upstream::start().await;
    let gw = Gateway::start(STANDARD, &up).await;
    let body = r#"{"n":1}"#;
    let t = now();
    let sig = python_sign(STD_SECRET, "msg_same", t, body);
    for _ in 0..2 {
        let got = send(standard_message(
            &gw.url("/noreplay"),
            "msg_same",
            t,
            &sig,
            body,
        ))
        .await;
        assert_eq!(got.status, 200);
        assert_eq!(got.text(), r#"{"ok":true}"#);
    }
    assert_eq!(up.count(), 2);
}

#[tokio::test]
async fn a_message_the_upstream_did_not_accept_can_be_retried() {
    let up = Upstream::start().await;
    let (gw, events) = Gateway::start_with_events(STANDARD, &up, &|_| None).await;
    let body = r#"{"n":2}"#;
    let t = now();
    let sig = python_sign(STD_SECRET, "msg_retry", t, body);
    // The upstream answers 503: the claim is released, so the sender's retry is forwarded
    // again instead of being called a duplicate of a delivery that did not happen.
    for n in 1..=2 {
        let got = send(standard_message(
            &gw.url("/failing"),
            "msg_retry",
            t,
            &sig,
            body,
        ))
        .await;
        assert_eq!(got.status, 503);
        assert_eq!(up.count(), n);
        let id = got.header("x-request-id").unwrap().to_owned();
        assert_eq!(events.reason(&id).await, "-");
    }
}

/// An HTTP/2 sender that resets its stream while the upstream is still working gets no
/// answer, and hyper drops the request's handler: the exchange is still recorded (499,
/// `client_closed`, after the hand-on). The upstream call goes on, and the message id follows
/// its answer: the sender's retry is `in_flight` (409) until the upstream has answered, then a
/// duplicate; the upstream gets the message once.
#[tokio::test]
async fn a_delivery_reset_by_the_sender_is_recorded_and_its_claim_follows_the_upstream() {
    let up = Upstream::start().await;
    let config = format!(
        r#"
[[route]]
name = "slowstd"
path = "/slowstd"
[route.upstream]
url = "{{upstream}}/slow-headers"
timeout = "10s"
[[route.auth]]
type = "signature"
provider = "standard"
secrets = ["{STD_SECRET}"]
"#
    );
    let (gw, events) = Gateway::start_with_events(&config, &up, &|_| None).await;
    let body = r#"{"n":"reset"}"#;
    let t = now();
    let sig = python_sign(STD_SECRET, "msg_reset", t, body);

    let mut h2 = h2_connect(gw.addr).await;
    let head = http::Request::builder()
        .method("POST")
        .uri(gw.url("/slowstd"))
        .header("content-type", "application/json")
        .header("webhook-id", "msg_reset")
        .header("webhook-timestamp", t.to_string())
        .header("webhook-signature", &sig)
        .body(())
        .unwrap();
    let (answer, mut stream) = h2.send_request(head, false).unwrap();
    stream
        .send_data(Bytes::from_static(br#"{"n":"reset"}"#), true)
        .unwrap();
    eventually(
        Duration::from_secs(5),
        "the upstream got the request",
        || async { up.count() == 1 },
    )
    .await;
    stream.send_reset(h2::Reason::CANCEL);
    assert!(answer.await.is_err(), "a reset stream has no answer");

    eventually(
        Duration::from_secs(5),
        "the reset exchange's event",
        || async {
            events
                .all()
                .iter()
                .any(|e| e.reason == Some(hookwarden::policy::Reason::ClientClosed))
        },
    )
    .await;
    let all = events.all();
    let e = all
        .iter()
        .find(|e| e.reason == Some(hookwarden::policy::Reason::ClientClosed))
        .unwrap();
    assert_eq!(e.status, 499);
    assert_eq!(e.outcome, hookwarden::events::Outcome::Failed);
    assert_eq!(e.route.as_deref(), Some("slowstd"));
    assert_eq!(e.detail, Some("dropped while the upstream was answering"));
    assert_eq!(e.method, "POST");
    assert_eq!(all.len(), 1, "one event for the exchange: {all:?}");

    // The upstream (3 s) has not answered yet: the first copy is in flight.
    let got = send(standard_message(
        &gw.url("/slowstd"),
        "msg_reset",
        t,
        &sig,
        body,
    ))
    .await;
    got.assert_error(409, "conflict");
    assert_eq!(got.header("retry-after"), Some("5"));
    // Once it has answered 200, a copy is a duplicate.
    let mut got = got;
    for _ in 0..60 {
        if got.status != 409 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        got = send(standard_message(
            &gw.url("/slowstd"),
            "msg_reset",
            t,
            &sig,
            body,
        ))
        .await;
    }
    assert_eq!(got.status, 200, "{}", got.text());
    assert_eq!(got.json()["status"], "duplicate", "{}", got.text());
    assert_eq!(up.count(), 1, "delivered once");
}

#[tokio::test]
async fn every_auth_entry_must_pass() {
    let up = Upstream::start().await;
    let (gw, events) = Gateway::start_with_events(STANDARD, &up, &|_| None).await;
    let body = r#"{"n":3}"#;
    let t = now();
    let sig = python_sign(STD_SECRET, "msg_both", t, body);
    let with_key = |key: &str, sig: &str| {
        let mut r = standard_message(&gw.url("/both"), "msg_both", t, sig, body);
        r.headers_mut().insert("x-api-key", key.parse().unwrap());
        r
    };
    let got = send(with_key("wrong-key", &sig)).await;
    let id = got.assert_error(401, "unauthorized");
    assert_eq!(events.reason(&id).await, "key_invalid");
    let got = send(with_key("caller-key-0123456789abcdef", "v1,AAAA")).await;
    let id = got.assert_error(401, "unauthorized");
    assert_eq!(events.reason(&id).await, "signature_invalid");
    assert_eq!(up.count(), 0);
    let got = send(with_key("caller-key-0123456789abcdef", &sig)).await;
    assert_eq!(got.status, 200);
    let seen = up.only();
    assert!(seen.headers.get("x-api-key").is_none());
    assert_eq!(
        events
            .get(got.header("x-request-id").unwrap())
            .await
            .key_id
            .as_deref(),
        Some("static:1")
    );
}

#[tokio::test]
async fn outbound_signatures_verify_with_the_reference_library() {
    let secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    let text = format!(
        r#"
[[route]]
name = "signed"
path = "/signed"
[route.upstream]
url = "{{upstream}}/n8n"
sign = {{ scheme = "standard", secret = "{secret}" }}
"#
    );
    let up = Upstream::start().await;
    let gw = Gateway::start(&text, &up).await;
    let body = r#"{"message":"hello from the widget"}"#;
    let got = send(
        req("POST", &gw.url("/signed"))
            .header("content-type", "application/json")
            // A client trying to pass its own signature: replaced.
            .header("webhook-signature", "v1,forged")
            .body(Full::new(Bytes::from(body)))
            .unwrap(),
    )
    .await;
    assert_eq!(got.status, 200);
    let seen = up.only();
    let h = |n: &str| seen.headers[n].to_str().unwrap().to_owned();
    assert_eq!(
        h("webhook-id"),
        format!("msg_{}", got.header("x-request-id").unwrap())
    );
    assert_eq!(seen.headers.get_all("webhook-signature").iter().count(), 1);

    let script = r#"
import sys
from standardwebhooks.webhooks import Webhook, WebhookVerificationError
secret, msg_id, ts, sig, body = sys.argv[1:6]
headers = {"webhook-id": msg_id, "webhook-timestamp": ts, "webhook-signature": sig}
Webhook(secret).verify(body, headers)
try:
    Webhook(secret).verify(body + " ", headers)
    print("tampered body verified")
except WebhookVerificationError:
    print("verified")
"#;
    let out = Command::new("python3")
        .args([
            "-c",
            script,
            secret,
            &h("webhook-id"),
            &h("webhook-timestamp"),
            &h("webhook-signature"),
            std::str::from_utf8(&seen.body).unwrap(),
        ])
        .output()
        .expect("python3 runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "verified");
}

/// Runs `hookwarden sign` with `body` on stdin; returns the printed headers.
fn cli_sign(args: &[&str], body: &str) -> Vec<(String, String)> {
    use std::io::Write;
    let mut child = Command::new(bin())
        .arg("sign")
        .args(args)
        .env_remove("HOOKWARDEN_SIGN_SECRET")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(body.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "hookwarden sign {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| {
            let (k, v) = l.split_once(": ").expect("Name: value");
            (k.to_owned(), v.to_owned())
        })
        .collect()
}

#[tokio::test]
async fn headers_from_hookwarden_sign_are_accepted_by_the_gateway() {
    let text = r#"
[[route]]
name = "standard"
path = "/standard"
[route.upstream]
url = "{upstream}/x"
[[route.auth]]
type = "signature"
provider = "standard"
secrets = ["whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"]

[[route]]
name = "svix"
path = "/svix"
[route.upstream]
url = "{upstream}/x"
[[route.auth]]
type = "signature"
provider = "svix"
secrets = ["whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"]

[[route]]
name = "github"
path = "/github"
[route.upstream]
url = "{upstream}/x"
[[route.auth]]
type = "signature"
provider = "github"
secrets = ["gh-secret"]

[[route]]
name = "stripe"
path = "/stripe"
[route.upstream]
url = "{upstream}/x"
[[route.auth]]
type = "signature"
provider = "stripe"
secrets = ["whsec_stripe_endpoint_secret"]

[[route]]
name = "slack"
path = "/slack"
[route.upstream]
url = "{upstream}/x"
[[route.auth]]
type = "signature"
provider = "slack"
secrets = ["slack-signing-secret"]

[[route]]
name = "shopify"
path = "/shopify"
[route.upstream]
url = "{upstream}/x"
[[route.auth]]
type = "signature"
provider = "shopify"
secrets = ["shopify-client-secret"]

[[route]]
name = "twilio"
path = "/twilio"
[route.upstream]
url = "{upstream}/x"
[[route.auth]]
type = "signature"
provider = "twilio"
public_url = "https://hooks.example.com"
secrets = ["twilio-auth-token"]

[[route]]
name = "hmac"
path = "/hmac"
[route.upstream]
url = "{upstream}/x"
[[route.auth]]
type = "signature"
provider = "hmac"
secrets = ["custom-secret"]
header = "x-signature"
prefix = "sha256="
template = "{timestamp}.{body}"
timestamp_header = "x-timestamp"
"#;
    let up = Upstream::start().await;
    let (gw, events) = Gateway::start_with_events(text, &up, &|_| None).await;
    let json = r#"{"event":"test"}"#;
    let form = "Body=hello+there&From=%2B15551234567";
    let cases: Vec<(&str, Vec<&str>, &str, &str)> = vec![
        (
            "/standard",
            vec![
                "--provider",
                "standard",
                "--secret",
                "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
            ],
            json,
            "application/json",
        ),
        (
            "/svix",
            vec![
                "--provider",
                "svix",
                "--secret",
                "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
            ],
            json,
            "application/json",
        ),
        (
            "/github",
            vec!["--provider", "github", "--secret", "gh-secret"],
            json,
            "application/json",
        ),
        (
            "/stripe",
            vec![
                "--provider",
                "stripe",
                "--secret",
                "whsec_stripe_endpoint_secret",
            ],
            json,
            "application/json",
        ),
        (
            "/slack",
            vec!["--provider", "slack", "--secret", "slack-signing-secret"],
            form,
            "application/x-www-form-urlencoded",
        ),
        (
            "/shopify",
            vec!["--provider", "shopify", "--secret", "shopify-client-secret"],
            json,
            "application/json",
        ),
        (
            "/twilio?x=1",
            vec![
                "--provider",
                "twilio",
                "--secret",
                "twilio-auth-token",
                "--url",
                "https://hooks.example.com/twilio?x=1",
            ],
            form,
            "application/x-www-form-urlencoded",
        ),
        (
            "/hmac",
            vec![
                "--provider",
                "hmac",
                "--secret",
                "custom-secret",
                "--header",
                "x-signature",
                "--prefix",
                "sha256=",
                "--template",
                "{timestamp}.{body}",
                "--timestamp-header",
                "x-timestamp",
            ],
            json,
            "application/json",
        ),
    ];
    for (n, (path, args, body, ct)) in cases.into_iter().enumerate() {
        let headers = cli_sign(&args, body);
        let mut b = req("POST", &gw.url(path)).header("content-type", ct);
        for (k, v) in &headers {
            b = b.header(k.as_str(), v.as_str());
        }
        let got = send(b.body(Full::new(Bytes::from(body))).unwrap()).await;
        let id = got.header("x-request-id").unwrap().to_owned();
        assert_eq!(
            got.status,
            200,
            "{path}: {headers:?}: {}",
            events.reason(&id).await
        );
        assert_eq!(up.count(), n + 1, "{path}");
    }

    // And a signature for another secret is refused, so the command is not vacuous.
    let headers = cli_sign(&["--provider", "github", "--secret", "not-gh-secret"], json);
    let mut b = req("POST", &gw.url("/github")).header("content-type", "application/json");
    for (k, v) in &headers {
        b = b.header(k.as_str(), v.as_str());
    }
    let got = send(b.body(Full::new(Bytes::from(json))).unwrap()).await;
    let id = got.assert_error(401, "unauthorized");
    assert_eq!(events.reason(&id).await, "signature_invalid");
    assert_eq!(up.count(), 8);
}

#[tokio::test]
async fn the_signature_guard_runs_after_the_body_is_read_in_full() {
    // A signature over a body larger than max_body is never verified: 413 first.
    let text = r#"
[[route]]
name = "gh"
path = "/gh"
max_body = "16B"
[route.upstream]
url = "{upstream}/gh"
[[route.auth]]
type = "signature"
provider = "github"
secrets = ["gh-secret"]
"#;
    let up = Upstream::start().await;
    let (gw, events) = Gateway::start_with_events(text, &up, &|_| None).await;
    let body = r#"{"this body is": "longer than sixteen bytes"}"#;
    let headers = cli_sign(&["--provider", "github", "--secret", "gh-secret"], body);
    let got = send(
        req("POST", &gw.url("/gh"))
            .header(headers[0].0.as_str(), headers[0].1.as_str())
            .body(Full::new(Bytes::from(body)))
            .unwrap(),
    )
    .await;
    let id = got.assert_error(413, "payload_too_large");
    assert_eq!(events.reason(&id).await, "body_too_large");
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(up.count(), 0);
}

/// A sender's retry that arrives while the first copy is still being delivered is told to come
/// back (409 `in_flight`, `Retry-After`), not that it was delivered: the first copy may still
/// fail. Once the first copy is delivered, a copy is a `duplicate`.
#[tokio::test]
async fn a_copy_arriving_during_delivery_is_asked_to_retry() {
    let up = Upstream::start().await;
    let cfg = r#"
[[route]]
name = "github"
path = "/github"
[route.upstream]
url = "{upstream}/slow-headers"
timeout = "10s"
[[route.auth]]
type = "signature"
provider = "github"
secrets = ["It's a Secret to Everybody"]
"#;
    let gw = Gateway::start(cfg, &up).await;
    let body = r#"{"zen":"Keep it logically awesome."}"#;
    let signed = || github_signed(&gw.url("/github"), "It's a Secret to Everybody", body);
    // The upstream takes 3 s to answer the first copy.
    let first = tokio::spawn(send(signed()));
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    let second = send(signed()).await;
    gw.assert_refused(
        &second,
        409,
        "conflict",
        hookwarden::policy::Reason::InFlight,
    )
    .await;
    assert_eq!(second.header("retry-after"), Some("5"));
    assert_eq!(first.await.unwrap().status, 200);
    // Delivered now: a further copy is a duplicate, answered 200 and not forwarded.
    let third = send(signed()).await;
    assert_eq!(third.status, 200);
    assert_eq!(third.json()["status"], "duplicate");
    assert_eq!(up.count(), 1);
}

/// A generic `hmac` route that signs the message id: a timestamp spelled with a leading zero
/// is refused, even though its signature is right (computed here with the `hmac` crate over
/// the exact signed text). Otherwise, with `{id}` right before `{timestamp}`, a `0` moved from
/// the end of the id to the timestamp would verify as "another" message and pass the replay
/// check; such templates are refused by the config check as well.
#[tokio::test]
async fn generic_hmac_timestamps_have_one_spelling_and_ids_need_a_boundary() {
    use hmac::{Hmac, KeyInit, Mac};
    let route = |template: &str| {
        format!(
            r#"
[[route]]
name = "hmac"
path = "/hmac"
[route.upstream]
url = "{{upstream}}/x"
[[route.auth]]
type = "signature"
provider = "hmac"
secrets = ["custom-secret"]
header = "x-signature"
template = "{template}"
timestamp_header = "x-timestamp"
id_header = "x-id"
"#
        )
    };
    let up = Upstream::start().await;
    let gw = Gateway::start(&route("{id}.{timestamp}.{body}"), &up).await;
    let body = r#"{"event":"pay","amount":100}"#;
    let now = jiff::Timestamp::now().as_second();
    let signed = |id: &str, ts: &str| {
        let mut mac = <Hmac<sha2::Sha256> as KeyInit>::new_from_slice(b"custom-secret").unwrap();
        mac.update(format!("{id}.{ts}.{body}").as_bytes());
        let sig = hex::encode(mac.finalize().into_bytes());
        req("POST", &gw.url("/hmac"))
            .header("content-type", "application/json")
            .header("x-signature", sig)
            .header("x-timestamp", ts)
            .header("x-id", id)
            .body(Full::new(Bytes::from(body)))
            .unwrap()
    };
    let first = send(signed("evt-7730", &now.to_string())).await;
    assert_eq!(first.status, 200);
    assert_eq!(up.count(), 1);
    let padded = send(signed("evt-7731", &format!("0{now}"))).await;
    assert_eq!(padded.status, 401, "{}", padded.text());
    assert_eq!(up.count(), 1, "the padded timestamp reached the upstream");

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("adjacent.toml");
    let text = complete_config(&route("{id}{timestamp}{body}"), &up.base(), dir.path());
    std::fs::write(&path, text).unwrap();
    let out = Command::new(bin())
        .args(["check", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let msg =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(msg.contains("template"), "{msg}");
    assert!(
        msg.contains("{id} right next to another placeholder"),
        "{msg}"
    );
    assert!(msg.contains("{id}.{timestamp}.{body}"), "{msg}");
}

/// The secret in `HOOKWARDEN_SIGN_SECRET` is where the help tells users to put it, so the help
/// must not show it (clap prints an env-backed option's current value unless told not to).
#[test]
fn sign_help_does_not_show_the_secret_from_the_environment() {
    for flag in ["--help", "-h"] {
        let out = Command::new(bin())
            .args(["sign", flag])
            .env("HOOKWARDEN_SIGN_SECRET", "whsec-help-must-hide-this")
            .output()
            .unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(text.contains("HOOKWARDEN_SIGN_SECRET"), "{text}");
        assert!(!text.contains("help-must-hide"), "{flag}: {text}");
    }
}

/// `sign --url` without a scheme would sign a URL no request carries: refused.
#[test]
fn sign_refuses_a_url_without_its_scheme() {
    let out = Command::new(bin())
        .args([
            "sign",
            "--provider",
            "twilio",
            "--secret",
            "12345",
            "--url",
            "hooks.example.com/twilio",
        ])
        .env_remove("HOOKWARDEN_SIGN_SECRET")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--url must be the full URL"), "{err}");
}
