//! Step operations: what a layer-making instruction (RUN, COPY, ADD, WORKDIR) does, with
//! every input that decides its result written out, and the one function that keys them.
//!
//! A [`StepOp`] is made by lowering (`lower.rs`) an instruction against a stage's state; it
//! holds values only (no paths to read, no handles), so it can be compared, serialised and
//! keyed without I/O. Its cache key is a digest of its canonical encoding
//! ([`StepOp::inputs`]): an ordered list of named inputs, each name saying what it is
//! (`env PATH`, `source app.txt`, `mount /src`), under a version tag ([`KEY_VERSION`]).
//! The same list is kept per step to explain the next build's miss, and the key is what
//! the store's records and the registry cache (`rbuild-remote-cache`) are indexed by.
//!
//! Adding an input to an op is adding a field here and a line to its `inputs`; a new
//! `RUN --mount` type fails to compile in `lower.rs` until it says how it is keyed.

use std::collections::BTreeMap;

use rbuild_image::{Digest, Hasher};
use rbuild_store::KeyInputs;
use serde::Serialize;

/// The version tag every key starts with. Bumped whenever the encoding or the meaning of
/// an input changes: records made under another version simply miss.
pub(crate) const KEY_VERSION: &str = "rbuild step key v2";

/// Above this many entries a source is keyed by one aggregate digest instead of a digest
/// per file (what a miss can name gets coarser, the explain record stays small).
const PER_FILE_LIMIT: usize = 500;

/// Values longer than this are kept as their digest in the explain record.
const EXPLAIN_VALUE_LIMIT: usize = 200;

/// One layer-making step, lowered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub(crate) enum StepOp {
    Run(RunOp),
    /// COPY and ADD (`is_add`).
    Copy(CopyOp),
    Workdir(WorkdirOp),
}

/// How the step's layer is written (compression, level, SOURCE_DATE_EPOCH clamping,
/// xattrs): it decides the layer's bytes, so a zstd build must not reuse a gzip layer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub(crate) struct LayerFormat(pub String);

/// A RUN: the command as run, and what it runs with.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub(crate) struct RunOp {
    /// The file system it starts from (`StageState::fs_key`).
    pub parent: Digest,
    /// The argv, SHELL applied to the shell form, heredoc bodies in it.
    pub command: Vec<String>,
    /// A shebang heredoc bound at `/dev/pipes/<name>`: (path, content).
    pub script: Option<(String, String)>,
    /// Every variable of its environment but the proxy args (BuildKit leaves them out).
    pub env: Vec<(String, String)>,
    pub user: String,
    pub workdir: String,
    /// The build's network (`--network` of the command line).
    pub build_network: String,
    /// The step's `RUN --network`.
    pub network: String,
    /// `RUN --security`.
    pub security: String,
    pub mounts: Vec<MountOp>,
    pub layer_format: LayerFormat,
}

/// One `RUN --mount`, every field of it, and for a bind mount the content bound.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub(crate) struct MountOp {
    pub kind: String,
    pub target: Option<String>,
    pub source: Option<String>,
    pub from: Option<String>,
    pub read_only: bool,
    pub size_limit: Option<i64>,
    pub id: Option<String>,
    pub sharing: Option<String>,
    pub required: bool,
    pub env: Option<String>,
    pub mode: Option<u32>,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    /// What the mount's content adds to the key: a bind's source; nothing for a cache,
    /// tmpfs, secret or ssh mount (their content never decides the step's result).
    pub content: MountContent,
}

/// The content a mount contributes to the key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub(crate) enum MountContent {
    /// Keyed by its fields only.
    None,
    /// A bind from the build context: its entries as (path, entry digest).
    Context(Vec<(String, Digest)>),
    /// A bind from a stage (its file-system key) or an image (its base key).
    From(Digest),
}

/// A COPY or ADD.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub(crate) struct CopyOp {
    pub parent: Digest,
    pub is_add: bool,
    /// The sources as written (credentials of URLs redacted).
    pub sources: Vec<String>,
    /// Heredoc sources: (file name, body, whether the body is expanded).
    pub inline: Vec<(String, String, bool)>,
    pub dest: String,
    pub workdir: String,
    pub from: Option<String>,
    pub chown: Option<String>,
    pub chmod: Option<String>,
    pub link: bool,
    pub parents: bool,
    pub exclude: Vec<String>,
    pub checksum: Option<String>,
    pub unpack: Option<bool>,
    pub keep_git_dir: Option<bool>,
    /// What the sources hold.
    pub contents: Vec<SourceContent>,
    pub layer_format: LayerFormat,
}

