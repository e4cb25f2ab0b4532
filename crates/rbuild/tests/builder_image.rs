//! The builder images (`cargo xtask builder-image`): loaded into a real dockerd and run with
//! rbuild as the container's entrypoint and Docker's default security options, as a CI job
//! or a Kubernetes Job runs them. Runs as root (CI does); needs Debian's docker.io,
//! docker-registry and apache2-utils.
//!
//! The images are read from `$RBUILD_BUILDER_IMAGE_DIR` (scripts/test.sh builds them there
//! before the tests); without it, this test builds them with `cargo xtask builder-image`
//! into `target/builder-image` (a release build in its own target directory).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use rbuild_testutil::{busybox_rootfs, require_root, Dockerd, Registry};

mod common;
use common::golden::{base_context, base_counts, cases, judge_with, start_servers, BASE_NAME};
use common::RESTRICTED_POD;

/// The largest `rbuild:latest` may be (the issue's bound is 80 MB; it is far smaller).
const MAX_IMAGE_BYTES: u64 = 80 * 1000 * 1000;

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .nth(2)
        .expect("the crate is two levels below the repository")
        .to_path_buf()
}

fn image_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("RBUILD_BUILDER_IMAGE_DIR") {
        return PathBuf::from(dir);
    }
    let repo = repo_root();
    let out = repo.join("target/builder-image");
    let status = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .current_dir(&repo)
        .args(["xtask", "builder-image"])
        .arg(&out)
        // `cargo test` holds target/'s lock while tests run.
        .env("CARGO_TARGET_DIR", repo.join("target/dist"))
        .status()
        .expect("cannot run cargo xtask builder-image");
    assert!(status.success(), "cargo xtask builder-image failed");
    out
}

fn write(path: &Path, text: &str) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, text).unwrap();
}

