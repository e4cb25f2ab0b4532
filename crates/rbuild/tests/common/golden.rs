//! BuildKit's Dockerfile frontend tests as golden cases (`testdata/buildkit-cases`): reading
//! the cases, the base they build on, and judging an image (or an error) against a golden.
//! Used by `buildkit_cases.rs` (on the host, both isolations) and `builder_image.rs` (in the
//! builder image, rbuild as a container's entrypoint).

use std::path::{Path, PathBuf};
use std::process::Output;

use rbuild_diff::describe::{self, BaseCounts};
use rbuild_diff::{read_image, ImageSource};
use rbuild_testutil::{busybox_rootfs, CaseFile, CaseServers, ObjectFormat};
use serde_json::Value;

/// The image every case builds `FROM`.
pub const BASE_NAME: &str = "buildkit-cases-base";

pub fn cases_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../testdata/buildkit-cases")
}

fn ok(what: &str, out: Output) -> Output {
    assert!(
        out.status.success(),
        "{what} failed ({}):\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

pub struct Case {
    pub name: String,
    pub dir: PathBuf,
    pub spec: Value,
}

impl Case {
    pub fn strings(&self, key: &str) -> Vec<String> {
        self.spec[key]
            .as_array()
            .map(|v| v.iter().map(|s| s.as_str().unwrap().to_string()).collect())
            .unwrap_or_default()
    }

    pub fn text(&self, key: &str) -> Option<&str> {
        self.spec[key].as_str()
    }
}

/// The case's HTTP server, when `case.json` asks for one: `http_files` (`{"/PATH":
/// "FILE"}`, FILE a file of the case), `http_headers` (`{"/PATH": {"Header": "value"}}`)
/// and `git_repos` (`[{"name": "NAME", "format": "sha1" | "sha256"}]`, each made by
/// `repos/NAME.sh` and served at `/git/NAME.git`). The Dockerfile and build arguments name
/// its address as `{{HTTP}}`.
pub fn start_servers(case: &Case) -> Option<CaseServers> {
    let files = case.spec["http_files"].as_object();
    let repos = case.spec["git_repos"].as_array();
    if files.is_none() && repos.is_none() {
        return None;
    }
    let files: Vec<CaseFile> = files
        .into_iter()
        .flatten()
        .map(|(path, file)| CaseFile {
            path: path.clone(),
            file: PathBuf::from(file.as_str().unwrap()),
            headers: case.spec["http_headers"][path]
                .as_object()
                .into_iter()
                .flatten()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_string()))
                .collect(),
        })
        .collect();
    let repos: Vec<(String, ObjectFormat)> = repos
        .into_iter()
        .flatten()
        .map(|r| {
            (
                r["name"].as_str().unwrap().to_string(),
                ObjectFormat::parse(r["format"].as_str().unwrap_or("sha1")).unwrap(),
            )
        })
        .collect();
    Some(
        rbuild_testutil::case_repos_dir(&case.dir, case.spec["git_repos_from"].as_str())
            .and_then(|repos_dir| CaseServers::start(&case.dir, &files, &repos_dir, &repos))
            .unwrap_or_else(|e| panic!("{}: starting its servers: {e}", case.name)),
    )
}

/// `value` with every `from` in its strings replaced by `to` (a server's address by its
/// placeholder).
pub fn replace_in_json(value: &Value, from: &str, to: &str) -> Value {
    let text = serde_json::to_string(value).unwrap();
    serde_json::from_str(&text.replace(from, to)).unwrap()
}

pub fn cases() -> Vec<Case> {
    let mut cases: Vec<Case> = std::fs::read_dir(cases_dir())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.join("case.json").is_file())
        .map(|dir| {
            let text = std::fs::read_to_string(dir.join("case.json")).unwrap();
            let spec: Value = serde_json::from_str(&text)
                .unwrap_or_else(|e| panic!("{}: {e}", dir.join("case.json").display()));
            Case {
                name: dir.file_name().unwrap().to_string_lossy().into_owned(),
                dir,
                spec,
            }
        })
        .collect();
    cases.sort_by(|a, b| a.name.cmp(&b.name));
    cases
}

/// The base's build context under `work` (`base/`): the machine's static busybox with every
/// applet linked, the cases' `/etc/passwd` and `/etc/group`, and its Dockerfile; the base is
/// built from it as `BASE_NAME`.
pub fn base_context(work: &Path) -> PathBuf {
    let ctx = work.join("base");
    let rootfs = ctx.join("rootfs");
    busybox_rootfs(&rootfs);
    // The host's busybox, not the copy just written: another test thread forking while the
    // copy was open for writing leaves that child holding it open until it execs, and
    // running the copy then fails with "Text file busy".
    let host_busybox = [rbuild_testutil::BUSYBOX, "/usr/bin/busybox"]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .expect("busybox_rootfs found one of them");
    let list = ok(
        "busybox --list",
        std::process::Command::new(host_busybox)
            .arg("--list")
            .output()
            .unwrap(),
    );
    for applet in String::from_utf8(list.stdout).unwrap().lines() {
        let link = rootfs.join("bin").join(applet);
        if applet != "busybox" && std::fs::symlink_metadata(&link).is_err() {
            std::os::unix::fs::symlink("busybox", link).unwrap();
        }
    }
    for file in ["passwd", "group"] {
        std::fs::copy(
            cases_dir().join("base/etc").join(file),
            rootfs.join("etc").join(file),
        )
        .unwrap();
    }
    std::fs::write(
        ctx.join("Dockerfile"),
        "FROM scratch\nCOPY rootfs/ /\nCMD [\"sh\"]\n",
    )
    .unwrap();
    ctx
}

