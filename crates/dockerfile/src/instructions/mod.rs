//! The typed instruction layer: BuildKit's `frontend/dockerfile/instructions`. Each syntax
//! node becomes one typed [`Instruction`], with its flags parsed and validated.

mod bflags;
mod mount;
mod parse;
mod types;
mod values;

pub use mount::{parse_mount, Mount, MountFlag, MountType, Sharing};
pub use parse::parse_command;
pub use types::*;