fn describe(out: &Output) -> String {
    format!(
        "exit {}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Base64 of `text` (for a Basic authorization header).
const BASE_DOCKERFILE: &str = "FROM scratch\nCOPY rootfs/ /\nENV PATH=/bin\nCMD [\"sh\"]\n";

/// Every RUN --mount kind, a chown'd, a setuid and a hard-linked file, and a stage bound from.
const APP_DOCKERFILE: &str = r#"FROM base:1 AS helper
RUN echo made-in-helper > /made.txt

FROM base:1
COPY --chown=1000:1000 data.txt /owned/data.txt
RUN --mount=type=secret,id=token grep -c s3cr3t-value /run/secrets/token > /secret-seen.txt
RUN --mount=type=cache,target=/var/cache/app echo run >> /var/cache/app/log && cp /var/cache/app/log /cache-seen.txt
RUN --mount=type=bind,source=data.txt,target=/mnt/data.txt cp /mnt/data.txt /bound.txt
RUN --mount=type=bind,from=helper,source=/made.txt,target=/mnt/made.txt cp /mnt/made.txt /from-stage.txt
RUN --mount=type=tmpfs,target=/scratch touch /scratch/x && ls /scratch > /tmpfs-seen.txt
RUN cp /bin/busybox /suid && busybox chmod 4755 /suid && busybox cp /bound.txt /copy.txt && busybox ln /copy.txt /bound-link.txt && id -u > /uid.txt
"#;

const SECRET: &str = "s3cr3t-value-of-the-test";

struct Fixture {
    daemon: Dockerd,
    ctx: tempfile::TempDir,
    store: tempfile::TempDir,
}

impl Fixture {
    fn new() -> Fixture {
        let dir = image_dir();
        let daemon = Dockerd::start();
        for file in ["rbuild.tar", "rbuild-debug.tar"] {
            let path = dir.join(file);
            daemon.docker_ok(&["load", "-i", path.to_str().unwrap()]);
        }
        let ctx = tempfile::tempdir().unwrap();
        busybox_rootfs(&ctx.path().join("base/rootfs"));
        write(&ctx.path().join("base/Dockerfile"), BASE_DOCKERFILE);
        write(&ctx.path().join("app/Dockerfile"), APP_DOCKERFILE);
        write(&ctx.path().join("app/data.txt"), "from the context\n");
        write(&ctx.path().join("secret.txt"), SECRET);
        let store = tempfile::tempdir().unwrap();
        Fixture { daemon, ctx, store }
    }

    /// `docker run --rm` of `image` with rbuild as its entrypoint (the image's own), the
    /// contexts at /ctx, the store at /var/lib/rbuild and `out` at /out.
    fn rbuild(&self, image: &str, extra: &[&str], out: &Path, args: &[&str]) -> Output {
        let ctx = format!("{}:/ctx:ro", self.ctx.path().display());
        let store = format!("{}:/var/lib/rbuild", self.store.path().display());
        let out = format!("{}:/out", out.display());
        let mut all = vec!["run", "--rm", "-v", &ctx, "-v", &store, "-v", &out];
        all.extend_from_slice(extra);
        all.push(image);
        all.extend_from_slice(args);
        self.daemon.docker(&all)
    }
}

#[test]
fn builder_images_build_push_and_cache_with_rbuild_as_the_entrypoint() {
    require_root("running dockerd");
    let fx = Fixture::new();

    // The plain image: small, no shell, rbuild as entrypoint.
    let size: u64 = fx
        .daemon
        .docker_ok(&["image", "inspect", "--format", "{{.Size}}", "rbuild:latest"])
        .trim()
        .parse()
        .unwrap();
    assert!(size < MAX_IMAGE_BYTES, "rbuild:latest is {size} bytes");
    let version = fx
        .daemon
        .docker(&["run", "--rm", "rbuild:latest", "--version"]);
    assert!(
        String::from_utf8_lossy(&version.stdout).contains("rbuild"),
        "{}",
        describe(&version)
    );
    let shell = fx.daemon.docker(&[
        "run",
        "--rm",
        "--entrypoint",
        "/bin/sh",
        "rbuild:latest",
        "-c",
        "true",
    ]);
    assert!(
        !shell.status.success(),
        "rbuild:latest must have no shell: {}",
        describe(&shell)
    );

    // A build with every RUN --mount kind, rbuild as PID 1, default security options.
    let out = tempfile::tempdir().unwrap();
    let base = fx.rbuild(
        "rbuild:latest",
        &[],
        out.path(),
        &["build", "-q", "-t", "base:1", "/ctx/base"],
    );
    assert!(base.status.success(), "base: {}", describe(&base));
    let app = fx.rbuild(
        "rbuild:latest",
        &["--network", "none"],
        out.path(),
        &[
            "build",
            "--progress",
            "plain",
            "--secret",
            "id=token,src=/ctx/secret.txt",
            "-t",
            "app:1",
            "-o",
            "type=local,dest=/out/rootfs",
            "/ctx/app",
        ],
    );
    assert!(app.status.success(), "app: {}", describe(&app));
    let rootfs = out.path().join("rootfs");
    let read = |p: &str| {
        std::fs::read_to_string(rootfs.join(p))
            .unwrap_or_else(|e| panic!("{p}: {e}\n{}", describe(&app)))
    };
    assert_eq!(read("secret-seen.txt"), "1\n");
    assert_eq!(read("cache-seen.txt"), "run\n");
    assert_eq!(read("bound.txt"), "from the context\n");
    assert_eq!(read("from-stage.txt"), "made-in-helper\n");
    assert_eq!(read("tmpfs-seen.txt"), "x\n");
    assert_eq!(read("uid.txt"), "0\n");
    for leaked in [
        "run/secrets/token",
        "var/cache/app/log",
        "mnt/data.txt",
        "mnt/made.txt",
        "scratch/x",
    ] {
        assert!(
            !rootfs.join(leaked).exists(),
            "{leaked} reached the image: {}",
            describe(&app)
        );
    }
    for line in String::from_utf8_lossy(&app.stdout)
        .lines()
        .chain(String::from_utf8_lossy(&app.stderr).lines())
    {
        assert!(!line.contains(SECRET), "the secret was printed: {line}");
    }
    use std::os::unix::fs::MetadataExt;
    let suid = std::fs::metadata(rootfs.join("suid")).unwrap();
    assert_eq!(suid.mode() & 0o7777, 0o4755);
    let owned = std::fs::metadata(rootfs.join("owned/data.txt")).unwrap();
    assert_eq!((owned.uid(), owned.gid()), (1000, 1000));
    // Linked in the RUN that made the file: a layer links only names it writes itself
    // (a link to a file of an earlier layer is a regular file, as in BuildKit's image).
    let copy = std::fs::metadata(rootfs.join("copy.txt")).unwrap();
    let link = std::fs::metadata(rootfs.join("bound-link.txt")).unwrap();
    assert_eq!(copy.ino(), link.ino(), "the hard link was not kept");

    // rbuild:debug as GitLab runs it: a shell script logs in and pushes with Kaniko's
    // command line and a registry cache.
    let (user, pass) = ("ci-user", "ci-pass-of-the-test");
    let registry = Registry::start_with_htpasswd(user, pass);
    let host = registry.host();
    let script = format!(
        "set -e\n\
         echo \"$CI_REGISTRY_PASSWORD\" | rbuild login -u \"$CI_REGISTRY_USER\" --password-stdin {host}\n\
         /kaniko/executor --context dir://{ctx} --dockerfile Dockerfile \
           --destination {host}/team/app:1 --cache=true \
           --image-name-with-digest-file /out/image-digest.txt --verbosity info\n",
        ctx = "/ctx/kaniko"
    );
    let user_env = format!("CI_REGISTRY_USER={user}");
    let pass_env = format!("CI_REGISTRY_PASSWORD={pass}");
    let status = |repo: &str, tag: &str| registry.manifest_status_logged_in(repo, tag);
    write(
        &fx.ctx.path().join("kaniko/Dockerfile"),
        "FROM base:1\nRUN --mount=type=cache,target=/var/cache/k busybox head -c 64 /dev/urandom | busybox od -A n -x > /random.txt\nCOPY data.txt /data.txt\n",
    );
    write(&fx.ctx.path().join("kaniko/data.txt"), "kaniko context\n");
    let kaniko = fx.rbuild(
        "rbuild:debug",
        &[
            "--network",
            "host",
            "-e",
            &user_env,
            "-e",
            &pass_env,
            "--entrypoint",
            "",
        ],
        out.path(),
        &["sh", "-c", &script],
    );
    assert!(kaniko.status.success(), "kaniko: {}", describe(&kaniko));
    assert_eq!(status("team/app", "1"), Some(200), "{}", describe(&kaniko));
    assert_eq!(
        status("team/app/cache", "buildcache"),
        Some(200),
        "the registry cache was not pushed: {}",
        describe(&kaniko)
    );
    let digest_line = std::fs::read_to_string(out.path().join("image-digest.txt")).unwrap();
    assert!(
        digest_line.starts_with(&format!("{host}/team/app@sha256:")),
        "{digest_line:?}"
    );
    assert!(
        !describe(&kaniko).contains(pass),
        "the password was printed"
    );

    // The Kubernetes Job for root with RuntimeDefault seccomp (docs/ci/kubernetes.md), its
    // container spec as the equivalent `docker run`: the manifest's own `args:`, uid 0,
    // allowPrivilegeEscalation false (no-new-privileges), Docker's default seccomp, the
    // registry credentials mounted read-only at /root/.docker.
    let manifest = std::fs::read_to_string(repo_root().join("docs/ci/kubernetes.md")).unwrap();
    let args: Vec<String> = job_args(&manifest)
        .into_iter()
        .map(|a| {
            // A repository of its own: the Kaniko job above pushed team/app.
            a.replace("registry.example.com", &host)
                .replace("team/app", "team/job")
                .replace("/workspace", "/ctx/job")
        })
        .collect();
    assert!(args.iter().any(|a| a == "--push"), "{args:?}");
    write(
        &fx.ctx.path().join("job/Dockerfile"),
        "FROM base:1\nRUN echo built-by-the-job > /job.txt\nCOPY data.txt /data.txt\n",
    );
    write(&fx.ctx.path().join("job/data.txt"), "job context\n");
    let config = tempfile::tempdir().unwrap();
    write(
        &config.path().join("config.json"),
        &registry.docker_config_json(),
    );
    let config_volume = format!("{}:/root/.docker:ro", config.path().display());
    let arg_refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let job = fx.rbuild(
        "rbuild:latest",
        &[
            "--network",
            "host",
            "--user",
            "0",
            "--security-opt",
            "no-new-privileges",
            "-v",
            &config_volume,
        ],
        out.path(),
        &arg_refs,
    );
    assert!(job.status.success(), "the Job: {}", describe(&job));
    assert_eq!(status("team/job", "1"), Some(200), "{}", describe(&job));
    assert!(
        args.iter().any(|a| a.starts_with("--cache-repo=")),
        "{args:?}"
    );
    assert_eq!(
        status("team/job/cache", "buildcache"),
        Some(200),
        "the Job's registry cache was not pushed: {}",
        describe(&job)
    );
    assert!(!describe(&job).contains(pass), "the password was printed");

    // The Jenkins agent pod (docs/ci/jenkins.md): rbuild:debug kept alive by its own
    // `/busybox/sleep` under the same securityContext, the pipeline's `sh` step run in it as
    // the Kubernetes plugin does (an exec in the workspace).
    let pipeline = std::fs::read_to_string(repo_root().join("docs/ci/jenkins.md")).unwrap();
    let sleep: Vec<String> = pipeline
        .lines()
        .filter_map(|l| {
            let l = l.trim();
            l.strip_prefix("command: [\"")
                .or_else(|| l.strip_prefix("args: [\""))
                .and_then(|rest| rest.strip_suffix("\"]"))
                .map(str::to_string)
        })
        .collect();
    assert_eq!(
        sleep,
        ["/busybox/sleep", "infinity"],
        "the pod template's command"
    );
    let step = pipeline
        .lines()
        .find_map(|l| l.trim().strip_prefix("sh '")?.strip_suffix('\''))
        .expect("the pipeline's sh step")
        .replace("registry.example.com/app", &format!("{host}/team/jenkins"))
        .replace("$GIT_COMMIT", "c0ffee");
    write(
        &fx.ctx.path().join("jenkins/Dockerfile"),
        "FROM base:1\nRUN echo built-by-jenkins > /jenkins.txt\n",
    );
    let ctx_volume = format!("{}:/ctx:ro", fx.ctx.path().display());
    let store_volume = format!("{}:/var/lib/rbuild", fx.store.path().display());
    let agent = fx.daemon.docker_ok(&[
        "run",
        "-d",
        "--rm",
        "--network",
        "host",
        "--user",
        "0",
        "--security-opt",
        "no-new-privileges",
        "-v",
        &ctx_volume,
        "-v",
        &store_volume,
        "-v",
        &config_volume,
        "--entrypoint",
        &sleep[0],
        "rbuild:debug",
        &sleep[1],
    ]);
    let agent = agent.trim();
    let jenkins = fx.daemon.docker(&[
        "exec",
        "-w",
        "/ctx/jenkins",
        agent,
        "/busybox/sh",
        "-c",
        &step,
    ]);
    fx.daemon.docker(&["rm", "-f", agent]);
    assert!(
        jenkins.status.success(),
        "the Jenkins step: {}",
        describe(&jenkins)
    );
    assert_eq!(
        status("team/jenkins", "c0ffee"),
        Some(200),
        "{}",
        describe(&jenkins)
    );
    assert!(
        !describe(&jenkins).contains(pass),
        "the password was printed"
    );
}

/// The `args:` of the `build` container in the first manifest of docs/ci/kubernetes.md.
fn job_args(manifest: &str) -> Vec<String> {
    let mut lines = manifest
        .lines()
        .skip_while(|l| l.trim() != "- name: build")
        .skip_while(|l| l.trim() != "args:")
        .skip(1);
    let mut args = Vec::new();
    for line in lines.by_ref() {
        match line.trim().strip_prefix("- ") {
            Some(arg) if line.starts_with("            - ") => args.push(arg.to_string()),
            _ => break,
        }
    }
    assert!(
        !args.is_empty(),
        "no args: in docs/ci/kubernetes.md's build container"
    );
    args
}

/// The golden cases that cover what differs most between isolations: every `RUN --mount`
/// kind (secret, cache, bind from the context and from a stage, tmpfs), owners from
/// `COPY --chown` and `RUN chown`, setuid/setgid bits, hard links, users and groups,
/// multi-stage builds, and an error case.
const IN_CONTAINER_CASES: &[&str] = &[
    "mounts",
    "mounts_more",
    "secrets",
    "secret_params",
    "secret_required",
    "copy_chown",
    "copy_link",
    "copy_symlinks",
    "run_owners_links",
    "user_groups",
    "multistage",
    "heredoc_run_copy",
];

/// BuildKit's own cases built in `rbuild:latest` with rbuild as the container's entrypoint and
/// Docker's default security options (chroot mode: no namespaces, no mount(2)), each image
/// compared with the golden BuildKit v0.32.2 made (known differences of chroot mode must
/// still differ, as on the host).
#[test]
fn golden_cases_built_in_the_builder_image_equal_buildkits() {
    require_root("running dockerd");
    let daemon = Dockerd::start();
    let archive = image_dir().join("rbuild.tar");
    daemon.docker_ok(&["load", "-i", archive.to_str().unwrap()]);
    let work = tempfile::tempdir().unwrap();
    let store = tempfile::tempdir().unwrap();
    base_context(work.path());
    let cases_dir = common::golden::cases_dir().canonicalize().unwrap();
    let run = |args: &[&str]| {
        let mut all = vec![
            "run".to_string(),
            "--rm".into(),
            "--network".into(),
            "none".into(),
            "-v".into(),
            format!("{}:/cases:ro", cases_dir.display()),
            "-v".into(),
            format!("{}:/scratch", work.path().display()),
            "-v".into(),
            format!("{}:/var/lib/rbuild", store.path().display()),
            "rbuild:latest".into(),
        ];
        all.extend(args.iter().map(|a| a.to_string()));
        let all: Vec<&str> = all.iter().map(String::as_str).collect();
        daemon.docker(&all)
    };
    let base = run(&["build", "-q", "-t", BASE_NAME, "/scratch/base"]);
    assert!(base.status.success(), "base: {}", describe(&base));
    let counts = base_counts(store.path());
    let paths = CasePaths {
        cases: "/cases",
        scratch: "/scratch",
        scratch_on_host: work.path(),
    };
    build_golden_cases(
        IN_CONTAINER_CASES,
        &paths,
        &[],
        counts,
        "chroot",
        run,
        "in rbuild:latest",
    );
}

/// Where the cases' files are inside the container (`cases`, read-only) and where it writes
/// (`scratch`, which is `scratch_on_host` outside).
struct CasePaths<'a> {
    cases: &'a str,
    scratch: &'a str,
    scratch_on_host: &'a Path,
}

/// Builds each of `names` (golden cases) with `run` (a `docker run` of a builder image whose
/// remaining arguments are rbuild's) into a docker archive in the scratch volume, with `extra`
/// before the context, and asserts each image is the one BuildKit v0.32.2 made (the golden),
/// a known difference of `isolation` aside.
fn build_golden_cases(
    names: &[&str],
    paths: &CasePaths,
    extra: &[&str],
    counts: rbuild_diff::describe::BaseCounts,
    isolation: &str,
    run: impl Fn(&[&str]) -> Output,
    title: &str,
) {
    let mut failures = Vec::new();
    let mut rows = Vec::new();
    let selected: Vec<_> = cases()
        .into_iter()
        .filter(|c| names.contains(&c.name.as_str()))
        .collect();
    assert_eq!(selected.len(), names.len(), "a listed case is missing");
    let (cases_in, scratch) = (paths.cases, paths.scratch);
    for case in selected {
        let dest = format!("{scratch}/{}.tar", case.name);
        // The case's HTTP and git server, on the host's 127.0.0.1, which a container run
        // with `--network host` reaches (the restricted pod's runs are).
        let servers = start_servers(&case);
        let substitute = |text: &str| {
            servers
                .as_ref()
                .map_or(text.to_string(), |s| s.substitute(text))
        };
        let mut dockerfile = Some(format!("{cases_in}/{}/Dockerfile", case.name));
        if servers.is_some() {
            let text = std::fs::read_to_string(case.dir.join("Dockerfile")).unwrap_or_default();
            let name = format!("{}.Dockerfile", case.name);
            std::fs::write(paths.scratch_on_host.join(&name), substitute(&text)).unwrap();
            dockerfile = Some(format!("{scratch}/{name}"));
        }
        let context = if let Some(url) = case.text("remote_context") {
            // A context URL, `-f` the Dockerfile's name inside it (if the case says).
            dockerfile = case.text("dockerfile_name").map(str::to_string);
            substitute(url)
        } else if case.text("source") == Some("socket") {
            // A copy of the context with a Unix socket in it (`testCopySocket`), as
            // buildkit_cases.rs makes it; the socket file stays when the listener closes.
            let name = format!("{}-socket-context", case.name);
            let dir = paths.scratch_on_host.join(&name);
            let copied = Command::new("cp")
                .arg("-a")
                .arg(case.dir.join("context"))
                .arg(&dir)
                .status()
                .unwrap();
            assert!(copied.success(), "copying {}'s context", case.name);
            std::os::unix::net::UnixListener::bind(dir.join("socket.sock")).unwrap();
            format!("{scratch}/{name}")
        } else if case.dir.join("context").is_dir() {
            format!("{cases_in}/{}/context", case.name)
        } else {
            std::fs::create_dir_all(paths.scratch_on_host.join("empty")).unwrap();
            format!("{scratch}/empty")
        };
        let mut args = vec![
            "build".to_string(),
            "-q".into(),
            "--progress".into(),
            "plain".into(),
        ];
        if let Some(dockerfile) = dockerfile {
            args.extend(["-f".into(), dockerfile]);
        }
        args.extend([
            "-o".into(),
            // BuildKit's image exporter attributes (`rewrite-timestamp=`, `source-date-epoch=`).
            format!(
                "type=docker,dest={dest}{}",
                case.strings("exporter_attrs")
                    .iter()
                    .map(|a| format!(",{a}"))
                    .collect::<String>()
            ),
        ]);
        for arg in case.strings("build_args") {
            args.extend(["--build-arg".into(), substitute(&arg)]);
        }
        if let Some(target) = case.text("target") {
            args.extend(["--target".into(), target.to_string()]);
        }
        // The build-wide network (buildx's `--network`; BuildKit's `force-network-mode`).
        if let Some(network) = case.text("network") {
            args.extend(["--network".into(), network.to_string()]);
        }
        for id in case.strings("secrets") {
            args.extend([
                "--secret".into(),
                format!("id={id},src={cases_in}/{}/secrets/{id}", case.name),
            ]);
        }
        // Named contexts: a directory of the case, or a URL of its server (images and OCI
        // layouts as they are: the pod has no store holding them).
        if let Some(contexts) = case.spec.get("named_contexts").and_then(|v| v.as_object()) {
            for (name, value) in contexts {
                let value = value.as_str().unwrap_or_default();
                let value = match value.strip_prefix("local:") {
                    Some(dir) => format!("{cases_in}/{}/{dir}", case.name),
                    None => substitute(value),
                };
                args.extend(["--build-context".into(), format!("{name}={value}")]);
            }
        }
        args.extend(extra.iter().map(|a| a.to_string()));
        args.push(context);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = run(&args);
        let archive = paths.scratch_on_host.join(format!("{}.tar", case.name));
        let built = if out.status.success() {
            Ok(archive.clone())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).into_owned())
        };
        let (verdict, problem) = judge_with(&case, built, counts, isolation, servers.as_ref());
        if let Some(problem) = problem {
            failures.push(format!("{}: {problem}", case.name));
        }
        let _ = std::fs::remove_file(&archive);
        let _ = std::fs::remove_dir_all(
            paths
                .scratch_on_host
                .join(format!("{}-socket-context", case.name)),
        );
        rows.push(format!("| {} | {verdict} |", case.name));
    }
    eprintln!("{title}\n{}", rows.join("\n"));
    assert!(
        failures.is_empty(),
        "{} cases differ from BuildKit's {title}:\n\n{}",
        failures.len(),
        failures.join("\n\n")
    );
}

