//! The variable scopes of a Dockerfile: the global scope FROM lines expand in, the value of
//! a stage's ARG, and the environment each command of a stage is expanded with.

use rbuild_shell::Lexer;

use super::{Base, BuildOptions, Dockerfile};
use crate::error::Error;
use crate::instructions::{Command, Instruction};

impl Dockerfile {
    /// The global scope: predefined platform args, then every global ARG with its value
    /// (the `--build-arg` override, else its default expanded with what came before).
    /// Only this scope is visible in FROM lines.
    pub fn global_args(&self, opts: &BuildOptions) -> Result<Vec<(String, String)>, Error> {
        let lexer = self.lexer();
        let mut scope = opts.predefined_args();
        scope.push(("TARGETSTAGE".to_string(), self.target_stage_name(opts)));
        for cmd in &self.meta_args {
            let Instruction::Arg(arg) = &cmd.instruction else {
                continue;
            };
            let mut assigned = Vec::new();
            for decl in &arg.args {
                let value = match (opts.build_args.get(&decl.key), &decl.value) {
                    (Some(v), _) => Some(v.clone()),
                    (None, Some(default)) => Some(
                        lexer
                            .process_word(default, &scope)
                            .map_err(|e| self.error_at(cmd, None, e.to_string()))?,
                    ),
                    (None, None) => None,
                };
                if let Some(v) = value {
                    assigned.push((decl.key.clone(), v));
                }
            }
            scope.extend(assigned);
        }
        Ok(scope)
    }

    /// BuildKit's `TARGETSTAGE`: the `--target` stage, else the last stage's name, else
    /// `default` (Dockerfile 1.26; `testTargetStageNameArg`).
    pub fn target_stage_name(&self, opts: &BuildOptions) -> String {
        match opts.target.as_deref() {
            Some(t) if !t.is_empty() => t.to_string(),
            _ => self
                .stages
                .last()
                .and_then(|s| s.name.clone())
                .unwrap_or_else(|| "default".to_string()),
        }
    }

    /// The value of a stage-level `ARG key[=default]`: the `--build-arg`, else the default
    /// (already expanded), else the global ARG of that name, else a predefined platform arg.
    pub fn stage_arg_value(
        &self,
        key: &str,
        expanded_default: Option<&str>,
        global: &[(String, String)],
        opts: &BuildOptions,
    ) -> Option<String> {
        if let Some(v) = opts.build_args.get(key) {
            return Some(v.clone());
        }
        if let Some(d) = expanded_default {
            return Some(d.to_string());
        }
        let declared_globally = self.meta_args.iter().any(|c| match &c.instruction {
            Instruction::Arg(a) => a.args.iter().any(|d| d.key == key),
            _ => false,
        });
        let predefined =
            key == "TARGETSTAGE" || opts.predefined_args().iter().any(|(k, _)| k == key);
        if declared_globally || predefined {
            return global
                .iter()
                .rev()
                .find(|(k, _)| k == key)
                .map(|(_, v)| v.clone());
        }
        None
    }

    /// The environment a stage's command at `upto` sees for expansion: the ARGs and ENVs
    /// declared in the stage before it (global ARGs only where redeclared), after those of
    /// the stage it is built FROM, if any.
    pub fn stage_env(
        &self,
        stage: usize,
        upto: usize,
        global: &[(String, String)],
        opts: &BuildOptions,
    ) -> Result<Vec<(String, String)>, Error> {
        let lexer = self.lexer();
        // A stage built FROM an earlier stage starts with that stage's ARG values and ENVs
        // (BuildKit's `dispatchState.init` takes the base stage's state).
        let mut env: Vec<(String, String)> = match self.stage_base(stage, global) {
            Ok(Base::Stage(i)) if i < stage => {
                self.stage_env(i, self.stages[i].commands.len(), global, opts)?
            }
            _ => Vec::new(),
        };
        for cmd in self.stages[stage].commands.iter().take(upto) {
            self.extend_env(cmd, &lexer, &mut env, global, opts)?;
        }
        Ok(env)
    }

    /// Adds what an ARG or ENV command declares to a stage's expansion environment.
    pub(super) fn extend_env(
        &self,
        cmd: &Command,
        lexer: &Lexer,
        env: &mut Vec<(String, String)>,
        global: &[(String, String)],
        opts: &BuildOptions,
    ) -> Result<(), Error> {
        match &cmd.instruction {
            // As the executor: an ARG's default is expanded only when no --build-arg
            // replaces it (BuildKit defers the ARG's expansion error).
            Instruction::Arg(a) => {
                for d in &a.args {
                    let default = match &d.value {
                        Some(raw) if !opts.build_args.contains_key(&d.key) => Some(
                            lexer
                                .process_word(raw, &*env)
                                .map_err(|e| self.error_at(cmd, None, e.to_string()))?,
                        ),
                        other => other.clone(),
                    };
                    if let Some(v) = self.stage_arg_value(&d.key, default.as_deref(), global, opts)
                    {
                        env.push((d.key.clone(), v));
                    }
                }
            }
            Instruction::Env(_) => {
                if let Instruction::Env(e) = cmd.expand(&self.file, lexer, &*env)?.instruction {
                    env.extend(e.pairs.into_iter().map(|p| (p.key, p.value)));
                }
            }
            _ => {}
        }
        Ok(())
    }
}
