//! The build checks that need the context (`build_checks`): CopyIgnoredFile with the
//! context's own ignore file, as BuildKit's `testCopyIgnoredFiles` and
//! `testCopyIgnoredFileContextRoot` run it.

use super::*;

fn checks(ignore: &str, dockerfile: &str) -> Vec<String> {
    let ctx = tempfile::tempdir().unwrap();
    std::fs::write(ctx.path().join(".dockerignore"), ignore).unwrap();
    std::fs::write(ctx.path().join("Dockerfile"), dockerfile).unwrap();
    check(&BuildRequest::new(ctx.path(), dockerfile)).unwrap()
}

#[test]
fn copy_ignored_file_reads_the_context_ignore_file() {
    let url = "https://docs.docker.com/go/dockerfile/rule/copy-ignored-file/";
    assert_eq!(
        checks(
            "\nDockerfile\n",
            "\nFROM scratch\nCOPY Dockerfile .\nADD Dockerfile /windy\n"
        ),
        [
            format!(
                "Dockerfile:3: CopyIgnoredFile: Attempting to Copy file \"Dockerfile\" that is \
                 excluded by .dockerignore ({url})"
            ),
            format!(
                "Dockerfile:4: CopyIgnoredFile: Attempting to Add file \"Dockerfile\" that is \
                 excluded by .dockerignore ({url})"
            ),
        ]
    );
    // `# check=skip=`, a COPY --from and a file the ignore file keeps: nothing.
    assert!(checks(
        "Dockerfile\n",
        "# check=skip=CopyIgnoredFile\nFROM scratch\nCOPY Dockerfile .\n"
    )
    .is_empty());
    assert!(checks(
        "foobar\n",
        "FROM scratch AS base\nCOPY Dockerfile /foobar\nFROM base\nCOPY --from=base /foobar /x\n"
    )
    .is_empty());
    assert!(checks("**\n!Dockerfile\n", "FROM scratch\nCOPY ./Dockerfile .\n").is_empty());
    // The context root: `*`, `**` and `**/*` exclude it; `.*` (which matches the name
    // `.`) does not warn, as in BuildKit v0.32.
    for pattern in ["*", "**", "**/*"] {
        let root = checks(&format!("{pattern}\n"), "FROM scratch\nCOPY . .\n");
        assert_eq!(root.len(), 1, "{pattern}: {root:?}");
        assert!(
            root[0].contains("Attempting to Copy file \".\""),
            "{root:?}"
        );
    }
    assert!(checks(".*\n", "FROM scratch\nCOPY . .\nCOPY / /x\n").is_empty());
    // `.*` still excludes a dotfile named as a source.
    assert_eq!(
        checks(".*\n", "FROM scratch\nCOPY .env /\n").len(),
        1,
        "a dotfile under .*"
    );
    // An exception anywhere turns the rule off (BuildKit cannot tell statically).
    assert!(checks("Dockerfile\n!keep\n", "FROM scratch\nCOPY Dockerfile .\n").is_empty());
}

/// A base "pulled" when the build asks for it: `resolve` puts an image whose config sets
/// `env` into the store (as a registry pull does) and counts the pulls.
struct PullOnResolve {
    env: Vec<String>,
    pulls: std::sync::atomic::AtomicUsize,
}

impl BaseImages for PullOnResolve {
    fn resolve(
        &self,
        store: &Store,
        reference: &str,
        _platform: &Platform,
    ) -> Result<rbuild_store::ImageRecord, BaseImageError> {
        if let Ok(record) = store.resolve(reference) {
            return Ok(record);
        }
        self.pulls.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let host = Platform::host();
        let mut config = rbuild_image::ImageConfig {
            architecture: host.architecture.clone(),
            os: host.os.clone(),
            rootfs: rbuild_image::RootFs {
                kind: "layers".into(),
                diff_ids: vec![],
                extra: Default::default(),
            },
            ..Default::default()
        };
        config.config.env = self.env.clone();
        let record = store.put_image(&config, &[]).unwrap();
        store.tag(reference, &record.manifest).unwrap();
        Ok(store.resolve(reference).unwrap())
    }
}

#[test]
fn undefined_var_checks_a_base_the_store_lacks_before_any_step() {
    // The base is not in the store when the build starts; BuildKit resolves every base's
    // config before it converts, so its Env counts, and with `error=true` an undefined
    // variable fails the build before a step runs.
    let dockerfile = "# check=error=true\nFROM registry.test/base:1\nENV A=$FROM_BASE\n";
    for (env, fails) in [
        (vec!["PATH=/bin".to_string()], true),
        (vec!["PATH=/bin".into(), "FROM_BASE=x".into()], false),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let ctx = dir.path().join("context");
        std::fs::create_dir(&ctx).unwrap();
        let store = Store::open(dir.path().join("store")).unwrap();
        let bases = PullOnResolve {
            env: env.clone(),
            pulls: Default::default(),
        };
        let request = BuildRequest::new(&ctx, dockerfile).with_tag("checked:latest");
        let mut events = Vec::new();
        struct Events<'a>(&'a mut Vec<Event>);
        impl Progress for Events<'_> {
            fn event(&mut self, event: &Event) {
                self.0.push(event.clone());
            }
        }
        let result = build(&request, &store, &bases, &mut Events(&mut events));
        assert_eq!(
            bases.pulls.load(std::sync::atomic::Ordering::SeqCst),
            1,
            "{env:?}: pulled once"
        );
        let warned = events.iter().any(|e| {
            matches!(e, Event::Warning { message }
                if message.contains("UndefinedVar: Usage of undefined variable '$FROM_BASE'"))
        });
        if fails {
            let err = result.expect_err("an undefined variable with error=true fails");
            assert!(
                err.to_string()
                    .contains("lint violation found for rules: UndefinedVar"),
                "{err}"
            );
            assert!(warned, "the warning is shown: {events:?}");
            assert!(store.resolve("checked:latest").is_err(), "nothing tagged");
        } else {
            result.expect("the base's Env defines the variable");
            assert!(!warned, "{events:?}");
        }
    }
}
