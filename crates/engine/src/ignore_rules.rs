//! The `.dockerignore` rules of a context directory, through `rbuild-ignore` (Docker's
//! pattern semantics; `<Dockerfile>.dockerignore` next to the Dockerfile wins, as in
//! BuildKit).

use std::path::Path;

use anyhow::{Context, Result};
use rbuild_ignore::PatternMatcher;

/// The exclusion rules of one context directory.
pub struct IgnoreRules {
    matcher: Option<PatternMatcher>,
}

impl IgnoreRules {
    /// Reads the ignore file for `dir` and the Dockerfile at `dockerfile` (`None` when the
    /// Dockerfile does not come from a file). No ignore file means nothing is excluded.
    pub fn load(dir: &Path, dockerfile: Option<&Path>) -> Result<Self> {
        let dockerfile = dockerfile.unwrap_or(Path::new(""));
        let found = rbuild_ignore::read_ignore_file(dir, dockerfile)
            .with_context(|| format!("cannot read the ignore file of {}", dir.display()))?;
        let matcher = match found {
            None => None,
            Some((path, patterns)) => Some(
                PatternMatcher::from_ignore_file(&patterns)
                    .with_context(|| format!("{}: invalid pattern", path.display()))?,
            ),
        };
        Ok(IgnoreRules { matcher })
    }

    /// Whether the context-relative path (with `/` separators) is excluded.
    pub fn excludes(&self, rel: &str) -> bool {
        self.matcher
            .as_ref()
            .is_some_and(|m| m.matches_or_parent_matches(rel))
    }

    /// Whether nothing under the excluded directory can be re-included.
    pub fn can_skip_dir(&self, rel: &str) -> bool {
        self.matcher.as_ref().is_some_and(|m| m.can_skip_dir(rel))
    }
}