/// How many layers and history entries the base in `store` has (they are not in the goldens).
pub fn base_counts(store: &Path) -> BaseCounts {
    let opened = rbuild_store::Store::open(store).unwrap();
    let base = read_image(&ImageSource::Store(BASE_NAME.into()), Some(&opened)).unwrap();
    BaseCounts::of(&base)
}

/// Whether rbuild did what BuildKit did (`Ok`: the verdict) or not (`Err`: how it differs).
pub fn compare(
    case: &Case,
    built: Result<PathBuf, String>,
    base: BaseCounts,
    servers: Option<&CaseServers>,
) -> Result<String, String> {
    // The address of the case's server, as the golden names it.
    let built = built.map_err(|stderr| match servers {
        Some(s) => s.unsubstitute(&stderr),
        None => stderr,
    });
    let golden_path = case.dir.join("golden.json");
    let golden: Value = serde_json::from_str(&std::fs::read_to_string(&golden_path).unwrap())
        .unwrap_or_else(|e| panic!("{}: {e}", golden_path.display()));
    match (built, case.text("error")) {
        (_, Some(_)) if golden.get("error").is_none() => {
            panic!(
                "{}: case.json expects an error but golden.json is an image",
                case.name
            )
        }
        (Err(stderr), Some(wanted)) if stderr.contains(wanted) => Ok("same error".into()),
        (Err(stderr), Some(wanted)) => {
            Err(format!("the error does not contain {wanted:?}:\n{stderr}"))
        }
        (Err(stderr), None) => Err(format!("rbuild failed:\n{stderr}")),
        (Ok(_), Some(wanted)) => Err(format!("rbuild built it; BuildKit fails ({wanted:?})")),
        (Ok(archive), None) => {
            let image = read_image(&ImageSource::Archive(archive.clone(), None), None).unwrap();
            let mut found = describe::describe(&image, base).unwrap();
            if case.spec["times"].as_bool() == Some(true) {
                describe::add_times(&mut found, &image, base);
            }
            if !case.strings("exporter_attrs").is_empty() {
                describe::add_rewritten_timestamps(&mut found, &image);
            }
            if let Some(servers) = servers {
                found = replace_in_json(&found, &servers.url(), rbuild_testutil::HTTP_PLACEHOLDER);
            }
            let differences = describe::differences(&golden, &found);
            if differences.is_empty() {
                Ok("equal".into())
            } else {
                Err(format!(
                    "differs from BuildKit's image:\n  {}",
                    differences.join("\n  ")
                ))
            }
        }
    }
}

/// The `buildkit/rewritten-timestamp` annotation (`-o …,rewrite-timestamp=true`) of each
/// layer in the manifest of an image archive, `null` where there is none.
pub fn rewritten_timestamps(archive: &Path) -> Value {
    let image = read_image(&ImageSource::Archive(archive.to_path_buf(), None), None).unwrap();
    let mut description = serde_json::json!({});
    describe::add_rewritten_timestamps(&mut description, &image);
    description["rewritten_timestamps"].take()
}

/// The verdict for the summary, and the failure, if any: a case must match its golden, and
/// a case with a known difference must still differ.
pub fn judge(
    case: &Case,
    built: Result<PathBuf, String>,
    base: BaseCounts,
    isolation: &str,
) -> (String, Option<String>) {
    judge_with(case, built, base, isolation, None)
}

/// [`judge`] of a case built with its servers (their address mapped back to the
/// placeholder before the comparison).
pub fn judge_with(
    case: &Case,
    built: Result<PathBuf, String>,
    base: BaseCounts,
    isolation: &str,
    servers: Option<&CaseServers>,
) -> (String, Option<String>) {
    // `known_difference_<isolation>` overrides `known_difference` for one isolation
    // (`null`: none there).
    let known = match case.spec.get(format!("known_difference_{isolation}")) {
        Some(value) => value.as_str(),
        None => case.text("known_difference"),
    };
    // A case built FROM scratch alone (`"base": "scratch"`) is described whole.
    let base = match case.text("base") {
        Some("scratch") => BaseCounts {
            layers: 0,
            history: 0,
        },
        _ => base,
    };
    match (compare(case, built, base, servers), known) {
        (Ok(verdict), None) => (verdict, None),
        (Err(problem), None) => ("different".into(), Some(problem)),
        (Err(_), Some(reason)) => (format!("known: {reason}"), None),
        (Ok(verdict), Some(reason)) => (
            verdict,
            Some(format!(
                "the known difference ({reason}) is gone: remove `known_difference` from \
                 case.json and from docs/fidelity.md"
            )),
        ),
    }
}
