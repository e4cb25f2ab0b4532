//! Dockerfile frontend: BuildKit-compatible parser, typed instructions and the stage model.
//!
//! * [`syntax`]: BuildKit's parser (`parse`, `Node::dump`).
//! * [`instructions`]: one typed struct per instruction, flags validated.
//! * [`stages`]: stages, global ARGs, target resolution and the dependency graph.
//! * [`error`]: the located error type every layer reports with.

pub mod error;
pub mod instructions;
pub mod limits;
pub mod lint;
pub mod syntax;

pub use error::{Error, Source};
mod build_options;
pub mod expand;
pub mod stages;

pub use stages::{
    named_context_key, parse_dockerfile, Base, BaseEnv, BuildOptions, BuildPlan, Dependency,
    DependencyKind, Dockerfile, Platform, Stage, UndefinedVar,
};
