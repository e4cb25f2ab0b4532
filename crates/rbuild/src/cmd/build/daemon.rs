//! `rbuild build --engine dood|dind`: the build spec as a request to a Docker daemon, after
//! refusing by name what only the native engine has.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use rbuild_engine::{
    BuildRequest, ContextSource, DindOptions, DockerfileSource, Engine, NetworkMode, Output,
    ProgressMode, SecretSource,
};
use rbuild_session::{BuildSpec, OutputKind};

use crate::cmd::Globals;

use super::args::{BuildArgs, CompressionArg, EngineKind, IsolationArg};

/// The options only the native engine has, refused by name with the daemon engines.
pub(super) fn refuse_native_only(args: &BuildArgs) -> Result<()> {
    let engine = match args.engine {
        EngineKind::Dood => "dood",
        EngineKind::Dind => "dind",
        EngineKind::Native => return Ok(()),
    };
    let unsupported = [
        (
            !args.build_contexts.is_empty(),
            "--build-context (the daemon engines do not pass named contexts to the daemon)",
        ),
        (
            args.isolation != IsolationArg::Auto,
            "--isolation (the daemon isolates RUN steps itself)",
        ),
        (
            !args.security_opts.is_empty(),
            "--security-opt (the daemon applies its own seccomp profile)",
        ),
        (
            args.load_into_store,
            "--load-into-store (the image stays in the daemon; use -o type=docker)",
        ),
        (
            args.cache_repo.is_some() || !args.cache_to.is_empty() || !args.cache_from.is_empty(),
            "--cache-to, --cache-from and --cache-repo (the daemon's builder keeps its cache \
             locally)",
        ),
        (args.reproducible, "--reproducible"),
        (
            !args.skip_tls_verify_registries.is_empty() || !args.registry_certificates.is_empty(),
            "--skip-tls-verify-registry and --registry-ca (the daemon's own registry settings \
             apply)",
        ),
        (
            !args.no_cache_filter.is_empty() || args.explain_misses,
            "--no-cache-filter and --explain-misses",
        ),
        (
            args.compression != CompressionArg::Gzip || args.compression_level.is_some(),
            "--compression and --compression-level",
        ),
        (args.source_date_epoch.is_some(), "--source-date-epoch"),
        (args.check, "--check"),
        (
            !args.allow.is_empty(),
            "--allow (the daemon grants no entitlements to a build through its API)",
        ),
        (
            args.max_parallelism.is_some(),
            "--max-parallelism (the daemon schedules its own steps)",
        ),
        (
            args.registry_timeouts.any_set(),
            "--registry-timeout and the other registry timeouts (the daemon pulls and pushes \
             with its own)",
        ),
    ];
    for (present, what) in unsupported {
        if present {
            bail!("{what} is not supported with --engine {engine}; use --engine native");
        }
    }
    Ok(())
}

/// The spec as a daemon request; outputs the daemon engines cannot write are refused.
fn request_from_spec(spec: &BuildSpec) -> Result<BuildRequest> {
    let mut req = BuildRequest::new(match &spec.context {
        rbuild_session::ContextSource::Dir(dir) => ContextSource::Dir(dir.clone()),
        rbuild_session::ContextSource::TarFile(path) => ContextSource::TarFile(path.clone()),
        rbuild_session::ContextSource::Stdin => ContextSource::Stdin,
    });
    req.dockerfile = match &spec.dockerfile {
        rbuild_session::DockerfileSource::Default => DockerfileSource::Default,
        rbuild_session::DockerfileSource::Path(path) => DockerfileSource::Path(path.clone()),
        rbuild_session::DockerfileSource::Inline(text) => DockerfileSource::Inline(text.clone()),
    };
    req.tags = spec.tags.clone();
    req.build_args = spec.build_args.clone();
    req.labels = spec.labels.clone();
    req.target = spec.target.clone();
    req.platform = spec.platform.clone();
    req.no_cache = spec.no_cache;
    req.pull = spec.pull;
    req.network = match spec.network {
        rbuild_session::NetworkMode::Default => NetworkMode::Default,
        rbuild_session::NetworkMode::Host => NetworkMode::Host,
        rbuild_session::NetworkMode::None => NetworkMode::None,
    };
    req.push = spec.pushes();
    for output in &spec.outputs {
        if output.rewrite_timestamp || output.source_date_epoch.is_some() {
            bail!(
                "-o type={}: rewrite-timestamp= and source-date-epoch= are not passed to the \
                 daemon engines; use the native engine",
                output.kind
            );
        }
        match (output.kind, &output.dest) {
            (OutputKind::Docker, Some(dest)) => {
                req.outputs.push(Output::DockerArchive(dest.clone()))
            }
            (OutputKind::Registry, _) => req.outputs.push(Output::Registry),
            (kind, _) => bail!(
                "-o type={kind} is not supported with the daemon engines yet; use type=docker \
                 or type=registry"
            ),
        }
    }
    req.iidfile = spec.iidfile.clone();
    req.digest_file = spec.digest_file.clone();
    req.metadata_file = spec.metadata_file.clone();
    for secret in &spec.secrets {
        let source = match &secret.source {
            rbuild_session::SecretSource::File(path) => SecretSource::File(absolute(path)?),
            rbuild_session::SecretSource::Env(var) => SecretSource::Env(var.clone()),
        };
        req.secrets.push((secret.id.clone(), source));
    }
    for ssh in &spec.ssh {
        req.ssh
            .push((ssh.id.clone(), agent_socket(&ssh.id, &ssh.paths)?));
    }
    req.quiet = spec.progress == rbuild_session::ProgressMode::Quiet;
    req.json_progress = spec.progress == rbuild_session::ProgressMode::Json;
    Ok(req)
}

