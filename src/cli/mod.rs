//! The command line: `serve`, `check`, `demo`, and the operations commands.
//!
//! `main` → `run` → exit code. Each command is a small function over the library; errors are
//! reported with their whole cause chain and, where there is one, the next step to take.

mod events;
mod keys;
mod queue;
mod sign;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};

use hookwarden::app::App;
use hookwarden::config::{self, ConfigError, Loaded, Severity};
use hookwarden::logging::{self, LogFormat};

/// A security gateway for chatbot and automation webhooks.
#[derive(Debug, Parser)]
#[command(name = "hookwarden", version, about, long_about = None)]
struct Cli {
    /// Log line format.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the gateway with a config file.
    Serve(ConfigArg),
    /// Validate a config file and point out risky settings; exit 1 on errors.
    Check(ConfigArg),
    /// Run a self-contained demo: gateway, test upstream and curl examples, no config needed.
    Demo(DemoArgs),
    /// Issue, list, revoke and rotate API keys kept in the store.
    Keys(keys::KeysArgs),
    /// Query the audit log (works while the server runs).
    Events(events::EventsArgs),
    /// List, retry and drop queued messages of async routes (works while the server runs).
    Queue(queue::QueueArgs),
    /// Print the headers a webhook sender would add to the body on stdin.
    Sign(sign::SignArgs),
}

#[derive(Debug, Args)]
struct ConfigArg {
    /// The config file.
    #[arg(
        long,
        short,
        env = "HOOKWARDEN_CONFIG",
        default_value = "hookwarden.toml"
    )]
    config: PathBuf,
}

#[derive(Debug, Args)]
struct DemoArgs {
    /// Where the demo gateway listens.
    #[arg(long, default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    /// Where the demo chat page is served (an allowed origin of the demo's browser route).
    #[arg(long, default_value = "127.0.0.1:8081")]
    page_listen: SocketAddr,
    /// Where the demo's admin API and dashboard listen.
    #[arg(long, default_value = "127.0.0.1:9900")]
    admin_listen: SocketAddr,
}

/// Parses the arguments, runs the command and maps the result to an exit code.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let _flush_logs_at_exit = logging::init(cli.log_format);
    match run(cli) {
        Ok(code) => code,
        // The reader of a listing went away (`hookwarden events | head`): not an error.
        Err(e) if is_broken_pipe(&e) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", report(&e));
            ExitCode::FAILURE
        }
    }
}

/// True when `e` comes from writing to a pipe whose reader has closed it.
fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

/// The error and its causes on one line, each cause once: many errors already quote their
/// cause (\"cannot listen on …: address in use\"), and `{:#}` would repeat it.
fn report(e: &anyhow::Error) -> String {
    let mut out = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if out.contains(&text) {
            continue;
        }
        if !out.is_empty() {
            out.push_str(": ");
        }
        out.push_str(&text);
    }
    out
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Serve(a) => serve(&a.config),
        Command::Check(a) => Ok(check(&a.config)),
        Command::Demo(a) => demo(a.listen, a.page_listen, a.admin_listen),
        Command::Keys(a) => keys::run(a),
        Command::Events(a) => events::run(a),
        Command::Queue(a) => queue::run(a),
        Command::Sign(a) => sign::run(a),
    }
}

/// Loads a config for `serve`: warnings are logged, errors end the command with advice.
fn load_for_serve(path: &Path) -> anyhow::Result<Loaded> {
    match config::load_file(path) {
        Ok(loaded) => {
            for w in &loaded.warnings {
                tracing::warn!(key = %w.key, fix = %w.fix, "config: {}", w.problem);
            }
            Ok(loaded)
        }
        Err(e @ ConfigError::Invalid(_)) => Err(anyhow::anyhow!(
            "{e}\n\nrun `hookwarden check --config {}` after fixing to confirm",
            path.display()
        )),
        Err(e) => Err(e.into()),
    }
}

/// The runtime for everything but the public listener (which runs its own thread per core):
/// the admin API, the audit writer, alerts and housekeeping. Two threads are plenty.
fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

