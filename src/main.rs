//! The `cyan` binary: parse, run, exit with a documented code. All logic is in the library.

/// mimalloc: the proxy allocates a little per request (headers, bodies), and
/// glibc's malloc showed up as ~6% of its CPU under load.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    cyan::cli::main_with_args()
}
