//! TLS on both sides: HTTPS inbound (HTTP/2 by ALPN, HSTS) and HTTPS upstreams signed by a
//! private CA (`ca_file`). Certificates are generated per test with rcgen.

mod common;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use common::*;
use http_body_util::Full;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
use rustls_pki_types::CertificateDer;

/// A private CA and a server certificate for localhost/127.0.0.1 signed by it.
struct Pki {
    ca_pem: String,
    ca_der: CertificateDer<'static>,
    cert_pem: String,
    key_pem: String,
}

fn pki() -> Pki {
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "hookwarden test CA");
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
    let leaf_key = KeyPair::generate().unwrap();
    let leaf = CertificateParams::new(vec!["localhost".into(), "127.0.0.1".into()])
        .unwrap()
        .signed_by(&leaf_key, &ca)
        .unwrap();
    Pki {
        ca_pem: ca.pem(),
        ca_der: ca.der().clone(),
        cert_pem: leaf.pem(),
        key_pem: leaf_key.serialize_pem(),
    }
}

/// A TLS client config that trusts `ca` only.
fn client_config(ca: &CertificateDer<'static>) -> rustls::ClientConfig {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca.clone()).unwrap();
    rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth()
}

fn https_client(
    ca: &CertificateDer<'static>,
    h2: bool,
) -> Client<
    hyper_rustls::HttpsConnector<hyper_util::client::legacy::connect::HttpConnector>,
    Full<Bytes>,
> {
    let b = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(client_config(ca))
        .https_only();
    let connector = if h2 {
        b.enable_http2().build()
    } else {
        b.enable_http1().build()
    };
    let mut builder = Client::builder(TokioExecutor::new());
    builder.http2_only(h2);
    builder.build(connector)
}

async fn tls_gateway(pki: &Pki, upstream: &Upstream, extra: &str) -> Gateway {
    let dir = tempfile::tempdir().unwrap();
    let cert = dir.path().join("cert.pem");
    let key = dir.path().join("key.pem");
    std::fs::write(&cert, &pki.cert_pem).unwrap();
    std::fs::write(&key, &pki.key_pem).unwrap();
    let cfg = format!(
        r#"
[server]
listen = "127.0.0.1:0"
tls_cert = "{}"
tls_key = "{}"
{extra}
[[route]]
name = "hook"
path = "/hook"
[route.upstream]
url = "{{upstream}}/target"
"#,
        cert.display(),
        key.display()
    );
    let gw = Gateway::start(&cfg, upstream).await;
    // Keep the files alive as long as the gateway.
    std::mem::forget(dir);
    gw
}

#[tokio::test]
async fn https_listener_negotiates_http2_by_alpn_and_sends_hsts() {
    let pki = pki();
    let up = Upstream::start().await;
    let gw = tls_gateway(&pki, &up, "").await;
    let url = format!("https://localhost:{}/hook", gw.addr.port());
    let got = send_with_tls(&https_client(&pki.ca_der, true), post_json(&url, "{}")).await;
    assert_eq!(got.status, 200);
    assert_eq!(got.version, http::Version::HTTP_2);
    assert_eq!(
        got.header("strict-transport-security"),
        Some("max-age=31536000")
    );
    let seen = up.only();
    assert_eq!(seen.headers["x-forwarded-proto"], "https");
    assert_eq!(seen.version, http::Version::HTTP_11);
}

#[tokio::test]
async fn https_listener_serves_http1_clients_too() {
    let pki = pki();
    let up = Upstream::start().await;
    let gw = tls_gateway(&pki, &up, "hsts = \"max-age=60; includeSubDomains\"").await;
    let url = format!("https://localhost:{}/hook", gw.addr.port());
    let got = send_with_tls(&https_client(&pki.ca_der, false), post_json(&url, "{}")).await;
    assert_eq!(got.status, 200);
    assert_eq!(got.version, http::Version::HTTP_11);
    assert_eq!(
        got.header("strict-transport-security"),
        Some("max-age=60; includeSubDomains")
    );
    // Errors carry HSTS as well.
    let got = send_with_tls(
        &https_client(&pki.ca_der, false),
        post_json(&format!("https://localhost:{}/nope", gw.addr.port()), "{}"),
    )
    .await;
    got.assert_error(404, "not_found");
    assert!(got.header("strict-transport-security").is_some());
}

#[tokio::test]
async fn plain_http_to_the_https_listener_gets_nothing_forwarded() {
    let pki = pki();
    let up = Upstream::start().await;
    let gw = tls_gateway(&pki, &up, "").await;
    let out = raw(
        gw.addr,
        b"POST /hook HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}",
        std::time::Duration::from_secs(2),
    )
    .await;
    assert!(!out.contains("200"), "{out}");
    assert_eq!(up.count(), 0);
}

/// An HTTPS upstream: a second gateway with a certificate from the private CA, in front of the
/// recording upstream.
#[tokio::test]
async fn https_upstream_with_private_ca_needs_ca_file() {
    let pki = pki();
    let up = Upstream::start().await;
    let tls_upstream = tls_gateway(&pki, &up, "").await;
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, &pki.ca_pem).unwrap();
    let cfg = format!(
        r#"
[[route]]
name = "trusted"
path = "/trusted"
[route.upstream]
url = "https://localhost:{port}/hook"
ca_file = "{ca}"

[[route]]
name = "untrusted"
path = "/untrusted"
[route.upstream]
url = "https://localhost:{port}/hook"
"#,
        port = tls_upstream.addr.port(),
        ca = ca.display()
    );
    let front = Gateway::start(&cfg, &up).await;
    let got = send(post_json(&front.url("/untrusted"), "{}")).await;
    got.assert_error(502, "bad_gateway");
    assert_eq!(up.count(), 0, "an unverified upstream was sent the request");
    let got = send(post_json(&front.url("/trusted"), "{}")).await;
    assert_eq!(got.status, 200, "{}", got.text());
    assert_eq!(up.count(), 1);
}

