use super::*;
use crate::parse_dockerfile;

fn names(text: &str) -> Vec<(&'static str, usize)> {
    let df = parse_dockerfile("Dockerfile", text).unwrap();
    let all: Vec<usize> = (0..df.stages.len()).collect();
    let global = [("TARGETPLATFORM".to_string(), "linux/amd64".to_string())];
    lint(&df, &all, &global)
        .into_iter()
        .map(|w| (w.rule.name, w.line))
        .collect()
}

#[test]
fn the_golden_cases_rules() {
    assert_eq!(
        names("# check=error=true\nFROM busybox\nMAINTAINER someone\n"),
        [("MaintainerDeprecated", 3)]
    );
    assert_eq!(
        names("FROM busybox AS base\nENV legacy value\nWORKDIR relative\nRUN echo ok\n"),
        [("LegacyKeyValueFormat", 2), ("WorkdirRelativePath", 3)]
    );
    assert_eq!(
        names(
            "FROM a AS base\nWORKDIR /abs\nFROM base\nWORKDIR rel\nSHELL [\"sh\", \"-c\"]\nCMD x\n"
        ),
        [],
        "WORKDIR set by the base stage; CMD after SHELL"
    );
    assert_eq!(
        names("FROM a\nCMD x\nENTRYPOINT y\nENTRYPOINT [\"z\"]\nHEALTHCHECK NONE\n"),
        [
            ("JSONArgsRecommended", 2),
            ("JSONArgsRecommended", 3),
            ("MultipleInstructionsDisallowed", 3)
        ]
    );
}

#[test]
fn casing_and_stage_names() {
    assert_eq!(
        names("FROM a AS Mixed\nfrom b as x\nRUN true\nFROM c as scratch\nFROM d AS x\n"),
        [
            ("StageNameCasing", 1),
            ("ConsistentInstructionCasing", 2),
            ("FromAsCasing", 4),
            ("ReservedStageName", 4),
            ("DuplicateStageName", 5),
        ]
    );
}

#[test]
fn secrets_platforms_and_ports() {
    assert_eq!(
        names(
            "FROM --platform=linux/amd64 a\nARG GITHUB_TOKEN\nENV PUBLIC_KEY=x API_KEY=y\n\
             EXPOSE 80/TCP 127.0.0.1:53:53/udp $P\n\
             FROM --platform=$TARGETPLATFORM b AS c\nFROM --platform=linux/arm64 c AS arm64-b\n"
        ),
        [
            ("FromPlatformFlagConstDisallowed", 1),
            ("SecretsUsedInArgOrEnv", 2),
            ("SecretsUsedInArgOrEnv", 3),
            ("ExposeInvalidFormat", 4),
            ("ExposeProtoCasing", 4),
            ("RedundantTargetPlatform", 5),
        ]
    );
    assert!(is_secret_key("db_password") && is_secret_key("AUTH"));
    assert!(!is_secret_key("PUBLIC_KEY") && !is_secret_key("KEYS") && !is_secret_key("x"));
}

#[test]
fn undefined_arg_in_from() {
    let df = parse_dockerfile(
        "Df",
        "ARG DECLARED\nARG GIVEN=x\nFROM $DECLARED$GIVEN${MISSING}\nFROM --platform=$BUILDPLATFORM b\n",
    )
    .unwrap();
    let global = vec![
        ("GIVEN".to_string(), "x".to_string()),
        ("BUILDPLATFORM".to_string(), "linux/amd64".to_string()),
    ];
    let found: Vec<(&str, String, usize)> = lint(&df, &[], &global)
        .into_iter()
        .map(|w| (w.rule.name, w.message, w.line))
        .collect();
    assert_eq!(
        found,
        [(
            "UndefinedArgInFrom",
            "FROM argument 'MISSING' is not declared".to_string(),
            3
        )]
    );
}

#[test]
fn only_the_built_stages_are_converted() {
    let df = parse_dockerfile("Df", "FROM a AS one\nENV k v\nFROM b\nMAINTAINER m\n").unwrap();
    let rules: Vec<&str> = lint(&df, &[1], &[]).iter().map(|w| w.rule.name).collect();
    assert_eq!(
        rules,
        ["MaintainerDeprecated"],
        "parse-time rules see every stage"
    );
}

