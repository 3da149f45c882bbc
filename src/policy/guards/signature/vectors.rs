//! The providers' published vectors (`tests/vectors/`), verified at their own `now`,
//! reproduced exactly by the signer, and turned into near misses: a flipped signature
//! character, a re-serialised body, stale and future timestamps, each missing header, another
//! secret, rotation, and several signatures in one header.

#[path = "../../../../tests/vectors/load.rs"]
mod load;

use std::path::Path;

use http::{HeaderMap, HeaderName, HeaderValue};

use super::*;
use crate::config::{AuthConfig, Provider, SignatureConfig, load_str};
use load::Case;

fn config(case: &Case) -> SignatureConfig {
    let text = case.route_toml("http://127.0.0.1:9");
    let loaded = load_str(&text, case.provider, Path::new("/tmp"), &|_| None)
        .unwrap_or_else(|e| panic!("{}: {}: {e}", case.provider, case.name));
    match loaded.config.routes[0].auth.first() {
        Some(AuthConfig::Signature(s)) => s.clone(),
        other => panic!("{}: not a signature config: {other:?}", case.name),
    }
}

fn headers(case: &Case, list: &[(String, String)]) -> HeaderMap {
    let mut h = HeaderMap::new();
    for (k, v) in list {
        h.append(
            HeaderName::from_bytes(k.as_bytes()).unwrap(),
            HeaderValue::from_str(v).unwrap(),
        );
    }
    if let Some(ct) = &case.content_type {
        h.insert("content-type", HeaderValue::from_str(ct).unwrap());
    }
    h
}

fn verify_with(
    cfg: &SignatureConfig,
    case: &Case,
    hdrs: &HeaderMap,
    body: &str,
    now: i64,
) -> Result<Verified, VerifyError> {
    let req = SignedRequest {
        headers: hdrs,
        body: body.as_bytes(),
        path: &case.path,
        query: case.query.as_deref(),
    };
    Verifier::new(cfg).verify(&req, now)
}

fn outcome(r: &Result<Verified, VerifyError>) -> &'static str {
    match r {
        Ok(_) => "ok",
        Err(e) => e.reason().as_str(),
    }
}

