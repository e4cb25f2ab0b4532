//! The corpus's cases as `cases.json` describes them, what each needs to be built here, and
//! why a case cannot be built here (a skip is always listed with its reason).

use std::path::PathBuf;

use anyhow::{anyhow, bail, Context, Result};
use serde_json::Value;

use crate::fidelity::{json_strings as strings, json_text as text};

/// The registry address the localized Dockerfiles name; the run rewrites it to its own
/// registry's.
pub const LOCALIZED_REGISTRY: &str = "127.0.0.1:5000";

/// The cases `--quick` builds: one per kind of behaviour the corpus covers (ARG, COPY, RUN,
/// USER, WORKDIR, VOLUME, multi-stage, ONBUILD, .dockerignore, metadata), all on the busybox
/// or Debian stand-ins without package installs, so that CI stays short.
pub const QUICK: &[&str] = &[
    "Dockerfile_dockerignore_relative",
    "Dockerfile_test_arg_multi",
    "Dockerfile_test_copy",
    "Dockerfile_test_copy_symlink",
    "Dockerfile_test_copyadd_chmod",
    "Dockerfile_test_env",
    "Dockerfile_test_metadata",
    "Dockerfile_test_multistage_args_issue_1911",
    "Dockerfile_test_onbuild",
    "Dockerfile_test_run",
    "Dockerfile_test_scratch",
    "Dockerfile_test_user",
    "Dockerfile_test_volume",
    "Dockerfile_test_workdir",
    "testdata/exit-code-propagation",
];

/// Which locally made image stands in for a base.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Stand {
    /// Debian's static busybox with a link for every applet.
    Busybox,
    /// A Debian bookworm minbase made by debootstrap.
    Debian,
    /// Built from the corpus's own `Dockerfile_onbuild_base` on the Debian stand-in.
    OnbuildBase,
    /// The Debian stand-in with its bash also at `/usr/local/bin/bash` (the official bash
    /// image's place).
    Bash,
}

/// One case, ready to build.
#[derive(Debug, Clone)]
pub struct Case {
    pub name: String,
    /// The localized Dockerfile, relative to the corpus directory.
    pub dockerfile: PathBuf,
    /// The build context, relative to the corpus directory.
    pub context: PathBuf,
    /// `KEY=VALUE` pairs, values taken from the case's `env` for a bare `KEY`.
    pub build_args: Vec<String>,
    pub target: Option<String>,
    /// Build-arg values from the environment: kaniko's test requires that they never show
    /// in a build's output.
    pub secret_values: Vec<String>,
    /// `(image the Dockerfile names, in the localized form; what stands in for it)`.
    pub aliases: Vec<(String, Stand)>,
    /// `(image a FROM line names, the alias it is rewritten to)` for [`EXTRA_STANDS`].
    pub from_rewrites: Vec<(String, String)>,
    /// Why this case is not built here.
    pub skip: Option<String>,
}

/// Bases `cases.json` has no local substitute for whose role in their cases a stand-in
/// plays (the cases COPY or ADD files into them and do not run their programs): the
/// Dockerfile's FROM is rewritten to an alias of the stand-in in the run's registry
/// ([`Case::from_rewrites`]). `google/cloud-sdk:…-alpine` is Alpine-based (`COPY` into
/// `/usr/bin`), `phusion/baseimage` Ubuntu-based (`ADD` into `/etc/service`), `bash:4.4`
/// runs a script with `/usr/local/bin/bash` (`benchmark_fs`).
const EXTRA_STANDS: &[(&str, Stand)] = &[
    ("google/cloud-sdk:256.0.0-alpine", Stand::Busybox),
    ("phusion/baseimage:0.11", Stand::Debian),
    ("bash:4.4", Stand::Bash),
];

/// The alias an [`EXTRA_STANDS`] image is pushed under, in the localized form.
fn extra_alias(image: &str) -> String {
    format!("{LOCALIZED_REGISTRY}/kaniko-alias/{image}")
}

/// What stands in for a local substitute `cases.json` names.
fn stand_for(substitute: &str) -> Option<Stand> {
    match substitute.strip_prefix(LOCALIZED_REGISTRY)? {
        "/busybox:full" => Some(Stand::Busybox),
        "/debian:bookworm" => Some(Stand::Debian),
        "/kaniko-alias/onbuild-base:latest" => Some(Stand::OnbuildBase),
        _ => None,
    }
}

