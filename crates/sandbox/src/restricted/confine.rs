//! Landlock for a restricted step: the step's root is the builder's own `/`, where rbuild
//! itself lives, so the rules grant the whole tree except rbuild's private paths (its
//! store, the build's scratch and secret directories, credentials: nothing at all) and its
//! binary directory (read and execute only).
//!
//! Landlock rules only grant, each to a whole hierarchy, so a path cannot be taken out of a
//! granted tree: the rules are laid per entry instead. Every directory on the way from `/`
//! to a protected path (an "ancestor") gets only the right to list it; each of its other
//! entries gets the full rights (or read-only ones below a read-only path); the protected
//! entry gets nothing (or read rights). The price: nothing can be created or removed
//! directly in an ancestor (`/` among them), only below its other entries, and the names in
//! a protected directory can be listed (not read). See docs/sandbox.md.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use landlock::{
    Access, AccessFs, BitFlags, CompatLevel, Compatible, PathBeneath, PathFd, Ruleset, RulesetAttr,
    RulesetCreatedAttr, RulesetStatus, Scope, ABI,
};
use serde::{Deserialize, Serialize};

/// The ABI the rules are written for; a kernel with less enforces what it has.
const TARGET_ABI: ABI = ABI::V6;

/// What of the builder's own file system a restricted step must not reach.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Protected {
    /// Neither read nor written: rbuild's store, the build's scratch and secret
    /// directories, credentials (a docker config).
    pub hidden: Vec<PathBuf>,
    /// Read and executed, never changed: rbuild's binary directory.
    pub read_only: Vec<PathBuf>,
    /// Top-level redirection: where the stage's top-level entries that `/` lacks are laid
    /// out (`/rbuild/top` in the builder images); a step's path to `/NAME`, NAME not a name
    /// of `/`, is redirected there (see docs/sandbox.md, "Top-level redirection").
    #[serde(default)]
    pub top_level: Option<PathBuf>,
}

/// Credentials a pod's runtime mounts into every container, which a RUN step never sees
/// under `docker build` or BuildKit: Kubernetes' service account token, and the cloud
/// providers' workload identity tokens. Always hidden (where they exist).
pub const POD_CREDENTIALS: &[&str] = &[
    "/var/run/secrets/kubernetes.io",
    "/run/secrets/kubernetes.io",
    "/var/run/secrets/eks.amazonaws.com",
    "/run/secrets/eks.amazonaws.com",
    "/var/run/secrets/azure",
    "/run/secrets/azure",
];

/// One Landlock rule: `access` to everything beneath `path`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Rule {
    pub path: PathBuf,
    pub access: BitFlags<AccessFs>,
}

fn full() -> BitFlags<AccessFs> {
    // Device nodes are the supervisor's (it records them); the step itself never makes one.
    AccessFs::from_all(TARGET_ABI) & !(AccessFs::MakeChar | AccessFs::MakeBlock)
}

fn read() -> BitFlags<AccessFs> {
    AccessFs::from_read(TARGET_ABI)
}