async fn send_with_tls(
    c: &Client<
        hyper_rustls::HttpsConnector<hyper_util::client::legacy::connect::HttpConnector>,
        Full<Bytes>,
    >,
    req: http::Request<Full<Bytes>>,
) -> Got {
    use http_body_util::BodyExt;
    let resp = c.request(req).await.expect("request failed");
    let (parts, body) = resp.into_parts();
    Got {
        status: parts.status,
        headers: parts.headers,
        body: body.collect().await.unwrap().to_bytes(),
        version: parts.version,
    }
}

/// HSTS on every answer over TLS: the gateway's own endpoints (a browser often meets the
/// gateway first through `client.js`) and refusals of heads that cannot be read.
#[tokio::test]
async fn every_answer_over_tls_carries_hsts() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let pki = pki();
    let up = Upstream::start().await;
    let gw = tls_gateway(&pki, &up, "").await;
    for h2 in [false, true] {
        for path in ["/_hookwarden/healthz", "/_hookwarden/client.js"] {
            let url = format!("https://localhost:{}{path}", gw.addr.port());
            let got = send_with_tls(
                &https_client(&pki.ca_der, h2),
                req("GET", &url).body(Full::new(Bytes::new())).unwrap(),
            )
            .await;
            assert_eq!(got.status, 200, "{path}");
            assert_eq!(
                got.header("strict-transport-security"),
                Some("max-age=31536000"),
                "{path} h2={h2}"
            );
        }
    }

    // Two Host fields: refused by the listener before any route is looked at.
    let cfg = client_config(&pki.ca_der);
    let tcp = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
    let name = rustls_pki_types::ServerName::try_from("localhost").unwrap();
    let mut tls = tokio_rustls::TlsConnector::from(Arc::new(cfg))
        .connect(name, tcp)
        .await
        .unwrap();
    tls.write_all(b"POST /hook HTTP/1.1\r\nHost: a\r\nHost: b\r\nContent-Length: 2\r\n\r\n{}")
        .await
        .unwrap();
    let mut out = Vec::new();
    let _ =
        tokio::time::timeout(std::time::Duration::from_secs(5), tls.read_to_end(&mut out)).await;
    let out = String::from_utf8_lossy(&out).to_lowercase();
    assert!(out.starts_with("http/1.1 400"), "{out}");
    assert!(
        out.contains("strict-transport-security: max-age=31536000"),
        "{out}"
    );
    assert_eq!(up.count(), 0);
}

/// A reload serves renewed certificate files to new connections (a certbot deploy hook does
/// exactly this) without a restart, and a reload whose files do not make a certificate is
/// refused naming the key while the current one keeps serving.
#[tokio::test]
async fn a_reload_serves_renewed_certificate_files() {
    const TOKEN: &str = "tls-reload-admin-token-0123456789";
    let (first, second) = (pki(), pki());
    let up = Upstream::start().await;
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    std::fs::write(&cert, &first.cert_pem).unwrap();
    std::fs::write(&key, &first.key_pem).unwrap();
    let listen = format!("127.0.0.1:{}", free_port());
    let admin: std::net::SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let config = dir.path().join("hookwarden.toml");
    std::fs::write(
        &config,
        format!(
            r#"
[server]
listen = "{listen}"
tls_cert = "{}"
tls_key = "{}"
[storage]
path = "{}"
[admin]
listen = "{admin}"
token = "{TOKEN}"
[[route]]
name = "hook"
path = "/hook"
[route.upstream]
url = "{}/target"
"#,
            cert.display(),
            key.display(),
            dir.path().join("hw.db").display(),
            up.base()
        ),
    )
    .unwrap();
    struct Kill(std::process::Child);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let _serve = Kill(
        std::process::Command::new(bin())
            .arg("serve")
            .arg("--config")
            .arg(&config)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    let health = format!("https://{listen}/_hookwarden/healthz");
    // A new client (so a new connection and handshake) for every request.
    let get = |ca: &CertificateDer<'static>| {
        https_client(ca, false).request(req("GET", &health).body(Full::new(Bytes::new())).unwrap())
    };
    let (trusts_first, trusts_second) = (&first.ca_der, &second.ca_der);
    eventually(
        Duration::from_secs(10),
        "serving the first certificate",
        || async { get(trusts_first).await.is_ok_and(|r| r.status() == 200) },
    )
    .await;
    assert!(get(trusts_second).await.is_err(), "second CA trusted early");

    std::fs::write(&cert, &second.cert_pem).unwrap();
    std::fs::write(&key, &second.key_pem).unwrap();
    let got = admin_post(admin, "/api/reload", Some(TOKEN)).await;
    assert_eq!(got.status, 200, "{}", got.text());
    assert_eq!(got.json()["restart_needed"], serde_json::json!([]));
    assert_eq!(get(trusts_second).await.unwrap().status(), 200);
    assert!(
        get(trusts_first).await.is_err(),
        "the old certificate is still served"
    );

    // A key that does not belong to the certificate: refused, the second one stays.
    std::fs::write(&key, &first.key_pem).unwrap();
    let got = admin_post(admin, "/api/reload", Some(TOKEN)).await;
    assert_eq!(got.status, 422, "{}", got.text());
    assert!(got.text().contains("server.tls_"), "{}", got.text());
    assert_eq!(get(trusts_second).await.unwrap().status(), 200);
}