/// The content of one COPY/ADD source.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub(crate) enum SourceContent {
    /// From the build context, after `.dockerignore` and `--exclude`: (path, entry digest).
    Context(Vec<(String, Digest)>),
    /// An ADD of a URL (redacted): its `--checksum`, or its download's digest.
    Url { url: String, content: String },
    /// An ADD of a git repository (redacted URL): the commit its reference resolved to.
    Git { url: String, commit: String },
    /// `--from` a stage (its file-system key) or an image (its base key).
    From(Digest),
}

/// A WORKDIR other than `/`: the directory is made, owned as USER resolves.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub(crate) struct WorkdirOp {
    pub parent: Digest,
    pub path: String,
    pub user: String,
    pub layer_format: LayerFormat,
}

/// The canonical encoding: named inputs in a fixed order.
struct Inputs(Vec<(String, String)>);

impl Inputs {
    fn add(&mut self, name: impl Into<String>, value: impl Into<String>) {
        self.0.push((name.into(), value.into()));
    }

    /// A value that may be absent: `-` or `=value`, so that absent and empty differ.
    fn opt<T: std::fmt::Display>(&mut self, name: &str, value: &Option<T>) {
        let encoded = match value {
            None => "-".to_string(),
            Some(v) => format!("={v}"),
        };
        self.add(name, encoded);
    }

    fn list(&mut self, name: &str, values: &[String]) {
        // JSON of a list of strings: unambiguous (quotes and separators escaped).
        self.add(name, serde_json::Value::from(values.to_vec()).to_string());
    }

    /// A source's entries, one input per path (`label path`), or one aggregate input for a
    /// large source.
    fn entries(&mut self, label: &str, entries: &[(String, Digest)]) {
        if entries.len() <= PER_FILE_LIMIT {
            for (rel, d) in entries {
                self.add(format!("{label} {rel}"), d.to_string());
            }
        } else {
            let mut h = Hasher::new();
            for (rel, d) in entries {
                h.update(rel.as_bytes());
                h.update(b"\0");
                h.update(d.to_string().as_bytes());
                h.update(b"\n");
            }
            self.add(
                format!("{label} ({} files)", entries.len()),
                h.finish().to_string(),
            );
        }
    }
}

impl StepOp {
    /// The op's canonical encoding: its named inputs, in order. `parent` comes first; the
    /// names are what `--explain-misses` reports as changed.
    pub(crate) fn inputs(&self) -> Vec<(String, String)> {
        let mut out = Inputs(Vec::new());
        match self {
            StepOp::Run(op) => op.encode(&mut out),
            StepOp::Copy(op) => op.encode(&mut out),
            StepOp::Workdir(op) => op.encode(&mut out),
        }
        out.0
    }

    /// The cache key: the digest of the version tag and the canonical encoding, each name
    /// and value preceded by their lengths so that no two input lists encode alike.
    pub(crate) fn key(&self) -> Digest {
        key_of(&self.inputs())
    }

    /// The inputs as kept for explaining the next build's miss; long values as digests.
    pub(crate) fn explain_inputs(&self) -> KeyInputs {
        let mut inputs = BTreeMap::new();
        for (name, value) in self.inputs() {
            let shown = if value.len() > EXPLAIN_VALUE_LIMIT {
                Digest::of(value.as_bytes()).to_string()
            } else {
                value
            };
            inputs.insert(name, shown);
        }
        KeyInputs { inputs }
    }
}

/// The key of a canonical encoding.
fn key_of(inputs: &[(String, String)]) -> Digest {
    let mut h = Hasher::new();
    h.update(KEY_VERSION.as_bytes());
    h.update(b"\n");
    for (name, value) in inputs {
        h.update(format!("{}:{}\n", name.len(), value.len()).as_bytes());
        h.update(name.as_bytes());
        h.update(value.as_bytes());
    }
    h.finish()
}

impl RunOp {
    fn encode(&self, out: &mut Inputs) {
        let RunOp {
            parent,
            command,
            script,
            env,
            user,
            workdir,
            build_network,
            network,
            security,
            mounts,
            layer_format,
        } = self;
        out.add("parent", parent.to_string());
        out.add("op", "run");
        out.list("command", command);
        match script {
            Some((path, content)) => out.add(format!("script {path}"), content.clone()),
            None => out.add("script", "-"),
        }
        for (k, v) in env {
            out.add(format!("env {k}"), v.clone());
        }
        out.add("user", user.clone());
        out.add("workdir", workdir.clone());
        out.add("build network", build_network.clone());
        out.add("network", network.clone());
        out.add("security", security.clone());
        for (i, mount) in mounts.iter().enumerate() {
            mount.encode(i, out);
        }
        out.add("layer format", layer_format.0.clone());
    }
}

