//! The `rbuild` command line. Deliberately thin: each subcommand lives in `cmd/` and calls
//! into the library crates, which hold all the logic.

mod cmd;

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
    /// Verify the store: rehash every blob, check referenced blobs are present.
    Fsck(cmd::fsck::FsckArgs),
    /// Show what isolation this machine allows (user namespaces, subuids, overlay, chroot).
    Info(cmd::info::InfoArgs),
}

fn main() -> ExitCode {
    // A re-executed sandbox helper must run before anything else (no threads, no parsing).
    // Before the helper check: the container-root worker is this executable again.
    rbuild_build::register_root_tasks();
    rbuild_sandbox::maybe_run_helper();
    let subcommands: Vec<String> = Cli::command()
        .get_subcommands()
        .flat_map(|c| {
            std::iter::once(c.get_name().to_string()).chain(c.get_all_aliases().map(str::to_string))
        })
        .collect();
    let cli = Cli::parse_from(cmd::build::with_default_subcommand(
        std::env::args_os().collect(),
        &subcommands,
    ));
    let what = match &cli.command {
        Command::Build(_) => "build",
        Command::Pull(_) => "pull",
        Command::Push(_) => "push",
        Command::Load(_) => "load",
        Command::Save(_) => "save",
        Command::Prune(_) => "prune",
        _ => "rbuild",
    };
    if let Err(e) = cmd::cancel::install(what) {
        eprintln!(
            "warning: Ctrl-C will not clean up after itself: installing signal handlers: {e}"
        );
    }
    let result = match cli.command {
        Command::Info(args) => cmd::info::run(&cli.globals, args),
        Command::Fsck(args) => cmd::fsck::run(&cli.globals, args),
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
    };
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
            eprintln!("error: {err:#}");
            ExitCode::from(1)
        }
    }
}
