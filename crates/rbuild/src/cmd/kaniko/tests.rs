use super::*;

fn t(args: &[&str], files: &[&str]) -> Result<Translation> {
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    let files: Vec<PathBuf> = files.iter().map(PathBuf::from).collect();
    translate(&args, &|p: &Path| files.iter().any(|f| f == p))
}

fn has_pair(t: &Translation, flag: &str, value: &str) -> bool {
    t.build_args
        .windows(2)
        .any(|w| w[0] == flag && w[1] == value)
}

#[test]
fn relative_dockerfile_is_found_in_the_context_first() {
    let got = t(
        &[
            "--context",
            "dir:///src",
            "--dockerfile",
            "sub/Dockerfile",
            "--no-push",
        ],
        &["/src/sub/Dockerfile", "sub/Dockerfile"],
    )
    .unwrap();
    assert!(has_pair(&got, "--context", "/src"), "{got:?}");
    assert!(has_pair(&got, "-f", "/src/sub/Dockerfile"), "{got:?}");
    // Only in the working directory: Kaniko accepts that too.
    let got = t(
        &["-c", "/src", "-f", "other/Dockerfile", "--no-push"],
        &["other/Dockerfile"],
    )
    .unwrap();
    assert!(has_pair(&got, "-f", "other/Dockerfile"), "{got:?}");
    // Nowhere: a clear error naming the context path.
    let err = t(&["-c", "/src", "--no-push"], &[])
        .unwrap_err()
        .to_string();
    assert!(err.contains("/src/Dockerfile"), "{err}");
}

#[test]
fn destination_or_no_push_is_required() {
    let err = t(&["-c", "/src"], &["/src/Dockerfile"])
        .unwrap_err()
        .to_string();
    assert!(err.contains("--destination"), "{err}");
    let got = t(
        &[
            "-c",
            "/src",
            "-d",
            "reg.example:5000/app:1",
            "--destination=reg.example:5000/app:2",
        ],
        &["/src/Dockerfile"],
    )
    .unwrap();
    assert!(has_pair(&got, "--destination", "reg.example:5000/app:1"));
    assert!(has_pair(&got, "--destination", "reg.example:5000/app:2"));
    assert!(!got.build_args.contains(&"--no-push".to_string()));
}

#[test]
fn cache_true_derives_the_cache_repo_from_the_destination() {
    let got = t(
        &[
            "-c",
            "/src",
            "-d",
            "reg.example:5000/team/app:1",
            "--cache=true",
        ],
        &["/src/Dockerfile"],
    )
    .unwrap();
    assert!(
        has_pair(&got, "--cache-repo", "reg.example:5000/team/app/cache"),
        "{got:?}"
    );
    let got = t(
        &[
            "-c",
            "/src",
            "-d",
            "r:5000/a:1",
            "--cache",
            "--cache-repo",
            "r:5000/c",
            "--no-push-cache",
        ],
        &["/src/Dockerfile"],
    )
    .unwrap();
    assert!(
        has_pair(
            &got,
            "--cache-from",
            "type=registry,ref=r:5000/c:buildcache"
        ),
        "{got:?}"
    );
    assert!(!got.build_args.contains(&"--cache-repo".to_string()));
    // --cache-repo without --cache=true is ignored, and said so.
    let got = t(
        &[
            "-c",
            "/src",
            "-d",
            "r:5000/a:1",
            "--cache-repo=r:5000/c",
            "--cache=false",
        ],
        &["/src/Dockerfile"],
    )
    .unwrap();
    assert!(
        !got.build_args.iter().any(|a| a.starts_with("--cache")),
        "{got:?}"
    );
    assert!(got.ignored.iter().any(|l| l.contains("--cache-repo")));
}

#[test]
fn insecure_and_skip_tls_verify_name_the_push_registries() {
    let got = t(
        &[
            "-c",
            "/src",
            "-d",
            "reg.example:5000/a:1",
            "--insecure",
            "--skip-tls-verify",
            "--cache",
            "--cache-repo",
            "cache.example/c",
        ],
        &["/src/Dockerfile"],
    )
    .unwrap();
    assert!(
        has_pair(&got, "--insecure-registry", "reg.example:5000"),
        "{got:?}"
    );
    assert!(
        has_pair(&got, "--insecure-registry", "cache.example"),
        "{got:?}"
    );
    assert!(
        has_pair(&got, "--skip-tls-verify-registry", "reg.example:5000"),
        "{got:?}"
    );
}

