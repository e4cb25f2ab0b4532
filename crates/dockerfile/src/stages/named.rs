//! Named contexts (`--build-context NAME=...`, BuildKit's `context:NAME` frontend option):
//! a stage whose name is one is replaced by it (its FROM and its commands are not built),
//! and a FROM image, a `COPY --from` or a `RUN --mount from=` naming one resolves to it
//! before any stage or image (BuildKit's dockerui `NamedContext`, used by `dockerfile2llb`
//! for stage names and for base names).

use std::collections::{BTreeMap, BTreeSet};

use super::Dockerfile;

/// The key BuildKit looks a name up by: the name in its familiar form
/// (`docker.io/library/alpine:latest` is `alpine`, `docker.io/me/app` is `me/app`),
/// without a `:latest` tag (dockerui's `reference.FamiliarString` + `TrimSuffix(":latest")`).
pub fn named_context_key(name: &str) -> String {
    let familiar = name
        .strip_prefix("docker.io/library/")
        .or_else(|| name.strip_prefix("index.docker.io/library/"))
        .or_else(|| name.strip_prefix("docker.io/"))
        .or_else(|| name.strip_prefix("index.docker.io/"))
        .unwrap_or(name);
    familiar
        .strip_suffix(":latest")
        .unwrap_or(familiar)
        .to_string()
}

impl Dockerfile {
    /// This Dockerfile with the names of the build's named contexts.
    pub fn with_named_contexts<'a>(mut self, names: impl IntoIterator<Item = &'a str>) -> Self {
        self.named_contexts = names.into_iter().map(named_context_key).collect();
        self
    }

    /// This Dockerfile with the ONBUILD triggers of named contexts' images (by context name,
    /// as `--build-context` gave it): a stage built FROM such a context runs them first, and
    /// the stages their `--from`s name join the build, as BuildKit's `initOnBuildTriggers`
    /// adds them once it has resolved the image.
    pub fn with_context_triggers(mut self, triggers: BTreeMap<String, Vec<String>>) -> Self {
        self.context_triggers = triggers
            .into_iter()
            .map(|(name, list)| (named_context_key(&name), list))
            .collect();
        self
    }

    /// The ONBUILD triggers of the named context `key`'s image, as the build gave them.
    pub(crate) fn context_trigger_texts(&self, key: &str) -> &[String] {
        self.context_triggers
            .get(key)
            .map(Vec::as_slice)
            .unwrap_or(&[])
    }

    /// The key of the named context `name` (a stage name, a FROM image, a `--from` value)
    /// resolves to, if the build has one.
    pub fn named_context(&self, name: &str) -> Option<String> {
        if self.named_contexts.is_empty() {
            return None;
        }
        let key = named_context_key(name);
        self.named_contexts.contains(&key).then_some(key)
    }

    /// The keys of the build's named contexts.
    pub fn named_context_keys(&self) -> &BTreeSet<String> {
        &self.named_contexts
    }

    /// The key of the named context that replaces stage `index` (one of its name), if any.
    pub fn replacing_context(&self, index: usize) -> Option<String> {
        self.stages[index]
            .name
            .as_deref()
            .and_then(|n| self.named_context(n))
    }
}
