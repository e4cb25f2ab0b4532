//! Property test: no input makes the parser, the typed layer or the expander panic.

use proptest::prelude::*;
use rbuild_dockerfile::parse_dockerfile;

/// Dockerfile-ish fragments so that generated inputs reach deep into the grammar.
fn fragment() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("FROM a AS b\n".to_string()),
        Just("RUN <<EOF\n".to_string()),
        Just("EOF\n".to_string()),
        Just("COPY --from=b <<-'X' /d\n".to_string()),
        Just("\\\n".to_string()),
        Just("`\n".to_string()),
        Just("# escape=`\n".to_string()),
        Just("RUN --mount=type=cache,target=/x,\"a,b\" x\n".to_string()),
        Just("ENV A=\"b c\" D=$A\n".to_string()),
        Just("CMD [\"a\", \n".to_string()),
        Just("ONBUILD ".to_string()),
        Just("HEALTHCHECK --interval=1s CMD x\n".to_string()),
        Just("ARG X=${Y:-z}\n".to_string()),
        "[ -~\t\n\u{a0}\u{800}\u{feff}]{0,20}",
        any::<String>(),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]
    #[test]
    fn never_panics(parts in proptest::collection::vec(fragment(), 0..12)) {
        let text: String = parts.concat();
        let _ = rbuild_dockerfile::syntax::parse(&text).map(|r| r.ast.dump());
        if let Ok(df) = parse_dockerfile("Dockerfile", &text) {
            let env: Vec<(String, String)> = vec![("A".into(), "1".into())];
            let lexer = df.lexer();
            for stage in &df.stages {
                for cmd in &stage.commands {
                    let _ = cmd.expand("Dockerfile", &lexer, &env);
                }
            }
            let o = rbuild_dockerfile::BuildOptions {
                target: None,
                build_args: Default::default(),
                target_platform: rbuild_dockerfile::Platform::parse("linux/amd64").unwrap(),
                build_platform: rbuild_dockerfile::Platform::parse("linux/amd64").unwrap(),
            };
            let _ = df.build_plan(&o);
            let _ = serde_json::to_string(&df);
        }
    }
}