fn serve(path: &Path) -> anyhow::Result<ExitCode> {
    let loaded = load_for_serve(path)?;
    let config = loaded.config;
    let rt = runtime()?;
    let source = path.to_owned();
    rt.block_on(async move {
        let app = App::start_from(&config, Some(source)).await?;
        tracing::info!(
            addr = %app.local_addr(),
            tls = config.server.tls.is_some(),
            routes = config.routes.len(),
            "hookwarden listening"
        );
        if let Some(admin) = app.admin_addr() {
            tracing::info!(addr = %admin, "admin API, /metrics and dashboard listening");
        }
        reload_on_sighup(app.reloader().clone());
        app.run(shutdown_signal()).await;
        anyhow::Ok(())
    })?;
    Ok(ExitCode::SUCCESS)
}

fn check(path: &Path) -> ExitCode {
    match config::load_file(path) {
        Ok(loaded) => {
            for w in &loaded.warnings {
                println!("{w}");
            }
            let routes = loaded.config.routes.len();
            println!(
                "{}: ok ({routes} route{}, {} warning{})",
                path.display(),
                if routes == 1 { "" } else { "s" },
                loaded.warnings.len(),
                if loaded.warnings.len() == 1 { "" } else { "s" },
            );
            ExitCode::SUCCESS
        }
        Err(ConfigError::Invalid(issues)) => {
            for i in &issues {
                println!("{i}");
            }
            let errors = issues
                .iter()
                .filter(|i| i.severity == Severity::Error)
                .count();
            println!(
                "{}: {errors} error{}; the gateway will not start with this config",
                path.display(),
                if errors == 1 { "" } else { "s" }
            );
            ExitCode::FAILURE
        }
        Err(e) => {
            println!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn demo(
    listen: SocketAddr,
    page_listen: SocketAddr,
    admin_listen: SocketAddr,
) -> anyhow::Result<ExitCode> {
    let rt = runtime()?;
    rt.block_on(async move {
        let demo = hookwarden::demo::Demo::start_with(listen, page_listen, admin_listen)
            .await
            .with_context(|| format!("cannot start the demo on {listen} (chat page on {page_listen}, admin on {admin_listen}); is something else listening there? try `hookwarden demo --listen 127.0.0.1:8181 --page-listen 127.0.0.1:8182 --admin-listen 127.0.0.1:9981`"))?;
        println!("{}", demo.instructions());
        let gw = demo.addr();
        tokio::spawn(async move {
            let (allowed, refused) = hookwarden::demo::generate_traffic(gw).await;
            tracing::info!(allowed, refused, "demo traffic sent; see the dashboard");
        });
        demo.run(shutdown_signal()).await;
        anyhow::Ok(())
    })?;
    Ok(ExitCode::SUCCESS)
}

/// Reloads the config on every SIGHUP; the reloader logs the outcome (and the errors of a
/// refused config, while the running one keeps serving).
fn reload_on_sighup(reloader: std::sync::Arc<hookwarden::admin::reload::Reloader>) {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        // Registered here, before the listener serves, so an early SIGHUP never hits the
        // default action (terminate).
        let Ok(mut hup) = signal(SignalKind::hangup()) else {
            tracing::warn!("cannot listen for SIGHUP; reload with POST /api/reload instead");
            return;
        };
        tokio::spawn(async move {
            while hup.recv().await.is_some() {
                tracing::info!("SIGHUP received: reloading the config");
                let r = reloader.clone();
                let _ = tokio::task::spawn_blocking(move || r.reload()).await;
            }
        });
    }
    #[cfg(not(unix))]
    let _ = reloader;
}

/// Completes on Ctrl-C or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => tracing::info!("Ctrl-C received"),
        () = term => tracing::info!("SIGTERM received"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn causes_are_reported_once_and_a_closed_pipe_is_not_an_error() {
        let io = std::io::Error::new(std::io::ErrorKind::AddrInUse, "address in use");
        let e = anyhow::Error::new(io).context("cannot listen on 127.0.0.1:1: address in use");
        assert_eq!(report(&e), "cannot listen on 127.0.0.1:1: address in use");
        let e = anyhow::anyhow!("outer").context("context");
        assert_eq!(report(&e), "context: outer");
        let pipe = anyhow::Error::new(std::io::Error::from(std::io::ErrorKind::BrokenPipe))
            .context("writing the listing");
        assert!(is_broken_pipe(&pipe));
        assert!(!is_broken_pipe(&e));
    }
}
