//! Evaluating an ordered pattern list against paths (moby/patternmatcher semantics).

use crate::compile::{compile, Matcher};
use crate::error::IgnoreError;
use crate::glob_syntax;
use crate::ignore_file::Pattern;
use crate::path_clean::{clean, dir};

/// One compiled pattern.
#[derive(Debug, Clone)]
struct CompiledPattern {
    /// The cleaned pattern without its `!`.
    text: String,
    exclusion: bool,
    matcher: Matcher,
}

/// An ordered list of `.dockerignore` patterns. Paths are relative to the context root,
/// `/`-separated. The last pattern that matches decides; a `!` pattern re-includes.
#[derive(Debug, Clone, Default)]
pub struct PatternMatcher {
    patterns: Vec<CompiledPattern>,
    has_exclusions: bool,
}

impl PatternMatcher {
    /// Compiles patterns as Docker does: each is trimmed (empty ones skipped) and cleaned
    /// (`filepath.Clean`); a leading `!` marks an exception. Unlike Docker, which compiles
    /// lazily, every pattern is checked here, so a bad pattern fails even if no path would
    /// have reached it.
    pub fn new<I, S>(patterns: I) -> Result<PatternMatcher, IgnoreError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let mut matcher = PatternMatcher::default();
        for (index, pattern) in patterns.into_iter().enumerate() {
            let trimmed = pattern.as_ref().trim();
            if trimmed.is_empty() {
                continue;
            }
            let mut text = clean(trimmed);
            let exclusion = text.starts_with('!');
            if exclusion {
                if text.len() == 1 {
                    return Err(IgnoreError::IllegalExclusion { index, line: None });
                }
                text.remove(0);
                matcher.has_exclusions = true;
            }
            let bad = |reason: String| IgnoreError::BadPattern {
                index,
                line: None,
                pattern: pattern.as_ref().to_string(),
                reason,
            };
            glob_syntax::check(&text).map_err(|reason| bad(reason.to_string()))?;
            let compiled = compile(&text).map_err(bad)?;
            matcher.patterns.push(CompiledPattern {
                text,
                exclusion,
                matcher: compiled,
            });
        }
        Ok(matcher)
    }

    /// [`PatternMatcher::new`] for the entries of an ignore file; errors name the line.
    pub fn from_ignore_file(patterns: &[Pattern]) -> Result<PatternMatcher, IgnoreError> {
        PatternMatcher::new(patterns)
            .map_err(|err| err.at_line(|index| patterns.get(index).map(|p| p.line)))
    }

    /// Whether any pattern is a `!` exception.
    pub fn has_exclusions(&self) -> bool {
        self.has_exclusions
    }

    /// The cleaned patterns, `!` included for exceptions.
    pub fn patterns(&self) -> Vec<String> {
        self.patterns
            .iter()
            .map(|p| {
                if p.exclusion {
                    format!("!{}", p.text)
                } else {
                    p.text.clone()
                }
            })
            .collect()
    }

    /// Whether `path` is excluded by patterns that match the path itself, assuming its
    /// parent directory is not excluded (patternmatcher's `MatchesUsingParentResult(path,
    /// false)`). A walker that already knows its parent is excluded should skip the
    /// children or use [`PatternMatcher::matches_or_parent_matches`].
    pub fn matches(&self, path: &str) -> bool {
        self.evaluate(path, false)
    }

    /// Whether `path` is excluded, where a pattern that matches any parent directory of
    /// `path` also counts as matching it (`docs` excludes `docs/a/b`) — patternmatcher's
    /// `MatchesOrParentMatches`, what `docker build` uses.
    pub fn matches_or_parent_matches(&self, path: &str) -> bool {
        self.evaluate(path, true)
    }

    fn evaluate(&self, path: &str, check_parents: bool) -> bool {
        let parent = dir(path);
        let parent_dirs: Vec<&str> = parent.split('/').collect();
        let mut matched = false;
        for pattern in &self.patterns {
            // Only a pattern that could change the outcome is tried: an exclusion once
            // something matched, an inclusion while nothing did.
            if pattern.exclusion != matched {
                continue;
            }
            let mut hit = pattern.matcher.is_match(path);
            if !hit && check_parents && parent != "." {
                hit = (1..=parent_dirs.len())
                    .any(|depth| pattern.matcher.is_match(&parent_dirs[..depth].join("/")));
            }
            if hit {
                matched = !pattern.exclusion;
            }
        }
        matched
    }

    /// Whether a walker may skip the whole directory `dir`: it is excluded, and no `!`
    /// exception could match anything below it. Conservative: when unsure (an exception
    /// with `**` or a `[...]` class at or above the directory's depth) it answers false.
    pub fn can_skip_dir(&self, dir: &str) -> bool {
        let dir = clean(dir);
        if dir == "." || !self.matches_or_parent_matches(&dir) {
            return false;
        }
        let dir_parts: Vec<&str> = dir.split('/').collect();
        !self
            .patterns
            .iter()
            .filter(|p| p.exclusion)
            .any(|p| could_match_below(&p.text, &dir_parts))
    }
}

/// Could `pattern` match some path strictly inside the directory with these components?
fn could_match_below(pattern: &str, dir_parts: &[&str]) -> bool {
    if pattern.contains('[') {
        // A class such as `[^x]` can match `/`, so components cannot be compared.
        return true;
    }
    let pattern_parts: Vec<&str> = pattern.split('/').collect();
    for (index, dir_part) in dir_parts.iter().enumerate() {
        let Some(pattern_part) = pattern_parts.get(index) else {
            // The pattern is no deeper than the directory: it cannot reach below it.
            return false;
        };
        if pattern_part.contains("**") {
            return true;
        }
        match compile(pattern_part) {
            Ok(component) if component.is_match(dir_part) => {}
            Ok(_) => return false,
            Err(_) => return true,
        }
    }
    pattern_parts.len() > dir_parts.len()
}