/// The golden cases the restricted pod builds: the `pod_*` cases cover what the issue lists
/// (files, whiteouts, owners from `COPY --chown` and `RUN chown`, setuid bits, hard links,
/// every `RUN --mount` kind, heredocs, multi-stage; `USER` as root: a step as another user is
/// refused there) with steps that write only below top-level directories the builder image
/// has; two of the cases above that do the same; and the cases whose steps create entries
/// in `/` itself (`RUN echo x > /artifact`, `WORKDIR /app`), which build there since
/// top-level redirection (`/` is the container runtime's: such entries are laid out in
/// `/rbuild/top`, docs/sandbox.md), and those that make a name of `/` the base lacks and the
/// builder image or the pod has (`mkdir /data`, `mkdir -m 777 /out`), which build since such
/// names are absent to the stage's steps. Cases with an HTTP server (files, archives, a
/// remote Dockerfile) get it on the host's 127.0.0.1, which the pod reaches (`--network
/// host`), and local named contexts from the cases' volume; git contexts and `ADD` of git
/// URLs from the same server (the restricted images carry git). The rest of the golden
/// cases need what the pod or this test does not give (images
/// or OCI layouts as named contexts, an ssh agent, `--network=none`, tmpfs `size=`, a
/// non-root `USER`) or are listed in docs/status.md.
const RESTRICTED_POD_CASES: &[&str] = &[
    "pod_files",
    "pod_mounts",
    "pod_heredocs",
    "copy_link",
    "secret_required",
    "add_archive",
    "add_archive_xz",
    "add_checksum_local",
    "add_from_url",
    "add_git_checksum_invalid",
    "add_git_checksum_mismatch",
    "add_through_symlink",
    "args_errors",
    "args_global",
    "builtin_args",
    "cache_source_escape",
    "check_error",
    "check_rules_error",
    "check_rules_warn",
    "check_skip",
    "cmd_shell",
    "copy_chmod",
    "copy_chmod_invalid",
    "copy_chown",
    "copy_exclude",
    "copy_from_arg",
    "copy_from_arg_unused",
    "copy_from_global_arg",
    "copy_ignored",
    "copy_ignored_context_root",
    "copy_link_chown_name",
    "copy_parents",
    "copy_parents_missing",
    "copy_socket",
    "copy_symlinks",
    "copy_unicode",
    "copy_wildcards",
    "definition_description",
    "definition_description_ok",
    "dockerfile_dirs",
    "dockerfile_from_git",
    "dockerfile_from_git_first",
    "dockerfile_from_git_sha256",
    "dockerfile_from_http",
    "dockerignore",
    "dockerignore_invalid",
    "dockerignore_override",
    "duplicate_stage",
    "empty_dockerfile",
    "env_formatting",
    "etc_hostname",
    "expose_invalid",
    "fidelity_add_tar",
    "fidelity_arg_build_args",
    "fidelity_cmd_entrypoint_exec",
    "fidelity_cmd_entrypoint_shell",
    "fidelity_copy_chown_chmod",
    "fidelity_copy_files",
    "fidelity_dockerignore",
    "fidelity_env_forms",
    "fidelity_healthcheck",
    "fidelity_healthcheck_none",
    "fidelity_kaniko_arg_multi",
    "fidelity_kaniko_copy_symlink",
    "fidelity_kaniko_copyadd_chmod",
    "fidelity_kaniko_dangling_symlink",
    "fidelity_kaniko_mv_add",
    "fidelity_kaniko_replace_folder_with_link",
    "fidelity_label_expose_volume",
    "fidelity_multistage_target",
    "fidelity_onbuild_maintainer",
    "fidelity_run_deletions",
    "fidelity_run_files",
    "fidelity_run_mounts",
    "fidelity_shell_stopsignal",
    "git_query_string",
    "git_query_string_context",
    "git_query_string_context_no_submodules",
    "git_query_string_context_withgit",
    "git_query_string_context_withgit_default",
    "git_query_string_context_withsubmod",
    "git_query_string_invalid_branch",
    "git_query_string_ref_conflict",
    "git_query_string_wrong_commit",
    "heredoc_run_copy",
    "heredoc_special",
    "history_args",
    "hostname",
    "http_dockerfile",
    "invalid_default_arg_in_from",
    "invalid_instruction",
    "invalid_json_commands",
    "labels_expose",
    "lowercase",
    "mount_duplicate",
    "mount_from_missing",
    "mount_invalid",
    "mounts",
    "mounts_more",
    "multistage",
    "named_image_context_scratch",
    "named_local_context",
    "onbuild",
    "onbuild_more",
    "onbuild_new_deps",
    "out_of_order_stage",
    "platform_args_explicit",
    "reserved_stage",
    "run_fails",
    "run_global_network_denied",
    "run_host_network",
    "run_owners_links",
    "run_security_default",
    "run_security_insecure",
    "scratch_config",
    "sde_stage_invalid",
    "sde_stage_not_source_only",
    "secret_env",
    "secret_params",
    "secrets",
    "source_date_epoch",
    "source_date_epoch_context",
    "source_date_epoch_context_git",
    "source_date_epoch_context_http_archive",
    "source_date_epoch_context_http_last_modified",
    "source_date_epoch_default",
    "source_date_epoch_default_reset",
    "source_date_epoch_default_rewrite",
    "source_date_epoch_exporter_later",
    "source_date_epoch_exporter_override",
    "source_date_epoch_named_context_http_archive",
    "source_date_epoch_named_context_http_last_modified",
    "source_date_epoch_stage",
    "source_date_epoch_stage_http_archive",
    "symlinked_dockerfile",
    "tar_context",
    "target_stage_arg",
    "undefined_var",
    "undefined_var_defined",
    "unmatched_vars",
    "workdir",
];

