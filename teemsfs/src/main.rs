//! The `teemsfs` command. Thin: parse the command line ([`cli`]) and run it.

mod cli;

fn main() -> std::process::ExitCode {
    cli::main()
}
