//! BuildKit's `UndefinedVar` check (`reportUnmatchedVariables`, run while converting a
//! stage): a variable a command's words use (the words BuildKit expands through a command's
//! `Expand`: COPY, ADD, ENV, LABEL, WORKDIR, USER, VOLUME, STOPSIGNAL, `RUN --mount`
//! values, and ARG defaults; not EXPOSE, whose ports `dispatchExpose` expands apart)
//! that the stage's environment does not set and no ARG of the stage (or of the stage it
//! is built from) declares. The environment starts from the base image's config (so a
//! stage built on an image needs that image's Env: the caller gives it, or the stage is
//! not checked) with `PATH` set when the image sets none, as the build does.

use std::collections::BTreeSet;

use super::{Base, BuildOptions, Dockerfile};
use crate::error::Error;
use crate::expand::expand_instruction_unmatched;
use crate::instructions::Instruction;

/// Build arguments BuildKit never puts into a stage's environment (`nonEnvArgs`): using
/// them is never reported.
const NON_ENV_ARGS: [&str; 2] = ["BUILDKIT_SBOM_SCAN_CONTEXT", "BUILDKIT_SBOM_SCAN_STAGE"];

/// The default `PATH` a stage gets when its base sets none (BuildKit's `dispatchStages`).
const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// A variable a command uses where it is not defined.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UndefinedVar {
    /// The command's first line.
    pub line: usize,
    pub name: String,
    /// The defined variable BuildKit suggests instead (`suggest.Search` over the stage's
    /// environment: the first name at an edit distance under 3, closest first).
    pub suggestion: Option<String>,
}

/// BuildKit's `suggest.Search` (case-sensitive): the option closest to `name` by edit
/// distance, if under 3, the earliest of equally close ones; none when an option is `name`.
pub fn suggest<'o>(name: &str, options: impl IntoIterator<Item = &'o str>) -> Option<String> {
    let mut best: Option<&str> = None;
    let mut min = 3;
    for option in options {
        if option == name {
            return None;
        }
        let distance = levenshtein(name, option);
        if distance < min {
            best = Some(option);
            min = distance;
        }
    }
    best.map(str::to_string)
}

/// The edit distance (insertions, deletions, substitutions of one character each).
fn levenshtein(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut previous = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let substitution = previous + usize::from(ca != *cb);
            previous = row[j + 1];
            row[j + 1] = substitution.min(previous + 1).min(row[j] + 1);
        }
    }
    row[b.len()]
}

/// The environment of an image base (its config's `Env` as pairs), or `None` when the
/// build does not know it (the image is not in the store yet).
pub type BaseEnv<'a> = &'a dyn Fn(&Base) -> Option<Vec<(String, String)>>;

/// A stage's scope after some of its commands: the environment and the ARGs declared.
struct Scope {
    env: Vec<(String, String)>,
    declared: BTreeSet<String>,
}

impl Dockerfile {
    /// The undefined variables the commands of `stage` use, in the order of the file
    /// (names sorted within a command); `None` when the stage's base (or the base of the
    /// stage it is built from) is an image whose environment `base_env` does not know.
    pub fn undefined_vars(
        &self,
        stage: usize,
        global: &[(String, String)],
        opts: &BuildOptions,
        base_env: BaseEnv<'_>,
    ) -> Result<Option<Vec<UndefinedVar>>, Error> {
        let mut found = Vec::new();
        let scope = self.scope_after(stage, global, opts, base_env, Some(&mut found))?;
        Ok(scope.map(|_| found))
    }

    /// The scope of `stage` after all its commands, reporting into `report` when given.
    fn scope_after(
        &self,
        stage: usize,
        global: &[(String, String)],
        opts: &BuildOptions,
        base_env: BaseEnv<'_>,
        mut report: Option<&mut Vec<UndefinedVar>>,
    ) -> Result<Option<Scope>, Error> {
        // A stage built FROM an earlier one goes on with its environment and its ARGs
        // (BuildKit's `dispatchState.init`: `ds.buildArgs = append(ds.buildArgs,
        // ds.base.buildArgs...)`).
        let mut scope = match self.stage_base(stage, global)? {
            Base::Stage(i) if i < stage => {
                match self.scope_after(i, global, opts, base_env, None)? {
                    Some(scope) => scope,
                    None => return Ok(None),
                }
            }
            base => {
                let Some(mut env) = base_env(&base) else {
                    return Ok(None);
                };
                if !env.iter().any(|(k, _)| k == "PATH") {
                    env.push(("PATH".to_string(), DEFAULT_PATH.to_string()));
                }
                Scope {
                    env,
                    declared: BTreeSet::new(),
                }
            }
        };
        let lexer = self.lexer();
        for cmd in &self.stages[stage].commands {
            if let Some(report) = report.as_deref_mut() {
                let unmatched = match &cmd.instruction {
                    // An ARG's default is expanded only when no --build-arg replaces it,
                    // each with what the ARGs before it on the line declared.
                    Instruction::Arg(arg) => {
                        let mut names = BTreeSet::new();
                        let mut env = scope.env.clone();
                        for decl in &arg.args {
                            if let (Some(raw), false) =
                                (&decl.value, opts.build_args.contains_key(&decl.key))
                            {
                                if let Ok(expansion) = lexer.process_word_with_matches(raw, &env) {
                                    names.extend(expansion.unmatched);
                                    env.push((decl.key.clone(), expansion.result));
                                }
                            }
                        }
                        names
                    }
                    Instruction::Expose(_) => BTreeSet::new(),
                    // An expansion error fails the build when the command runs, with its
                    // own message: nothing to report here.
                    other => match expand_instruction_unmatched(other, &lexer, &scope.env) {
                        Ok((_, names)) => names,
                        Err(_) => BTreeSet::new(),
                    },
                };
                for name in unmatched {
                    if !scope.declared.contains(&name) && !NON_ENV_ARGS.contains(&name.as_str()) {
                        // The environment's names in the order they were first set.
                        let mut seen = BTreeSet::new();
                        let keys = scope
                            .env
                            .iter()
                            .map(|(k, _)| k.as_str())
                            .filter(|k| seen.insert(*k));
                        let suggestion = suggest(&name, keys);
                        report.push(UndefinedVar {
                            line: cmd.location.start_line,
                            name,
                            suggestion,
                        });
                    }
                }
            }
            if let Instruction::Arg(arg) = &cmd.instruction {
                scope
                    .declared
                    .extend(arg.args.iter().map(|d| d.key.clone()));
            }
            self.extend_env(cmd, &lexer, &mut scope.env, global, opts)?;
        }
        Ok(Some(scope))
    }
}