#[test]
fn check_options() {
    let c = CheckConfig::parse("skip=JSONArgsRecommended, StageNameCasing;error=true").unwrap();
    assert!(c.error && !c.checks(&JSON_ARGS_RECOMMENDED) && c.checks(&MAINTAINER_DEPRECATED));
    let c = CheckConfig::parse("skip=all;error=true").unwrap();
    assert!(!c.checks(&MAINTAINER_DEPRECATED));
    assert_eq!(CheckConfig::parse("").unwrap(), CheckConfig::default());
    assert!(CheckConfig::parse("error=maybe")
        .unwrap_err()
        .contains("error=maybe"));
    assert!(CheckConfig::parse("nope")
        .unwrap_err()
        .contains("invalid check option"));
    assert!(CheckConfig::parse("other=1")
        .unwrap_err()
        .contains("\"other\""));
    let warnings = [
        LintWarning::new(WORKDIR_RELATIVE_PATH, 4, "x"),
        LintWarning::new(LEGACY_KEY_VALUE_FORMAT, 3, "y"),
        LintWarning::new(LEGACY_KEY_VALUE_FORMAT, 5, "y"),
    ];
    let c = CheckConfig::parse("error=true").unwrap();
    assert_eq!(
        c.error_for(&warnings).unwrap(),
        "lint violation found for rules: LegacyKeyValueFormat, WorkdirRelativePath"
    );
    assert_eq!(CheckConfig::default().error_for(&warnings), None);
}

/// BuildKit's `testInvalidDefinitionDescription` (experimental: only with
/// `experimental=`).
#[test]
fn invalid_definition_description() {
    let found = |text: &str| -> Vec<(usize, String)> {
        let df = parse_dockerfile("Dockerfile", text).unwrap();
        let all: Vec<usize> = (0..df.stages.len()).collect();
        lint(&df, &all, &[])
            .into_iter()
            .filter(|w| w.rule == INVALID_DEFINITION_DESCRIPTION)
            .map(|w| (w.line, w.message))
            .collect()
    };
    // Line 3: a description naming its ARG; 5: one that does not; 7: a stage's; 13: an
    // unnamed stage has none to give.
    let text = "# check=experimental=InvalidDefinitionDescription\n\
                # foo this is the foo\n\
                ARG foo=bar\n\
                # version of the base\n\
                ARG BASE=scratch\n\
                # base this is the base stage\n\
                FROM scratch AS base\n\
                # a stage without its name first\n\
                FROM scratch AS other\n\
                # the bar and the baz\n\
                ARG bar baz\n\
                # nothing to say\n\
                FROM scratch\n\
                # foo\n\
                \n\
                ARG detached\n\
                # bar\n\
                #\n\
                ARG reset\n\
                # first line\n\
                # bar the last line counts\n\
                ARG bar\n";
    assert_eq!(
        found(text),
        [
            (
                5,
                "Comment for ARG should follow the format: `# BASE <description>`".to_string()
            ),
            (
                9,
                "Comment for FROM should follow the format: `# other <description>`".to_string()
            ),
            (
                11,
                "Comment for ARG should follow the format: `# <arg_key> <description>`".to_string()
            ),
            // A blank line does not end the comment (BuildKit's parser keeps it); an
            // empty comment line does.
            (
                16,
                "Comment for ARG should follow the format: `# detached <description>`".to_string()
            ),
        ]
    );
    // The rule is experimental: checked only when `experimental=` names it, whatever
    // `skip=` says.
    let df = parse_dockerfile("Dockerfile", text).unwrap();
    let config = check_config(&df, None).unwrap();
    assert!(config.checks(&INVALID_DEFINITION_DESCRIPTION));
    assert!(!CheckConfig::default().checks(&INVALID_DEFINITION_DESCRIPTION));
    let all = CheckConfig::parse("skip=all;experimental=all").unwrap();
    assert!(all.checks(&INVALID_DEFINITION_DESCRIPTION) && !all.checks(&MAINTAINER_DEPRECATED));
    let named = CheckConfig::parse("experimental=Other, InvalidDefinitionDescription").unwrap();
    assert!(named.checks(&INVALID_DEFINITION_DESCRIPTION));
    assert!(!CheckConfig::parse("experimental=Other")
        .unwrap()
        .checks(&INVALID_DEFINITION_DESCRIPTION));
}

#[test]
fn the_build_arg_replaces_the_directive() {
    let df = parse_dockerfile("Df", "# check=error=true\nFROM a\n").unwrap();
    assert!(check_config(&df, None).unwrap().error);
    assert!(!check_config(&df, Some("skip=all")).unwrap().error);
    assert!(check_config(&df, Some("bad"))
        .unwrap_err()
        .contains("BUILDKIT_DOCKERFILE_CHECK"));
}

