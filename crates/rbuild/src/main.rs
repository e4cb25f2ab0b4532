//! The `rbuild` command line. Deliberately thin: each subcommand lives in `cmd/` and calls
//! into the library crates, which hold all the logic.

mod cmd;
mod escape;
mod init;

use std::process::ExitCode;

use clap::{CommandFactory, Parser, Subcommand};

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
    /// Build an image from a Dockerfile (the default: `rbuild [OPTIONS] CONTEXT`).
    Build(Box<cmd::build::BuildArgs>),
    /// Parse a Dockerfile and print it (BuildKit's AST dump, or typed JSON).
    Parse(cmd::parse::ParseArgs),
    /// List images in the store.
    Images(cmd::images::ImagesArgs),
    /// Show images' manifests and configs as JSON.
    Inspect(cmd::images::InspectArgs),
    /// Give an image another name.
    Tag(cmd::images::TagArgs),
    /// Remove image names (and images with their last name).
    Rmi(cmd::images::RmiArgs),
    /// Remove untagged images and unused blobs.
    Prune(cmd::images::PruneArgs),
    /// Write images to a docker or OCI archive.
    Save(cmd::images::SaveArgs),
    /// Load images from a docker or OCI archive.
    Load(cmd::images::LoadArgs),
    /// Pull an image from a registry into the store.
    Pull(cmd::registry::PullArgs),
    /// Push an image from the store to a registry.
    Push(cmd::registry::PushArgs),
    /// Log in to a registry.
    Login(cmd::registry::LoginArgs),
    /// Remove stored registry credentials.
    Logout(cmd::registry::LogoutArgs),
    /// Compare two images: files, layers, config and history (exit 0 equal, 1 different).
    Diff(cmd::diff::DiffArgs),
    /// Verify the store: rehash every blob, check referenced blobs are present.
    Fsck(cmd::fsck::FsckArgs),
    /// Show what isolation this machine allows (user namespaces, subuids, overlay, chroot).
    Info(cmd::info::InfoArgs),
    /// Build with Kaniko's executor flags and their Kaniko meaning (also run as
    /// `/kaniko/executor`); see docs/kaniko.md.
    #[command(disable_help_flag = true)]
    Kaniko {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true, num_args = 0..)]
        args: Vec<String>,
    },
}

fn main() -> ExitCode {
    // A re-executed sandbox helper must run before anything else (no threads, no parsing).
    // So must the container-root worker (rbuild-rootfs), this executable again too.
    rbuild_executor::maybe_run_root_worker();
    rbuild_sandbox::maybe_run_helper();
    // As a container's PID 1, leave PID 1 to a minimal init that forwards signals and reaps.
    init::become_init_if_pid1();
    let argv: Vec<std::ffi::OsString> = std::env::args_os().collect();
    if argv
        .first()
        .is_some_and(|a| cmd::kaniko::invoked_as_executor(a))
    {
        // Kaniko's executor: every argument is Kaniko's; the store comes from RBUILD_ROOT.
        let args: Vec<String> = argv[1..]
            .iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        let globals = cmd::Globals {
            root: std::env::var_os("RBUILD_ROOT").map(std::path::PathBuf::from),
        };
        install_cancel("build");
        return exit(cmd::kaniko::run(&globals, &args));
    }
    let subcommands: Vec<String> = Cli::command()
        .get_subcommands()
        .flat_map(|c| {
            std::iter::once(c.get_name().to_string()).chain(c.get_all_aliases().map(str::to_string))
        })
        .collect();
    let cli = Cli::parse_from(cmd::build::with_default_subcommand(argv, &subcommands));
    let what = match &cli.command {
        // The daemon engines handle SIGINT/SIGTERM themselves: they stop the daemon's build
        // (and a private daemon) before exiting.
        Command::Build(args) if args.engine != cmd::build::EngineKind::Native => "",
        Command::Build(_) | Command::Kaniko { .. } => "build",
        Command::Pull(_) => "pull",
        Command::Push(_) => "push",
        Command::Load(_) => "load",
        Command::Save(_) => "save",
        Command::Prune(_) => "prune",
        _ => "rbuild",
    };
    if !what.is_empty() {
        install_cancel(what);
    }
    let result = match cli.command {
        Command::Info(args) => cmd::info::run(&cli.globals, args),
        Command::Fsck(args) => cmd::fsck::run(&cli.globals, args),
        Command::Diff(args) => cmd::diff::run(&cli.globals, args),
        Command::Build(args) => cmd::build::run(&cli.globals, *args),
        Command::Parse(args) => cmd::parse::run(&cli.globals, args),
        Command::Images(args) => cmd::images::run_images(&cli.globals, args),
        Command::Inspect(args) => cmd::images::run_inspect(&cli.globals, args),
        Command::Tag(args) => cmd::images::run_tag(&cli.globals, args),
        Command::Rmi(args) => cmd::images::run_rmi(&cli.globals, args),
        Command::Prune(args) => cmd::images::run_prune(&cli.globals, args),
        Command::Save(args) => cmd::images::run_save(&cli.globals, args),
        Command::Load(args) => cmd::images::run_load(&cli.globals, args),
        Command::Pull(args) => cmd::registry::run_pull(&cli.globals, args),
        Command::Push(args) => cmd::registry::run_push(&cli.globals, args),
        Command::Login(args) => cmd::registry::run_login(&cli.globals, args),
        Command::Logout(args) => cmd::registry::run_logout(&cli.globals, args),
        Command::Kaniko { args } => cmd::kaniko::run(&cli.globals, &args),
    };
    exit(result)
}