/// The golden cases of [`RESTRICTED_POD_CASES`] built in `rbuild:restricted` as a Kubernetes restricted pod runs it
/// (uid 1000, then OpenShift's random uid with gid 0; no capabilities, no-new-privileges,
/// Docker's default seccomp; rbuild as the entrypoint): each image equals the one BuildKit
/// v0.32.2 made, owners, setuid bits, hard links and every `RUN --mount` kind included. The
/// pod has no store to share, so the cases' base comes from a registry as the named context
/// the cases' `FROM` names.
/// Where the pod writes the cases' images (a volume).
const POD_SCRATCH: &str = "/rbuild-pod-scratch";

#[test]
fn golden_cases_built_in_the_restricted_pod_equal_buildkits() {
    require_root("running dockerd");
    let daemon = Dockerd::start();
    let archive = image_dir().join("rbuild-restricted.tar");
    daemon.docker_ok(&["load", "-i", archive.to_str().unwrap()]);
    let registry = Registry::start();
    let work = tempfile::tempdir().unwrap();
    let host_store = tempfile::tempdir().unwrap();
    let base_dir = base_context(work.path());
    rbuild_on_host(
        host_store.path(),
        &["build", "-q", "-t", BASE_NAME, base_dir.to_str().unwrap()],
    );
    let counts = base_counts(host_store.path());
    let pushed = format!("{}/cases/base:1", registry.host());
    rbuild_on_host(host_store.path(), &["tag", BASE_NAME, &pushed]);
    rbuild_on_host(host_store.path(), &["push", "-q", &pushed]);
    let base_context_flag = format!("{BASE_NAME}=docker-image://{pushed}");
    let cases_dir = common::golden::cases_dir().canonicalize().unwrap();
    // `RBUILD_POD_CASES=a,b`: only those of the list (to rerun a few while working on them).
    let only = std::env::var("RBUILD_POD_CASES").ok();
    let pod_cases: Vec<&str> = match &only {
        Some(only) => {
            let wanted: Vec<&str> = only.split(',').map(str::trim).collect();
            for name in &wanted {
                assert!(
                    RESTRICTED_POD_CASES.contains(name),
                    "RBUILD_POD_CASES names {name}, which is not in RESTRICTED_POD_CASES"
                );
            }
            wanted
        }
        None => RESTRICTED_POD_CASES.to_vec(),
    };
    for user in ["1000:1000", "1000770000:0"] {
        let out = tempfile::tempdir().unwrap();
        std::fs::set_permissions(
            out.path(),
            std::os::unix::fs::PermissionsExt::from_mode(0o777),
        )
        .unwrap();
        let cases_volume = format!("{}:/workspace:ro", cases_dir.display());
        // Not /out: a mount point is a real name of `/`, which a case writing `/out` would
        // then meet (its steps' paths to it are not redirected, and it is hidden).
        let out_volume = format!("{}:{POD_SCRATCH}", out.path().display());
        let run = |args: &[&str]| {
            let mut all = vec!["run", "--rm", "--network", "host", "--user", user];
            all.extend_from_slice(RESTRICTED_POD);
            all.extend_from_slice(&["-v", &cases_volume, "-v", &out_volume, "rbuild:restricted"]);
            all.extend_from_slice(args);
            daemon.docker(&all)
        };
        let paths = CasePaths {
            cases: "/workspace",
            scratch: POD_SCRATCH,
            scratch_on_host: out.path(),
        };
        build_golden_cases(
            &pod_cases,
            &paths,
            &[
                "--isolation",
                "restricted",
                "--build-context",
                &base_context_flag,
            ],
            counts,
            "restricted",
            run,
            &format!("in the restricted pod as {user}"),
        );
    }
}

