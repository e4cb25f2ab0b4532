//! The `rbuild` command line. Deliberately thin: each subcommand lives in `cmd/` and calls
//! into the library crates, which hold all the logic.

mod cmd;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// A rootless, daemonless container image builder.
#[derive(Parser, Debug)]
#[command(name = "rbuild", version, about, long_about = None, propagate_version = true)]
struct Cli {
    #[command(flatten)]
    globals: cmd::Globals,

    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Parse a Dockerfile and print it (BuildKit's AST dump, or typed JSON).
    Parse(cmd::parse::ParseArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Parse(args) => cmd::parse::run(&cli.globals, args),
    };
    match result {
        Ok(code) => ExitCode::from(code),
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::from(1)
        }
    }
}