/// BuildKit's `testInvalidDefaultArgInFrom`: the FROM image as the global ARGs' defaults
/// make it must be a valid reference; build arguments do not count.
#[test]
fn invalid_default_arg_in_from() {
    let df = parse_dockerfile("Dockerfile", "ARG VERSION\nFROM busybox:$VERSION\n").unwrap();
    let warnings = lint(&df, &[0], &[("VERSION".into(), "latest".into())]);
    let found: Vec<(&str, usize, &str)> = warnings
        .iter()
        .map(|w| (w.rule.name, w.line, w.message.as_str()))
        .collect();
    assert_eq!(
        found,
        [(
            "InvalidDefaultArgInFrom",
            2,
            "Default value for ARG busybox:$VERSION results in empty or invalid base image name"
        )]
    );
    assert_eq!(
        names("ARG IMAGE\nFROM $IMAGE\n"),
        [("InvalidDefaultArgInFrom", 2)]
    );
    assert_eq!(
        names("ARG SFX=\"box:\"\nFROM busy${SFX}\n"),
        [("InvalidDefaultArgInFrom", 2)]
    );
    assert_eq!(
        names("ARG VERSION=\"latest\"\nFROM busybox:${VERSION}\n"),
        []
    );
    assert_eq!(names("ARG V=\"\"\nFROM busybox:stable${V}\n"), []);
    assert_eq!(names("ARG V\nFROM busybox:stable${V}\n"), []);
    assert_eq!(
        names("ARG R=localhost:5000/a/b\nARG T=x@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef\nFROM ${R}:1\nFROM $T\n"),
        []
    );
    for bad in [
        "",
        "Busybox",
        "busybox:",
        "a//b",
        "a@sha256:12",
        "a@sha256:0123456789abcdef0123456789abcdef",
        "-a",
        "a:-x",
        "a..b",
    ] {
        assert!(!stage_rules::is_valid_reference(bad), "{bad:?}");
    }
    for good in [
        "a",
        "a/b_c__d-e.f",
        "host:5000/x:tag",
        "docker.io/library/busybox:1.36",
        "a---b",
    ] {
        assert!(stage_rules::is_valid_reference(good), "{good:?}");
    }
}

/// BuildKit's `testCopyIgnoredFiles` and `testCopyIgnoredFileContextRoot`, with the ignore
/// file given as the function the build passes.
#[test]
fn copy_ignored_file() {
    let found = |text: &str, patterns: &[&str], ignored: &dyn Fn(&str) -> bool| {
        let df = parse_dockerfile("Dockerfile", text).unwrap();
        let all: Vec<usize> = (0..df.stages.len()).collect();
        let patterns: Vec<String> = patterns.iter().map(|p| p.to_string()).collect();
        let ignore = ContextIgnore {
            ignored,
            patterns: &patterns,
        };
        copy_ignored_files(&df, &all, &ignore)
            .into_iter()
            .map(|w| (w.line, w.message))
            .collect::<Vec<(usize, String)>>()
    };
    let dockerfile_ignored = |p: &str| p == "Dockerfile";
    assert_eq!(
        found(
            "FROM scratch\nCOPY Dockerfile .\nADD ./Dockerfile /windy\nCOPY --from=x Dockerfile /\n\
             COPY $X /\nADD https://h/Dockerfile /\n",
            &["Dockerfile"],
            &dockerfile_ignored
        ),
        [
            (
                2,
                "Attempting to Copy file \"Dockerfile\" that is excluded by .dockerignore".into()
            ),
            (
                3,
                "Attempting to Add file \"Dockerfile\" that is excluded by .dockerignore".into()
            ),
        ]
    );
    // `*` excludes the context root itself; `.*` matches the name `.` but, as in
    // BuildKit, only `*`, `**` and `**/*` report the root.
    let everything = |_: &str| true;
    assert_eq!(
        found("FROM scratch\nCOPY . .\n", &["*"], &everything).len(),
        1
    );
    assert_eq!(found("FROM scratch\nCOPY . .\n", &[".*"], &everything), []);
    assert_eq!(
        found("FROM scratch\nCOPY .env .\n", &[".*"], &everything).len(),
        1
    );
    // An exception turns the rule off: a file it keeps may lie in an excluded directory.
    assert_eq!(
        found(
            "FROM scratch\nCOPY ./Dockerfile .\n",
            &["*", "!Dockerfile"],
            &everything
        ),
        []
    );
    // Only the stages built are checked.
    let df = parse_dockerfile(
        "Dockerfile",
        "FROM scratch AS a\nCOPY Dockerfile /\nFROM scratch\n",
    )
    .unwrap();
    let patterns = ["Dockerfile".to_string()];
    let ignore = ContextIgnore {
        ignored: &dockerfile_ignored,
        patterns: &patterns,
    };
    assert!(copy_ignored_files(&df, &[1], &ignore).is_empty());
    assert_eq!(clean_path("a//b/../c/."), "a/c");
    assert_eq!(clean_path("./"), ".");
    assert_eq!(clean_path("/../x"), "/x");
}

