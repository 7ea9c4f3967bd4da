//! The `ddrelay` binary: everything lives in the library; see `cli.rs`.

fn main() -> std::process::ExitCode {
    ddrelay::cli::main()
}
