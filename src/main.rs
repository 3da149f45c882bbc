//! The `hookwarden` binary: parse arguments, run, exit. Everything else is the library.

mod cli;

/// mimalloc instead of glibc's allocator: a proxy allocates and frees many small buffers per
/// request from several threads, and glibc's arena consolidation showed up at ~8% of the CPU
/// profile under load (see docs/benchmarks.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    cli::main()
}
