//! The `cyan` binary: parse, run, exit with a documented code. All logic is in the library.

fn main() -> std::process::ExitCode {
    cyan::cli::main_with_args()
}