/// The container step of docs/ci/github-actions.md (its second yaml block), run as written
/// with GitHub's shell in a checkout against a real dockerd: `${{ … }}` filled in,
/// `registry.example.com/tools/rbuild:latest` is the loaded `rbuild:latest`, `ghcr.io` a
/// local registry with a password, and `--network host` added so the container reaches it.
#[test]
fn the_github_actions_container_step_builds_and_pushes_as_written() {
    require_root("running dockerd");
    let (user, pass) = ("octo-builder", "ghs_token-of-the-container-test");
    let doc = std::fs::read_to_string(repo_root().join("docs/ci/github-actions.md")).unwrap();
    let blocks = common::workflow::yaml_blocks(&doc);
    let steps = common::workflow::parse_steps(&blocks[1]);
    assert_eq!(steps.len(), 1, "{steps:?}");
    let values = [
        ("github.repository", "team/ghc"),
        ("github.sha", "c0ffee42"),
    ];
    let daemon = Dockerd::start();
    daemon.docker_ok(&[
        "load",
        "-i",
        image_dir().join("rbuild.tar").to_str().unwrap(),
    ]);
    let registry = Registry::start_with_htpasswd(user, pass);
    let host = registry.host();
    let script = common::workflow::expand(steps[0].run.as_deref().unwrap(), &values)
        .replace("registry.example.com/tools/rbuild:latest", "rbuild:latest")
        .replace("docker run --rm", "docker run --rm --network host")
        .replace("ghcr.io", &host);
    assert!(script.contains("rbuild:latest"), "{script}");

    // The runner: a home whose ~/.docker holds the login (as the binary job's login step
    // writes it), a checkout whose base image is in the registry, and Debian's docker first
    // on PATH.
    let runner = tempfile::tempdir().unwrap();
    let home = runner.path().join("home");
    let checkout = runner.path().join("checkout");
    let bin = runner.path().join("bin");
    write(
        &home.join(".docker/config.json"),
        &registry.docker_config_json(),
    );
    busybox_rootfs(&runner.path().join("base/rootfs"));
    write(&runner.path().join("base/Dockerfile"), BASE_DOCKERFILE);
    let base_store = tempfile::tempdir().unwrap();
    let pushed = Command::new(env!("CARGO_BIN_EXE_rbuild"))
        .arg("--root")
        .arg(base_store.path())
        .env("DOCKER_CONFIG", home.join(".docker"))
        .args(["build", "-q", "--push", "-t"])
        .arg(format!("{host}/base/busybox:1"))
        .arg(runner.path().join("base"))
        .output()
        .unwrap();
    assert!(pushed.status.success(), "base: {}", describe(&pushed));
    write(
        &checkout.join("Dockerfile"),
        &format!("FROM {host}/base/busybox:1\nCOPY app.txt /app.txt\nRUN echo ran > /run.txt\n"),
    );
    write(&checkout.join("app.txt"), "from the checkout\n");
    std::fs::create_dir_all(&bin).unwrap();
    std::os::unix::fs::symlink("/usr/bin/docker", bin.join("docker")).unwrap();
    let script_file = runner.path().join("step.sh");
    write(&script_file, &script);

    let out = Command::new("bash")
        .args(["--noprofile", "--norc", "-eo", "pipefail"])
        .arg(&script_file)
        .current_dir(&checkout)
        .env_clear()
        .env("HOME", &home)
        .env("PATH", format!("{}:/usr/bin:/bin", bin.display()))
        .env("DOCKER_HOST", daemon.host())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "the step:\n{script}\n{}",
        describe(&out)
    );
    assert!(!describe(&out).contains(pass), "the password was printed");
    let status = |repo: &str, tag: &str| registry.manifest_status_logged_in(repo, tag);
    assert_eq!(
        status("team/ghc", "c0ffee42"),
        Some(200),
        "{}",
        describe(&out)
    );
    assert_eq!(
        status("team/ghc/cache", "buildcache"),
        Some(200),
        "the registry cache was not pushed: {}",
        describe(&out)
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("RUN echo ran > /run.txt"),
        "the RUN step did not run: {stderr}"
    );
}

