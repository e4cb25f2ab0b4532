//! Where COPY/ADD sources come from: the build context (with `.dockerignore` applied and no
//! way out of it) or another stage's / image's root filesystem (symlinks resolved inside
//! it), with Go `filepath.Match` wildcards expanded.

use std::path::{Path, PathBuf};

use rbuild_ignore::PatternMatcher;
use rbuild_inroot::host_path_in_root;

use crate::error::{BuildError, Result, SourceProblem};
use crate::fsops::Filter;

fn problem(src: &str, problem: SourceProblem) -> BuildError {
    BuildError::Source {
        path: src.to_string(),
        problem,
    }
}

/// A tree COPY reads from.
pub(crate) enum SourceRoot<'a> {
    Context {
        dir: &'a Path,
        ignore: Option<&'a PatternMatcher>,
    },
    Rootfs(&'a Path),
}

/// One source after wildcard expansion.
#[derive(Debug, Clone)]
pub(crate) struct Source {
    /// Where to read it on the host (top-level symlinks followed).
    pub host: PathBuf,
    /// The cleaned path relative to the source root (`""` for the root itself).
    pub rel: String,
}

impl Source {
    /// The name a file gets when copied into a directory.
    pub(crate) fn base_name(&self) -> String {
        self.rel.rsplit('/').next().unwrap_or("").to_string()
    }
}

pub(crate) fn has_wildcard(s: &str) -> bool {
    s.contains(['*', '?', '['])
}

impl SourceRoot<'_> {
    fn is_context(&self) -> bool {
        matches!(self, SourceRoot::Context { .. })
    }

    /// The cleaned relative path of `src`; `..` leaving the context is an error.
    fn clean(&self, src: &str) -> Result<Vec<String>> {
        let mut comps: Vec<String> = Vec::new();
        for c in src.split('/') {
            match c {
                "" | "." => {}
                ".." => {
                    if comps.pop().is_none() && self.is_context() {
                        return Err(problem(src, SourceProblem::OutsideContext));
                    }
                }
                other => comps.push(other.to_string()),
            }
        }
        Ok(comps)
    }

    fn excluded(&self, rel: &str) -> bool {
        match self {
            SourceRoot::Context {
                ignore: Some(m), ..
            } => !rel.is_empty() && m.matches_or_parent_matches(rel),
            _ => false,
        }
    }

    /// Resolves one literal path (no wildcards).
    fn literal(&self, src: &str, rel: &str) -> Result<Source> {
        match self {
            SourceRoot::Context { dir, .. } => {
                if self.excluded(rel) {
                    return Err(problem(src, SourceProblem::Excluded));
                }
                // Symlinks resolve inside the context, as BuildKit resolves them in its
                // copy of it: `link -> /etc/passwd` names the context's own etc/passwd.
                let host = match host_path_in_root(dir, format!("/{rel}")) {
                    Ok(Some(host)) => host,
                    Ok(None) => return Err(problem(src, SourceProblem::NotInContext)),
                    Err(e) => {
                        return Err(BuildError::system(format!(
                            "{src:?} cannot be resolved in the build context"
                        ))(e))
                    }
                };
                // What a symlink leads to must not be excluded either: BuildKit never
                // receives an excluded file.
                if let Ok(real_rel) = host.strip_prefix(dir) {
                    let real_rel = real_rel.to_string_lossy();
                    if real_rel != rel && self.excluded(&real_rel) {
                        return Err(problem(
                            src,
                            SourceProblem::LeadsToExcluded(real_rel.into_owned()),
                        ));
                    }
                }
                Ok(Source {
                    host,
                    rel: rel.to_string(),
                })
            }
            SourceRoot::Rootfs(root) => match host_path_in_root(root, format!("/{rel}")) {
                Ok(Some(host)) => Ok(Source {
                    host,
                    rel: rel.to_string(),
                }),
                Ok(None) => Err(problem(src, SourceProblem::NotFound)),
                Err(e) => Err(BuildError::system(format!("{src:?}"))(e)),
            },
        }
    }

    /// What one COPY/ADD source names, each with the filters to copy a directory's
    /// contents with. Plainly: the wildcard matches. With `--parents`, the path is kept
    /// below the root, or below a `/./` pivot (`a/./b/c` keeps `b/c`): the source becomes
    /// the pivot directory and the rest an include pattern (BuildKit); a literal path
    /// must exist, a pattern may match nothing.
    pub(crate) fn copy_sources(
        &self,
        src: &str,
        parents: bool,
        filters: &CopyFilters,
    ) -> Result<Vec<(Source, CopyFilters)>> {
        if !parents {
            return Ok(self
                .expand(src)?
                .into_iter()
                .map(|s| (s, filters.clone()))
                .collect());
        }
        let (pivot, pattern) = match src.split_once("/./") {
            Some((pivot, pattern)) => (pivot.to_string(), pattern.to_string()),
            None => ("/".to_string(), src.to_string()),
        };
        let pattern = self.clean(&pattern)?.join("/");
        if !has_wildcard(&pivot) && !has_wildcard(&pattern) {
            // Fails with the usual "not found" / ".dockerignore" message.
            self.expand(&format!("{pivot}/{pattern}"))?;
        }
        let with_include = CopyFilters {
            exclude: filters.exclude.clone(),
            include: (!pattern.is_empty())
                .then(|| IncludePattern::new(&pattern))
                .transpose()?,
        };
        Ok(self
            .expand(&pivot)?
            .into_iter()
            .map(|s| (s, with_include.clone()))
            .collect())
    }

    /// Expands `src` (possibly with wildcards) to the sources it names, sorted: a literal
    /// path must exist, a pattern may match nothing (an empty list).
    pub(crate) fn expand(&self, src: &str) -> Result<Vec<Source>> {
        let comps = self.clean(src)?;
        if !has_wildcard(src) {
            return Ok(vec![self.literal(src, &comps.join("/"))?]);
        }
        let mut candidates: Vec<String> = vec![String::new()];
        for comp in &comps {
            let mut next = Vec::new();
            for prefix in &candidates {
                if !has_wildcard(comp) {
                    next.push(join_rel(prefix, comp));
                    continue;
                }
                let Ok(dir) = self.literal(src, prefix) else {
                    continue;
                };
                let Ok(entries) = std::fs::read_dir(&dir.host) else {
                    continue;
                };
                let mut names: Vec<String> = entries
                    .filter_map(|e| e.ok())
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect();
                names.sort();
                for name in names {
                    let rel = join_rel(prefix, &name);
                    if go_match(comp, &name) && !self.excluded(&rel) {
                        next.push(rel);
                    }
                }
            }
            candidates = next;
        }
        // A pattern that matches nothing names no source, whether or not other sources
        // match: BuildKit copies every local source with `AllowEmptyWildcard: true`.
        Ok(candidates
            .iter()
            .filter_map(|rel| self.literal(src, rel).ok())
            .collect())
    }

    /// The filter for copying directory `source`'s contents: `.dockerignore` rules by
    /// the path relative to the context, then the COPY's own `filters` by the path
    /// relative to `source`.
    pub(crate) fn filter_for<'s>(
        &'s self,
        source: &'s Source,
        filters: &'s CopyFilters,
    ) -> impl Fn(&Path, bool) -> Filter + 's {
        move |rel: &Path, is_dir: bool| {
            let rel = rel.to_string_lossy();
            let own = filters.decide(&rel, is_dir);
            let SourceRoot::Context {
                ignore: Some(m), ..
            } = self
            else {
                return own;
            };
            let full = join_rel(&source.rel, &rel);
            let ignored = if !m.matches_or_parent_matches(&full) {
                Filter::Include
            } else if is_dir && !m.can_skip_dir(&full) {
                Filter::Descend
            } else {
                Filter::Skip
            };
            combine(ignored, own)
        }
    }
}

