//! `rbuild build`: the command line of a build (Docker's and Kaniko's flags) resolved into
//! one `BuildSpec` (`spec.rs`), run by the native engine's library session (`native.rs`) or
//! sent to a Docker daemon (`daemon.rs`).

mod args;
mod daemon;
mod named_contexts;
mod native;
mod spec;

use anyhow::Result;

pub use args::{BuildArgs, EngineKind};
#[cfg(test)]
pub use spec::spec_from_args;

use super::Globals;

pub fn run(globals: &Globals, args: BuildArgs) -> Result<u8> {
    if args.engine == EngineKind::Native {
        // `_remote`: the fetched files of a context URL, kept until the build is over.
        let (spec, _remote) = spec::spec_and_remote_context(&args)?;
        return native::run(globals, &args, &spec);
    }
    // The daemon engines refuse native-only flags by name before anything else is checked.
    daemon::refuse_native_only(&args)?;
    let (spec, _remote) = spec::spec_and_remote_context(&args)?;
    daemon::run(globals, &args, &spec)
}

/// Makes `rbuild [OPTIONS] CONTEXT` mean `rbuild build [OPTIONS] CONTEXT`: when the first
/// argument after the global options is neither a subcommand nor help/version, `build` is
/// inserted there.
pub fn with_default_subcommand(
    mut args: Vec<std::ffi::OsString>,
    subcommands: &[String],
) -> Vec<std::ffi::OsString> {
    let mut i = 1;
    while let Some(arg) = args.get(i).and_then(|a| a.to_str()) {
        // The global options that may come before the subcommand.
        if arg == "--root" {
            i += 2;
        } else if arg.starts_with("--root=") {
            i += 1;
        } else {
            break;
        }
    }
    let Some(first) = args.get(i) else {
        return args;
    };
    let first = first.to_string_lossy();
    let passthrough = ["-h", "--help", "-V", "--version", "help"];
    if subcommands.iter().any(|s| *s == first) || passthrough.contains(&first.as_ref()) {
        return args;
    }
    args.insert(i, "build".into());
    args
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn build_is_the_default_subcommand() {
        let subs = vec!["build".to_string(), "parse".to_string()];
        let args = |v: &[&str]| v.iter().map(std::ffi::OsString::from).collect::<Vec<_>>();
        assert_eq!(
            with_default_subcommand(args(&["rbuild", "-t", "a", "."]), &subs),
            args(&["rbuild", "build", "-t", "a", "."])
        );
        assert_eq!(
            with_default_subcommand(args(&["rbuild", "--root", "/r", "."]), &subs),
            args(&["rbuild", "--root", "/r", "build", "."])
        );
        assert_eq!(
            with_default_subcommand(args(&["rbuild", "parse", "x"]), &subs),
            args(&["rbuild", "parse", "x"])
        );
        assert_eq!(
            with_default_subcommand(args(&["rbuild", "--help"]), &subs),
            args(&["rbuild", "--help"])
        );
    }
}