/// A secret of the right shape for the provider that is not the vector's.
fn other_secret(p: &Provider) -> Secret {
    Secret::new(if p.base64_secrets() {
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

#[test]
fn every_provider_has_a_reproducible_vector() {
    let cases = primary_cases();
    for (provider, _) in load::FILES {
        assert!(
            cases.iter().any(|c| c.provider == *provider),
            "{provider} has no vector with expect = \"ok\" and sign"
        );
    }
}

#[test]
fn published_vectors_verify_with_the_expected_outcome() {
    for case in load::cases() {
        let cfg = config(&case);
        let r = verify_with(
            &cfg,
            &case,
            &headers(&case, &case.headers),
            &case.body,
            case.now,
        );
        assert_eq!(
            outcome(&r),
            case.expect,
            "{}: {}: {r:?}",
            case.provider,
            case.name
        );
    }
}

#[test]
fn the_signer_reproduces_the_published_headers() {
    for case in primary_cases() {
        let cfg = config(&case);
        let spec = case.sign.clone().unwrap_or_default();
        let input = SignInput {
            body: case.body.as_bytes(),
            timestamp: spec.timestamp.unwrap_or(0),
            id: spec.id.as_deref().unwrap_or(""),
            url: spec.url.as_deref(),
        };
        let mut got: Vec<(String, String)> = sign(&cfg.provider, &cfg.secrets, &input)
            .unwrap()
            .into_iter()
            .map(|(k, v)| (k.to_ascii_lowercase(), v))
            .collect();
        let mut want: Vec<(String, String)> = case
            .headers
            .iter()
            .map(|(k, v)| (k.to_ascii_lowercase(), v.clone()))
            .collect();
        got.sort();
        want.sort();
        assert_eq!(got, want, "{}: {}", case.provider, case.name);
    }
}

#[test]
fn replay_ids_are_the_signed_id_or_the_signature() {
    for case in primary_cases() {
        let cfg = config(&case);
        let v = verify_with(
            &cfg,
            &case,
            &headers(&case, &case.headers),
            &case.body,
            case.now,
        )
        .unwrap();
        let id = case.headers.iter().find(|(k, _)| {
            matches!(
                k.to_ascii_lowercase().as_str(),
                "webhook-id" | "svix-id" | "x-event-id"
            )
        });
        match (id, &v.replay_id) {
            (Some((_, id)), ReplayId::Message(m)) => assert_eq!(m, id, "{}", case.name),
            (None, ReplayId::Content(s)) => assert_eq!(s.len(), 32, "{}", case.name),
            (id, r) => panic!("{}: id header {id:?} but replay id {r:?}", case.name),
        }
    }
}

#[test]
fn one_flipped_signature_character_is_a_mismatch() {
    for case in primary_cases() {
        let cfg = config(&case);
        let r = verify_with(
            &cfg,
            &case,
            &headers(&case, &case.flipped_headers()),
            &case.body,
            case.now,
        );
        assert_eq!(
            r,
            Err(VerifyError::Mismatch),
            "{}: {}",
            case.provider,
            case.name
        );
    }
}

#[test]
fn a_reserialised_body_is_judged_as_the_provider_signs() {
    let mut seen = 0;
    for case in load::cases() {
        let Some((body, expect)) = &case.reserialized else {
            continue;
        };
        seen += 1;
        assert_ne!(body, &case.body);
        let cfg = config(&case);
        let r = verify_with(&cfg, &case, &headers(&case, &case.headers), body, case.now);
        assert_eq!(outcome(&r), expect, "{}: {}", case.provider, case.name);
        if expect != "ok" {
            assert_eq!(r, Err(VerifyError::Mismatch), "{}", case.name);
        }
    }
    assert!(seen >= load::FILES.len());
}

#[test]
fn stale_and_future_timestamps_are_out_of_the_window_both_ways() {
    let mut timed = 0;
    for case in primary_cases() {
        let cfg = config(&case);
        let h = headers(&case, &case.headers);
        let Some(ts) = verify_with(&cfg, &case, &h, &case.body, case.now)
            .unwrap()
            .timestamp
        else {
            continue;
        };
        timed += 1;
        let tol = cfg.tolerance.as_secs() as i64;
        let at = |now| verify_with(&cfg, &case, &h, &case.body, now);
        assert!(at(ts + tol).is_ok(), "{}", case.name);
        assert!(at(ts - tol).is_ok(), "{}", case.name);
        assert_eq!(at(ts + tol + 1), Err(VerifyError::TooOld), "{}", case.name);
        assert_eq!(at(ts - tol - 1), Err(VerifyError::TooNew), "{}", case.name);
        assert_eq!(
            VerifyError::TooOld.reason(),
            crate::policy::Reason::TimestampOutOfWindow
        );
    }
    // standard, svix, stripe, slack, hmac (twice).
    assert_eq!(timed, 6);
}

#[test]
fn schemes_without_a_timestamp_ignore_the_clock() {
    for case in primary_cases() {
        let cfg = config(&case);
        let h = headers(&case, &case.headers);
        if verify_with(&cfg, &case, &h, &case.body, case.now)
            .unwrap()
            .timestamp
            .is_none()
        {
            assert!(verify_with(&cfg, &case, &h, &case.body, i64::MAX).is_ok());
        }
    }
}

#[test]
fn every_missing_header_is_signature_missing() {
    for case in primary_cases() {
        let cfg = config(&case);
        for (i, (name, _)) in case.headers.iter().enumerate() {
            let mut rest = case.headers.clone();
            rest.remove(i);
            let r = verify_with(&cfg, &case, &headers(&case, &rest), &case.body, case.now);
            assert!(
                matches!(r, Err(VerifyError::Missing(_))),
                "{}: {} without {name}: {r:?}",
                case.provider,
                case.name
            );
        }
        // A blank value counts as missing too.
        let blank: Vec<(String, String)> = case
            .headers
            .iter()
            .map(|(k, v)| {
                if k.eq_ignore_ascii_case(&case.sig_header) {
                    (k.clone(), String::new())
                } else {
                    (k.clone(), v.clone())
                }
            })
            .collect();
        let r = verify_with(&cfg, &case, &headers(&case, &blank), &case.body, case.now);
        assert!(
            matches!(r, Err(VerifyError::Missing(_))),
            "{}: {r:?}",
            case.name
        );
    }
}

#[test]
fn another_secret_fails_and_rotation_accepts_either() {
    for case in primary_cases() {
        let cfg = config(&case);
        let h = headers(&case, &case.headers);
        let other = other_secret(&cfg.provider);
        let with = |secrets: Vec<Secret>| SignatureConfig {
            secrets,
            ..cfg.clone()
        };
        let real = cfg.secrets[0].clone();
        assert_eq!(
            verify_with(&with(vec![other.clone()]), &case, &h, &case.body, case.now),
            Err(VerifyError::Mismatch),
            "{}",
            case.name
        );
        for order in [
            vec![other.clone(), real.clone()],
            vec![real.clone(), other.clone()],
        ] {
            assert!(
                verify_with(&with(order), &case, &h, &case.body, case.now).is_ok(),
                "{}: rotation",
                case.name
            );
        }
    }
}

#[test]
fn several_signatures_in_one_header_where_the_scheme_has_them() {
    for case in primary_cases() {
        let cfg = config(&case);
        let spec = case.sign.clone().unwrap_or_default();
        let input = SignInput {
            body: case.body.as_bytes(),
            timestamp: spec.timestamp.unwrap_or(0),
            id: spec.id.as_deref().unwrap_or(""),
            url: spec.url.as_deref(),
        };
        let other = other_secret(&cfg.provider);
        let both = [other.clone(), cfg.secrets[0].clone()];
        match &cfg.provider {
            Provider::Standard | Provider::Svix | Provider::Stripe | Provider::Hmac(_) => {
                let signed = sign(&cfg.provider, &both, &input).unwrap();
                let sig = signed
                    .iter()
                    .find(|(k, _)| k.eq_ignore_ascii_case(&case.sig_header))
                    .unwrap();
                assert!(
                    sig.1.contains(' ') || sig.1.matches("v1=").count() == 2 || sig.1.contains(','),
                    "{}: two signatures expected in {sig:?}",
                    case.name
                );
                let h = headers(&case, &signed);
                // The second signature matches the vector's secret…
                assert!(
                    verify_with(&cfg, &case, &h, &case.body, case.now).is_ok(),
                    "{}",
                    case.name
                );
                // …and the other secret's signature alone does not.
                let alone = sign(&cfg.provider, &[other], &input).unwrap();
                assert_eq!(
                    verify_with(&cfg, &case, &headers(&case, &alone), &case.body, case.now),
                    Err(VerifyError::Mismatch)
                );
            }
            Provider::Github | Provider::Slack | Provider::Shopify | Provider::Twilio { .. } => {
                assert_eq!(
                    sign(&cfg.provider, &both, &input),
                    Err(SignError::OneSecretOnly(cfg.provider.name())),
                    "{}",
                    case.name
                );
            }
        }
    }
}

#[test]
fn a_malformed_timestamp_is_invalid_not_missing() {
    let case = load::cases()
        .into_iter()
        .find(|c| c.provider == "standard" && c.expect == "ok")
        .unwrap();
    let cfg = config(&case);
    let hdrs: Vec<(String, String)> = case
        .headers
        .iter()
        .map(|(k, v)| {
            if k == "webhook-timestamp" {
                (k.clone(), "hello".into())
            } else {
                (k.clone(), v.clone())
            }
        })
        .collect();
    let r = verify_with(&cfg, &case, &headers(&case, &hdrs), &case.body, case.now);
    assert_eq!(
        r,
        Err(VerifyError::Malformed(
            "timestamp is not a number of seconds"
        ))
    );
    assert_eq!(
        r.unwrap_err().reason(),
        crate::policy::Reason::SignatureInvalid
    );
}
