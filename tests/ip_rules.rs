//! `[route.ip]` and `[route.user_agent]` over real sockets, in both modes: enforce refuses with
//! 403 and forwards nothing; alert forwards and flags the event.
//!
//! Client addresses come through the trusted proxy (the test connects from 127.0.0.1 and says
//! who the client is in `X-Forwarded-For`), so any IPv4 or IPv6 address can be played.

mod common;

use bytes::Bytes;
use common::*;
use hookwarden::events::Outcome;
use hookwarden::policy::Reason;
use http_body_util::Full;

const CONFIG: &str = r#"
[server]
trusted_proxies = ["127.0.0.1"]

[[route]]
name = "strict"
path = "/strict"
[route.upstream]
url = "{upstream}/strict"
[route.ip]
allow = ["203.0.113.0/24", "2001:db8:aa::/48"]
deny = ["203.0.113.7", "2001:db8:aa:bad::/64"]

[[route]]
name = "watched"
path = "/watched"
[route.upstream]
url = "{upstream}/watched"
[route.ip]
allow = ["203.0.113.0/24"]
deny = ["203.0.113.7"]
mode = "alert"

[[route]]
name = "blocklist"
path = "/blocklist"
[route.upstream]
url = "{upstream}/blocklist"
[route.ip]
deny = ["198.51.100.0/24", "2001:db8:bad::/48"]

[[route]]
name = "voiceflow"
path = "/voiceflow"
[route.upstream]
url = "{upstream}/voiceflow"
[route.user_agent]
allow_prefixes = ["Voiceflow", "n8n/"]

[[route]]
name = "ua-watched"
path = "/ua-watched"
[route.upstream]
url = "{upstream}/ua-watched"
[route.user_agent]
allow_prefixes = ["Voiceflow"]
mode = "alert"
"#;

fn from_client(url: &str, client: &str, ua: Option<&str>) -> http::Request<Full<Bytes>> {
    let mut b = req("POST", url).header("x-forwarded-for", client);
    if let Some(ua) = ua {
        b = b.header("user-agent", ua);
    }
    b.body(Full::new(Bytes::new())).unwrap()
}

#[tokio::test]
async fn enforce_admits_the_allow_list_and_deny_wins() {
    let up = Upstream::start().await;
    let mut o = Gateway::start_observed(CONFIG, &up).await;
    let url = o.gw.url("/strict");
    for (client, want) in [
        ("203.0.113.8", None),
        ("2001:db8:aa:1::1", None),
        ("::ffff:203.0.113.9", None),
        ("203.0.113.7", Some(Reason::IpDenied)),
        ("2001:db8:aa:bad::1", Some(Reason::IpDenied)),
        ("198.51.100.1", Some(Reason::IpNotAllowed)),
        ("2001:db8:ab::1", Some(Reason::IpNotAllowed)),
    ] {
        let before = up.count();
        let got = send(from_client(&url, client, None)).await;
        match want {
            None => {
                assert_eq!(got.status, 200, "{client}");
                assert_eq!(up.count(), before + 1, "{client}");
            }
            Some(reason) => {
                let id = got.assert_error(403, "forbidden");
                assert_eq!(up.count(), before, "{client} reached the upstream");
                let e = o.event_for(&id).await;
                assert_eq!(e.outcome, Outcome::Denied);
                assert_eq!(e.reason, Some(reason), "{client}");
                assert_eq!(e.client_ip.to_string(), client);
            }
        }
    }
    assert_eq!(up.count(), 3);
}

#[tokio::test]
async fn a_deny_list_alone_lets_everyone_else_through() {
    let up = Upstream::start().await;
    let gw = Gateway::start(CONFIG, &up).await;
    let url = gw.url("/blocklist");
    for client in ["198.51.100.200", "2001:db8:bad:1::1"] {
        send(from_client(&url, client, None))
            .await
            .assert_error(403, "forbidden");
    }
    assert_eq!(up.count(), 0);
    for client in ["198.51.101.1", "2001:db8:bae::1", "192.0.2.1"] {
        assert_eq!(send(from_client(&url, client, None)).await.status, 200);
    }
    assert_eq!(up.count(), 3);
}

#[tokio::test]
async fn alert_mode_forwards_and_flags_the_event() {
    let up = Upstream::start().await;
    let mut o = Gateway::start_observed(CONFIG, &up).await;
    let url = o.gw.url("/watched");
    for (client, flags) in [
        ("198.51.100.1", vec![Reason::IpNotAllowed]),
        ("203.0.113.7", vec![Reason::IpDenied]),
        ("203.0.113.8", vec![]),
    ] {
        let got = send(from_client(&url, client, None)).await;
        assert_eq!(got.status, 200, "{client}");
        let id = got.header("x-request-id").unwrap().to_owned();
        let e = o.event_for(&id).await;
        assert_eq!(e.outcome, Outcome::Allowed);
        assert_eq!(e.reason, None);
        assert_eq!(e.flags, flags, "{client}");
    }
    assert_eq!(up.count(), 3);
}

#[tokio::test]
async fn user_agent_prefixes_are_enforced() {
    let up = Upstream::start().await;
    let mut o = Gateway::start_observed(CONFIG, &up).await;
    let url = o.gw.url("/voiceflow");
    for ua in [
        None,
        Some("curl/8.5.0"),
        Some("python-requests/2.31"),
        Some("n8n"),
    ] {
        let got = send(from_client(&url, "203.0.113.1", ua)).await;
        let id = got.assert_error(403, "forbidden");
        let e = o.event_for(&id).await;
        assert_eq!(e.reason, Some(Reason::UserAgentDenied), "{ua:?}");
    }
    assert_eq!(up.count(), 0);
    for ua in ["Voiceflow/1.0", "voiceflow-runtime", "n8n/1.80.0"] {
        let got = send(from_client(&url, "203.0.113.1", Some(ua))).await;
        assert_eq!(got.status, 200, "{ua}");
    }
    assert_eq!(up.count(), 3);
    // The User-Agent itself is forwarded unchanged.
    assert_eq!(
        up.requests()[2].headers.get("user-agent").unwrap(),
        "n8n/1.80.0"
    );
}

#[tokio::test]
async fn user_agent_alert_mode_forwards_and_flags() {
    let up = Upstream::start().await;
    let mut o = Gateway::start_observed(CONFIG, &up).await;
    let url = o.gw.url("/ua-watched");
    for (ua, flags) in [
        (Some("curl/8.5.0"), vec![Reason::UserAgentDenied]),
        (None, vec![Reason::UserAgentDenied]),
        (Some("Voiceflow/1.0"), vec![]),
    ] {
        let got = send(from_client(&url, "203.0.113.1", ua)).await;
        assert_eq!(got.status, 200);
        let id = got.header("x-request-id").unwrap().to_owned();
        let e = o.event_for(&id).await;
        assert_eq!(e.outcome, Outcome::Allowed);
        assert_eq!(e.flags, flags, "{ua:?}");
    }
    assert_eq!(up.count(), 3);
}
