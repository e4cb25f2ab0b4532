//! Lowering: an expanded instruction and the state of its stage become a [`StepOp`]
//! (`op.rs`) holding every input that decides the step's result. What must be read to know
//! an input (the content of context files, the key of a `--from` stage, a download's
//! digest, a git reference's commit) comes through [`SourceKeys`], so lowering itself does
//! no I/O and is tested without root or a sandbox.

use rbuild_dockerfile::instructions::{
    Mount, MountFlag, MountType, Network as RunNetwork, Run, Security, Sharing, ShellOrExec,
};
use rbuild_dockerfile::syntax::{chomp_heredoc_content, must_parse_heredoc};
use rbuild_image::Digest;
use rbuild_layer::{Compression, WriteOptions};
use rbuild_sandbox::Network;

use crate::copy_spec::CopySpec;
use crate::downloads::{is_http_source, parse_git_ref, redact_url, GitRef};
use crate::error::BuildError;
use crate::op::{CopyOp, LayerFormat, MountContent, MountOp, RunOp, SourceContent, WorkdirOp};
use crate::sources::CopyFilters;
use crate::state::StageState;

/// What lowering reads of the stage it lowers into.
pub(crate) struct StageView<'s> {
    /// The stage's position (a `--from` may only name an earlier one).
    pub index: usize,
    /// The file system the step starts from.
    pub fs_key: &'s Digest,
    /// The environment RUN sees (image Env, ARGs in scope, ENVs), proxy args excluded.
    pub env: &'s [(String, String)],
    /// USER as written (empty: root).
    pub user: &'s str,
    /// WORKDIR, `/` when unset.
    pub workdir: String,
    /// SHELL, `/bin/sh -c` when unset.
    pub shell: Vec<String>,
}

impl StageState {
    /// What lowering reads of this stage (`lower.rs`).
    pub(crate) fn view(&self) -> StageView<'_> {
        StageView {
            index: self.index,
            fs_key: &self.fs_key,
            env: &self.env,
            user: &self.config.config.user,
            workdir: self.workdir(),
            shell: self.shell(),
        }
    }
}

/// The lookups lowering needs beyond the instruction and the stage: each returns the
/// content (or identity) of something a step reads. Errors are messages the caller places
/// under the instruction.
pub(crate) trait SourceKeys {
    /// The entries of a context source after `.dockerignore` and `filters`, each as
    /// (path, entry digest) (`content_hash.rs`).
    fn context_entries(
        &self,
        src: &str,
        parents: bool,
        filters: &CopyFilters,
    ) -> Result<Vec<(String, Digest)>, BuildError>;
    /// The key of an earlier stage's file system or of an image, by the name a `--from`
    /// or `from=` gives.
    fn key_of_from(&self, current_stage: usize, from: &str) -> Result<Digest, BuildError>;
    /// The digest of a URL's content (downloaded once per build).
    fn url_content(&self, url: &str) -> Result<Digest, BuildError>;
    /// The commit a git reference resolves to (checked out once per build).
    fn git_commit(&self, git: &GitRef, keep_git_dir: Option<bool>) -> Result<String, BuildError>;
}

/// Lowers instructions of one build: what is the same for all its steps.
pub(crate) struct Lowering<'k> {
    /// The build's network, as its name (`host`, `none`, ...).
    pub build_network: String,
    pub layer_format: LayerFormat,
    pub keys: &'k dyn SourceKeys,
}

/// The layer format of a build's write options: what decides a layer's bytes. The
/// destructuring has no `..`: a new write option does not compile until it is keyed here or
/// said not to change the bytes.
pub(crate) fn layer_format(w: &WriteOptions) -> LayerFormat {
    let WriteOptions {
        compression,
        level,
        source_date_epoch,
        // The output does not depend on the number of compression threads.
        threads: _,
        no_xattrs,
        // Host ids on disk are recorded as the container's ids they stand for: the layer
        // says the same whatever the mapping.
        id_map: _,
        // Owners recorded beside the files (restricted isolation) are the container's ids
        // too: the same layer as a build that could give files their owners.
        recorded: _,
    } = w;
    let compression = match compression {
        Compression::Gzip => "gzip",
        Compression::Zstd => "zstd",
        Compression::None => "none",
    };
    let shown = |v: Option<String>| v.unwrap_or_else(|| "-".into());
    LayerFormat(format!(
        "{compression} level={} epoch={} xattrs={}",
        shown(level.map(|l| l.to_string())),
        shown(source_date_epoch.map(|e| e.to_string())),
        !no_xattrs
    ))
}

/// The build's network (`--network` of the command line) by name.
pub(crate) fn network_name(network: Network) -> &'static str {
    match network {
        Network::Host => "host",
        Network::None => "none",
    }
}

