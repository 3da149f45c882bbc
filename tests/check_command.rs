//! `hookwarden check`: exit codes and messages a user can act on (key, problem, fix).

mod common;

use std::process::Command;

fn check(config: &str, env: &[(&str, &str)]) -> (i32, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("hookwarden.toml");
    std::fs::write(&path, config).unwrap();
    let mut cmd = Command::new(common::bin());
    cmd.arg("check").arg("--config").arg(&path).env_clear();
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.code().unwrap_or(-1), text)
}

const GOOD: &str = r#"
[server]
listen = "127.0.0.1:8080"
[[route]]
name = "chat"
path = "/chat"
[route.upstream]
url = "https://n8n.example.com/webhook/abc"
headers = { "X-N8N-Auth" = "${N8N_SECRET}" }
"#;

#[test]
fn a_valid_config_passes_with_exit_zero() {
    let (code, out) = check(GOOD, &[("N8N_SECRET", "s3cr3t-value")]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("ok (1 route"), "{out}");
    assert!(!out.contains("s3cr3t-value"), "{out}");
}

#[test]
fn a_missing_variable_is_named_with_its_key_and_a_fix() {
    let (code, out) = check(GOOD, &[]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("error: route[chat].upstream.headers.X-N8N-Auth: environment variable N8N_SECRET is not set"), "{out}");
    assert!(out.contains("fix: set N8N_SECRET"), "{out}");
}

/// Every unset variable is named in one run, also several in one header table or key list.
#[test]
fn every_missing_variable_of_a_table_or_list_is_named() {
    let cfg = r#"
[[route]]
name = "chat"
path = "/chat"
[[route.auth]]
type = "api_key"
header = "x-api-key"
keys = ["${MISS_C}", "${MISS_D}", "x-${MISS_C}"]
[route.upstream]
url = "https://n8n.example.com/webhook/abc"
headers = { "X-A" = "${MISS_A}", "X-B" = "${MISS_B}" }
"#;
    let (code, out) = check(cfg, &[]);
    assert_eq!(code, 1, "{out}");
    for var in ["MISS_A", "MISS_B", "MISS_C", "MISS_D"] {
        let message = format!("environment variable {var} is not set");
        // Named once, though MISS_C is in two items of the list.
        assert_eq!(out.matches(&message).count(), 1, "{var} in:\n{out}");
    }
}

#[test]
fn every_error_in_the_file_is_reported_in_one_run() {
    let cfg = r#"
[server]
listen = "localhost"
max_body = "10 MB please"
header_timout = "5s"
[[route]]
name = "chat"
path = "/chat"
methods = ["POST", "BAD METHOD"]
[route.upstream]
url = "ftp://example.com/x"
timeout = "soon"
[[route]]
name = "chat"
path = "/chat"
"#;
    let (code, out) = check(cfg, &[]);
    assert_eq!(code, 1, "{out}");
    for expected in [
        "error: server.listen: \"localhost\" is not an address and port",
        "error: server.max_body:",
        "error: server.header_timout: unknown key\n  fix: did you mean `header_timeout`?",
        "error: route[chat].methods: \"BAD METHOD\" is not an HTTP method",
        "error: route[chat].upstream.url: is not an http:// or https:// URL",
        "error: route[chat].upstream.timeout: \"soon\" is not a duration",
        "error: route[chat].upstream: is required but missing",
        "error: route[chat].name: is used by two routes",
    ] {
        assert!(out.contains(expected), "missing {expected:?} in:\n{out}");
    }
    assert!(
        out.contains("the gateway will not start with this config"),
        "{out}"
    );
}

#[test]
fn risky_setups_are_warnings_and_still_exit_zero() {
    let cfg = r#"
[[route]]
name = "chat"
path = "/chat"
[route.upstream]
url = "http://n8n.example.com/webhook/abc"
"#;
    let (code, out) = check(cfg, &[]);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("warning: route[chat].upstream.url: uses plain http to a non-local host"),
        "{out}"
    );
    // A local plain-http upstream is normal (same host or private network).
    let (_, out) = check(&cfg.replace("n8n.example.com", "127.0.0.1:5678"), &[]);
    assert!(!out.contains("plain http"), "{out}");
}

#[test]
fn invalid_toml_names_the_line() {
    let (code, out) = check("[server\nlisten = 1", &[]);
    assert_eq!(code, 1);
    assert!(out.contains("is not valid TOML"), "{out}");
    assert!(out.contains("line 1"), "{out}");
}