/// SIGINT/SIGTERM/SIGHUP clean up the command's files (see cmd/cancel.rs).
fn install_cancel(what: &'static str) {
    if let Err(e) = cmd::cancel::install(what) {
        eprintln!(
            "warning: Ctrl-C will not clean up after itself: installing signal handlers: {e}"
        );
    }
}

fn exit(result: anyhow::Result<u8>) -> ExitCode {
    if cmd::cancel::cancelled() {
        // The signal watcher is removing the build's files and ends the process with the
        // signal's exit code; whatever the interrupted command returned is not the outcome.
        loop {
            std::thread::park();
        }
    }
    match result {
        Ok(code) => ExitCode::from(code),
        Err(err) => {
            eprintln!("error: {}", error_text(&err));
            ExitCode::from(1)
        }
    }
}

/// The error and its causes, `: `-separated like anyhow's `{:#}`, but with each message
/// shown once (a wrapper whose text already includes its cause's, such as a build error
/// around a located Dockerfile error, would otherwise print it twice) and with control
/// characters escaped (messages quote Dockerfiles and registries' replies).
fn error_text(err: &anyhow::Error) -> String {
    let mut text = String::new();
    for cause in err.chain() {
        let message = cause.to_string();
        if message.is_empty() || text.contains(&message) {
            continue;
        }
        if !text.is_empty() {
            text.push_str(": ");
        }
        text.push_str(&message);
    }
    escape::escape_controls(&text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug)]
    struct Located;
    impl std::fmt::Display for Located {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("Dockerfile:3:1: unknown instruction: COPPY\n   3 | COPPY a b")
        }
    }
    impl std::error::Error for Located {}

    #[derive(Debug)]
    struct Wrapper(Located);
    impl std::fmt::Display for Wrapper {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(f, "{}", self.0)
        }
    }
    impl std::error::Error for Wrapper {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            Some(&self.0)
        }
    }

    #[test]
    fn each_message_is_printed_once_and_controls_escaped() {
        let err = anyhow::Error::new(Wrapper(Located));
        assert_eq!(
            error_text(&err),
            "Dockerfile:3:1: unknown instruction: COPPY\n   3 | COPPY a b"
        );
        let err = anyhow::Error::new(Wrapper(Located)).context("building ctx");
        assert_eq!(
            error_text(&err),
            "building ctx: Dockerfile:3:1: unknown instruction: COPPY\n   3 | COPPY a b"
        );
        let err = anyhow::anyhow!("registry said: \x1b]0;pwned\x07").context("pulling");
        assert_eq!(
            error_text(&err),
            "pulling: registry said: \\x1b]0;pwned\\x07"
        );
    }
}
