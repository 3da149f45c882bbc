//! Config reload against the real binary: `POST /api/reload` and SIGHUP apply a valid config,
//! and refuse a bad one with the same errors `hookwarden check` prints while the old config
//! keeps serving.

mod common;

use std::time::Duration;

use common::*;

const V1: &str = r#"
[server]
listen = "{listen}"
[storage]
path = "{dir}/reload.db"
[admin]
listen = "{admin}"
token = "${ADMIN_TOKEN}"
[[route]]
name = "a"
path = "/a"
[route.upstream]
url = "{upstream}/a"
[[route.limit]]
key = "ip"
rate = "600/minute"
"#;

const V2_EXTRA: &str = r#"
[[route]]
name = "b"
path = "/b"
[route.upstream]
url = "{upstream}/b"
[[route.limit]]
key = "ip"
rate = "600/minute"
"#;

/// A config with two errors: an unknown key with a near miss, and a bad duration.
const BAD_EXTRA: &str = r#"
[[route]]
name = "c"
path = "/c"
[[route.limit]]
key = "ip"
rate = "600/minute"
[route.upstream]
url = "{upstream}/c"
timeuot = "5s"
idle_timeout = "soon"
"#;

const TOKEN_1: &str = "first-admin-token-0123456789";
const TOKEN_2: &str = "second-admin-token-9876543210";

/// Writes a new config next to the running one, with the same addresses.
fn rewrite(served: &Served, up: &Upstream, text: &str, token: &str) {
    let full = text
        .replace("{listen}", &served.addr.to_string())
        .replace("{admin}", &served.admin.unwrap().to_string())
        .replace("{upstream}", &up.base())
        .replace("{dir}", &served.dir.path().display().to_string())
        .replace("${ADMIN_TOKEN}", token);
    std::fs::write(&served.config, full).unwrap();
}

fn check_output(config: &std::path::Path) -> String {
    let out = std::process::Command::new(bin())
        .arg("check")
        .arg("--config")
        .arg(config)
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

async fn status_of(served: &Served, path: &str) -> u16 {
    send(post_json(&served.url(path), "{}"))
        .await
        .status
        .as_u16()
}

#[tokio::test]
async fn api_reload_applies_a_valid_config_and_refuses_a_bad_one() {
    let up = Upstream::start().await;
    let served = Served::start(V1, &up.base(), &[("ADMIN_TOKEN", TOKEN_1)]).await;
    let admin = served.admin.unwrap();
    assert_eq!(status_of(&served, "/a").await, 200);
    assert_eq!(status_of(&served, "/b").await, 404);

    // A valid new config: route b appears, and the admin token rotates.
    rewrite(&served, &up, &format!("{V1}{V2_EXTRA}"), TOKEN_2);
    let got = admin_post(admin, "/api/reload", Some(TOKEN_1)).await;
    assert_eq!(got.status, 200, "{}", got.text());
    let j = got.json();
    assert_eq!(j["ok"], true);
    assert_eq!(j["routes"], 2);
    assert_eq!(j["restart_needed"], serde_json::json!([]));
    assert_eq!(status_of(&served, "/b").await, 200);
    assert_eq!(
        admin_get(admin, "/api/routes", Some(TOKEN_1)).await.status,
        401
    );
    let routes = admin_get(admin, "/api/routes", Some(TOKEN_2)).await;
    assert_eq!(routes.json()["routes"].as_array().unwrap().len(), 2);

    // A config with errors: refused with check's messages; a and b keep serving.
    rewrite(&served, &up, &format!("{V1}{V2_EXTRA}{BAD_EXTRA}"), TOKEN_2);
    let got = admin_post(admin, "/api/reload", Some(TOKEN_2)).await;
    assert_eq!(got.status, 422, "{}", got.text());
    let j = got.json();
    assert_eq!(j["ok"], false);
    assert_eq!(j["error"], "config_rejected");
    let keys: Vec<&str> = j["issues"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["key"].as_str().unwrap())
        .collect();
    assert_eq!(
        keys,
        [
            "route[c].upstream.idle_timeout",
            "route[c].upstream.timeuot"
        ]
    );
    assert_eq!(j["issues"][1]["fix"], "did you mean `timeout`?");
    let message = j["message"].as_str().unwrap();
    let check = check_output(&served.config);
    for line in message.lines() {
        assert!(
            check.contains(line),
            "{line:?} is not in check's output:\n{check}"
        );
    }
    assert!(
        message.contains("error: route[c].upstream.timeuot: unknown key"),
        "{message}"
    );
    assert_eq!(status_of(&served, "/a").await, 200);
    assert_eq!(status_of(&served, "/b").await, 200);
    assert_eq!(status_of(&served, "/c").await, 404);
    // The token of the refused file (the same here) was not applied in any case: still TOKEN_2.
    assert_eq!(
        admin_get(admin, "/api/routes", Some(TOKEN_2)).await.status,
        200
    );

    let metrics = admin_get(admin, "/metrics", Some(TOKEN_2)).await.text();
    assert!(
        metrics.contains(r#"hookwarden_config_reloads_total{result="ok"} 1"#),
        "{metrics}"
    );
    assert!(
        metrics.contains(r#"hookwarden_config_reloads_total{result="error"} 1"#),
        "{metrics}"
    );

    // Settings fixed at start are reported, not silently ignored.
    let moved = V1.replace("{dir}/reload.db", "{dir}/elsewhere.db");
    rewrite(&served, &up, &format!("{moved}{V2_EXTRA}"), TOKEN_2);
    let got = admin_post(admin, "/api/reload", Some(TOKEN_2)).await;
    assert_eq!(
        got.json()["restart_needed"],
        serde_json::json!(["storage.path"])
    );
    // Still running on the first path: a second reload of the same file says so again, and
    // going back to the running value needs nothing.
    let got = admin_post(admin, "/api/reload", Some(TOKEN_2)).await;
    assert_eq!(
        got.json()["restart_needed"],
        serde_json::json!(["storage.path"])
    );
    rewrite(&served, &up, &format!("{V1}{V2_EXTRA}"), TOKEN_2);
    let got = admin_post(admin, "/api/reload", Some(TOKEN_2)).await;
    assert_eq!(got.json()["restart_needed"], serde_json::json!([]));
}

#[tokio::test]
async fn sighup_reloads_and_a_bad_config_keeps_the_old_one() {
    let up = Upstream::start().await;
    let served = Served::start(V1, &up.base(), &[("ADMIN_TOKEN", TOKEN_1)]).await;
    assert_eq!(status_of(&served, "/b").await, 404);

    rewrite(&served, &up, &format!("{V1}{V2_EXTRA}"), TOKEN_1);
    served.signal("HUP");
    served.wait_log("config reloaded").await;
    assert_eq!(status_of(&served, "/b").await, 200);

    rewrite(&served, &up, &format!("{V1}{V2_EXTRA}{BAD_EXTRA}"), TOKEN_1);
    served.signal("HUP");
    let log = served.wait_log("config reload refused").await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let log = if log.contains("timeuot") {
        log
    } else {
        served.log()
    };
    assert!(
        log.contains(
            "error: route[c].upstream.timeuot: unknown key\n  fix: did you mean `timeout`?"
        ),
        "{log}"
    );
    assert_eq!(status_of(&served, "/a").await, 200);
    assert_eq!(status_of(&served, "/b").await, 200);
    assert_eq!(status_of(&served, "/c").await, 404);
    // Still alive and serving after both signals.
    assert_eq!(status_of(&served, "/a").await, 200);
}