/// The static `rbuild:restricted` as a Kubernetes restricted pod runs it (docs/ci/
/// kubernetes-restricted.md's securityContext as `docker run` flags: uid 1000 or
/// OpenShift's random uid with gid 0, no capabilities, no-new-privileges, Docker's default
/// seccomp), rbuild as the entrypoint, the base pulled from a registry, the context on a
/// read-only volume: the image equals the same build by rbuild as root on the host.
#[test]
fn the_restricted_image_builds_as_the_pods_user_what_root_builds_on_the_host() {
    require_root("running dockerd");
    let archive = image_dir().join("rbuild-restricted.tar");
    let daemon = Dockerd::start();
    daemon.docker_ok(&["load", "-i", archive.to_str().unwrap()]);
    let registry = Registry::start();
    let host = registry.host();
    let work = tempfile::tempdir().unwrap();
    busybox_rootfs(&work.path().join("base/rootfs"));
    write(&work.path().join("base/Dockerfile"), BASE_DOCKERFILE);
    let host_store = tempfile::tempdir().unwrap();
    let base = format!("{host}/base/busybox:1");
    rbuild_on_host(
        host_store.path(),
        &[
            "build",
            "-q",
            "--push",
            "-t",
            &base,
            work.path().join("base").to_str().unwrap(),
        ],
    );
    let ctx = work.path().join("app");
    write(
        &ctx.join("Dockerfile"),
        &format!(
            "FROM {base}\n\
             COPY --chown=7:8 data.txt /home/data.txt\n\
             RUN touch /etc/f && chown 123:456 /etc/f && chmod u+s /etc/f && ln /etc/f /etc/f-link \
              && echo changed > /etc/group && rm /etc/passwd && id -u > /tmp/id\n\
             RUN --mount=type=bind,source=data.txt,target=/tmp/bound --mount=type=cache,target=/var/cache/app \
              cat /tmp/bound > /tmp/from-bind && echo run >> /var/cache/app/runs\n"
        ),
    );
    write(&ctx.join("data.txt"), "from the context\n");
    pod_builds_equal_the_hosts(
        &daemon,
        "rbuild:restricted",
        &["1000:1000", "1000770000:0"],
        host_store.path(),
        &ctx,
        work.path(),
    );
    let epoch = ["--source-date-epoch", "1700000000"];

    // Push and the registry cache from the pod; a second pod (a fresh container, an empty
    // store) builds from that cache without running a step.
    let ctx_volume = format!("{}:/workspace:ro", ctx.display());
    let tag = format!("{host}/team/restricted:1");
    let cache = format!("{host}/team/restricted/cache");
    let pod = |extra: &[&str]| {
        let mut args = vec!["run", "--rm", "--network", "host", "--user", "1000:1000"];
        args.extend_from_slice(RESTRICTED_POD);
        args.extend_from_slice(&[
            "-v",
            &ctx_volume,
            "rbuild:restricted",
            "build",
            "--isolation",
            "restricted",
            "--progress",
            "plain",
            "--cache-repo",
            &cache,
            "--push",
            "-t",
            &tag,
        ]);
        args.extend_from_slice(extra);
        args.push("/workspace");
        daemon.docker(&args)
    };
    let first = pod(&epoch);
    assert!(first.status.success(), "push: {}", describe(&first));
    assert_eq!(registry.manifest_status("team/restricted", "1"), Some(200));
    let second = pod(&epoch);
    assert!(
        second.status.success(),
        "from the cache: {}",
        describe(&second)
    );
    let log = String::from_utf8_lossy(&second.stderr);
    assert_eq!(
        log.matches("CACHED").count(),
        3,
        "every step from the registry cache: {log}"
    );
}

