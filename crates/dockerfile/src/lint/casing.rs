//! The casing and naming rules: `StageNameCasing`, `FromAsCasing`, `DuplicateStageName`,
//! `ReservedStageName` and `ConsistentInstructionCasing`.

use std::collections::BTreeSet;

use super::*;
use crate::instructions::Command;

/// The words of an instruction as written: its keyword, then its arguments without flags.
pub(super) fn written_words(cmd: &Command) -> (String, Vec<String>) {
    let mut words = cmd.location.original.split_whitespace();
    let keyword = words.next().unwrap_or_default().to_string();
    let args = words
        .filter(|w| !w.starts_with("--"))
        .map(str::to_string)
        .collect();
    (keyword, args)
}

/// `StageNameCasing` and `FromAsCasing` (`instructions/parse.go`).
pub(super) fn from_casing(from: &Command) -> Vec<LintWarning> {
    let mut out = Vec::new();
    let (keyword, args) = written_words(from);
    let line = from.location.start_line;
    if args.len() == 3 && args[2] != args[2].to_lowercase() {
        out.push(LintWarning::new(
            STAGE_NAME_CASING,
            line,
            format!("Stage name '{}' should be lowercase", args[2]),
        ));
    }
    if args.len() >= 3 {
        let lower = keyword == keyword.to_lowercase();
        let upper = keyword == keyword.to_uppercase();
        let as_word = &args[1];
        let matches = if lower {
            *as_word == as_word.to_lowercase()
        } else if upper {
            *as_word == as_word.to_uppercase()
        } else {
            true
        };
        if !matches {
            out.push(LintWarning::new(
                FROM_AS_CASING,
                line,
                format!("'{as_word}' and '{keyword}' keywords' casing do not match"),
            ));
        }
    }
    out
}

/// `ReservedStageName` and `DuplicateStageName` (`validateStageNames`).
pub(super) fn stage_names(df: &Dockerfile) -> Vec<LintWarning> {
    let mut out = Vec::new();
    let mut seen = BTreeSet::new();
    for stage in &df.stages {
        let Some(name) = &stage.name else { continue };
        let line = stage.from.location.start_line;
        if name == "context" || name == "scratch" {
            out.push(LintWarning::new(
                RESERVED_STAGE_NAME,
                line,
                format!("Stage name should not use the same name as reserved stage {name:?}"),
            ));
        }
        if !seen.insert(name.clone()) {
            out.push(LintWarning::new(
                DUPLICATE_STAGE_NAME,
                line,
                format!("Duplicate stage name {name:?}, stage names should be unique"),
            ));
        }
    }
    out
}

/// `ConsistentInstructionCasing` (`validateCommandCasing`): every keyword written in one
/// case, that of the majority of the keywords that are (upper case on a tie).
pub(super) fn instruction_casing<'a>(
    commands: impl Iterator<Item = &'a Command>,
) -> Vec<LintWarning> {
    let keywords: Vec<(String, usize)> = commands
        .map(|c| (written_words(c).0, c.location.start_line))
        .collect();
    let (mut lower, mut upper) = (0, 0);
    for (keyword, _) in &keywords {
        if *keyword == keyword.to_lowercase() {
            lower += 1;
        } else if *keyword == keyword.to_uppercase() {
            upper += 1;
        }
    }
    let majority_lower = lower > upper;
    let mut out = Vec::new();
    for (keyword, line) in keywords {
        let casing = if majority_lower && keyword != keyword.to_lowercase() {
            "lowercase"
        } else if !majority_lower && keyword != keyword.to_uppercase() {
            "uppercase"
        } else {
            continue;
        };
        out.push(LintWarning::new(
            CONSISTENT_INSTRUCTION_CASING,
            line,
            format!("Command '{keyword}' should match the case of the command majority ({casing})"),
        ));
    }
    out
}
