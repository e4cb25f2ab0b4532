//! The frontend's bounds (docs/security.md): expansion, Dockerfile size, instructions and
//! stages. Each test runs in a child process with a capped address space, so a regression
//! fails the test instead of exhausting the machine's memory.

use rbuild_dockerfile::limits::{
    MAX_DOCKERFILE_BYTES, MAX_EXPANSION_BYTES, MAX_INSTRUCTIONS, MAX_STAGES,
};
use rbuild_dockerfile::{parse_dockerfile, BuildOptions, Platform};

const CHILD_MEMORY: u64 = 1 << 30;

fn options() -> BuildOptions {
    BuildOptions {
        target: None,
        build_args: Default::default(),
        target_platform: Platform::parse("linux/amd64").unwrap(),
        build_platform: Platform::parse("linux/amd64").unwrap(),
    }
}

/// Plans the build and computes every stage's environment, as a build does.
fn plan_and_expand(text: &str) -> Result<(), String> {
    let df = parse_dockerfile("Dockerfile", text).map_err(|e| e.to_string())?;
    let opts = options();
    df.build_plan(&opts).map_err(|e| e.to_string())?;
    let global = df.global_args(&opts).map_err(|e| e.to_string())?;
    for (i, stage) in df.stages.iter().enumerate() {
        df.stage_env(i, stage.commands.len(), &global, &opts)
            .map_err(|e| e.to_string())?;
    }
    Ok(())
}

/// The reported attack: 852 bytes doubling an ARG 39 times reached 24 GB.
#[test]
fn doubling_an_arg_is_refused_naming_the_bound() {
    if !rbuild_testutil::memory_limited("doubling_an_arg_is_refused_naming_the_bound", CHILD_MEMORY)
    {
        return;
    }
    let mut text = String::from("FROM scratch\nARG a0=0123456789abcdef\n");
    for i in 1..=39 {
        text.push_str(&format!("ARG a{i}=${{a{}}}${{a{}}}\n", i - 1, i - 1));
    }
    text.push_str("RUN echo $a39\n");
    let err = plan_and_expand(&text).unwrap_err();
    assert!(
        err.contains("longer than the limit of 1048576 bytes") && err.contains("Dockerfile:19:"),
        "the error names the bound and the line of the 17th doubling: {err:.300}"
    );
    // The same in global ARGs (expanded for FROM lines).
    let global = text
        .replace("FROM scratch\n", "")
        .replace("RUN echo $a39\n", "FROM scratch\n");
    let err = plan_and_expand(&global).unwrap_err();
    assert!(err.contains("longer than the limit"), "{err:.300}");
}

#[test]
fn many_words_under_the_word_limit_exhaust_the_total_budget() {
    if !rbuild_testutil::memory_limited(
        "many_words_under_the_word_limit_exhaust_the_total_budget",
        CHILD_MEMORY,
    ) {
        return;
    }
    // a16 is 1 MiB; each ENV below copies it again.
    let mut text = String::from("FROM scratch\nARG a0=0123456789abcdef\n");
    for i in 1..=16 {
        text.push_str(&format!("ARG a{i}=${{a{}}}${{a{}}}\n", i - 1, i - 1));
    }
    let copies = (MAX_EXPANSION_BYTES >> 20) + 10;
    for i in 0..copies {
        text.push_str(&format!("ENV b{i}=$a16\n"));
    }
    let err = plan_and_expand(&text).unwrap_err();
    assert!(
        err.contains(&format!(
            "produced more than the limit of {MAX_EXPANSION_BYTES} bytes in total"
        )),
        "{err:.300}"
    );
}

#[test]
fn an_oversized_dockerfile_is_refused() {
    if !rbuild_testutil::memory_limited("an_oversized_dockerfile_is_refused", CHILD_MEMORY) {
        return;
    }
    let line = format!("RUN echo {}\n", "x".repeat(1000));
    let text = "FROM scratch\n".to_string()
        + &line.repeat((MAX_DOCKERFILE_BYTES as usize) / line.len() + 1);
    let err = parse_dockerfile("Dockerfile", &text)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains(&format!("more than the limit of {MAX_DOCKERFILE_BYTES}")),
        "{err}"
    );
}