/// BuildKit's `testUnmatchedVars` (and `testAllTargetUnmarshal`'s warnings), its "did you
/// mean" suggestions included: the base image's environment comes from the build.
#[test]
fn undefined_var() {
    let image_env = |base: &crate::Base| match base {
        crate::Base::Image(name) if name == "unknown" => None,
        _ => Some(vec![
            ("PATH".to_string(), "/bin".to_string()),
            ("FROM_IMAGE".to_string(), "1".to_string()),
        ]),
    };
    let found = |text: &str| -> Vec<(usize, String)> {
        let df = parse_dockerfile("Dockerfile", text).unwrap();
        let all: Vec<usize> = (0..df.stages.len()).collect();
        let opts = crate::BuildOptions {
            target: None,
            build_args: Default::default(),
            target_platform: crate::Platform::parse("linux/amd64").unwrap(),
            build_platform: crate::Platform::parse("linux/amd64").unwrap(),
        };
        let global = df.global_args(&opts).unwrap();
        undefined_vars(&df, &all, &global, &opts, &image_env)
            .into_iter()
            .map(|w| (w.line, w.message))
            .collect()
    };
    let undefined =
        |line: usize, name: &str| (line, format!("Usage of undefined variable '${name}'"));
    assert_eq!(
        found("FROM img\nCOPY $foo .\nARG foo=bar\nRUN echo $foo\n"),
        [undefined(2, "foo")]
    );
    let suggested = |line: usize, name: &str, like: &str| {
        (
            line,
            format!("Usage of undefined variable '${name}' (did you mean ${like}?)"),
        )
    };
    assert_eq!(
        found(
            "FROM img\nARG DIR_BINARIES=binaries/\nARG DIR_ASSETS=assets/\n\
             ARG DIR_CONFIG=config/\nCOPY $DIR_ASSET .\n"
        ),
        [suggested(5, "DIR_ASSET", "DIR_ASSETS")]
    );
    assert_eq!(
        found("FROM img\nENV PATH=$PAHT:/tmp/bin\n"),
        [suggested(2, "PAHT", "PATH")]
    );
    // RUN's command is the shell's; the image's Env, ENV and a declared ARG without a
    // value are defined. A variable with a default of its own (`${C:-default}`) is looked up
    // and unset: BuildKit's lexer reports it too (`getEnv` records every lookup), and `A`,
    // one edit away, is suggested.
    assert_eq!(
        found(
            "FROM img\nRUN echo $PATH $nothing\nENV A=1\nARG B\nWORKDIR /$A/$B/$FROM_IMAGE\n\
             LABEL x=${C:-default}\n"
        ),
        [suggested(6, "C", "A")]
    );
    // Both stages are checked; a stage built FROM another keeps its ENVs and ARGs.
    assert_eq!(
        found("FROM scratch AS first\nCOPY $foo .\n\nFROM scratch AS second\nCOPY $bar .\n"),
        [undefined(2, "foo"), undefined(5, "bar")]
    );
    assert_eq!(
        found("FROM img AS base\nARG foo\nENV E=1\nFROM base\nCOPY $foo$E /\nCOPY $nope /\n"),
        [undefined(6, "nope")]
    );
    // A global ARG is not in a stage's scope until the stage declares it again; an ARG's
    // default sees the ARGs before it.
    assert_eq!(
        found("ARG G=1\nFROM img\nUSER $G\nARG G\nARG X=$G Y=$X\nUSER $G\n"),
        [undefined(3, "G")]
    );
    // EXPOSE's ports are expanded apart from the instruction's `Expand` in BuildKit, and
    // never reported.
    assert_eq!(found("FROM img\nEXPOSE $PORT\n"), []);
    // A base whose environment is unknown is not checked.
    assert_eq!(found("FROM unknown\nCOPY $foo .\n"), []);
}

/// BuildKit's `suggest.Search`: under 3 edits, the closest, the earliest of equals; an
/// exact match suggests nothing.
#[test]
fn suggestions() {
    use crate::stages::suggest;
    assert_eq!(suggest("PAHT", ["HOME", "PATH"]), Some("PATH".into()));
    assert_eq!(suggest("abc", ["abd", "abe"]), Some("abd".into()));
    assert_eq!(suggest("abc", ["xyz", "abcdef"]), None);
    assert_eq!(suggest("abc", ["abx", "abc"]), None);
    assert_eq!(
        suggest("kitten", ["sitting", "kitte"]),
        Some("kitte".into())
    );
    assert_eq!(suggest("", ["a"]), Some("a".into()));
}