/// Why a case cannot be built on this machine, if it cannot: a base image with no stand-in,
/// a step that needs the network beyond package registries (Docker Hub, GitHub, Alpine's
/// or Red Hat's mirrors are not reachable; Debian's apt and npm are), or a git context.
/// `ADD <url>` is no reason: the run serves stand-ins for those URLs (`urls.rs`).
pub fn skip_reason(record: &Value) -> Option<String> {
    if text(record, "kaniko_use").is_some_and(|u| u.contains("git context")) {
        return Some(
            "its context is kaniko's whole repository, fetched as a git context (needs GitHub)"
                .into(),
        );
    }
    let missing: Vec<String> = record
        .get("bases")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter(|b| {
            matches!(
                text(b, "kind").as_deref(),
                Some("image" | "copy-from-image")
            )
        })
        .filter(|b| {
            text(b, "local_substitute")
                .and_then(|s| stand_for(&s))
                .is_none()
                && !text(b, "resolved").is_some_and(|r| EXTRA_STANDS.iter().any(|(i, _)| *i == r))
        })
        .filter_map(|b| text(b, "resolved"))
        .collect();
    if !missing.is_empty() {
        return Some(format!(
            "no local stand-in for the base image {} (Docker Hub is not reachable)",
            missing.join(", ")
        ));
    }
    let offline: Vec<String> = strings(record, "blockers")
        .into_iter()
        .filter(|b| {
            (b.contains("needs internet") && !b.starts_with("ADD <url>"))
                || b.contains("alpine mirror")
                || b.contains("RHEL")
        })
        .collect();
    if !offline.is_empty() {
        return Some(format!(
            "needs the network beyond package registries: {}",
            offline.join("; ")
        ));
    }
    None
}

/// `KEY=VALUE` for each build arg; a bare `KEY` takes its value from the case's `env`
/// (as `docker build --build-arg KEY` takes it from the environment). Returns the args and
/// the values so taken.
fn resolve_build_args(record: &Value) -> Result<(Vec<String>, Vec<String>)> {
    let env = strings(record, "env");
    let mut args = Vec::new();
    let mut secrets = Vec::new();
    for arg in strings(record, "build_args") {
        if arg.contains('=') {
            args.push(arg);
            continue;
        }
        let value = env
            .iter()
            .find_map(|e| e.strip_prefix(&format!("{arg}=")))
            .ok_or_else(|| anyhow!("build arg {arg} has no value and no `env` entry"))?;
        secrets.push(value.to_string());
        args.push(format!("{arg}={value}"));
    }
    Ok((args, secrets))
}

/// The `--target` of the case's `docker_flags`; any other flag is an error (it would be a
/// build option this runner drops).
fn target_of(record: &Value) -> Result<Option<String>> {
    let mut target = None;
    for flag in strings(record, "docker_flags") {
        match flag.strip_prefix("--target=") {
            Some(t) => target = Some(t.to_string()),
            None => bail!("docker flag {flag:?} is not supported by the corpus runner"),
        }
    }
    Ok(target)
}

fn parse_case(record: &Value) -> Result<Case> {
    let name = text(record, "name").ok_or_else(|| anyhow!("a case without a name"))?;
    let dockerfile = text(record, "localized_dockerfile")
        .ok_or_else(|| anyhow!("{name}: no localized_dockerfile"))?;
    let context = text(record, "context").ok_or_else(|| anyhow!("{name}: no context"))?;
    for path in [&dockerfile, &context] {
        // cases.json is input: its paths stay inside the corpus directory.
        if path.starts_with('/') || path.split('/').any(|c| c == "..") {
            bail!("{name}: path {path:?} leaves the corpus directory");
        }
    }
    let (build_args, secret_values) =
        resolve_build_args(record).with_context(|| format!("case {name}"))?;
    let target = target_of(record).with_context(|| format!("case {name}"))?;
    let mut aliases = Vec::new();
    let mut from_rewrites = Vec::new();
    for base in record
        .get("bases")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let substitute = text(base, "local_substitute").and_then(|s| stand_for(&s));
        if let Some(stand) = substitute {
            let alias = text(base, "alias_ref")
                .or_else(|| text(base, "local_substitute"))
                .unwrap_or_default();
            if !aliases.iter().any(|(a, _)| a == &alias) {
                aliases.push((alias, stand));
            }
        } else if let Some((image, stand)) =
            text(base, "resolved").and_then(|r| EXTRA_STANDS.iter().find(|(i, _)| *i == r))
        {
            let alias = extra_alias(image);
            if !aliases.iter().any(|(a, _)| a == &alias) {
                aliases.push((alias.clone(), *stand));
                from_rewrites.push((image.to_string(), alias));
            }
        }
    }
    Ok(Case {
        skip: skip_reason(record),
        name,
        dockerfile: PathBuf::from(dockerfile),
        context: PathBuf::from(context),
        build_args,
        target,
        secret_values,
        aliases,
        from_rewrites,
    })
}

