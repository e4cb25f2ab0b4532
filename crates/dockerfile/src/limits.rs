//! The bounds a Dockerfile must stay within, so that a hostile one (from a repository a CI
//! job builds) cannot make the frontend exhaust memory or CPU. BuildKit has none of these
//! except the line length; each is far above what real Dockerfiles use. Every one is
//! reported as an error naming it and its value (see docs/security.md).

/// The largest Dockerfile read (from a file or standard input).
pub const MAX_DOCKERFILE_BYTES: u64 = 8 << 20;

/// Instructions in one Dockerfile (every instruction, global ARGs included).
pub const MAX_INSTRUCTIONS: usize = 10_000;

/// Build stages (FROM lines) in one Dockerfile.
pub const MAX_STAGES: usize = 1_000;

/// The longest word a variable expansion may produce.
pub const MAX_EXPANDED_WORD_BYTES: usize = rbuild_shell::MAX_WORD_BYTES;

/// All the text variable expansion may produce while one Dockerfile is processed (planning
/// and building), summed over every expanded word.
pub const MAX_EXPANSION_BYTES: u64 = 64 << 20;