#[test]
fn a_missing_file_says_so() {
    let out = Command::new(common::bin())
        .args(["check", "--config", "/nonexistent/hookwarden.toml"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("cannot read config file /nonexistent/hookwarden.toml"),
        "{text}"
    );
}

#[test]
fn serve_refuses_a_bad_config_with_the_same_messages() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    std::fs::write(&path, "[[route]]\nname = \"x\"\n").unwrap();
    let out = Command::new(common::bin())
        .args(["serve", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(
        text.contains("route[x].path: is required but missing"),
        "{text}"
    );
    assert!(text.contains("run `hookwarden check --config"), "{text}");
}

#[test]
fn a_shared_redis_state_needs_an_explicit_server_secret() {
    let cfg = format!(
        "{GOOD}\n[state]\nbackend = \"redis\"\nurl = \"redis://:s3cr3t-pw@10.0.0.5:6379/0\"\non_error = \"locale\"\n"
    );
    let (code, out) = check(&cfg, &[("N8N_SECRET", "s3cr3t-value")]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("error: server.secret: is required with [state] backend = \"redis\""),
        "{out}"
    );
    assert!(
        out.contains("fix: set the same secret on every instance"),
        "{out}"
    );
    assert!(
        out.contains("error: state.on_error: \"locale\" is not an on_error mode"),
        "{out}"
    );
    assert!(
        !out.contains("s3cr3t-pw"),
        "the URL's password was echoed: {out}"
    );
}

/// A secret put in a key whose errors quote the value (here the decryption key given as the
/// cipher, an easy slip) is shown as its `${NAME}`, in `check` and in `serve`'s refusal.
#[test]
fn values_from_the_environment_are_named_not_quoted_in_messages() {
    let cfg = r#"
[server]
listen = "127.0.0.1:8080"
[[route]]
name = "vcc"
path = "${VCC_PATH}"
[route.upstream]
url = "https://n8n.example.com/webhook/abc"
[route.decrypt]
cipher = "${VCC_BODY_KEY}"
key = "${VCC_BODY_KEY}"
"#;
    let secret = "SEKRIT-decrypt-key-32-bytes-long!";
    let env = [("VCC_BODY_KEY", secret), ("VCC_PATH", "/vcc\"quoted")];
    let (code, out) = check(cfg, &env);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("route[vcc].decrypt.cipher"), "{out}");
    assert!(out.contains("${VCC_BODY_KEY}"), "{out}");
    assert!(!out.contains("SEKRIT"), "{out}");
    // Quoted with escapes by `{:?}` in the message: still replaced.
    assert!(
        out.contains("route[vcc].path: \"${VCC_PATH}\" holds"),
        "{out}"
    );
    assert!(!out.contains("quoted"), "{out}");

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("hookwarden.toml");
    std::fs::write(&path, cfg).unwrap();
    let out = Command::new(common::bin())
        .arg("serve")
        .arg("--config")
        .arg(&path)
        .env_clear()
        .envs(env)
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{text}");
    assert!(text.contains("${VCC_BODY_KEY}"), "{text}");
    assert!(!text.contains("SEKRIT"), "{text}");
}

/// A key or token read from a secret file keeps the file's trailing newline, and HTTP drops a
/// field's surrounding whitespace, so such a key could never match: an error, not a gateway
/// that answers 401 forever. The message never quotes the value.
#[test]
fn keys_and_tokens_with_surrounding_whitespace_are_refused() {
    let cfg = r#"
[admin]
token = "${ADMIN_TOKEN}"
[[route]]
name = "agent"
path = "/agent"
[route.upstream]
url = "https://n8n.example.com/webhook/abc"
[[route.auth]]
type = "api_key"
header = "x-api-key"
keys = ["${GOOD_KEY}", "${FILE_KEY}"]
[[route.limit]]
key = "ip"
rate = "60/minute"
"#;
    let env = [
        ("ADMIN_TOKEN", "admin-token-from-a-file-0123456789\n"),
        ("GOOD_KEY", "good-key-0123456789abcdef"),
        ("FILE_KEY", "key-from-a-file-0123456789 "),
    ];
    let (code, out) = check(cfg, &env);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("error: route[agent].auth[#1].keys: item 2 begins or ends with whitespace"),
        "{out}"
    );
    assert!(
        out.contains("error: admin.token: the value begins or ends with whitespace"),
        "{out}"
    );
    assert!(!out.contains("from-a-file"), "{out}");
    assert!(!out.contains("item 1 "), "{out}");
}