#[test]
fn meaningless_flags_are_accepted_and_said_once_unknown_ones_refused() {
    let got = t(
        &[
            "-c",
            "/src",
            "--no-push",
            "--cleanup",
            "--single-snapshot",
            "--snapshot-mode=redo",
            "--use-new-run",
            "--ignore-path",
            "/a",
            "--ignore-path=/b",
            "--verbosity=debug",
            "--push-retry",
            "3",
            "--cache-ttl=6h",
        ],
        &["/src/Dockerfile"],
    )
    .unwrap();
    let ignore_path_notes = got
        .ignored
        .iter()
        .filter(|l| l.contains("--ignore-path"))
        .count();
    assert_eq!(ignore_path_notes, 1, "{:?}", got.ignored);
    assert!(got.ignored.iter().any(|l| l.contains("--cleanup")));
    assert!(has_pair(&got, "--progress", "plain"));
    let err = t(
        &["-c", "/src", "--no-push", "--frobnicate"],
        &["/src/Dockerfile"],
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("--frobnicate"), "{err}");
    let err = t(
        &["-c", "/src", "--no-push", "--registry-map=a=b"],
        &["/src/Dockerfile"],
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("registry remapping"), "{err}");
    let err = t(
        &["-c", "/src", "--no-push", "--snapshot-mode=fast"],
        &["/src/Dockerfile"],
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("full, redo or time"), "{err}");
}

#[test]
fn flags_with_rbuild_equivalents_are_passed_on() {
    let got = t(
        &[
            "-c",
            "tar:///ctx.tar",
            "-d",
            "r:5000/a:1",
            "--tar-path",
            "/out/a.tar",
            "--build-arg",
            "A=1",
            "--label=l=v",
            "--target",
            "final",
            "--custom-platform",
            "linux/amd64",
            "--reproducible",
            "--log-format=json",
            "--registry-certificate",
            "r:5000=/certs/ca.crt",
            "--compression",
            "zstd",
        ],
        &[],
    )
    .unwrap();
    for (f, v) in [
        ("--context", "tar:///ctx.tar"),
        ("--tar-path", "/out/a.tar"),
        ("--build-arg", "A=1"),
        ("--label", "l=v"),
        ("--target", "final"),
        ("--platform", "linux/amd64"),
        ("--progress", "json"),
        ("--registry-ca", "/certs/ca.crt"),
        ("--compression", "zstd"),
    ] {
        assert!(has_pair(&got, f, v), "{f} {v}: {got:?}");
    }
    assert!(got.build_args.contains(&"--reproducible".to_string()));
    assert!(!got.build_args.contains(&"-f".to_string()), "{got:?}");
}

#[test]
fn executor_is_recognised_by_its_file_name() {
    assert!(invoked_as_executor(std::ffi::OsStr::new(
        "/kaniko/executor"
    )));
    assert!(!invoked_as_executor(std::ffi::OsStr::new(
        "/usr/local/bin/rbuild"
    )));
}

#[test]
fn the_translation_resolves_into_a_build_spec() {
    use rbuild_session::{OutputKind, OutputSpec};
    let spec = |args: &[&str]| {
        let t = t(args, &["/src/Dockerfile"]).unwrap();
        crate::cmd::build::spec_from_args(&build_args(&t).unwrap()).unwrap()
    };
    let pushed = spec(&[
        "-c",
        "dir:///src",
        "-d",
        "reg.example:5000/app:1",
        "--tar-path",
        "/out/app.tar",
    ]);
    assert_eq!(pushed.tags, vec!["reg.example:5000/app:1".to_string()]);
    assert_eq!(
        pushed.outputs,
        vec![
            OutputSpec::new(OutputKind::Registry, None).unwrap(),
            OutputSpec::new(OutputKind::Docker, Some("/out/app.tar".into())).unwrap(),
        ]
    );
    let kept = spec(&["-c", "/src", "-d", "reg.example:5000/app:1", "--no-push"]);
    assert!(!kept.pushes(), "{:?}", kept.outputs);
    assert_eq!(kept.tags, vec!["reg.example:5000/app:1".to_string()]);
}
