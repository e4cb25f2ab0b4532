//! Variable expansion of typed instructions, BuildKit's `Expand(expander)` methods: which
//! instruction expands which arguments. The word expansion itself is `rbuild-shell`.
//!
//! Expanded: ADD, COPY (sources, dest, --chown, --chmod, --from, --checksum, --exclude,
//! heredoc bodies whose delimiter was unquoted), ENV and LABEL (keys and values), EXPOSE,
//! FROM (image, --platform), STOPSIGNAL, USER, VOLUME, WORKDIR, ARG default values and
//! every `RUN --mount` value. Not expanded: RUN/CMD/ENTRYPOINT/SHELL/HEALTHCHECK (the shell
//! does it), ONBUILD and MAINTAINER. All words of one instruction see the same environment,
//! so in `ENV A=1 B=$A` the `$A` is the value from before the line.

use std::cell::RefCell;
use std::collections::BTreeSet;

use rbuild_shell::{Env, Lexer};

use crate::error::Error;
use crate::instructions::{parse_mount, Command, InlineSource, Instruction, KeyValue, MountFlag};

type R<T> = Result<T, String>;

struct Expander<'a> {
    lexer: &'a Lexer,
    env: &'a dyn Env,
    /// The names looked up and unset, when the caller wants them (`UndefinedVar`).
    unmatched: Option<&'a RefCell<BTreeSet<String>>>,
}

impl Expander<'_> {
    fn word(&self, w: &str) -> R<String> {
        self.process(self.lexer, w)
    }
    fn process(&self, lexer: &Lexer, w: &str) -> R<String> {
        match self.unmatched {
            None => lexer.process_word(w, self.env).map_err(|e| e.to_string()),
            Some(unmatched) => {
                let expansion = lexer
                    .process_word_with_matches(w, self.env)
                    .map_err(|e| e.to_string())?;
                unmatched.borrow_mut().extend(expansion.unmatched);
                Ok(expansion.result)
            }
        }
    }
    fn opt(&self, w: &Option<String>) -> R<Option<String>> {
        w.as_deref().map(|w| self.word(w)).transpose()
    }
    fn all(&self, ws: &[String]) -> R<Vec<String>> {
        ws.iter().map(|w| self.word(w)).collect()
    }
    fn pairs(&self, pairs: &[KeyValue]) -> R<Vec<KeyValue>> {
        pairs
            .iter()
            .map(|p| {
                Ok(KeyValue {
                    key: self.word(&p.key)?,
                    value: self.word(&p.value)?,
                    no_delim: p.no_delim,
                })
            })
            .collect()
    }
    /// Heredoc bodies are expanded with quotes left alone (BuildKit's `ExpandRaw`).
    fn inline(&self, sources: &[InlineSource]) -> R<Vec<InlineSource>> {
        let raw = self.lexer.clone().with_skip_process_quotes(true);
        sources
            .iter()
            .map(|s| {
                let data = if s.expand {
                    self.process(&raw, &s.data)?
                } else {
                    s.data.clone()
                };
                Ok(InlineSource { data, ..s.clone() })
            })
            .collect()
    }
    fn mounts(&self, mounts: &[MountFlag]) -> R<Vec<MountFlag>> {
        mounts
            .iter()
            .map(|m| {
                let parsed = parse_mount(&m.spec, &mut |v| self.word(v))?;
                Ok(MountFlag {
                    spec: m.spec.clone(),
                    parsed: Some(parsed),
                })
            })
            .collect()
    }
}

/// Expands the arguments BuildKit expands for this instruction.
pub fn expand_instruction(
    instruction: &Instruction,
    lexer: &Lexer,
    env: &dyn Env,
) -> Result<Instruction, String> {
    expand_with(
        Expander {
            lexer,
            env,
            unmatched: None,
        },
        instruction,
    )
}

/// [`expand_instruction`], with the names its words looked up that `env` does not set
/// (BuildKit's `reportUnmatchedVariables` reads them for `UndefinedVar`).
pub fn expand_instruction_unmatched(
    instruction: &Instruction,
    lexer: &Lexer,
    env: &dyn Env,
) -> Result<(Instruction, BTreeSet<String>), String> {
    let unmatched = RefCell::new(BTreeSet::new());
    let expanded = expand_with(
        Expander {
            lexer,
            env,
            unmatched: Some(&unmatched),
        },
        instruction,
    )?;
    Ok((expanded, unmatched.into_inner()))
}