/// Every case of a `cases.json` text, in its order.
pub fn parse_cases(json: &str) -> Result<Vec<Case>> {
    let records: Value = serde_json::from_str(json).context("parsing cases.json")?;
    records
        .as_array()
        .ok_or_else(|| anyhow!("cases.json is not a list"))?
        .iter()
        .map(parse_case)
        .collect()
}

/// The cases to run: those named (each must exist), else the `--quick` subset, else all.
pub fn select(cases: Vec<Case>, wanted: &[String], quick: bool) -> Result<Vec<Case>> {
    let names: Vec<String> = if !wanted.is_empty() {
        wanted.to_vec()
    } else if quick {
        QUICK.iter().map(|s| s.to_string()).collect()
    } else {
        return Ok(cases);
    };
    for name in &names {
        if !cases.iter().any(|c| &c.name == name) {
            bail!("no case {name:?} in cases.json");
        }
    }
    Ok(cases
        .into_iter()
        .filter(|c| names.contains(&c.name))
        .collect())
}

/// The Dockerfile text with each FROM line naming `image` naming `alias` instead (the rest
/// of the line kept).
pub fn rewrite_from(dockerfile: &str, rewrites: &[(String, String)]) -> String {
    let mut out = String::with_capacity(dockerfile.len());
    for line in dockerfile.split_inclusive('\n') {
        let words: Vec<&str> = line.split_whitespace().collect();
        let replaced = match words.as_slice() {
            [from, rest @ ..] if from.eq_ignore_ascii_case("FROM") => rest
                .iter()
                .find(|w| !w.starts_with("--"))
                .and_then(|image| rewrites.iter().find(|(i, _)| i == image))
                .map(|(image, alias)| line.replacen(image.as_str(), alias, 1)),
            _ => None,
        };
        out.push_str(replaced.as_deref().unwrap_or(line));
    }
    out
}

/// The Dockerfile text with the localized registry address replaced by this run's.
pub fn rewrite_registry(dockerfile: &str, registry: &str) -> String {
    dockerfile.replace(LOCALIZED_REGISTRY, registry)
}

#[cfg(test)]
mod tests {
    use super::*;