/// Resolves the protected paths (symlinks included: Landlock sees real paths) and lays
/// out the rules. A protected path that does not exist is skipped (nothing to protect);
/// protecting `/` itself would leave the step nothing and is an error. Also returns the
/// resolved protected paths, which the supervisor refuses to act on.
pub(crate) fn plan(protected: &Protected) -> Result<(Vec<Rule>, Vec<PathBuf>), String> {
    let resolve = |paths: &[PathBuf]| -> Result<BTreeSet<PathBuf>, String> {
        let mut out = BTreeSet::new();
        for path in paths {
            match std::fs::canonicalize(path) {
                Ok(real) if real == Path::new("/") => {
                    return Err(format!(
                        "{} resolves to /, the step's own root: it cannot be kept from the step",
                        path.display()
                    ))
                }
                Ok(real) => {
                    out.insert(real);
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(format!("{}: {e}", path.display())),
            }
        }
        Ok(out)
    };
    let mut wanted_hidden = protected.hidden.clone();
    wanted_hidden.extend(POD_CREDENTIALS.iter().map(PathBuf::from));
    let hidden = resolve(&wanted_hidden)?;
    let read_only = resolve(&protected.read_only)?;
    let mut rules = Vec::new();
    lay_out(Path::new("/"), full(), &hidden, &read_only, &mut rules)?;
    let denied = hidden.iter().chain(read_only.iter()).cloned().collect();
    Ok((rules, denied))
}

/// The rules for the entries of `dir`, an ancestor of a protected path, whose tree gets at
/// most `ceiling`.
fn lay_out(
    dir: &Path,
    ceiling: BitFlags<AccessFs>,
    hidden: &BTreeSet<PathBuf>,
    read_only: &BTreeSet<PathBuf>,
    rules: &mut Vec<Rule>,
) -> Result<(), String> {
    rules.push(Rule {
        path: dir.to_path_buf(),
        access: AccessFs::ReadDir.into(),
    });
    let entries = std::fs::read_dir(dir).map_err(|e| format!("listing {}: {e}", dir.display()))?;
    for entry in entries {
        let entry = entry.map_err(|e| format!("listing {}: {e}", dir.display()))?;
        let path = entry.path();
        if hidden.contains(&path) {
            continue;
        }
        let access = if read_only.contains(&path) {
            ceiling & read()
        } else {
            ceiling
        };
        let protects_below = hidden
            .iter()
            .chain(read_only.iter())
            .any(|p| p != &path && p.starts_with(&path));
        // A symlink is its own entry: the rules name real paths, so one inside an ancestor
        // needs nothing (its target has its own rule).
        let is_dir = entry
            .file_type()
            .map_err(|e| format!("{}: {e}", path.display()))?
            .is_dir();
        if protects_below && is_dir {
            lay_out(&path, access, hidden, read_only, rules)?;
        } else {
            rules.push(Rule { path, access });
        }
    }
    Ok(())
}

/// Restricts this process (the forked step, before exec) to `rules`, and scopes its
/// signals and abstract unix sockets to itself (it cannot signal rbuild). no_new_privs is
/// already set (the restricted filter needs it). A kernel without Landlock is an error:
/// the step would reach rbuild's store.
pub(crate) fn restrict(rules: &[Rule]) -> Result<(), String> {
    let mut ruleset = Ruleset::default()
        .set_compatibility(CompatLevel::BestEffort)
        .handle_access(AccessFs::from_all(TARGET_ABI))
        .and_then(|r| r.scope(Scope::AbstractUnixSocket | Scope::Signal))
        .and_then(|r| r.create())
        .map_err(|e| format!("Landlock: {e}"))?;
    for rule in rules {
        let fd = match PathFd::new(&rule.path) {
            Ok(fd) => fd,
            // Gone since the plan (a socket, a temporary file): nothing to grant.
            Err(_) if std::fs::symlink_metadata(&rule.path).is_err() => continue,
            Err(e) => return Err(format!("Landlock: {}: {e}", rule.path.display())),
        };
        ruleset = ruleset
            .add_rule(PathBeneath::new(fd, rule.access))
            .map_err(|e| format!("Landlock: {}: {e}", rule.path.display()))?;
    }
    let status = ruleset
        .restrict_self()
        .map_err(|e| format!("Landlock: {e}"))?;
    if status.ruleset == RulesetStatus::NotEnforced {
        return Err(
            "Landlock is not available in this kernel (or refused by a seccomp \
                    profile): a restricted step would reach rbuild's store and credentials"
                .into(),
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn protected_paths_get_no_rule_and_their_ancestors_only_listing() {
        let dir = tempfile::tempdir().unwrap();
        let root = std::fs::canonicalize(dir.path()).unwrap();
        for d in ["store/blobs", "bin", "work/sub"] {
            std::fs::create_dir_all(root.join(d)).unwrap();
        }
        std::fs::write(root.join("file"), b"x").unwrap();
        let protected = Protected {
            hidden: vec![root.join("store"), root.join("missing")],
            read_only: vec![root.join("bin")],
            top_level: None,
        };
        let (rules, denied) = plan(&protected).unwrap();
        assert_eq!(denied, vec![root.join("store"), root.join("bin")]);
        let rule = |p: &Path| rules.iter().find(|r| r.path == p).map(|r| r.access);
        assert_eq!(rule(Path::new("/")), Some(AccessFs::ReadDir.into()));
        assert_eq!(rule(&root), Some(AccessFs::ReadDir.into()));
        assert_eq!(rule(&root.join("store")), None, "{rules:?}");
        assert!(
            rules
                .iter()
                .all(|r| !r.path.starts_with(root.join("store"))),
            "{rules:?}"
        );
        assert_eq!(rule(&root.join("bin")), Some(read()));
        assert_eq!(rule(&root.join("work")), Some(full()));
        assert_eq!(rule(&root.join("file")), Some(full()));
        assert_eq!(rule(&root.join("work/sub")), None, "covered by work's rule");
        assert!(!full().contains(AccessFs::MakeChar));
    }

    #[test]
    fn protecting_the_root_itself_is_refused() {
        let protected = Protected {
            hidden: vec![PathBuf::from("/")],
            read_only: Vec::new(),
            top_level: None,
        };
        assert!(plan(&protected).unwrap_err().contains("resolves to /"));
    }
}
