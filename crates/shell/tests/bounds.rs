//! Expansion is bounded: no word may grow past the lexer's limit and a shared budget caps
//! the total. Each test runs in a child process with a capped address space, so a
//! regression fails the test instead of exhausting the machine's memory.

use std::collections::BTreeMap;

use rbuild_shell::{ExpandErrorKind, ExpansionBudget, Lexer, MAX_WORD_BYTES};

/// Address space for each child: far below what the unbounded expansions reach (tens of GB).
const CHILD_MEMORY: u64 = 1 << 30;

#[test]
fn doubling_a_variable_stops_at_the_word_limit() {
    if !rbuild_testutil::memory_limited("doubling_a_variable_stops_at_the_word_limit", CHILD_MEMORY)
    {
        return;
    }
    let lexer = Lexer::new('\\');
    let mut env: BTreeMap<String, String> = BTreeMap::new();
    env.insert("a0".into(), "0123456789abcdef".into());
    let mut failed_at = None;
    for i in 1..=39 {
        match lexer.process_word(&format!("${{a{}}}${{a{}}}", i - 1, i - 1), &env) {
            Ok(value) => {
                assert!(value.len() <= MAX_WORD_BYTES);
                env.insert(format!("a{i}"), value);
            }
            Err(err) => {
                assert_eq!(
                    err.kind,
                    ExpandErrorKind::WordTooLong {
                        limit: MAX_WORD_BYTES
                    }
                );
                assert!(
                    err.to_string()
                        .contains("longer than the limit of 1048576 bytes"),
                    "{err}"
                );
                failed_at = Some(i);
                break;
            }
        }
    }
    // 16 bytes doubled 16 times is exactly 1 MiB; the 17th doubling is refused.
    assert_eq!(failed_at, Some(17));
}

#[test]
fn replacement_multiplying_a_value_is_bounded() {
    if !rbuild_testutil::memory_limited("replacement_multiplying_a_value_is_bounded", CHILD_MEMORY)
    {
        return;
    }
    let lexer = Lexer::new('\\');
    let env: BTreeMap<String, String> = [("v".to_string(), "x".repeat(MAX_WORD_BYTES / 2))].into();
    // Every character becomes 64 copies of the whole match, and the whole value 4000 copies
    // of itself: 32 MiB and 2 GB without the bound.
    let each_char = format!("${{v//?/{}}}", "y".repeat(64));
    let whole = format!("${{v//*/{}}}", "\\$0".repeat(4000));
    for word in [each_char, whole] {
        let err = lexer.process_word(&word, &env).unwrap_err();
        assert!(
            matches!(err.kind, ExpandErrorKind::WordTooLong { .. }),
            "{word:.30}: {err:.200}"
        );
    }
    // The same operators within the bound still work.
    let small: BTreeMap<String, String> = [("v".to_string(), "ab".to_string())].into();
    assert_eq!(
        lexer.process_word("${v//?/[\\$0]}", &small).unwrap(),
        "[\\a][\\b]"
    );
}

#[test]
fn a_shared_budget_bounds_the_total() {
    if !rbuild_testutil::memory_limited("a_shared_budget_bounds_the_total", CHILD_MEMORY) {
        return;
    }
    let budget = ExpansionBudget::new(10 << 20);
    let lexer = Lexer::new('\\').with_budget(budget.clone());
    let env: BTreeMap<String, String> = [("v".to_string(), "x".repeat(1 << 20))].into();
    let mut kept = Vec::new();
    let mut words = 0;
    let err = loop {
        match lexer.process_words("$v", &env) {
            Ok(value) => {
                kept.push(value);
                words += 1;
            }
            Err(err) => break err,
        }
        assert!(words < 100, "the budget never ran out");
    };
    assert_eq!(words, 10, "ten 1 MiB words fit a 10 MiB budget");
    assert_eq!(
        err.kind,
        ExpandErrorKind::BudgetExhausted { limit: 10 << 20 }
    );
    assert!(err.to_string().contains("in total"), "{err}");
    // Lexers derived from it share it.
    let raw = lexer.clone().with_raw_quotes(true);
    assert!(raw.process_word("$v", &env).is_err());
    assert!(budget.used() > budget.limit());
}