    const CASES: &str = r#"[
      {"name": "plain", "localized_dockerfile": "localized/dockerfiles/plain",
       "context": "integration", "build_args": ["file=/x"], "env": [], "docker_flags": [],
       "kaniko_use": "", "blockers": [],
       "bases": [{"kind": "image", "resolved": "debian:10.13",
                  "local_substitute": "127.0.0.1:5000/debian:bookworm",
                  "alias_ref": "127.0.0.1:5000/kaniko-alias/debian:10.13"},
                 {"kind": "stage", "resolved": "base"}]},
      {"name": "secret", "localized_dockerfile": "localized/dockerfiles/secret",
       "context": "integration", "build_args": ["KEY", "PUB=p"], "env": ["KEY=s3cr3t"],
       "docker_flags": ["--target=second"], "blockers": [], "bases": []},
      {"name": "url", "localized_dockerfile": "localized/dockerfiles/url",
       "context": "integration", "build_args": [], "env": [], "docker_flags": [],
       "blockers": ["ADD <url> (needs internet)", "RUN apt-get (needs apt mirror)"],
       "bases": [{"kind": "image", "resolved": "busybox",
                  "local_substitute": "127.0.0.1:5000/busybox:full",
                  "alias_ref": "127.0.0.1:5000/kaniko-alias/busybox:latest"}]},
      {"name": "alpine", "localized_dockerfile": "localized/dockerfiles/alpine",
       "context": "integration", "build_args": [], "env": [], "docker_flags": [],
       "blockers": ["RUN apk (needs alpine mirror)"],
       "bases": [{"kind": "image", "resolved": "alpine",
                  "local_substitute": "127.0.0.1:5000/busybox:full",
                  "alias_ref": "127.0.0.1:5000/kaniko-alias/alpine:latest"}]},
      {"name": "fedora", "localized_dockerfile": "localized/dockerfiles/fedora",
       "context": "integration", "build_args": [], "env": [], "docker_flags": [],
       "blockers": [],
       "bases": [{"kind": "image", "resolved": "fedora@sha256:c4",
                  "local_substitute": null}]},
      {"name": "apt", "localized_dockerfile": "localized/dockerfiles/apt",
       "context": "integration", "build_args": [], "env": [], "docker_flags": [],
       "blockers": ["RUN apt-get (needs apt mirror)"],
       "bases": [{"kind": "image", "resolved": "gcr.io/kaniko-test/onbuild-base:latest",
                  "local_substitute": "127.0.0.1:5000/kaniko-alias/onbuild-base:latest"}]}
    ]"#;

    fn by_name<'a>(cases: &'a [Case], name: &str) -> &'a Case {
        cases.iter().find(|c| c.name == name).unwrap()
    }

    #[test]
    fn cases_get_their_args_target_and_stand_ins() {
        let cases = parse_cases(CASES).unwrap();
        let plain = by_name(&cases, "plain");
        assert_eq!(plain.build_args, ["file=/x"]);
        assert_eq!(plain.target, None);
        assert_eq!(
            plain.aliases,
            [(
                "127.0.0.1:5000/kaniko-alias/debian:10.13".to_string(),
                Stand::Debian
            )]
        );
        assert!(plain.skip.is_none());
        let secret = by_name(&cases, "secret");
        assert_eq!(secret.build_args, ["KEY=s3cr3t", "PUB=p"]);
        assert_eq!(secret.secret_values, ["s3cr3t"]);
        assert_eq!(secret.target.as_deref(), Some("second"));
        let apt = by_name(&cases, "apt");
        assert_eq!(apt.aliases[0].1, Stand::OnbuildBase);
    }

    #[test]
    fn cases_that_cannot_run_here_say_why() {
        let cases = parse_cases(CASES).unwrap();
        // ADD <url> is served by the run's stand-in server; apt's mirror is reachable.
        assert!(by_name(&cases, "url").skip.is_none());
        let alpine = by_name(&cases, "alpine").skip.clone().unwrap();
        assert!(alpine.contains("alpine mirror"), "{alpine}");
        let fedora = by_name(&cases, "fedora").skip.clone().unwrap();
        assert!(fedora.contains("fedora@sha256:c4"), "{fedora}");
        // apt's mirror is reachable: not a reason to skip.
        assert!(by_name(&cases, "apt").skip.is_none());
    }

    #[test]
    fn hostile_or_incomplete_records_are_errors() {
        let escape = r#"[{"name": "x", "localized_dockerfile": "../../etc/passwd",
                          "context": "integration"}]"#;
        assert!(parse_cases(escape).is_err());
        let absolute = r#"[{"name": "x", "localized_dockerfile": "a", "context": "/"}]"#;
        assert!(parse_cases(absolute).is_err());
        let unset = r#"[{"name": "x", "localized_dockerfile": "a", "context": "b",
                         "build_args": ["NOPE"], "env": []}]"#;
        assert!(parse_cases(unset).is_err());
        let flag = r#"[{"name": "x", "localized_dockerfile": "a", "context": "b",
                        "docker_flags": ["--squash"]}]"#;
        let err = parse_cases(flag).unwrap_err();
        assert!(format!("{err:#}").contains("--squash"), "{err:#}");
    }

    #[test]
    fn selection_by_name_quick_or_all() {
        let cases = parse_cases(CASES).unwrap();
        assert_eq!(select(cases.clone(), &[], false).unwrap().len(), 6);
        let picked = select(cases.clone(), &["url".into(), "plain".into()], false).unwrap();
        let names: Vec<&str> = picked.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, ["plain", "url"]);
        assert!(select(cases.clone(), &["missing".into()], false).is_err());
        // The quick subset names cases of the real corpus, not of this sample.
        assert!(select(cases, &[], true).is_err());
    }

    #[test]
    fn bases_without_a_substitute_get_an_extra_stand_in_and_their_from_is_rewritten() {
        let json = r#"[{"name": "sdk", "localized_dockerfile": "a", "context": "b",
             "bases": [{"kind": "image", "resolved": "google/cloud-sdk:256.0.0-alpine",
                        "local_substitute": null}]}]"#;
        let case = &parse_cases(json).unwrap()[0];
        assert!(case.skip.is_none(), "{:?}", case.skip);
        let alias = "127.0.0.1:5000/kaniko-alias/google/cloud-sdk:256.0.0-alpine";
        assert_eq!(case.aliases, [(alias.to_string(), Stand::Busybox)]);
        let text = "# FROM google/cloud-sdk:256.0.0-alpine\n\
                    from --platform=linux/amd64 google/cloud-sdk:256.0.0-alpine AS a\n\
                    COPY google/cloud-sdk:256.0.0-alpine /x\n";
        let out = rewrite_from(text, &case.from_rewrites);
        assert_eq!(
            out,
            format!(
                "# FROM google/cloud-sdk:256.0.0-alpine\n\
                 from --platform=linux/amd64 {alias} AS a\n\
                 COPY google/cloud-sdk:256.0.0-alpine /x\n"
            )
        );
    }

    #[test]
    fn the_registry_address_is_rewritten_everywhere() {
        let text = "ARG REGISTRY=127.0.0.1:5000\nFROM 127.0.0.1:5000/kaniko-alias/debian:12\nCOPY --from=127.0.0.1:5000/kaniko-alias/debian:12 / /\n";
        let out = rewrite_registry(text, "127.0.0.1:40123");
        assert!(!out.contains(":5000"), "{out}");
        assert_eq!(out.matches("127.0.0.1:40123").count(), 3);
    }
}
