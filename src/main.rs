//! The pleo-gateway binary: the command line lives in `cli/`.

/// mimalloc over glibc malloc: fewer CPU cycles per request under load
/// (docs/benchmarks.md has the before/after runs).
#[cfg(feature = "mimalloc")]
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    pleo_gateway::cli::main()
}