/// `rbuild:restricted-debian` as `cargo xtask builder-image` makes it (the static rbuild,
/// the usrmerge top level) run as a Kubernetes restricted pod (`--user 1000:1000
/// --cap-drop ALL --security-opt no-new-privileges`, Docker's default seccomp, rbuild as
/// the entrypoint): a Debian stage's own dynamically linked programs run in place (dpkg,
/// chown, coreutils), and the image equals root's build of it on the host.
#[test]
fn the_restricted_debian_image_builds_a_debian_stage_as_the_pods_user() {
    require_root("running dockerd");
    let archive = image_dir().join("rbuild-restricted-debian.tar");
    let daemon = Dockerd::start();
    daemon.docker_ok(&["load", "-i", archive.to_str().unwrap()]);
    let registry = Registry::start();
    let host = registry.host();
    let work = tempfile::tempdir().unwrap();
    rbuild_testutil::debian_image_rootfs(&work.path().join("base/rootfs"));
    write(
        &work.path().join("base/Dockerfile"),
        "FROM scratch\nCOPY rootfs/ /\nCMD [\"bash\"]\n",
    );
    let host_store = tempfile::tempdir().unwrap();
    let base = format!("{host}/base/debian:1");
    rbuild_on_host(
        host_store.path(),
        &[
            "build",
            "-q",
            "--push",
            "-t",
            &base,
            work.path().join("base").to_str().unwrap(),
        ],
    );
    std::fs::remove_dir_all(work.path().join("base")).unwrap();
    let ctx = work.path().join("app");
    write(
        &ctx.join("Dockerfile"),
        &format!(
            "FROM {base}\n\
             COPY --chown=7:8 data.txt /srv/data.txt\n\
             RUN echo changed > /etc/motd && chown 100:65534 /etc/motd && chmod u+s /etc/motd \
              && ln /etc/motd /etc/motd-link && rm /etc/issue.net \
              && dpkg --print-architecture > /root/arch && id -u > /root/uid\n\
             RUN mkdir /app && echo x > /app/f\n\
             RUN test ! -e /data && mkdir /data && mkdir -m 777 /out && echo o > /out/o\n\
             WORKDIR /workspace\n\
             RUN pwd > here && ls -d /app /data /out /workspace >> here && cat /out/o >> here\n"
        ),
    );
    write(&ctx.join("data.txt"), "from the context\n");
    // The last steps name /app, /data, /workspace (no directory of the builder image) and
    // /out and /workspace (the pod's volumes): each is the stage's own, as on the host.
    pod_builds_equal_the_hosts(
        &daemon,
        "rbuild:restricted-debian",
        &["1000:1000", "1000770000:0"],
        host_store.path(),
        &ctx,
        work.path(),
    );
}

