//! A build as a library call. A [`BuildSpec`] says everything the user asked (context,
//! Dockerfile, arguments, secrets, ssh, caches, outputs); a [`Session`] runs it: the context
//! unpacked, secrets and ssh agents set up, bases pulled (by `rbuild-transfer`), the image
//! built (by `rbuild-executor`) and handed to a list of [`Exporter`]s, one per output kind.
//! The CLI only turns flags into a `BuildSpec` and prints progress.
//!
//! ```no_run
//! use rbuild_session::{exporters_for, BuildSpec, ContextSource, OutputKind, OutputSpec};
//! use rbuild_session::{Reporter, Session};
//! # fn demo(store: &rbuild_store::Store, rt: &tokio::runtime::Runtime) -> Result<(), Box<dyn std::error::Error>> {
//! let mut spec = BuildSpec::new(ContextSource::Dir(".".into()));
//! spec.outputs.push(OutputSpec::new(OutputKind::Oci, Some("app.tar".into()))?);
//! let exporters = exporters_for(&spec.outputs)?;
//! let session = Session::new(store, rbuild_registry::Client::new(Default::default()), rt.handle().clone());
//! let result = session.run(&spec, &exporters, Reporter {
//!     progress: &mut rbuild_executor::NoProgress,
//!     transfer: &rbuild_transfer::NoProgress,
//!     notes: &mut |_| {},
//! })?;
//! println!("{}", result.build.image_id);
//! # Ok(()) }
//! ```

mod context;
mod credentials;
mod error;
pub mod export;
pub mod oci_layout;
mod remote_cache;
mod session;
mod spec;

pub use error::{ExportError, SessionError};
pub use export::{exporter_for, exporters_for, Exporter, OutputKind, OutputSpec};
pub use rbuild_executor::{NamedContext, OciLayoutRef};
pub use session::{Note, Reporter, Session, SessionResult};
pub use spec::{
    BuildSpec, ContextSource, DockerfileSource, NetworkMode, ProgressMode, SecretSource,
    SecretSpec, SshSpec,
};
