//! `hookwarden keys create|list|revoke|rotate`, run as a separate process against the store of
//! a running gateway: changes take effect within the documented bound, the key is printed once
//! (alone on stdout) and is nowhere in `keys list` or the store file.

mod common;

use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use bytes::Bytes;
use common::*;
use http_body_util::Full;

const CONFIG: &str = r#"
[[route]]
name = "agent"
path = "/agent"
[route.upstream]
url = "{upstream}/agent"
[[route.auth]]
type = "api_key"
bearer = true

[[route]]
name = "open"
path = "/open"
[route.upstream]
url = "{upstream}/open"
"#;

fn hw(config: &Path, args: &[&str]) -> Output {
    Command::new(bin())
        .arg("keys")
        .args(args)
        .arg("--config")
        .arg(config)
        .env_remove("HOOKWARDEN_CONFIG")
        .output()
        .expect("hookwarden runs")
}

fn ok(out: &Output) -> (String, String) {
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "stdout: {stdout}\nstderr: {stderr}");
    (stdout, stderr)
}

fn failed(out: &Output) -> String {
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

async fn call(gw: &Gateway, key: &str) -> Got {
    send(
        req("POST", &gw.url("/agent"))
            .header("authorization", format!("Bearer {key}"))
            .body(Full::new(Bytes::from_static(b"{}")))
            .unwrap(),
    )
    .await
}

fn list_json(config: &Path) -> Vec<serde_json::Value> {
    let (out, _) = ok(&hw(config, &["list", "--json"]));
    out.lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[tokio::test]
async fn keys_made_by_the_cli_work_on_a_running_gateway() {
    let up = Upstream::start().await;
    let (gw, events) = Gateway::start_with_events(CONFIG, &up, &|_| None).await;
    let config = gw.write_config(CONFIG, &up);

    // create: the key alone on stdout, the explanation on stderr.
    let (stdout, stderr) = ok(&hw(
        &config,
        &[
            "create",
            "--route",
            "agent",
            "--name",
            "voiceflow",
            "--expires",
            "90d",
        ],
    ));
    let key = stdout.trim().to_owned();
    assert_eq!(stdout, format!("{key}\n"));
    assert!(key.starts_with("hw_") && key.len() == 46, "{key}");
    assert!(stderr.contains("shown once"), "{stderr}");
    assert!(stderr.contains("Authorization: Bearer"), "{stderr}");
    assert!(!stderr.contains(&key));

    let took = eventually(Duration::from_secs(3), "CLI key accepted", || async {
        call(&gw, &key).await.status == 200
    })
    .await;
    assert!(took < Duration::from_millis(2500), "took {took:?}");
    assert!(up.requests()[0].headers.get("authorization").is_none());

    // list: id, name, route, created, expires, last used; never the key.
    let listed = list_json(&config);
    assert_eq!(listed.len(), 1);
    let k = &listed[0];
    let id = k["id"].as_str().unwrap().to_owned();
    assert!(id.starts_with("key_"));
    assert_eq!(k["name"], "voiceflow");
    assert_eq!(k["route"], "agent");
    assert_eq!(k["status"], "active");
    let created = k["created"].as_i64().unwrap();
    assert_eq!(k["expires"].as_i64().unwrap() - created, 90 * 86_400);
    assert_eq!(k["hint"], format!("{}…", &key[..7]));
    eventually(Duration::from_secs(3), "last used shown", || async {
        list_json(&config)[0]["last_used"].is_i64()
    })
    .await;
    let (table, _) = ok(&hw(&config, &["list"]));
    for col in [
        "ID",
        "NAME",
        "ROUTE",
        "CREATED",
        "EXPIRES",
        "LAST USED",
        "STATUS",
    ] {
        assert!(table.contains(col), "{table}");
    }
    assert!(
        table.contains(&id) && table.contains("voiceflow"),
        "{table}"
    );
    assert!(!table.contains(&key[3..]), "{table}");

    // The event names the key by id.
    let got = call(&gw, &key).await;
    let e = events.get(got.header("x-request-id").unwrap()).await;
    assert_eq!(e.key_id.as_deref(), Some(id.as_str()));

    // rotate: a successor now, the old key until the grace ends.
    let (stdout, stderr) = ok(&hw(&config, &["rotate", &id, "--grace", "3s"]));
    let new_key = stdout.trim().to_owned();
    assert!(new_key.starts_with("hw_") && new_key != key);
    assert!(
        stderr.contains(&format!("{id} keeps working until")),
        "{stderr}"
    );
    eventually(Duration::from_secs(3), "successor accepted", || async {
        call(&gw, &new_key).await.status == 200
    })
    .await;
    assert_eq!(call(&gw, &key).await.status, 200, "old key during grace");
    let listed = list_json(&config);
    let new_id = listed[1]["id"].as_str().unwrap().to_owned();
    assert_eq!(listed[0]["successor"], new_id.as_str());
    assert_eq!(listed[1]["name"], "voiceflow");
    assert_eq!(listed[1]["route"], "agent");
    eventually(Duration::from_secs(6), "old key expired", || async {
        call(&gw, &key).await.status == 401
    })
    .await;
    let got = call(&gw, &key).await;
    let rid = got.assert_error(401, "unauthorized");
    assert_eq!(events.reason(&rid).await, "key_expired");

    // revoke: refused within the bound.
    let (_, stderr) = ok(&hw(&config, &["revoke", &new_id]));
    assert!(stderr.contains("revoked"), "{stderr}");
    let took = eventually(Duration::from_secs(3), "revoked key refused", || async {
        call(&gw, &new_key).await.status == 401
    })
    .await;
    assert!(took < Duration::from_millis(2500), "took {took:?}");
    let got = call(&gw, &new_key).await;
    let rid = got.assert_error(401, "unauthorized");
    assert_eq!(events.reason(&rid).await, "key_invalid");
    let (_, stderr) = ok(&hw(&config, &["revoke", &new_id]));
    assert!(stderr.contains("already revoked"), "{stderr}");

    // Neither key is anywhere in the store files.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    for name in ["hookwarden.db", "hookwarden.db-wal"] {
        if let Ok(bytes) = std::fs::read(gw.dir.path().join(name)) {
            let text = String::from_utf8_lossy(&bytes);
            assert!(
                !text.contains(&key[3..]) && !text.contains(&new_key[3..]),
                "{name}"
            );
        }
    }
    let forwarded = up.count();
    let allowed = events.all().iter().filter(|e| e.status == 200).count();
    assert_eq!(forwarded, allowed, "a refused request reached the upstream");
}

#[tokio::test]
async fn mistakes_are_explained() {
    let up = Upstream::start().await;
    let gw = Gateway::start(CONFIG, &up).await;
    let config = gw.write_config(CONFIG, &up);

    let err = failed(&hw(&config, &["create", "--route", "nope"]));
    assert!(
        err.contains("no route \"nope\"") && err.contains("agent, open"),
        "{err}"
    );
    let err = failed(&hw(
        &config,
        &["create", "--route", "agent", "--expires", "soon"],
    ));
    assert!(err.contains("--expires"), "{err}");
    let err = failed(&hw(&config, &["revoke", "key_000000000000"]));
    assert!(err.contains("no key with id key_000000000000"), "{err}");
    let err = failed(&hw(&config, &["rotate", "key_000000000000"]));
    assert!(err.contains("keys list"), "{err}");

    // A route that does not ask for keys: the key is issued, with a warning.
    let (_, stderr) = ok(&hw(&config, &["create", "--route", "open"]));
    assert!(stderr.contains("does not ask for this key"), "{stderr}");
    assert!(
        stderr.contains("no gateway accepts it until the route has a [[route.auth]]"),
        "{stderr}"
    );
    assert!(!stderr.contains("accept it within"), "{stderr}");

    // A route whose key entry says issued keys do not count: refused, no key made.
    let statics = gw.dir.path().join("statics.toml");
    std::fs::write(
        &statics,
        format!(
            "[storage]\npath = \"{}\"\n[[route]]\nname = \"s\"\npath = \"/s\"\n[route.upstream]\nurl = \"http://127.0.0.1:9/\"\n[[route.auth]]\ntype = \"api_key\"\nheader = \"x-api-key\"\nkeys = [\"a-static-key-0123456789\"]\nissued = false\n",
            gw.store_path().display()
        ),
    )
    .unwrap();
    let before = ok(&hw(&statics, &["list"])).0;
    let err = failed(&hw(&statics, &["create", "--route", "s"]));
    assert!(err.contains("issued = false"), "{err}");
    assert_eq!(ok(&hw(&statics, &["list"])).0, before, "a key was made");

    // An in-memory store cannot be reached from another process.
    let mem = gw.dir.path().join("memory.toml");
    std::fs::write(
        &mem,
        "[storage]\npath = \":memory:\"\n[[route]]\nname = \"a\"\npath = \"/a\"\n[route.upstream]\nurl = \"http://127.0.0.1:9/\"\n",
    )
    .unwrap();
    let err = failed(&hw(&mem, &["list"]));
    assert!(err.contains(":memory:"), "{err}");

    // --store works without a config; a revoked key cannot be rotated.
    let out = Command::new(bin())
        .args(["keys", "create", "--route", "agent", "--store"])
        .arg(gw.store_path())
        .output()
        .unwrap();
    let (stdout, _) = ok(&out);
    assert!(stdout.starts_with("hw_"));
    let listed = list_json(&config);
    let id = listed.last().unwrap()["id"].as_str().unwrap().to_owned();
    ok(&hw(&config, &["revoke", &id]));
    let err = failed(&hw(&config, &["rotate", &id]));
    assert!(err.contains("is revoked"), "{err}");
}

/// Mistakes a review found accepted: a key that would be born expired, a store path that
/// points nowhere (a new, empty store no gateway reads), and a key nobody saw because stdout
/// was closed. And a revoke must work from a shell without the config's secrets.
#[tokio::test]
async fn keys_that_could_never_work_are_not_issued() {
    let up = Upstream::start().await;
    let gw = Gateway::start(CONFIG, &up).await;
    let config = gw.write_config(CONFIG, &up);
    let before = list_json(&config).len();

    let err = failed(&hw(
        &config,
        &["create", "--route", "agent", "--expires", "0s"],
    ));
    assert!(err.contains("at least 1m"), "{err}");
    let err = failed(&hw(
        &config,
        &["create", "--route", "agent", "--expires", "99999999999d"],
    ));
    assert!(err.contains("--expires"), "{err}");

    let typo = gw.dir.path().join("typo.toml");
    let missing = gw.dir.path().join("typo.db");
    std::fs::write(
        &typo,
        format!(
            "[storage]\npath = \"{}\"\n[[route]]\nname = \"agent\"\npath = \"/agent\"\n[route.upstream]\nurl = \"http://127.0.0.1:9/\"\n",
            missing.display()
        ),
    )
    .unwrap();
    let err = failed(&hw(&typo, &["create", "--route", "agent"]));
    assert!(err.contains("there is no store at"), "{err}");
    assert!(!missing.exists(), "an empty store was created");

    // stdout closed before the key could be written: the key must not stay usable.
    let mut child = Command::new(bin())
        .args(["keys", "create", "--route", "agent", "--config"])
        .arg(&config)
        .env_remove("HOOKWARDEN_CONFIG")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let listed = list_json(&config);
    assert_eq!(listed.len(), before + 1);
    assert_eq!(listed.last().unwrap()["status"], "revoked", "{listed:?}");

    // stdout to /dev/null, or closed (`>&-`, which the runtime reopens on /dev/null): the key
    // would be printed nowhere, so none is made.
    for shell in [
        "exec >/dev/null; exec \"$0\" \"$@\"",
        "exec >&-; exec \"$0\" \"$@\"",
    ] {
        let out = Command::new("sh")
            .arg("-c")
            .arg(shell)
            .arg(bin())
            .args(["keys", "create", "--route", "agent", "--config"])
            .arg(&config)
            .env_remove("HOOKWARDEN_CONFIG")
            .output()
            .unwrap();
        let err = failed(&out);
        assert!(
            err.contains("stdout is /dev/null or closed"),
            "{shell}: {err}"
        );
    }
    assert_eq!(
        list_json(&config).len(),
        before + 1,
        "a key was made for nobody"
    );

    // A config whose secrets are not set in this shell still lists and revokes.
    let secret_cfg = gw.dir.path().join("secrets.toml");
    let text = std::fs::read_to_string(&config).unwrap().replace(
        "[[route.auth]]",
        "headers = { \"X-Up\" = \"${NOT_SET_IN_THIS_SHELL}\" }\n[[route.auth]]",
    );
    std::fs::write(&secret_cfg, text).unwrap();
    let (out, err) = ok(&hw(&secret_cfg, &["list", "--json"]));
    assert_eq!(out.lines().count(), before + 1, "{out}");
    assert!(err.contains("cannot be read whole"), "{err}");
}

/// A key's name is shown to every operator who lists keys: a name with a terminal escape
/// sequence is refused, and one already in a store (written by hand or by an older version)
/// is printed escaped, never sent to the terminal as is.
#[tokio::test]
async fn names_cannot_carry_terminal_escapes() {
    let up = Upstream::start().await;
    let gw = Gateway::start(CONFIG, &up).await;
    let config = gw.write_config(CONFIG, &up);
    let before = list_json(&config).len();

    for bad in ["ops\u{1b}[2K", "line\nbreak", "bell\u{7}", "   "] {
        let err = failed(&hw(&config, &["create", "--route", "agent", "--name", bad]));
        assert!(err.contains("--name"), "{bad:?}: {err}");
    }
    let long = "n".repeat(101);
    let err = failed(&hw(
        &config,
        &["create", "--route", "agent", "--name", &long],
    ));
    assert!(err.contains("--name") && err.contains("100"), "{err}");
    assert_eq!(
        list_json(&config).len(),
        before,
        "a refused name still issued a key"
    );
    ok(&hw(
        &config,
        &["create", "--route", "agent", "--name", "Voiceflow (prod) é"],
    ));

    // A name already stored with an escape sequence, as an older version would have kept it.
    let conn = rusqlite::Connection::open(gw.store_path()).unwrap();
    conn.execute(
        "UPDATE api_keys SET name = 'evil\u{1b}[1A\u{1b}[2Khidden' WHERE name = 'Voiceflow (prod) é'",
        [],
    )
    .unwrap();
    drop(conn);
    let (table, _) = ok(&hw(&config, &["list"]));
    assert!(!table.contains('\u{1b}'), "{table:?}");
    assert!(table.contains(r"evil\u{1b}[1A\u{1b}[2Khidden"), "{table}");
    // JSON output escapes it by itself.
    let (json, _) = ok(&hw(&config, &["list", "--json"]));
    assert!(
        !json.contains('\u{1b}') && json.contains(r"\u001b"),
        "{json}"
    );
}