/// The agent socket an `--ssh` id forwards to: `$SSH_AUTH_SOCK` when no path is given, else
/// the one path, which must be a socket (the daemon engines forward agents; loading key files
/// into an agent is the native engine's).
fn agent_socket(id: &str, paths: &[PathBuf]) -> Result<PathBuf> {
    use std::os::unix::fs::FileTypeExt;
    let path = match paths {
        [] => match std::env::var_os("SSH_AUTH_SOCK") {
            Some(sock) if !sock.is_empty() => PathBuf::from(sock),
            _ => bail!(
                "--ssh {id} forwards the ssh agent of SSH_AUTH_SOCK, which is not set; start an \
                 agent or give its socket as --ssh {id}=PATH"
            ),
        },
        [one] => one.clone(),
        _ => bail!(
            "--ssh {id} names several paths; with the daemon engines it forwards one agent \
             socket (use --engine native for key files)"
        ),
    };
    let meta = std::fs::metadata(&path)
        .with_context(|| format!("--ssh {id}: cannot use {}", path.display()))?;
    if !meta.file_type().is_socket() {
        bail!(
            "--ssh {id}: {} is not an agent socket; the daemon engines forward an ssh agent \
             (key files are loaded by --engine native only)",
            path.display()
        );
    }
    absolute(&path)
}

fn dind_storage(globals: &Globals, args: &BuildArgs) -> Result<PathBuf> {
    if let Some(dir) = &args.dind_storage {
        return Ok(dir.clone());
    }
    let root = match &globals.root {
        Some(root) => root.clone(),
        None => rbuild_store::default_root()?,
    };
    Ok(root.join("dind"))
}

fn absolute(path: &Path) -> Result<PathBuf> {
    std::path::absolute(path).with_context(|| format!("cannot resolve {}", path.display()))
}

/// Runs the build on a daemon. `refuse_native_only` has been called on `args` (before the
/// spec was made, so its refusal comes first).
pub fn run(globals: &Globals, args: &BuildArgs, spec: &BuildSpec) -> Result<u8> {
    let req = request_from_spec(spec)?;
    let engine = match args.engine {
        EngineKind::Dind => {
            let mut options = DindOptions::new(absolute(&dind_storage(globals, args)?)?);
            options.registry_mirrors = args.registry_mirrors.clone();
            options.insecure_registries = args.insecure_registries.clone();
            Engine::Dind(options)
        }
        _ => {
            if !args.registry_mirrors.is_empty() || !args.insecure_registries.is_empty() {
                bail!(
                    "--registry-mirror and --insecure-registry configure the private daemon of \
                     --engine dind; with --engine dood they are the existing daemon's settings"
                );
            }
            if args.dind_storage.is_some() {
                bail!("--dind-storage only applies to --engine dind");
            }
            Engine::Dood
        }
    };
    let mode = if req.quiet {
        ProgressMode::Quiet
    } else if req.json_progress {
        ProgressMode::Json
    } else {
        ProgressMode::Plain
    };
    let mut stderr = std::io::stderr();
    match rbuild_engine::run(&req, &engine, mode, &mut stderr) {
        Ok(result) => {
            if req.quiet {
                println!("{}", result.image_id);
            }
            Ok(0)
        }
        Err(err) => match err.downcast_ref::<rbuild_engine::Interrupted>() {
            Some(interrupted) => {
                eprintln!("error: {interrupted}");
                Ok(interrupted.exit_code)
            }
            None => Err(err),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The daemon engines would not pass BuildKit's exporter attributes on: refused by name
    /// rather than dropped.
    #[test]
    fn exporter_attributes_are_refused_with_the_daemon_engines() {
        let mut spec = BuildSpec::new(rbuild_session::ContextSource::Dir(".".into()));
        let mut output =
            rbuild_session::OutputSpec::new(OutputKind::Docker, Some("out.tar".into())).unwrap();
        assert!(request_from_spec(&spec).is_ok());
        output.set_attribute("rewrite-timestamp", "true").unwrap();
        spec.outputs.push(output);
        let err = request_from_spec(&spec).unwrap_err().to_string();
        assert!(err.contains("rewrite-timestamp="), "{err}");
        assert!(err.contains("native engine"), "{err}");
    }
}
