//! Builds handed to a real Docker daemon: `--engine dood` talks to an existing daemon
//! (`DOCKER_HOST` or `/var/run/docker.sock`), `--engine dind` starts a private `dockerd` for
//! the build and stops it afterwards.
//!
//! Both build through the daemon's BuildKit (`buildkit`), or its classic builder when the
//! daemon has no BuildKit (see docs/engines.md).

pub mod auth;
pub mod buildkit;
pub mod context;
pub mod daemon_build;
pub mod dind;
pub mod host;
mod ignore_rules;
pub mod progress;
pub mod request;

use std::io::Write;

use anyhow::{Context, Result};

pub use daemon_build::BuildResult;
pub use dind::DindOptions;
pub use host::{DaemonAddress, DockerEnv};
pub use progress::{BuildFailure, ProgressMode};
pub use request::{
    BuildRequest, ContextSource, DockerfileSource, NetworkMode, Output, SecretSource,
};

/// Which daemon builds.
#[derive(Debug, Clone)]
pub enum Engine {
    /// An existing daemon, found from the environment.
    Dood,
    /// A private daemon started for this build.
    Dind(DindOptions),
}

/// The build was stopped by a signal; the private daemon (if any) was cleaned up.
#[derive(Debug, thiserror::Error)]
#[error("interrupted by {signal}; the build was abandoned")]
pub struct Interrupted {
    pub signal: &'static str,
    /// The conventional exit code (128 + signal number).
    pub exit_code: u8,
}

/// Runs `req` on the chosen engine, writing progress to `progress_out`.
pub fn run(
    req: &BuildRequest,
    engine: &Engine,
    mode: ProgressMode,
    progress_out: &mut (dyn Write + Send),
) -> Result<BuildResult> {
    if let Engine::Dind(options) = engine {
        dind::preflight(options)?;
    }
    // A directory is synced through the BuildKit session (or packed later for the classic
    // builder); a tar context is read now, standard input before anything else.
    let packed = match &req.context {
        ContextSource::Dir(_) => None,
        _ => Some(context::pack(
            &req.context,
            &req.dockerfile,
            &mut std::io::stdin().lock(),
        )?),
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let mut renderer = progress::Renderer::new(progress_out, mode);
    match engine {
        Engine::Dood => runtime.block_on(async {
            let address = DockerEnv::from_process().resolve()?;
            let docker = host::connect(&address).await?;
            daemon_build::build(&docker, &address, req, packed.as_ref(), &mut renderer).await
        }),
        Engine::Dind(options) => {
            // Handlers first: a signal during start-up must also stop the daemon.
            let (mut sigint, mut sigterm) = runtime.block_on(async {
                use tokio::signal::unix::{signal, SignalKind};
                Ok::<_, std::io::Error>((
                    signal(SignalKind::interrupt())?,
                    signal(SignalKind::terminate())?,
                ))
            })?;
            // Spawned from this (the main) thread: the daemon's parent-death signal is tied
            // to the thread that forks it.
            let mut daemon = dind::PrivateDaemon::spawn(options, |msg| renderer.note(msg))?;
            let mut req = req.clone();
            if req.network == NetworkMode::Default {
                // The private daemon has no bridge (see dind.rs); the host network is what
                // a `docker:dind` bridge would give RUN steps: outbound access.
                req.network = NetworkMode::Host;
            }
            let outcome = runtime.block_on(async {
                tokio::select! {
                    result = async {
                        daemon.wait_ready(options.start_timeout).await?;
                        let address = daemon.address();
                        let docker = host::connect(&address).await?;
                        daemon_build::build(&docker, &address, &req, packed.as_ref(), &mut renderer).await
                    } => result,
                    _ = sigint.recv() => Err(Interrupted { signal: "SIGINT", exit_code: 130 }.into()),
                    _ = sigterm.recv() => Err(Interrupted { signal: "SIGTERM", exit_code: 143 }.into()),
                }
            });
            let stopped = daemon.stop();
            drop(runtime);
            let result = outcome?;
            stopped.context("the build finished but the private dockerd did not stop cleanly")?;
            Ok(result)
        }
    }
}