/// Builds `ctx` as root on the host and in `image` as each of `users` under the restricted
/// pod's flags (rbuild as the entrypoint, the context on a read-only volume), both with one
/// `SOURCE_DATE_EPOCH`, and asserts each pod's image equals the host's (`rbuild diff`).
fn pod_builds_equal_the_hosts(
    daemon: &Dockerd,
    image: &str,
    users: &[&str],
    host_store: &Path,
    ctx: &Path,
    work: &Path,
) {
    let epoch = ["--source-date-epoch", "1700000000"];
    let reference = work.join("host.tar");
    let dest = format!("type=docker,dest={}", reference.display());
    rbuild_on_host(
        host_store,
        &[
            &["build", "-q", "-o", &dest][..],
            &epoch,
            &[ctx.to_str().unwrap()],
        ]
        .concat(),
    );
    for user in users {
        let out = tempfile::tempdir().unwrap();
        std::fs::set_permissions(
            out.path(),
            std::os::unix::fs::PermissionsExt::from_mode(0o777),
        )
        .unwrap();
        let ctx_volume = format!("{}:/workspace:ro", ctx.display());
        let out_volume = format!("{}:/out", out.path().display());
        let mut args = vec!["run", "--rm", "--network", "host", "--user", user];
        args.extend_from_slice(RESTRICTED_POD);
        args.extend_from_slice(&[
            "-v",
            &ctx_volume,
            "-v",
            &out_volume,
            image,
            "build",
            "--isolation",
            "restricted",
            "--progress",
            "plain",
            "-o",
            "type=docker,dest=/out/app.tar",
        ]);
        args.extend_from_slice(&epoch);
        args.push("/workspace");
        let run = daemon.docker(&args);
        assert!(
            run.status.success(),
            "{image} as {user}: {}",
            describe(&run)
        );
        assert!(
            !out.path().join("o").exists(),
            "{image} as {user}: a step's /out is the stage's, never the pod's volume"
        );
        let diff = Command::new(env!("CARGO_BIN_EXE_rbuild"))
            .arg("diff")
            .arg(&reference)
            .arg(out.path().join("app.tar"))
            .output()
            .unwrap();
        assert!(
            diff.status.success(),
            "{image} as {user}: the image differs from root's on the host: {}\n{}",
            describe(&diff),
            describe(&run)
        );
    }
}

/// `rbuild --root STORE ARGS` as root on the host, with neither the engine nor the epoch of
/// the test's environment; asserts it succeeds.
fn rbuild_on_host(store: &Path, args: &[&str]) {
    let out = Command::new(env!("CARGO_BIN_EXE_rbuild"))
        .arg("--root")
        .arg(store)
        .args(args)
        .env_remove("RBUILD_ENGINE")
        .env_remove("SOURCE_DATE_EPOCH")
        .output()
        .unwrap();
    assert!(out.status.success(), "{args:?}: {}", describe(&out));
}
