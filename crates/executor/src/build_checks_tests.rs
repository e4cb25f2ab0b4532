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
