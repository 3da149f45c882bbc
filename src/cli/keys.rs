//! `hookwarden keys create|list|revoke|rotate`: API keys issued into the store.
//!
//! A new key goes to stdout alone (so `KEY=$(hookwarden keys create …)` captures it) and the
//! explanation to stderr; it is never shown again. Running gateways pick changes up within
//! about a second ([`REFRESH_EVERY`]).

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Args, Subcommand};

use hookwarden::config::{self, AuthConfig, Config, KeySource, units::parse_duration};
use hookwarden::store::Store;
use hookwarden::store::keys::{IssuedKey, KeyStatus, NewKey, REFRESH_EVERY, Revoked};

/// `hookwarden keys …`.
#[derive(Debug, Args)]
pub struct KeysArgs {
    #[command(subcommand)]
    command: KeysCommand,
}

#[derive(Debug, Subcommand)]
enum KeysCommand {
    /// Issue a new key for a route. The key is printed once, on stdout.
    Create {
        #[command(flatten)]
        target: Target,
        /// The route the key opens (a route name from the config).
        #[arg(long)]
        route: String,
        /// A label, e.g. the caller's name.
        #[arg(long)]
        name: Option<String>,
        /// Lifetime, e.g. 90d or 12h; default: no expiry.
        #[arg(long)]
        expires: Option<String>,
    },
    /// Show the issued keys (never the keys themselves).
    List {
        #[command(flatten)]
        target: Target,
        /// Only this route's keys.
        #[arg(long)]
        route: Option<String>,
        /// One JSON object per line instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Revoke a key: refused (key_invalid) from the next refresh on.
    Revoke {
        #[command(flatten)]
        target: Target,
        /// The key's id, as `keys list` shows it.
        id: String,
    },
    /// Issue a successor to a key and let the old one expire after a grace period.
    Rotate {
        #[command(flatten)]
        target: Target,
        /// The key's id, as `keys list` shows it.
        id: String,
        /// How long the old key keeps working.
        #[arg(long, default_value = "24h")]
        grace: String,
        /// The new key's lifetime; default: as long as the old key was issued for.
        #[arg(long)]
        expires: Option<String>,
    },
}

/// Which store to use.
#[derive(Debug, Args)]
struct Target {
    /// The config file; its [storage] path is the store, and its routes are checked.
    #[arg(
        long,
        short,
        env = "HOOKWARDEN_CONFIG",
        default_value = "hookwarden.toml"
    )]
    config: PathBuf,
    /// Use this SQLite file directly instead of the config's (routes are then not checked).
    #[arg(long)]
    store: Option<PathBuf>,
}

/// What the target resolved to.
struct Opened {
    store: Store,
    config: Option<Config>,
}

impl Target {
    /// Opens the store; `need_routes`: the command checks route names, so the whole config
    /// must load.
    fn open(&self, need_routes: bool) -> anyhow::Result<Opened> {
        if let Some(path) = &self.store {
            if !path.exists() {
                bail!(
                    "{} does not exist; point --store to the gateway's SQLite file",
                    path.display()
                );
            }
            return Ok(Opened {
                store: Store::open_for_command(path)?,
                config: None,
            });
        }
        let (storage, config) = match config::load_file(&self.config) {
            Ok(loaded) => (loaded.config.storage.clone(), Some(loaded.config)),
            // Listing and revoking need only the store: an urgent revoke must not wait for
            // every secret the config names to be set in this shell.
            Err(e) if !need_routes => match config::load_storage(&self.config) {
                Ok(storage) => {
                    eprintln!(
                        "note: {} cannot be read whole ({e}); using its [storage] path only",
                        self.config.display()
                    );
                    (storage, None)
                }
                Err(_) => return Err(self.unusable(e)),
            },
            Err(e) => return Err(self.unusable(e)),
        };
        if storage.is_memory() {
            bail!(
                "the store in {} is \":memory:\", which only the running gateway can see; set [storage] path to a file",
                self.config.display()
            );
        }
        // A mistyped path would otherwise get a new, empty store that no gateway reads, and a
        // key in it that never works.
        if !storage.path.exists() {
            bail!(
                "there is no store at {} ([storage] path in {}); start the gateway once to create it, or fix the path",
                storage.path.display(),
                self.config.display()
            );
        }
        let store = Store::open_for_command(&storage.path)
            .with_context(|| format!("cannot open the store {}", storage.path.display()))?;
        Ok(Opened { store, config })
    }

