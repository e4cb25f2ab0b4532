//! The rows on Debian bookworm: the snapshot comparison and the real-world builds (apt,
//! pip, npm), whose package managers reach the machine's mirrors.

use super::{write, Base, Context, Limit, LimitStage};

/// The machine's CA bundle (with update-ca-certificates' additions, e.g. a proxy's CA),
/// given as the secret `ca` to the package managers that speak HTTPS: through a variable of
/// their RUN step only, so it is in no layer and no config.
pub const CA_BUNDLE: &str = "/etc/ssl/certs/ca-certificates.crt";

/// The apps of the real-world fidelity cases (testdata/fidelity/debian_apps), built here too.
const PYTHON_APP: &[(&str, &str)] = &[
    (
        "app.py",
        include_str!("../../../../testdata/fidelity/debian_apps/python/app.py"),
    ),
    (
        "requirements.txt",
        include_str!("../../../../testdata/fidelity/debian_apps/python/requirements.txt"),
    ),
];
const NODE_APP: &[(&str, &str)] = &[
    (
        "index.js",
        include_str!("../../../../testdata/fidelity/debian_apps/node/index.js"),
    ),
    (
        "package.json",
        include_str!("../../../../testdata/fidelity/debian_apps/node/package.json"),
    ),
    (
        "package-lock.json",
        include_str!("../../../../testdata/fidelity/debian_apps/node/package-lock.json"),
    ),
];

/// The script of the snapshot workload: `files` files of 25 KB of random data in
/// directories of 100 under `root` (250 MB for 10,000 files).
pub fn snapshot_script(root: &str, files: usize) -> String {
    let dirs = files.div_ceil(100);
    format!(
        "for i in $(seq 1 {dirs}); do mkdir -p {root}/data/d$i; for j in $(seq 1 100); do \
         head -c 25000 /dev/urandom > {root}/data/d$i/f$j; done; done"
    )
}

/// A step writing `files` files of 25 KB on top of Debian: what a snapshot has to find and
/// turn into a layer.
pub fn snapshot(files: usize) -> Context {
    Context {
        name: "snapshot",
        what: format!(
            "Debian + one RUN writing {files} files, {} MB",
            files * 25_000 / 1_000_000
        ),
        base: Base::Debian,
        cacheable_steps: 1,
        changed_file: None,
        secrets: &[],
        limit: None,
        make: Box::new(move |dir, from| {
            write(
                dir,
                "Dockerfile",
                &format!("FROM {from}\nRUN {}\n", snapshot_script("", files)),
            )
        }),
    }
}

const APT_RUN: &str = "apt-get update -qq && \
                       apt-get install -y -qq --no-install-recommends curl ca-certificates && \
                       rm -rf /var/lib/apt/lists/*";

pub fn apt() -> Context {
    Context {
        name: "apt",
        what: "apt-get install curl into Debian (network: the apt mirror)".into(),
        base: Base::Debian,
        cacheable_steps: 1,
        changed_file: None,
        secrets: &[],
        limit: Some(Limit::commands(vec![APT_RUN.into()])),
        make: Box::new(|dir, from| {
            write(dir, "Dockerfile", &format!("FROM {from}\nRUN {APT_RUN}\n"))
        }),
    }
}

/// A Python app on Debian: pip from apt, then `pip install -r requirements.txt` from the
/// package index (over HTTPS, hence the CA secret), checked by running the app in the same
/// step.
pub fn pip() -> Context {
    debian_app(
        "pip",
        "apt-get install python3-pip, then pip install of a small app's requirements \
         (network: the apt mirror and the package index)",
        "python3-pip",
        PYTHON_APP,
        "PIP_CERT=/run/secrets/ca \
         pip install --no-cache-dir --break-system-packages -r requirements.txt \
         && python3 app.py",
    )
}

/// A Node app on Debian: nodejs and npm from apt, then `npm ci` from package-lock.json
/// (over HTTPS, hence the CA secret), checked by running the app in the same step.
pub fn npm() -> Context {
    debian_app(
        "npm",
        "apt-get install nodejs npm, then npm ci of a small app \
         (network: the apt mirror and the package registry)",
        "nodejs npm",
        NODE_APP,
        "npm_config_cafile=/run/secrets/ca \
         npm ci --no-audit --no-fund --no-update-notifier \
         && rm -rf /root/.npm && node index.js",
    )
}

/// An app on Debian: `packages` from apt, the app's `files` copied to /app, then `install`
/// (its package manager, with the CA bundle as the build secret `ca`) in one step.
fn debian_app(
    name: &'static str,
    what: &str,
    packages: &'static str,
    files: &'static [(&'static str, &'static str)],
    install: &'static str,
) -> Context {
    let apt_run = format!(
        "apt-get update -qq && apt-get install -y -qq --no-install-recommends {packages} && \
         rm -rf /var/lib/apt/lists/*"
    );
    Context {
        name,
        what: what.into(),
        base: Base::Debian,
        cacheable_steps: 3,
        changed_file: None,
        secrets: &[("ca", CA_BUNDLE)],
        limit: Some(Limit {
            stages: vec![LimitStage {
                copies: vec![("app", "/app")],
                runs: vec![("/", apt_run.clone()), ("/app", install.to_string())],
            }],
        }),
        make: Box::new(move |dir, from| {
            for (name, text) in files {
                write(dir, &format!("app/{name}"), text)?;
            }
            write(
                dir,
                "Dockerfile",
                &format!(
                    "FROM {from}\nRUN {apt_run}\nWORKDIR /app\nCOPY app/ ./\n\
                     RUN --mount=type=secret,id=ca {install}\n"
                ),
            )
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    #[test]
    fn real_world_apps_are_the_fidelity_apps_and_get_the_ca_only_as_a_secret() {
        let apps = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../testdata/fidelity/debian_apps");
        for (c, app, files, installer) in [
            (
                pip(),
                "python",
                &["app.py", "requirements.txt"][..],
                "pip install",
            ),
            (
                npm(),
                "node",
                &["index.js", "package.json", "package-lock.json"][..],
                "npm ci",
            ),
        ] {
            let dir = tempfile::tempdir().unwrap();
            (c.make)(dir.path(), "b").unwrap();
            for f in files {
                assert_eq!(
                    fs::read(dir.path().join("app").join(f)).unwrap(),
                    fs::read(apps.join(app).join(f)).unwrap(),
                    "{}: {f}",
                    c.name
                );
            }
            assert_eq!(c.secrets, &[("ca", CA_BUNDLE)], "{}", c.name);
            let text = fs::read_to_string(dir.path().join("Dockerfile")).unwrap();
            let run = text
                .lines()
                .find(|l| l.contains(installer))
                .unwrap_or_else(|| panic!("{}: no {installer} in\n{text}", c.name));
            // The bundle is mounted for this step only and never copied into the image.
            assert!(
                run.starts_with("RUN --mount=type=secret,id=ca "),
                "{}: {run}",
                c.name
            );
            assert!(run.contains("=/run/secrets/ca "), "{}: {run}", c.name);
            assert!(!text.contains("ca-certificates.crt"), "{}", c.name);
            assert_eq!(c.base, Base::Debian, "{}", c.name);
        }
    }
}
