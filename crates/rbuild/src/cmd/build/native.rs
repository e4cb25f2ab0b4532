//! `rbuild build --engine native` (the default): the spec handed to a library `Session`,
//! with progress printed in the chosen style. Everything the build does is the session's.

use anyhow::Result;
use rbuild_executor::tty_progress::{TtyPrinter, TtyProgress};
use rbuild_executor::{JsonProgress, NoProgress, PlainProgress, Progress};
use rbuild_session::{exporters_for, BuildSpec, Note, ProgressMode, Reporter, Session};

use crate::cmd::registry::{self, RegistryOptions, TransferProgressArg};
use crate::cmd::Globals;

use super::args::BuildArgs;

pub fn run(globals: &Globals, args: &BuildArgs, spec: &BuildSpec) -> Result<u8> {
    // Before opening the store or pulling anything: the build could not give a correct
    // image.
    spec.check()?;
    let exporters = exporters_for(&spec.outputs)?;
    let store = globals.open_store()?;
    let registry_options = RegistryOptions {
        insecure_registries: args.insecure_registries.clone(),
        skip_tls_verify: args.skip_tls_verify_registries.clone(),
        ca_files: args.registry_certificates.clone(),
        mirrors: args.registry_mirrors.clone(),
        timeouts: args.registry_timeouts.clone(),
    };
    let runtime = registry::runtime()?;
    let session = Session::new(&store, registry_options.client(), runtime.handle().clone());
    if args.check {
        return print_checks(&session.check_dockerfile(spec)?);
    }

    let mode = spec.progress;
    let quiet = mode == ProgressMode::Quiet;
    let mut tty = (mode == ProgressMode::Tty).then(|| TtyProgress::stderr(colour_wanted()));
    // Base pulls and pushes report in the build's style (above the live view in a terminal).
    let transfer: Box<dyn rbuild_transfer::Progress> = match &tty {
        Some(tty) => Box::new(TransferLines(tty.printer())),
        None => registry::progress_reporter(match mode {
            ProgressMode::Quiet => TransferProgressArg::Quiet,
            ProgressMode::Json => TransferProgressArg::Json,
            _ => TransferProgressArg::Plain,
        }),
    };
    let mut plain;
    let mut json;
    let mut none = NoProgress;
    let progress: &mut dyn Progress = match (mode, tty.as_mut()) {
        (_, Some(tty)) => tty,
        (ProgressMode::Quiet, _) => &mut none,
        (ProgressMode::Json, _) => {
            json = JsonProgress::stderr();
            &mut json
        }
        _ => {
            // RUN output and instruction text are untrusted: escape control characters.
            plain = PlainProgress::new(crate::escape::EscapingWriter::new(std::io::stderr()));
            &mut plain
        }
    };
    let mut notes = |note: Note| print_note(mode, note);
    let result = session.run(
        spec,
        &exporters,
        Reporter {
            progress,
            transfer: transfer.as_ref(),
            notes: &mut notes,
        },
    )?;
    if quiet {
        println!("{}", result.build.image_id);
    }
    Ok(0)
}

/// `--check`'s report, as buildx prints it (`Check complete, ...`): 1 when there is a
/// warning. The Dockerfile's text is untrusted: control characters are escaped.
fn print_checks(warnings: &[String]) -> Result<u8> {
    use std::io::Write as _;
    let mut out = crate::escape::EscapingWriter::new(std::io::stdout());
    match warnings.len() {
        0 => writeln!(out, "Check complete, no warnings found.")?,
        1 => writeln!(out, "Check complete, 1 warning has been found!")?,
        n => writeln!(out, "Check complete, {n} warnings have been found!")?,
    }
    for warning in warnings {
        writeln!(out, "WARNING: {warning}")?;
    }
    Ok(u8::from(!warnings.is_empty()))
}

/// What the session says besides progress events, printed as before the session existed:
/// pushes and warnings as plain lines, cache lines in the progress style.
fn print_note(mode: ProgressMode, note: Note) {
    match note {
        Note::Pushed { tag, digest } if mode != ProgressMode::Quiet => {
            eprintln!("pushed {tag}@{digest}")
        }
        Note::Pushed { .. } => {}
        Note::Warning(message) => eprintln!("warning: {message}"),
        Note::Cache(message) => match mode {
            ProgressMode::Quiet => {}
            ProgressMode::Json => eprintln!(
                "{}",
                serde_json::json!({"event": "cache", "message": message})
            ),
            ProgressMode::Plain | ProgressMode::Tty => eprintln!("{message}"),
        },
    }
}

/// Colour unless `NO_COLOR` is set to something (no-color.org).
fn colour_wanted() -> bool {
    std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
}

/// Transfer lines (base pulls, pushes) printed above the live view, not through it.
struct TransferLines(TtyPrinter);

impl rbuild_transfer::Progress for TransferLines {
    fn event(&self, event: &rbuild_transfer::Event) {
        self.0.line(&rbuild_transfer::plain_line(event));
    }
}