fn expand_with(x: Expander<'_>, instruction: &Instruction) -> Result<Instruction, String> {
    Ok(match instruction {
        Instruction::From(f) => {
            let mut f = f.clone();
            f.image = x.word(&f.image)?;
            f.platform = x.opt(&f.platform)?;
            Instruction::From(f)
        }
        Instruction::Copy(c) => {
            let mut c = c.clone();
            c.sources = x.all(&c.sources)?;
            c.inline_sources = x.inline(&c.inline_sources)?;
            c.dest = x.word(&c.dest)?;
            // `--from` is never expanded: parse_dockerfile refused any value it would change.
            c.chown = x.opt(&c.chown)?;
            check_chown(c.chown.as_deref())?;
            c.chmod = x.opt(&c.chmod)?;
            c.exclude = x.all(&c.exclude)?;
            Instruction::Copy(c)
        }
        Instruction::Add(a) => {
            let mut a = a.clone();
            a.sources = x.all(&a.sources)?;
            a.inline_sources = x.inline(&a.inline_sources)?;
            a.dest = x.word(&a.dest)?;
            a.chown = x.opt(&a.chown)?;
            check_chown(a.chown.as_deref())?;
            a.chmod = x.opt(&a.chmod)?;
            a.checksum = x.opt(&a.checksum)?;
            a.exclude = x.all(&a.exclude)?;
            Instruction::Add(a)
        }
        Instruction::Env(e) => Instruction::Env(crate::instructions::Env {
            pairs: x.pairs(&e.pairs)?,
        }),
        Instruction::Label(l) => Instruction::Label(crate::instructions::Label {
            pairs: x.pairs(&l.pairs)?,
        }),
        Instruction::Arg(a) => {
            let mut a = a.clone();
            for d in &mut a.args {
                d.value = x.opt(&d.value)?;
            }
            Instruction::Arg(a)
        }
        Instruction::Expose(e) => Instruction::Expose(crate::instructions::Expose {
            ports: x.all(&e.ports)?,
        }),
        Instruction::Volume(v) => Instruction::Volume(crate::instructions::Volume {
            volumes: x.all(&v.volumes)?,
        }),
        Instruction::User(u) => Instruction::User(crate::instructions::User {
            user: x.word(&u.user)?,
        }),
        Instruction::Workdir(w) => Instruction::Workdir(crate::instructions::Workdir {
            path: x.word(&w.path)?,
        }),
        Instruction::StopSignal(s) => Instruction::StopSignal(crate::instructions::StopSignal {
            signal: x.word(&s.signal)?,
        }),
        Instruction::Run(r) => {
            let mut r = r.clone();
            r.mounts = x.mounts(&r.mounts)?;
            Instruction::Run(r)
        }
        other => other.clone(),
    })
}

/// The largest user or group id: 4294967295 is `(uid_t)-1`, which `chown` takes as "leave
/// unchanged", so accepting it would silently leave files owned by root.
pub const MAX_ID: u32 = u32::MAX - 1;

/// Refuses a numeric `--chown` user or group that is not a valid id (over [`MAX_ID`]);
/// names are resolved later against the image's /etc/passwd and /etc/group.
fn check_chown(chown: Option<&str>) -> R<()> {
    let Some(spec) = chown else {
        return Ok(());
    };
    let (user, group) = match spec.split_once(':') {
        Some((user, group)) => (user, Some(group)),
        None => (spec, None),
    };
    for (what, part) in [("user", Some(user)), ("group", group)] {
        let Some(part) = part.filter(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
        else {
            continue;
        };
        if part.parse::<u32>().map_or(true, |id| id > MAX_ID) {
            return Err(format!(
                "--chown={spec}: {what} id {part} is out of range (ids go from 0 to {MAX_ID})"
            ));
        }
    }
    Ok(())
}

impl Command {
    /// This command with its variables expanded against `env` (see the module docs for
    /// what is expanded). `file` names the Dockerfile in the error.
    pub fn expand(&self, file: &str, lexer: &Lexer, env: &dyn Env) -> Result<Command, Error> {
        let instruction =
            expand_instruction(&self.instruction, lexer, env).map_err(|message| Error {
                file: file.to_string(),
                line: self.location.start_line,
                column: 1,
                message,
                source_line: Some(self.location.original.clone()),
            })?;
        Ok(Command {
            location: self.location.clone(),
            instruction,
        })
    }
}