impl Lowering<'_> {
    /// A RUN: its command as run (SHELL and heredocs applied as `run::run_args` does), its
    /// environment, user, working directory, network and mounts. An error names the mount
    /// that could not be keyed.
    pub(crate) fn run(&self, stage: &StageView<'_>, run: &Run) -> Result<RunOp, LowerError> {
        let (argv, script) = run_args(run, &stage.shell);
        let mut mounts = Vec::with_capacity(run.mounts.len());
        for flag in &run.mounts {
            mounts.push(
                self.mount(stage, flag)
                    .map_err(|reason| LowerError::Mount {
                        spec: flag.spec.clone(),
                        reason: Box::new(reason),
                    })?,
            );
        }
        Ok(RunOp {
            parent: stage.fs_key.clone(),
            command: argv,
            script,
            env: stage.env.to_vec(),
            user: stage.user.to_string(),
            workdir: stage.workdir.clone(),
            build_network: self.build_network.clone(),
            network: match run.network {
                RunNetwork::Default => "default",
                RunNetwork::None => "none",
                RunNetwork::Host => "host",
            }
            .into(),
            security: match run.security {
                Security::Sandbox => "sandbox",
                Security::Insecure => "insecure",
            }
            .into(),
            mounts,
            layer_format: self.layer_format.clone(),
        })
    }

    /// One `--mount`: every field, and for a bind the content it binds. The destructuring
    /// and the `match` have no wildcard: a new field or mount type does not compile until
    /// it is keyed here.
    fn mount(&self, stage: &StageView<'_>, flag: &MountFlag) -> Result<MountOp, BuildError> {
        let m = flag
            .parsed
            .as_ref()
            .ok_or_else(|| BuildError::other("not expanded"))?;
        let Mount {
            kind,
            from,
            source,
            target,
            read_only,
            size_limit,
            id,
            sharing,
            required,
            env,
            mode,
            uid,
            gid,
        } = m;
        let content = match kind {
            MountType::Bind => match from {
                Some(from) => MountContent::From(self.keys.key_of_from(stage.index, from)?),
                None => MountContent::Context(self.keys.context_entries(
                    source.as_deref().unwrap_or("/"),
                    false,
                    &CopyFilters::default(),
                )?),
            },
            // A cache directory's content is whatever earlier steps left (BuildKit keys it
            // by id only); tmpfs is empty; secrets and ssh agents must not be keyed by
            // content (it would leak through the key, and a rotated token must not rerun).
            MountType::Cache | MountType::Tmpfs | MountType::Secret | MountType::Ssh => {
                MountContent::None
            }
        };
        Ok(MountOp {
            kind: kind.as_str().to_string(),
            target: target.clone(),
            source: source.clone(),
            from: from.clone(),
            read_only: *read_only,
            size_limit: *size_limit,
            id: id.clone(),
            sharing: sharing.map(|s| {
                match s {
                    Sharing::Shared => "shared",
                    Sharing::Private => "private",
                    Sharing::Locked => "locked",
                }
                .to_string()
            }),
            required: *required,
            env: env.clone(),
            mode: *mode,
            uid: *uid,
            gid: *gid,
            content,
        })
    }

    /// A COPY or ADD. An http source is keyed by its `--checksum` when given (a hit then
    /// downloads nothing), else by the content of its download (memoised: the copy reuses
    /// it); a git source by the commit its reference resolves to.
    pub(crate) fn copy(
        &self,
        stage: &StageView<'_>,
        spec: &CopySpec,
    ) -> Result<CopyOp, LowerError> {
        spec.check().map_err(|e| LowerError::Invalid(Box::new(e)))?;
        let mut contents = Vec::new();
        match &spec.from {
            Some(from) => {
                let key = self
                    .keys
                    .key_of_from(stage.index, from)
                    .map_err(|e| LowerError::From(from.clone(), Box::new(e)))?;
                contents.push(SourceContent::From(key));
            }
            None => {
                let filters = CopyFilters::new(&spec.exclude)
                    .map_err(|e| LowerError::Invalid(Box::new(e)))?;
                for src in &spec.sources {
                    let content = if spec.is_add && is_http_source(src) {
                        SourceContent::Url {
                            url: redact_url(src),
                            content: match &spec.checksum {
                                Some(sum) => sum.clone(),
                                None => self
                                    .keys
                                    .url_content(src)
                                    .map_err(|e| LowerError::Read(Box::new(e)))?
                                    .to_string(),
                            },
                        }
                    } else if let Some(git) = spec.is_add.then(|| parse_git_ref(src)).flatten() {
                        let commit = self
                            .keys
                            .git_commit(&git, spec.keep_git_dir)
                            .map_err(|e| LowerError::Read(Box::new(e)))?;
                        // The checksum is checked here, where the key is made: a step found
                        // in the cache never reaches the ADD's own check.
                        check_git_checksum(
                            git.checksum.as_ref().or(spec.checksum.as_ref()),
                            &commit,
                        )
                        .map_err(|e| LowerError::Read(Box::new(e)))?;
                        SourceContent::Git {
                            url: redact_url(src),
                            commit,
                        }
                    } else {
                        SourceContent::Context(
                            self.keys
                                .context_entries(src, spec.parents, &filters)
                                .map_err(|e| LowerError::Read(Box::new(e)))?,
                        )
                    };
                    contents.push(content);
                }
            }
        }
        let all_git = spec.is_add && spec.sources.iter().all(|s| parse_git_ref(s).is_some());
        Ok(CopyOp {
            parent: stage.fs_key.clone(),
            is_add: spec.is_add,
            sources: spec.sources.iter().map(|s| redact_url(s)).collect(),
            inline: spec
                .inline
                .iter()
                .map(|s| (s.path.clone(), s.data.clone(), s.expand))
                .collect(),
            dest: spec.dest.clone(),
            workdir: stage.workdir.clone(),
            from: spec.from.clone(),
            chown: spec.chown.clone(),
            chmod: spec.chmod.clone(),
            link: spec.link,
            parents: spec.parents,
            exclude: spec.exclude.clone(),
            // A git source's checksum names the commit the key holds already, so it is left
            // out: the same ADD with and without it is one step (BuildKit's
            // testAddGitChecksumCache).
            checksum: if all_git { None } else { spec.checksum.clone() },
            unpack: spec.unpack,
            keep_git_dir: spec.keep_git_dir,
            contents,
            layer_format: self.layer_format.clone(),
        })
    }

    /// A WORKDIR making `path` (already resolved against the previous WORKDIR).
    pub(crate) fn workdir(&self, stage: &StageView<'_>, path: &str) -> WorkdirOp {
        WorkdirOp {
            parent: stage.fs_key.clone(),
            path: path.to_string(),
            user: stage.user.to_string(),
            layer_format: self.layer_format.clone(),
        }
    }
}