/// `check` finds the store paths `serve` cannot open: empty, a directory, a directory that
/// does not exist, and a file that is not a database (the config file itself).
#[test]
fn store_paths_serve_cannot_open_are_errors() {
    let dir = tempfile::tempdir().unwrap();
    let not_a_db = dir.path().join("notes.txt");
    std::fs::write(&not_a_db, "not a database").unwrap();
    let cases = [
        ("".to_owned(), "storage.path: is empty"),
        (
            dir.path().display().to_string(),
            "storage.path: {dir} is a directory",
        ),
        (
            dir.path().join("missing/hw.db").display().to_string(),
            "storage.path: the directory {dir}/missing does not exist",
        ),
        (
            not_a_db.display().to_string(),
            "storage.path: {dir}/notes.txt exists and is not a SQLite database",
        ),
    ];
    for (path, want) in cases {
        let cfg = GOOD.replace(
            "[[route]]",
            &format!("[storage]\npath = \"{path}\"\n[[route]]"),
        );
        let (code, out) = check(&cfg, &[("N8N_SECRET", "s3cr3t-value")]);
        let want = want.replace("{dir}", &dir.path().display().to_string());
        assert_eq!(code, 1, "{path}: {out}");
        assert!(out.contains(&want), "{path}: want {want:?} in {out}");
    }
    // A new file in an existing directory is fine.
    let cfg = GOOD.replace(
        "[[route]]",
        &format!(
            "[storage]\npath = \"{}\"\n[[route]]",
            dir.path().join("new.db").display()
        ),
    );
    let (code, out) = check(&cfg, &[("N8N_SECRET", "s3cr3t-value")]);
    assert_eq!(code, 0, "{out}");
}

/// Mistakes `check` used to pass or explain wrongly, each with the message a user can act on.
#[test]
fn config_mistakes_are_named_with_a_fix_that_works() {
    let cfg = r#"
[state]
backend = "redis"
url = "redis://127.0.0.1:6379/16"
[server]
secret = "0123456789abcdef0123456789abcdef"
trusted_proxies = ["10.0.0.1/8"]
[[alert]]
name = "a"
reasons = ["rate_limited"]
threshold = 1
cooldown = "0s"
url = "https://user:pw@hooks.example.com/alert"
[[route]]
name = "chat"
path = "/café"
[route.upstream]
url = "https://user:pw@n8n.example.com/webhook/abc"
[[route]]
name = "chat"
path = "/b"
max_body = -1
[route.upstream]
url = "https://n8n.example.com/webhook/b"
headers = { "X-Auth" = "one-value-0123456789", "x-auth" = "other-value-0123456789", "X-Forwarded-For" = "10.0.0.1" }
[route.limit]
key = "ip"
rate = "60/minute"
"#;
    let (code, out) = check(cfg, &[]);
    assert_eq!(code, 1, "{out}");
    for want in [
        "route[chat].path: \"/café\" holds 'é', which clients send percent-encoded",
        "route[chat].upstream.url: carries user:password credentials",
        "route[chat].name: is used by two routes: the 1st [[route]] section and the 2nd",
        "names the header x-auth a second time",
        "replaces the x-forwarded-for the gateway sets",
        "write `[[route.limit]]` (double brackets) instead of `[route.limit]`",
        "state.url: names database 16",
        "alert[a].url: carries user:password credentials",
        "server.trusted_proxies: \"10.0.0.1/8\" has host bits set, so it means all of 10.0.0.0/8",
        "route[chat].max_body: -1 is negative",
        "warning: alert[a].cooldown: is zero",
    ] {
        assert!(out.contains(want), "want {want:?} in:\n{out}");
    }
    assert!(!out.contains("port that is not a number"), "{out}");
    assert!(!out.contains("other-value"), "{out}");
}

/// Decryption settings that could never work, and a backend name in the wrong case.
#[test]
fn decrypt_parameters_and_backend_case_are_checked() {
    let cfg = r#"
[server]
secret = "0123456789abcdef0123456789abcdef"
[state]
backend = "Redis"
url = "redis://127.0.0.1:6379/0"
[[route]]
name = "gcm"
path = "/gcm"
[route.upstream]
url = "https://n8n.example.com/webhook/abc"
[route.decrypt]
cipher = "aes-256-gcm"
key = "0123456789abcdef0123456789abcdef"
iv_param = "p"
tag_param = "p"
[[route]]
name = "cbc"
path = "/cbc"
[route.upstream]
url = "https://n8n.example.com/webhook/def"
[route.decrypt]
cipher = "aes-256-cbc"
key = "0123456789abcdef0123456789abcdef"
tag_param = "t"
"#;
    let (code, out) = check(cfg, &[]);
    assert_eq!(code, 1, "{out}");
    for want in [
        "route[gcm].decrypt.tag_param: is the same parameter as iv_param",
        "warning: route[cbc].decrypt.tag_param: has no effect",
        "state.backend: \"Redis\" is not a state backend (names are lower case)",
        "write backend = \"redis\"",
    ] {
        assert!(out.contains(want), "want {want:?} in:\n{out}");
    }
}

/// An admin token whose variable is not set is one error (the variable), not two.
#[test]
fn an_unset_admin_token_variable_is_reported_once() {
    let cfg = GOOD.replace(
        "[[route]]",
        "[admin]\ntoken = \"${HOOKWARDEN_ADMIN_TOKEN}\"\n[[route]]",
    );
    let (code, out) = check(&cfg, &[("N8N_SECRET", "s3cr3t-value")]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("admin.token: environment variable HOOKWARDEN_ADMIN_TOKEN is not set"),
        "{out}"
    );
    assert!(!out.contains("is required"), "{out}");
}