/// Both filters must let an entry in; a directory either only descends into is created
/// only if something below it is copied.
fn combine(a: Filter, b: Filter) -> Filter {
    match (a, b) {
        (Filter::Skip, _) | (_, Filter::Skip) => Filter::Skip,
        (Filter::Descend, _) | (_, Filter::Descend) => Filter::Descend,
        _ => Filter::Include,
    }
}

/// A COPY's filters besides `.dockerignore`, matched against paths relative to each
/// source directory (BuildKit's copy include/exclude patterns; a source that is itself a
/// file is never filtered).
#[derive(Debug, Clone, Default)]
pub(crate) struct CopyFilters {
    /// `--exclude` patterns (`.dockerignore` syntax, `!` exceptions allowed).
    pub exclude: Option<PatternMatcher>,
    /// `--parents`: the one pattern what is copied must match (or be inside a match of).
    pub include: Option<IncludePattern>,
}

impl CopyFilters {
    pub(crate) fn new(exclude: &[String]) -> Result<CopyFilters> {
        let exclude = if exclude.is_empty() {
            None
        } else {
            Some(
                PatternMatcher::new(exclude)
                    .map_err(|e| BuildError::other(format!("--exclude: {e}")))?,
            )
        };
        Ok(CopyFilters {
            exclude,
            include: None,
        })
    }

    fn decide(&self, rel: &str, is_dir: bool) -> Filter {
        let excluded = match &self.exclude {
            Some(m) if m.matches_or_parent_matches(rel) => {
                if is_dir && !m.can_skip_dir(rel) {
                    Filter::Descend
                } else {
                    Filter::Skip
                }
            }
            _ => Filter::Include,
        };
        let included = match &self.include {
            None => Filter::Include,
            Some(p) if p.matcher.matches_or_parent_matches(rel) => Filter::Include,
            Some(p) if is_dir && p.may_match_below(rel) => Filter::Descend,
            Some(_) => Filter::Skip,
        };
        combine(excluded, included)
    }
}

/// The include pattern of `COPY --parents`.
#[derive(Debug, Clone)]
pub(crate) struct IncludePattern {
    matcher: PatternMatcher,
    components: Vec<String>,
}

