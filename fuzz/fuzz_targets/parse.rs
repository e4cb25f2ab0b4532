//! Runs the Dockerfile parser, the typed instruction layer, the stage model and the
//! expander over arbitrary input: none of them may panic.

#![no_main]

use libfuzzer_sys::fuzz_target;
use rbuild_dockerfile::{parse_dockerfile, BuildOptions, Platform};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(parsed) = rbuild_dockerfile::syntax::parse(text) {
        let _ = parsed.ast.dump();
    }
    let Ok(df) = parse_dockerfile("Dockerfile", text) else {
        return;
    };
    let env: Vec<(String, String)> = vec![("A".into(), "1".into()), ("B".into(), String::new())];
    let lexer = df.lexer();
    for stage in &df.stages {
        for cmd in &stage.commands {
            let _ = cmd.expand("Dockerfile", &lexer, &env);
        }
    }
    let platform = Platform {
        os: "linux".into(),
        architecture: "amd64".into(),
        variant: None,
    };
    let opts = BuildOptions {
        target: None,
        build_args: Default::default(),
        target_platform: platform.clone(),
        build_platform: platform,
    };
    let _ = df.build_plan(&opts);
    let _ = serde_json::to_string(&df);
});