#[test]
fn too_many_instructions_are_refused_at_the_first_one_over() {
    if !rbuild_testutil::memory_limited(
        "too_many_instructions_are_refused_at_the_first_one_over",
        CHILD_MEMORY,
    ) {
        return;
    }
    let at_limit = "FROM scratch\n".to_string() + &"ENV a=b\n".repeat(MAX_INSTRUCTIONS - 1);
    parse_dockerfile("Dockerfile", &at_limit).unwrap();
    let over = at_limit + "ENV c=d\n";
    let err = parse_dockerfile("Dockerfile", &over).unwrap_err();
    assert_eq!(err.line, MAX_INSTRUCTIONS + 1);
    assert!(
        err.message.contains(&format!(
            "more than the limit of {MAX_INSTRUCTIONS} instructions"
        )),
        "{err}"
    );
}

#[test]
fn too_many_stages_are_refused() {
    if !rbuild_testutil::memory_limited("too_many_stages_are_refused", CHILD_MEMORY) {
        return;
    }
    let at_limit = "FROM scratch\n".repeat(MAX_STAGES);
    parse_dockerfile("Dockerfile", &at_limit).unwrap();
    let err = parse_dockerfile("Dockerfile", &(at_limit + "FROM scratch\n")).unwrap_err();
    assert_eq!(err.line, MAX_STAGES + 1);
    assert!(
        err.message
            .contains(&format!("more than the limit of {MAX_STAGES} build stages")),
        "{err}"
    );
}

/// Planning with many `COPY --from` lines stays linear (it was quadratic: each one
/// recomputed the stage's environment from the start).
#[test]
fn planning_many_copy_from_lines_is_fast() {
    let mut text = String::from("FROM scratch AS a\nFROM scratch\n");
    for i in 0..4000 {
        text.push_str(&format!("ENV v{i}=a\nCOPY --from=a /$v{i} /y{i}\n"));
    }
    let started = std::time::Instant::now();
    let df = parse_dockerfile("Dockerfile", &text).unwrap();
    let plan = df.build_plan(&options()).unwrap();
    assert_eq!(plan.order, [0, 1]);
    assert!(
        started.elapsed() < std::time::Duration::from_secs(20),
        "planning took {:?}",
        started.elapsed()
    );
}

/// `chown(-1, -1)` means "leave unchanged": 4294967295 used to give files silently to root.
#[test]
fn out_of_range_chown_ids_are_refused_naming_the_id() {
    let expand = |line: &str| {
        let text = format!("FROM scratch\nARG BIG=4294967296\n{line}\n");
        let df = parse_dockerfile("Dockerfile", &text).unwrap();
        let opts = options();
        let global = df.global_args(&opts).unwrap();
        let env = df.stage_env(0, 1, &global, &opts).unwrap();
        df.stages[0].commands[1]
            .expand("Dockerfile", &df.lexer(), &env)
            .map(|_| ())
            .map_err(|e| e.to_string())
    };
    let err = expand("COPY --chown=4294967295:4294967295 a b").unwrap_err();
    assert!(
        err.contains("Dockerfile:3:")
            && err.contains("user id 4294967295 is out of range (ids go from 0 to 4294967294)"),
        "{err}"
    );
    let err = expand("ADD --chown=0:$BIG a b").unwrap_err();
    assert!(err.contains("group id 4294967296 is out of range"), "{err}");
    let err = expand("COPY --chown=99999999999999999999 a b").unwrap_err();
    assert!(err.contains("user id 99999999999999999999"), "{err}");
    expand("COPY --chown=4294967294:0 a b").unwrap();
    expand("COPY --chown=app:staff a b").unwrap();
    expand("COPY --chown=1000 a b").unwrap();
}
