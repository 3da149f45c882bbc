//! `hookwarden events`: query the audit log, also while the server runs (the store is in WAL
//! mode, so reading never blocks the gateway's writer).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Args;

use hookwarden::config;
use hookwarden::store::Store;
use hookwarden::store::events::{FilterArgs, StoredEvent, aggregated_since, list_events};

/// Arguments of `hookwarden events`.
#[derive(Debug, Args)]
pub struct EventsArgs {
    /// The config file whose `[storage] path` is read (other sections are not checked).
    #[arg(
        long,
        short,
        env = "HOOKWARDEN_CONFIG",
        default_value = "hookwarden.toml"
    )]
    config: PathBuf,
    /// The SQLite file to read, instead of the config's `[storage] path`.
    #[arg(long)]
    db: Option<PathBuf>,
    /// Only this route.
    #[arg(long)]
    route: Option<String>,
    /// Only this outcome: allowed, denied or failed.
    #[arg(long)]
    outcome: Option<String>,
    /// Only this reason code (e.g. key_invalid).
    #[arg(long)]
    reason: Option<String>,
    /// Only events of the last DURATION (e.g. 15m, 1h, 7d).
    #[arg(long, value_name = "DURATION")]
    since: Option<String>,
    /// Only this client address.
    #[arg(long)]
    ip: Option<String>,
    /// Only the request with this id (the `request_id` of an error response).
    #[arg(long, value_name = "ID")]
    request_id: Option<String>,
    /// Show at most N events (the latest ones).
    #[arg(long, short = 'n', default_value_t = 50)]
    limit: u32,
    /// Keep printing new events as they are written (Ctrl-C to stop).
    #[arg(long, short)]
    follow: bool,
    /// One JSON object per line instead of a table.
    #[arg(long)]
    json: bool,
}

/// How often `--follow` looks for new events.
const FOLLOW_EVERY: Duration = Duration::from_millis(500);

/// Runs `hookwarden events`.
pub fn run(a: EventsArgs) -> anyhow::Result<ExitCode> {
    let path = store_path(&a)?;
    let store = Store::open_for_command(&path)
        .with_context(|| format!("cannot open the store {}", path.display()))?;
    let args = FilterArgs {
        route: a.route.clone(),
        outcome: a.outcome.clone(),
        reason: a.reason.clone(),
        since: a.since.clone(),
        ip: a.ip.clone(),
        request_id: a.request_id.clone(),
        limit: Some(u64::from(a.limit)),
        before: None,
        after: None,
    };
    let now = jiff::Timestamp::now();
    let mut filter = args
        .resolve(now, 100_000)
        .map_err(|m| anyhow::anyhow!("{m}"))?;
    let mut events = list_events(&store.lock(), &filter)?;
    events.reverse();
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    if !a.json {
        writeln!(out, "{}", header())?;
    }
    print(&mut out, &events, a.json)?;
    let mut last = events.last().map(|e| e.id);
    if !a.follow {
        if !a.json {
            if events.is_empty() {
                writeln!(out, "(no events match)")?;
            }
            let since = filter.since.unwrap_or(jiff::Timestamp::UNIX_EPOCH);
            let aggregated = aggregated_since(&store.lock(), since)?;
            if aggregated > 0 {
                eprintln!(
                    "note: {aggregated} more events in this period were recorded only as counts \
                     (the audit writer was behind); they are in the dashboard's charts and /api/stats"
                );
            }
        }
        return Ok(ExitCode::SUCCESS);
    }
    if last.is_none() {
        // Nothing matched yet: follow from the newest event of any kind.
        last = Some(store.lock().query_row(
            "SELECT COALESCE(MAX(id), 0) FROM events",
            [],
            |r| r.get(0),
        )?);
    }
    filter.since = None;
    filter.limit = 1000;
    drop(out);
    loop {
        std::thread::sleep(FOLLOW_EVERY);
        filter.after_id = last;
        let new = list_events(&store.lock(), &filter)?;
        if let Some(e) = new.last() {
            last = Some(e.id);
        }
        let mut out = stdout.lock();
        print(&mut out, &new, a.json)?;
        out.flush()?;
    }
}

fn store_path(a: &EventsArgs) -> anyhow::Result<PathBuf> {
    let path = match &a.db {
        Some(p) => p.clone(),
        None => {
            config::load_storage(&a.config)
                .with_context(|| {
                    format!(
                        "cannot find the store through {}; pass --db FILE or --config FILE",
                        a.config.display()
                    )
                })?
                .path
        }
    };
    if path.as_os_str() == ":memory:" {
        bail!(
            "the store is in memory ([storage] path = \":memory:\"): its events live only inside \
             the running gateway; read them from the admin API (GET /api/events) or the dashboard"
        );
    }
    if !Path::new(&path).exists() {
        bail!(
            "there is no store at {}; start `hookwarden serve` with this config first, or check \
             [storage] path",
            path.display()
        );
    }
    Ok(path)
}

fn header() -> String {
    format!(
        "{:<23}  {:<12}  {:<15}  {:<6}  {:>3}  {:<7}  {:<22}  {:>9}  {}",
        "TIME (UTC)",
        "ROUTE",
        "CLIENT",
        "METHOD",
        "ST",
        "OUTCOME",
        "REASON",
        "LATENCY",
        "REQUEST ID"
    )
}

fn print(out: &mut impl Write, events: &[StoredEvent], json: bool) -> anyhow::Result<()> {
    for e in events {
        if json {
            writeln!(out, "{}", serde_json::to_string(e)?)?;
            continue;
        }
        let mut reason = e.reason.clone().unwrap_or_else(|| "-".into());
        if !e.flags.is_empty() {
            reason = format!("{reason} [{}]", e.flags.join(","));
        }
        writeln!(
            out,
            "{:<23}  {:<12}  {:<15}  {:<6}  {:>3}  {:<7}  {:<22}  {:>7.1}ms  {}",
            e.time.get(..23).unwrap_or(&e.time).replace('T', " "),
            e.route.as_deref().unwrap_or("-"),
            e.client_ip,
            e.method,
            e.status,
            e.outcome,
            reason,
            e.latency_ms,
            e.request_id
        )?;
    }
    Ok(())
}