impl MountOp {
    fn encode(&self, index: usize, out: &mut Inputs) {
        let MountOp {
            kind,
            target,
            source,
            from,
            read_only,
            size_limit,
            id,
            sharing,
            required,
            env,
            mode,
            uid,
            gid,
            content,
        } = self;
        // All the flags in one input, named by the mount's place and target: a change of
        // any of them reads "mount 1 /src changed".
        let shown = |v: &Option<String>| v.clone().unwrap_or_else(|| "-".into());
        let number = |v: Option<u64>| v.map_or("-".to_string(), |n| n.to_string());
        let fields: Vec<String> = vec![
            format!("type={kind}"),
            format!("source={}", shown(source)),
            format!("from={}", shown(from)),
            format!("ro={read_only}"),
            format!("size={}", size_limit.map_or("-".into(), |n| n.to_string())),
            format!("id={}", shown(id)),
            format!("sharing={}", shown(sharing)),
            format!("required={required}"),
            format!("env={}", shown(env)),
            format!("mode={}", mode.map_or("-".into(), |m| format!("{m:o}"))),
            format!("uid={}", number(uid.map(u64::from))),
            format!("gid={}", number(gid.map(u64::from))),
        ];
        let label = format!("mount {}", target.as_deref().unwrap_or(""));
        out.list(&format!("mount {index} {}", shown(target)), &fields);
        match content {
            MountContent::None => {}
            MountContent::Context(entries) => out.entries(&label, entries),
            MountContent::From(key) => out.add(format!("{label} from"), key.to_string()),
        }
    }
}

impl CopyOp {
    fn encode(&self, out: &mut Inputs) {
        let CopyOp {
            parent,
            is_add,
            sources,
            inline,
            dest,
            workdir,
            from,
            chown,
            chmod,
            link,
            parents,
            exclude,
            checksum,
            unpack,
            keep_git_dir,
            contents,
            layer_format,
        } = self;
        out.add("parent", parent.to_string());
        out.add("op", if *is_add { "add" } else { "copy" });
        out.list("sources", sources);
        for (name, body, expand) in inline {
            out.add(
                format!("heredoc {name}"),
                format!("expand={expand}\n{body}"),
            );
        }
        out.add("dest", dest.clone());
        out.add("workdir", workdir.clone());
        out.opt("from", from);
        out.opt("chown", chown);
        out.opt("chmod", chmod);
        out.add("link", link.to_string());
        out.add("parents", parents.to_string());
        out.list("exclude", exclude);
        out.opt("checksum", checksum);
        out.opt("unpack", unpack);
        out.opt("keep git dir", keep_git_dir);
        for content in contents {
            match content {
                SourceContent::Context(entries) => out.entries("source", entries),
                SourceContent::Url { url, content } => {
                    out.add(format!("url {url}"), content.clone())
                }
                SourceContent::Git { url, commit } => out.add(format!("git {url}"), commit.clone()),
                SourceContent::From(key) => out.add("from content", key.to_string()),
            }
        }
        out.add("layer format", layer_format.0.clone());
    }
}

impl WorkdirOp {
    fn encode(&self, out: &mut Inputs) {
        let WorkdirOp {
            parent,
            path,
            user,
            layer_format,
        } = self;
        out.add("parent", parent.to_string());
        out.add("op", "workdir");
        out.add("workdir", path.clone());
        out.add("user", user.clone());
        out.add("layer format", layer_format.0.clone());
    }
}

/// Why a step missed, compared with the inputs recorded for the same step last time.
pub(crate) fn explain_miss(previous: Option<&KeyInputs>, now: &KeyInputs) -> String {
    let Some(previous) = previous else {
        return "no earlier build of this step".into();
    };
    let mut changed = Vec::new();
    for (name, value) in &now.inputs {
        match previous.inputs.get(name) {
            None => changed.push(format!("{name} is new")),
            Some(old) if old != value => {
                if name == "parent" {
                    changed.push("the step before it changed".into());
                } else {
                    changed.push(format!("{name} changed"));
                }
            }
            Some(_) => {}
        }
    }
    for name in previous.inputs.keys() {
        if !now.inputs.contains_key(name) {
            changed.push(format!("{name} is gone"));
        }
    }
    if changed.is_empty() {
        "inputs unchanged, but the cached result is gone (pruned, or --no-cache)".into()
    } else {
        const SHOWN: usize = 6;
        let more = changed.len().saturating_sub(SHOWN);
        changed.truncate(SHOWN);
        let mut text = changed.join("; ");
        if more > 0 {
            text.push_str(&format!("; and {more} more"));
        }
        text
    }
}

#[cfg(test)]
#[path = "op_tests.rs"]
mod tests;
