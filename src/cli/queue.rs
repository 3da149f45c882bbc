//! `hookwarden queue list|retry|drop`: the delivery queue of async routes, also while the
//! server runs. Changes are written to the store directly; a running gateway's delivery
//! workers re-read the queue every second, so they see them within about a second.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, bail};
use clap::{Args, Subcommand};

use hookwarden::config;
use hookwarden::queue::store::{self, ListFilter, Listed, MessageState};
use hookwarden::store::Store;

/// `hookwarden queue …`.
#[derive(Debug, Args)]
pub struct QueueArgs {
    #[command(subcommand)]
    command: QueueCommand,
}

#[derive(Debug, Subcommand)]
enum QueueCommand {
    /// Show the queue: counts per route, then messages (oldest first).
    List {
        #[command(flatten)]
        target: Target,
        /// Only this route.
        #[arg(long)]
        route: Option<String>,
        /// Only messages in this state: pending, dead or delivered.
        #[arg(long)]
        state: Option<String>,
        /// Show at most N messages (the latest ones), 1 or more.
        #[arg(long, short = 'n', default_value_t = 50, value_parser = clap::value_parser!(u32).range(1..))]
        limit: u32,
        /// One JSON object per message and line instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Deliver a message again now: a dead (or delivered) one becomes pending with its
    /// attempts reset; a pending one is tried at once. Or every dead letter of a route.
    Retry {
        #[command(flatten)]
        target: Target,
        /// The message's id (as `queue list` shows it).
        #[arg(required_unless_present = "all", conflicts_with = "all")]
        id: Option<String>,
        /// Every dead letter of --route.
        #[arg(long, requires = "route")]
        all: bool,
        /// The route, with --all.
        #[arg(long)]
        route: Option<String>,
    },
    /// Delete a message for good, whatever its state. Or, with --all, every message of a
    /// route in a state.
    Drop {
        #[command(flatten)]
        target: Target,
        /// The message's id (as `queue list` shows it).
        #[arg(required_unless_present = "all", conflicts_with = "all")]
        id: Option<String>,
        /// Every message of --route in --state.
        #[arg(long, requires_all = ["route", "state"])]
        all: bool,
        /// The route, with --all.
        #[arg(long)]
        route: Option<String>,
        /// The state, with --all: pending, dead or delivered.
        #[arg(long)]
        state: Option<String>,
    },
}

/// Which store to use.
#[derive(Debug, Args)]
struct Target {
    /// The config file whose `[storage] path` is used (other sections are not checked).
    #[arg(
        long,
        short,
        env = "HOOKWARDEN_CONFIG",
        default_value = "hookwarden.toml"
    )]
    config: PathBuf,
    /// The SQLite file to use, instead of the config's `[storage] path`.
    #[arg(long)]
    db: Option<PathBuf>,
}

impl Target {
    fn open(&self) -> anyhow::Result<Store> {
        let path = match &self.db {
            Some(p) => p.clone(),
            None => {
                config::load_storage(&self.config)
                    .with_context(|| {
                        format!(
                            "cannot find the store through {}; pass --db FILE or --config FILE",
                            self.config.display()
                        )
                    })?
                    .path
            }
        };
        if path.as_os_str() == ":memory:" {
            bail!(
                "the store is in memory ([storage] path = \":memory:\"): its queue lives only inside \
                 the running gateway; use the admin API (GET /api/queue) or the dashboard"
            );
        }
        if !Path::new(&path).exists() {
            bail!(
                "there is no store at {}; start `hookwarden serve` with this config first, or check \
                 [storage] path",
                path.display()
            );
        }
        Store::open_for_command(&path)
            .with_context(|| format!("cannot open the store {}", path.display()))
    }
}

fn state_arg(s: Option<&str>) -> anyhow::Result<Option<MessageState>> {
    match s {
        None => Ok(None),
        Some(s) => match MessageState::from_code(s) {
            Some(st) => Ok(Some(st)),
            None => bail!("--state \"{s}\" is not one of pending, dead, delivered"),
        },
    }
}