/// A shebang heredoc BuildKit writes to a file and runs: (container path, content).
type Script = Option<(String, String)>;

/// The argv BuildKit runs for `run`, and a script to bind for a shebang heredoc.
pub(crate) fn run_args(run: &Run, shell: &[String]) -> (Vec<String>, Script) {
    let mut script = None;
    let args = match &run.cmd {
        ShellOrExec::Exec(v) => return (v.clone(), None),
        ShellOrExec::Shell(s) if run.heredocs.is_empty() => s.clone(),
        ShellOrExec::Shell(s) => match must_parse_heredoc(s) {
            Some(_) => {
                let doc = &run.heredocs[0];
                let data = if doc.chomp {
                    chomp_heredoc_content(&doc.content)
                } else {
                    doc.content.clone()
                };
                if data.starts_with("#!") {
                    // BuildKit writes a shebang script to /dev/pipes/<name> and runs that.
                    let path = format!("/dev/pipes/{}", doc.name);
                    script = Some((path.clone(), data));
                    path
                } else {
                    data
                }
            }
            None => {
                // More than a lone heredoc: hand the whole text to the shell, bodies as
                // written (the shell strips a `<<-` body's tabs itself; BuildKit's history
                // keeps them).
                let mut full = s.clone();
                for doc in &run.heredocs {
                    full.push('\n');
                    full.push_str(&doc.content);
                    full.push_str(&doc.name);
                }
                full
            }
        },
    };
    let mut argv = shell.to_vec();
    argv.push(args);
    (argv, script)
}

/// Why an instruction could not be lowered; the caller places it under the instruction
/// (COPY/ADD word `Read` as "COPY failed: …"). The build's error is the source, boxed (it
/// is large and rare).
#[derive(Debug, thiserror::Error)]
pub(crate) enum LowerError {
    /// The instruction's flags are invalid (`--chmod`, `--checksum`, `--exclude`, ...).
    #[error("{0}")]
    Invalid(#[source] Box<BuildError>),
    /// A `--from` that names nothing built or loadable: (name, why).
    #[error("--from={0}: {1}")]
    From(String, #[source] Box<BuildError>),
    /// A source could not be read (missing, excluded, outside the context, download).
    #[error("{0}")]
    Read(#[source] Box<BuildError>),
    /// A `RUN --mount` that could not be keyed (not expanded, its source unreadable).
    #[error("--mount={spec}: {reason}")]
    Mount {
        spec: String,
        #[source]
        reason: Box<BuildError>,
    },
}

#[cfg(test)]
#[path = "lower_tests.rs"]
mod tests;

/// A git source's `--checksum` / `?checksum=`: a hex commit id, or a prefix of it, that the
/// commit its reference resolved to must start with (BuildKit's texts).
pub(crate) fn check_git_checksum(
    checksum: Option<&String>,
    commit: &str,
) -> Result<(), BuildError> {
    let Some(want) = checksum else {
        return Ok(());
    };
    if want.is_empty() || !want.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(BuildError::other(format!(
            "invalid checksum {want} for Git URL, expected hex commit hash"
        )));
    }
    if !commit.starts_with(want.as_str()) {
        return Err(BuildError::other(format!(
            "expected checksum to match {want}, got {commit}"
        )));
    }
    Ok(())
}