impl IncludePattern {
    pub(crate) fn new(pattern: &str) -> Result<IncludePattern> {
        let matcher = PatternMatcher::new([pattern])
            .map_err(|e| BuildError::other(format!("--parents pattern {pattern:?}: {e}")))?;
        Ok(IncludePattern {
            matcher,
            components: pattern
                .split('/')
                .filter(|c| !c.is_empty() && *c != ".")
                .map(str::to_string)
                .collect(),
        })
    }

    /// Whether something inside directory `rel` could match (pruning the walk).
    fn may_match_below(&self, rel: &str) -> bool {
        if self.components.iter().any(|c| c.contains("**")) {
            return true;
        }
        let parts: Vec<&str> = rel.split('/').collect();
        parts.len() < self.components.len()
            && parts
                .iter()
                .zip(&self.components)
                .all(|(part, pattern)| go_match(pattern, part))
    }
}

fn join_rel(prefix: &str, name: &str) -> String {
    if prefix.is_empty() {
        name.to_string()
    } else {
        format!("{prefix}/{name}")
    }
}

/// Go's `filepath.Match` for one path component: `*`, `?`, `[...]` (ranges, `^`
/// negation) and `\` escapes.
pub(crate) fn go_match(pattern: &str, name: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let n: Vec<char> = name.chars().collect();
    match_from(&p, &n)
}

fn match_from(p: &[char], n: &[char]) -> bool {
    match p.first() {
        None => n.is_empty(),
        Some('*') => (0..=n.len()).any(|i| match_from(&p[1..], &n[i..])),
        Some('?') => !n.is_empty() && match_from(&p[1..], &n[1..]),
        Some('[') => {
            let Some(c) = n.first() else { return false };
            match class(&p[1..], *c) {
                Some((hit, used)) => hit && match_from(&p[1 + used..], &n[1..]),
                None => false,
            }
        }
        Some('\\') if p.len() > 1 => n.first() == Some(&p[1]) && match_from(&p[2..], &n[1..]),
        Some(c) => n.first() == Some(c) && match_from(&p[1..], &n[1..]),
    }
}

/// Matches `c` against the class starting after `[`; returns (matched, chars used incl. `]`).
fn class(p: &[char], c: char) -> Option<(bool, usize)> {
    let mut i = 0;
    let negate = p.first() == Some(&'^');
    if negate {
        i += 1;
    }
    let mut hit = false;
    let mut first = true;
    while i < p.len() {
        if p[i] == ']' && !first {
            return Some((hit != negate, i + 1));
        }
        first = false;
        let lo = if p[i] == '\\' && i + 1 < p.len() {
            i += 1;
            p[i]
        } else {
            p[i]
        };
        i += 1;
        let mut hi = lo;
        if i + 1 < p.len() && p[i] == '-' && p[i + 1] != ']' {
            hi = p[i + 1];
            i += 2;
        }
        if lo <= c && c <= hi {
            hit = true;
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_match_table() {
        assert!(go_match("*.txt", "a.txt"));
        assert!(!go_match("*.txt", "a.md"));
        assert!(go_match("a?c", "abc"));
        assert!(go_match("[a-c]x", "bx"));
        assert!(!go_match("[^a-c]x", "bx"));
        assert!(go_match("\\*", "*"));
    }

    #[test]
    fn context_escapes_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        let ctx = dir.path().join("ctx");
        std::fs::create_dir(&ctx).unwrap();
        std::fs::write(dir.path().join("secret"), "x").unwrap();
        std::os::unix::fs::symlink("../secret", ctx.join("link")).unwrap();
        let root = SourceRoot::Context {
            dir: &ctx,
            ignore: None,
        };
        let problem_of = |root: &SourceRoot<'_>, src: &str| match root.expand(src).unwrap_err() {
            BuildError::Source { path, problem } => {
                assert_eq!(path, src);
                problem
            }
            other => panic!("{src}: not a source error: {other:?}"),
        };
        assert_eq!(
            problem_of(&root, "../secret"),
            SourceProblem::OutsideContext
        );
        assert_eq!(
            root.expand("../secret").unwrap_err().to_string(),
            "\"../secret\" is outside the build context"
        );
        // A symlink out of the context resolves inside it (BuildKit): to ctx/secret,
        // which does not exist, never to the host's file.
        assert_eq!(problem_of(&root, "link"), SourceProblem::NotInContext);
        std::os::unix::fs::symlink(dir.path().join("secret"), ctx.join("abs")).unwrap();
        assert_eq!(problem_of(&root, "abs"), SourceProblem::NotInContext);
        std::fs::write(ctx.join("secret"), "inside").unwrap();
        let found = root.expand("link").unwrap();
        assert_eq!(std::fs::read(&found[0].host).unwrap(), b"inside");
        // An excluded file is not reachable through a symlink either.
        let ignore = PatternMatcher::new(["secret"]).unwrap();
        let filtered = SourceRoot::Context {
            dir: &ctx,
            ignore: Some(&ignore),
        };
        assert_eq!(
            problem_of(&filtered, "link"),
            SourceProblem::LeadsToExcluded("secret".into())
        );
        assert!(filtered
            .expand("link")
            .unwrap_err()
            .to_string()
            .contains("excluded by .dockerignore"));
    }
}