/// Runs `hookwarden queue …`.
pub fn run(a: QueueArgs) -> anyhow::Result<ExitCode> {
    let now = jiff::Timestamp::now().as_millisecond();
    match a.command {
        QueueCommand::List {
            target,
            route,
            state,
            limit,
            json,
        } => {
            let store = target.open()?;
            let filter = ListFilter {
                route,
                state: state_arg(state.as_deref())?,
                before: None,
                limit: limit.clamp(1, 100_000),
            };
            let conn = store.lock();
            let messages = store::list(&conn, &filter)?;
            let stdout = std::io::stdout();
            let mut out = stdout.lock();
            if json {
                for m in &messages {
                    writeln!(out, "{}", serde_json::to_string(m)?)?;
                }
                return Ok(ExitCode::SUCCESS);
            }
            let summary = store::summary(&conn, now, &[])?;
            if summary.is_empty() {
                writeln!(out, "(the queue is empty)")?;
                return Ok(ExitCode::SUCCESS);
            }
            writeln!(
                out,
                "{:<16}  {:>8}  {:>6}  {:>9}  OLDEST PENDING",
                "ROUTE", "PENDING", "DEAD", "DELIVERED"
            )?;
            for s in summary
                .iter()
                .filter(|s| filter.route.as_ref().is_none_or(|r| *r == s.route))
            {
                writeln!(
                    out,
                    "{:<16}  {:>8}  {:>6}  {:>9}  {}",
                    s.route,
                    s.pending,
                    s.dead,
                    s.delivered,
                    s.oldest_pending_seconds
                        .map_or("-".to_owned(), |a| format!("{a:.0}s ago"))
                )?;
            }
            writeln!(out)?;
            print_messages(&mut out, &messages)?;
            Ok(ExitCode::SUCCESS)
        }
        QueueCommand::Retry {
            target,
            id,
            all,
            route,
        } => {
            let store = target.open()?;
            if all {
                let route = route.unwrap_or_default();
                known_route(&store.lock(), &route, now)?;
                let n = store::retry_dead(&store.lock(), &route, now)?;
                println!("{n} dead message(s) of route {route} queued for delivery again");
                return Ok(ExitCode::SUCCESS);
            }
            let id = id.unwrap_or_default();
            match store::retry(&store.lock(), &id, now)? {
                Some(MessageState::Pending) => {
                    println!("{id} is pending; its next attempt is due now")
                }
                Some(was) => println!("{id} was {was}; it is pending again, attempts reset"),
                None => bail!("no queued message has the id {id}; see `hookwarden queue list`"),
            }
            Ok(ExitCode::SUCCESS)
        }
        QueueCommand::Drop {
            target,
            id,
            all,
            route,
            state,
        } => {
            let store = target.open()?;
            if all {
                let route = route.unwrap_or_default();
                let Some(state) = state_arg(state.as_deref())? else {
                    bail!("--all needs --state pending, dead or delivered");
                };
                known_route(&store.lock(), &route, now)?;
                let n = store::drop_all(&store.lock(), &route, state)?;
                println!("{n} {state} message(s) of route {route} dropped");
                return Ok(ExitCode::SUCCESS);
            }
            let id = id.unwrap_or_default();
            match store::drop_message(&store.lock(), &id)? {
                Some((route, was)) => println!("{id} ({was}, route {route}) dropped"),
                None => bail!("no queued message has the id {id}; see `hookwarden queue list`"),
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// Fails when the queue holds no message at all of `route` (a mistyped name would otherwise
/// act on nothing and succeed), naming the routes it holds.
fn known_route(conn: &rusqlite::Connection, route: &str, now: i64) -> anyhow::Result<()> {
    let summary = store::summary(conn, now, &[])?;
    if summary.iter().any(|s| s.route == route) {
        return Ok(());
    }
    let names: Vec<&str> = summary.iter().map(|s| s.route.as_str()).collect();
    bail!(
        "the queue holds no message of route \"{route}\"; routes in the queue: {}",
        if names.is_empty() {
            "none".to_owned()
        } else {
            names.join(", ")
        }
    )
}

fn print_messages(out: &mut impl Write, messages: &[Listed]) -> anyhow::Result<()> {
    if messages.is_empty() {
        writeln!(out, "(no messages match)")?;
        return Ok(());
    }
    writeln!(
        out,
        "{:<32}  {:<16}  {:<9}  {:>3}  {:<19}  {:<19}  LAST ERROR",
        "ID", "ROUTE", "STATE", "ATT", "RECEIVED (UTC)", "NEXT ATTEMPT (UTC)"
    )?;
    let short = |t: &Option<String>| {
        t.as_deref()
            .map(|s| s.get(..19).unwrap_or(s).replace('T', " "))
            .unwrap_or_else(|| "-".into())
    };
    for m in messages {
        let mut error = m.last_error.clone().unwrap_or_else(|| "-".into());
        if error.chars().count() > 80 {
            error = error.chars().take(79).collect::<String>() + "…";
        }
        writeln!(
            out,
            "{:<32}  {:<16}  {:<9}  {:>3}  {:<19}  {:<19}  {}",
            m.id,
            m.route,
            m.state,
            m.attempts,
            short(&Some(m.created.clone())),
            short(&m.next_attempt),
            error
        )?;
    }
    Ok(())
}
