//! `.dockerignore` parsing and Docker's pattern matching semantics: a port of the
//! behaviour of moby/patternmatcher (`patternmatcher.go`, `ignorefile/ignorefile.go`).
//! This is not gitignore: patterns are anchored at the context root, `*` and `?` stop at
//! `/`, a matching directory excludes everything below it, and the last matching pattern
//! wins, so `!` exceptions can re-include files inside an excluded directory.
//!
//! ```
//! use rbuild_ignore::{IgnoreFile, PatternMatcher};
//!
//! let patterns = IgnoreFile::parse("# build output\ntarget\n*.log\n!keep.log\n").unwrap();
//! let matcher = PatternMatcher::from_ignore_file(&patterns).unwrap();
//! assert!(matcher.matches_or_parent_matches("target/debug/app"));
//! assert!(matcher.matches_or_parent_matches("build.log"));
//! assert!(!matcher.matches_or_parent_matches("keep.log"));
//! assert!(!matcher.matches_or_parent_matches("src/build.log"), "anchored at the root");
//! assert!(matcher.can_skip_dir("target"));
//! ```

mod compile;
mod error;
mod glob_syntax;
mod ignore_file;
mod in_root;
mod lookup;
mod matcher;
mod path_clean;

pub use error::IgnoreError;
pub use ignore_file::{IgnoreFile, Pattern};
pub use in_root::{display_in_root, open_in_root, read_file_in_root, InRootError};
pub use lookup::{ignore_file_candidates, read_ignore_file, MAX_IGNORE_FILE_BYTES};
pub use matcher::PatternMatcher;
pub use path_clean::{clean, dir};