    fn unusable(&self, e: config::ConfigError) -> anyhow::Error {
        anyhow::Error::new(e).context(format!(
            "cannot use {}; fix it (see `hookwarden check --config {0}`) or give the store file with --store",
            self.config.display()
        ))
    }
}

/// Runs a `keys` command.
pub fn run(args: KeysArgs) -> anyhow::Result<ExitCode> {
    let now = jiff::Timestamp::now().as_second();
    match args.command {
        KeysCommand::Create {
            target,
            route,
            name,
            expires,
        } => {
            check_name(name.as_deref())?;
            check_stdout_kept()?;
            let opened = target.open(true)?;
            let place = check_route(opened.config.as_ref(), &route, &target.config)?;
            let lifetime = lifetime(expires.as_deref())?;
            let new = opened
                .store
                .create_key(&route, name.as_deref(), lifetime, now)?;
            show_or_revoke(&opened.store, &new, place.as_ref(), now)?;
            let when = match (&place, opened.config.is_some()) {
                (None, true) => "no gateway accepts it until the route has a [[route.auth]] \
                                 type = \"api_key\""
                    .to_owned(),
                _ => format!(
                    "running gateways accept it within {} s",
                    REFRESH_EVERY.as_secs() * 2
                ),
            };
            eprintln!(
                "created {} for route \"{route}\"{}; {when}",
                new.record.id,
                describe_expiry(new.record.expires),
            );
            Ok(ExitCode::SUCCESS)
        }
        KeysCommand::List {
            target,
            route,
            json,
        } => {
            let opened = target.open(false)?;
            if let (Some(cfg), Some(r)) = (&opened.config, &route)
                && !cfg.routes.iter().any(|c| &c.name == r)
            {
                eprintln!("note: the config has no route \"{r}\"");
            }
            let keys = opened.store.list_keys(route.as_deref())?;
            // Written, not `println!`: a closed pipe (`| head`) is an error the caller ends
            // on quietly, not a panic.
            if json {
                use std::io::Write as _;
                let mut out = std::io::stdout().lock();
                for k in &keys {
                    writeln!(out, "{}", key_json(k, now))?;
                }
            } else {
                print_table(&keys, now)?;
            }
            Ok(ExitCode::SUCCESS)
        }
        KeysCommand::Revoke { target, id } => {
            let opened = target.open(false)?;
            let key = opened.store.get_key(&id)?;
            match opened.store.revoke_key(&id, now)? {
                Revoked::Now => eprintln!(
                    "revoked {id} (route \"{}\"); running gateways refuse it within {} s",
                    key.route,
                    REFRESH_EVERY.as_secs() * 2
                ),
                Revoked::Already(at) => eprintln!("{id} was already revoked on {}", when(at)),
            }
            Ok(ExitCode::SUCCESS)
        }
        KeysCommand::Rotate {
            target,
            id,
            grace,
            expires,
        } => {
            check_stdout_kept()?;
            let opened = target.open(true)?;
            let grace = duration("--grace", &grace)?;
            let lifetime = lifetime(expires.as_deref())?;
            let old = opened.store.get_key(&id)?;
            let place = check_route(opened.config.as_ref(), &old.route, &target.config)?;
            let (new, old) = opened.store.rotate_key(&id, grace, lifetime, now)?;
            show_or_revoke(&opened.store, &new, place.as_ref(), now)?;
            eprintln!(
                "rotated {id} → {} (route \"{}\"){}; {id} keeps working until {}",
                new.record.id,
                new.record.route,
                describe_expiry(new.record.expires),
                old.expires.map_or_else(|| "-".to_owned(), when)
            );
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// A new key's `--expires`, if given: at least a minute (a shorter one would be born
/// expired, or nearly).
fn lifetime(expires: Option<&str>) -> anyhow::Result<Option<Duration>> {
    let lifetime = expires.map(|e| duration("--expires", e)).transpose()?;
    if lifetime.is_some_and(|d| d < Duration::from_secs(60)) {
        bail!("--expires: a key must live at least 1m; write e.g. 90d, 24h or 30m");
    }
    Ok(lifetime)
}

/// Refuses to make a key that would be printed into /dev/null: nobody would ever see it.
/// That includes a closed stdout (`>&-`), which the Rust runtime reopens on /dev/null, so the
/// print-or-revoke check after creating the key cannot tell.
fn check_stdout_kept() -> anyhow::Result<()> {
    use std::os::fd::AsFd as _;
    use std::os::unix::fs::{FileTypeExt as _, MetadataExt as _};
    // fstat on stdout itself: needs no /proc.
    let out = std::io::stdout()
        .as_fd()
        .try_clone_to_owned()
        .map(std::fs::File::from)
        .and_then(|f| f.metadata());
    let (Ok(out), Ok(null)) = (out, std::fs::metadata("/dev/null")) else {
        return Ok(());
    };
    // The same device: by node, or as a character device with /dev/null's numbers (another
    // node for it, as in a chroot).
    if (out.dev() == null.dev() && out.ino() == null.ino())
        || (out.file_type().is_char_device() && out.rdev() == null.rdev())
    {
        bail!(
            "stdout is /dev/null or closed, so the new key (printed once, on stdout) would be lost; \
             run the command with stdout to a terminal, a file or a pipe, e.g. KEY=$(hookwarden keys create …)"
        );
    }
    Ok(())
}

/// Longest `--name` a key takes: a label for people, shown in a table.
const NAME_MAX: usize = 100;

/// A key's `--name`: printable text of a bounded length. A control character would be
/// replayed to every terminal that runs `keys list` (an escape sequence can rewrite what the
/// operator sees, e.g. hide a row).
fn check_name(name: Option<&str>) -> anyhow::Result<()> {
    let Some(name) = name else { return Ok(()) };
    if name.chars().any(hookwarden::events::is_unsafe_to_show) {
        bail!(
            "--name: control characters and bidirectional overrides are not allowed; use letters, digits and punctuation"
        );
    }
    if name.trim().is_empty() {
        bail!("--name: the name is empty; leave --name out or give a label such as \"voiceflow\"");
    }
    if name.chars().count() > NAME_MAX {
        bail!("--name: longer than {NAME_MAX} characters; use a shorter label");
    }
    Ok(())
}

/// `s` as a table cell: control characters (from a store written by an older version, or by
/// hand) shown as escapes instead of being sent to the terminal.
fn printable(s: &str) -> String {
    if !s.chars().any(hookwarden::events::is_unsafe_to_show) {
        return s.to_owned();
    }
    s.chars()
        .map(|c| {
            if hookwarden::events::is_unsafe_to_show(c) {
                c.escape_default().to_string()
            } else {
                c.to_string()
            }
        })
        .collect()
}

/// Prints a new key; when that fails (stdout closed), nobody saw it, so it is revoked at once.
fn show_or_revoke(
    store: &Store,
    new: &NewKey,
    place: Option<&KeySource>,
    now: i64,
) -> anyhow::Result<()> {
    if let Err(e) = show_new(new, place) {
        let _ = store.revoke_key(&new.record.id, now);
        bail!(
            "cannot print the new key ({e}); {} was revoked at once, run the command again",
            new.record.id
        );
    }
    Ok(())
}

fn duration(flag: &str, s: &str) -> anyhow::Result<Duration> {
    parse_duration(s).map_err(|e| anyhow::anyhow!("{flag}: {e}; write e.g. 90d, 24h or 30m"))
}

/// Checks that `route` exists in the config and returns where its callers put the key.
fn check_route(
    cfg: Option<&Config>,
    route: &str,
    path: &Path,
) -> anyhow::Result<Option<KeySource>> {
    let Some(cfg) = cfg else {
        return Ok(None);
    };
    let Some(r) = cfg.routes.iter().find(|r| r.name == route) else {
        let names: Vec<&str> = cfg.routes.iter().map(|r| r.name.as_str()).collect();
        bail!(
            "{} has no route \"{route}\"; routes: {}",
            path.display(),
            names.join(", ")
        );
    };
    let place = r.auth.iter().find_map(|a| match a {
        AuthConfig::ApiKey(k) if k.issued => Some(k.source.clone()),
        _ => None,
    });
    if place.is_none() {
        if r.auth.iter().any(|a| matches!(a, AuthConfig::ApiKey(_))) {
            // The config says in so many words that issued keys do not count here.
            bail!(
                "every [[route.auth]] type = \"api_key\" of route \"{route}\" has issued = false, so no gateway would accept an issued key; set issued = true on the entry that should take them"
            );
        } else {
            eprintln!(
                "warning: route \"{route}\" has no [[route.auth]] type = \"api_key\", so it does not ask for this key yet"
            );
        }
    }
    Ok(place)
}

fn show_new(new: &NewKey, place: Option<&KeySource>) -> std::io::Result<()> {
    use std::io::Write as _;
    // The only place a key is printed: stdout, alone, so scripts can capture it.
    let mut out = std::io::stdout().lock();
    writeln!(out, "{}", new.key.expose())?;
    out.flush()?;
    eprintln!("this key is shown once: store it now (only its SHA-256 digest is kept)");
    match place {
        Some(KeySource::Header(h)) => eprintln!("callers send it as the {h} header"),
        Some(KeySource::Query(q)) => eprintln!("callers send it as the ?{q}= query parameter"),
        Some(KeySource::Bearer) => eprintln!("callers send it as Authorization: Bearer <key>"),
        None => {}
    }
    Ok(())
}

fn describe_expiry(expires: Option<i64>) -> String {
    match expires {
        Some(e) => format!(", expires {}", when(e)),
        None => ", no expiry".to_owned(),
    }
}

fn when(t: i64) -> String {
    jiff::Timestamp::from_second(t)
        .map(|ts| ts.strftime("%Y-%m-%d %H:%M:%S UTC").to_string())
        .unwrap_or_else(|_| t.to_string())
}

fn status(k: &IssuedKey, now: i64) -> String {
    match (k.status(now), &k.successor) {
        (KeyStatus::Revoked, _) => "revoked".into(),
        (KeyStatus::Expired, _) => "expired".into(),
        (KeyStatus::Active, Some(s)) => format!("rotated to {s}, in grace"),
        (KeyStatus::Active, None) => "active".into(),
    }
}

fn print_table(keys: &[IssuedKey], now: i64) -> std::io::Result<()> {
    use std::io::Write as _;
    if keys.is_empty() {
        eprintln!("no keys issued; create one with `hookwarden keys create --route NAME`");
        return Ok(());
    }
    let opt = |t: Option<i64>| t.map_or_else(|| "-".to_owned(), when);
    let rows: Vec<[String; 8]> = keys
        .iter()
        .map(|k| {
            [
                k.id.clone(),
                k.hint.clone(),
                k.name.as_deref().map_or_else(|| "-".into(), printable),
                printable(&k.route),
                when(k.created),
                opt(k.expires),
                opt(k.last_used),
                status(k, now),
            ]
        })
        .collect();
    let header = [
        "ID",
        "KEY",
        "NAME",
        "ROUTE",
        "CREATED",
        "EXPIRES",
        "LAST USED",
        "STATUS",
    ];
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for r in &rows {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let mut s = String::new();
        for (i, (c, w)) in cells.iter().zip(&widths).enumerate() {
            if i + 1 == cells.len() {
                s.push_str(c);
            } else {
                s.push_str(c);
                s.push_str(&" ".repeat(w - c.chars().count() + 2));
            }
        }
        s
    };
    let mut out = std::io::stdout().lock();
    writeln!(out, "{}", line(header.to_vec()))?;
    for r in &rows {
        writeln!(out, "{}", line(r.iter().map(String::as_str).collect()))?;
    }
    Ok(())
}

fn key_json(k: &IssuedKey, now: i64) -> serde_json::Value {
    serde_json::json!({
        "id": k.id,
        "hint": k.hint,
        "name": k.name,
        "route": k.route,
        "created": k.created,
        "expires": k.expires,
        "revoked": k.revoked,
        "last_used": k.last_used,
        "successor": k.successor,
        "status": match k.status(now) {
            KeyStatus::Active => "active",
            KeyStatus::Expired => "expired",
            KeyStatus::Revoked => "revoked",
        },
    })
}
