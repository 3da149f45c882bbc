//! The `hookwarden` binary: parse arguments, run, exit. Everything else is the library.

mod cli;

fn main() -> std::process::ExitCode {
    cli::main()
}
