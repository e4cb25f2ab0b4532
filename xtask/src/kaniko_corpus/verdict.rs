//! What a case gave (equal, same error, different, skipped), the committed expectations
//! (`case → equal | same-error | skipped | <known difference name>`), and the check that
//! fails on a regression and on a fixed difference (so the file is kept current).

use std::collections::BTreeMap;

use anyhow::{anyhow, bail, Context, Result};
use serde_json::Value;

/// What one case gave.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    /// Not built here, with the reason.
    Skipped(String),
    /// Both built, and rbuild's image is BuildKit's (times and nondeterministic files aside).
    Equal,
    /// Both refused the Dockerfile; each one's error line.
    SameError { rbuild: String, buildkit: String },
    /// Both built, with these differences.
    Different(Vec<String>),
    /// Only rbuild failed: its error line.
    RbuildFailed(String),
    /// Only BuildKit failed: its error line.
    BuildKitFailed(String),
}

impl Verdict {
    /// The word the expectations file and the summary use.
    pub fn label(&self) -> &'static str {
        match self {
            Verdict::Skipped(_) => "skipped",
            Verdict::Equal => "equal",
            Verdict::SameError { .. } => "same-error",
            Verdict::Different(_) => "different",
            Verdict::RbuildFailed(_) => "rbuild-failed",
            Verdict::BuildKitFailed(_) => "buildkit-failed",
        }
    }

    /// One line for the results table.
    pub fn detail(&self) -> String {
        match self {
            Verdict::Skipped(reason) => reason.clone(),
            Verdict::Equal => String::new(),
            Verdict::SameError { rbuild, buildkit } => {
                format!("rbuild: {rbuild} / BuildKit: {buildkit}")
            }
            Verdict::Different(lines) => {
                let mut shown: Vec<String> = lines.iter().take(4).cloned().collect();
                if lines.len() > 4 {
                    shown.push(format!("… {} more", lines.len() - 4));
                }
                shown.join("; ")
            }
            Verdict::RbuildFailed(line) => format!("rbuild: {line}"),
            Verdict::BuildKitFailed(line) => format!("BuildKit: {line}"),
        }
    }
}

/// The verdict labels an expectation can name; anything else names a known difference.
const PLAIN: &[&str] = &["equal", "same-error", "skipped"];

/// Reads the expectations file: a JSON object of case → label, every label a non-empty
/// string without spaces (a known difference's name, `docs/fidelity.md` explains it).
pub fn parse_expectations(json: &str) -> Result<BTreeMap<String, String>> {
    let value: Value = serde_json::from_str(json).context("parsing the expectations")?;
    let object = value
        .as_object()
        .ok_or_else(|| anyhow!("the expectations are not a JSON object of case → label"))?;
    let mut out = BTreeMap::new();
    for (case, label) in object {
        let label = label
            .as_str()
            .ok_or_else(|| anyhow!("{case}: the expectation is not a string"))?;
        if label.is_empty() || label.contains(char::is_whitespace) {
            bail!("{case}: {label:?} is not a label (equal, same-error, skipped or a known difference's name)");
        }
        if matches!(label, "different" | "rbuild-failed" | "buildkit-failed") {
            bail!("{case}: {label:?} is not a known difference's name: name what differs");
        }
        out.insert(case.clone(), label.to_string());
    }
    Ok(out)
}

/// Whether a case's verdict is what the expectations say; the error says what changed and
/// what to do.
pub fn check(case: &str, verdict: &Verdict, expected: Option<&str>) -> Result<(), String> {
    let found = verdict.label();
    let Some(expected) = expected else {
        return Err(format!(
            "{case}: not in the expectations file (it gave {found}: {})",
            verdict.detail()
        ));
    };
    let differs = matches!(
        verdict,
        Verdict::Different(_) | Verdict::RbuildFailed(_) | Verdict::BuildKitFailed(_)
    );
    if PLAIN.contains(&expected) {
        if expected == found {
            return Ok(());
        }
        return Err(format!(
            "{case}: expected {expected}, got {found}: {}",
            verdict.detail()
        ));
    }
    if differs {
        Ok(())
    } else {
        Err(format!(
            "{case}: the known difference {expected:?} is gone (now {found}): update the expectations file and docs/fidelity.md"
        ))
    }
}

/// The expectations a run's verdicts make: known-difference names kept from `previous`
/// where the case still differs, `unexplained` for a new difference (to be named by hand).
pub fn expectations_from(
    verdicts: &[(String, Verdict)],
    previous: &BTreeMap<String, String>,
) -> BTreeMap<String, String> {
    let mut out = previous.clone();
    for (case, verdict) in verdicts {
        let label = match verdict.label() {
            plain @ ("equal" | "same-error" | "skipped") => plain.to_string(),
            _ => match previous.get(case) {
                Some(name) if !PLAIN.contains(&name.as_str()) => name.clone(),
                _ => "unexplained".to_string(),
            },
        };
        out.insert(case.clone(), label);
    }
    out
}

/// Counts per label, for the summary line.
pub fn counts(verdicts: &[(String, Verdict)]) -> BTreeMap<&'static str, usize> {
    let mut counts = BTreeMap::new();
    for (_, verdict) in verdicts {
        *counts.entry(verdict.label()).or_default() += 1;
    }
    counts
}

/// Escapes what would break a Markdown table cell.
fn cell(text: &str) -> String {
    text.replace('|', "\\|").replace('\n', " ")
}

/// One case's line of the results.
pub struct Row {
    pub case: String,
    pub verdict: Verdict,
    pub expected: Option<String>,
    pub seconds: f64,
    /// Kaniko's image against BuildKit's, when Kaniko ran too (informational: not checked
    /// against the expectations).
    pub kaniko: Option<Verdict>,
}

/// The results table (Markdown): one row per case; a Kaniko column when Kaniko ran.
pub fn table(rows: &[Row]) -> String {
    let with_kaniko = rows.iter().any(|r| r.kaniko.is_some());
    let mut out = String::from("| case | rbuild vs BuildKit | expected | seconds | detail |");
    if with_kaniko {
        out.push_str(" Kaniko vs BuildKit | Kaniko detail |");
    }
    out.push_str("\n|---|---|---|---|---|");
    if with_kaniko {
        out.push_str("---|---|");
    }
    out.push('\n');
    for row in rows {
        out.push_str(&format!(
            "| `{}` | {} | {} | {:.1} | {} |",
            cell(&row.case),
            row.verdict.label(),
            cell(row.expected.as_deref().unwrap_or("-")),
            row.seconds,
            cell(&row.verdict.detail())
        ));
        if with_kaniko {
            match &row.kaniko {
                Some(k) => out.push_str(&format!(
                    " {} | {} |",
                    k.label().replace("rbuild", "kaniko"),
                    cell(&k.detail().replacen("rbuild: ", "Kaniko: ", 1))
                )),
                None => out.push_str(" - | |"),
            }
        }
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn different() -> Verdict {
        Verdict::Different(vec!["config Env: a -> b".into()])
    }

    #[test]
    fn plain_expectations_must_match_exactly() {
        assert!(check("a", &Verdict::Equal, Some("equal")).is_ok());
        let err = check("a", &different(), Some("equal")).unwrap_err();
        assert!(err.contains("expected equal, got different"), "{err}");
        assert!(err.contains("config Env"), "{err}");
        let same = Verdict::SameError {
            rbuild: "x".into(),
            buildkit: "y".into(),
        };
        assert!(check("a", &same, Some("same-error")).is_ok());
        assert!(check("a", &Verdict::RbuildFailed("e".into()), Some("same-error")).is_err());
        assert!(check("a", &Verdict::Skipped("r".into()), Some("skipped")).is_ok());
        assert!(check("a", &Verdict::Equal, Some("skipped")).is_err());
    }

    #[test]
    fn a_known_difference_must_still_differ() {
        assert!(check("a", &different(), Some("default-path")).is_ok());
        assert!(check("a", &Verdict::RbuildFailed("e".into()), Some("wildcard")).is_ok());
        let fixed = check("a", &Verdict::Equal, Some("default-path")).unwrap_err();
        assert!(fixed.contains("is gone"), "{fixed}");
        assert!(check("a", &Verdict::Skipped("r".into()), Some("default-path")).is_err());
    }

    #[test]
    fn a_case_missing_from_the_file_fails() {
        let err = check("new", &Verdict::Equal, None).unwrap_err();
        assert!(err.contains("not in the expectations"), "{err}");
    }

    #[test]
    fn expectations_parse_and_reject_what_is_not_a_label() {
        let parsed =
            parse_expectations(r#"{"a": "equal", "b": "default-path", "c": "skipped"}"#).unwrap();
        assert_eq!(parsed["b"], "default-path");
        assert_eq!(parsed.len(), 3);
        assert!(parse_expectations(r#"["a"]"#).is_err());
        assert!(parse_expectations(r#"{"a": 1}"#).is_err());
        assert!(parse_expectations(r#"{"a": ""}"#).is_err());
        assert!(parse_expectations(r#"{"a": "two words"}"#).is_err());
        assert!(parse_expectations(r#"{"a": "different"}"#).is_err());
        assert!(parse_expectations("{").is_err());
    }

    #[test]
    fn written_expectations_keep_known_names_and_flag_new_ones() {
        let previous: BTreeMap<String, String> = [
            ("a".to_string(), "default-path".to_string()),
            ("b".to_string(), "equal".to_string()),
            ("z".to_string(), "equal".to_string()),
        ]
        .into();
        let verdicts = vec![
            ("a".to_string(), different()),
            ("b".to_string(), different()),
            ("c".to_string(), Verdict::Equal),
        ];
        let out = expectations_from(&verdicts, &previous);
        assert_eq!(out["a"], "default-path");
        assert_eq!(out["b"], "unexplained");
        assert_eq!(out["c"], "equal");
        // Cases not run keep their entry.
        assert_eq!(out["z"], "equal");
    }

    #[test]
    fn the_table_has_a_row_per_case_and_escapes_cells() {
        let row = |case: &str, verdict: Verdict, kaniko: Option<Verdict>| Row {
            case: case.to_string(),
            verdict,
            expected: Some("equal".into()),
            seconds: 1.25,
            kaniko,
        };
        let rows = vec![
            row("a|b", Verdict::Equal, None),
            row(
                "c",
                Verdict::Different((0..6).map(|i| format!("d{i}")).collect()),
                None,
            ),
        ];
        let text = table(&rows);
        assert_eq!(text.lines().count(), 4);
        assert!(!text.contains("Kaniko"), "{text}");
        assert!(text.contains("`a\\|b` | equal | equal | 1.2"), "{text}");
        assert!(text.contains("d0; d1; d2; d3; … 2 more"), "{text}");
        let verdicts: Vec<(String, Verdict)> = rows
            .iter()
            .map(|r| (r.case.clone(), r.verdict.clone()))
            .collect();
        assert_eq!(counts(&verdicts)["different"], 1);

        let with_kaniko = table(&[
            row(
                "a",
                Verdict::Equal,
                Some(Verdict::RbuildFailed("kaniko: x".into())),
            ),
            row("b", Verdict::Skipped("why".into()), None),
        ]);
        assert!(with_kaniko.contains("Kaniko vs BuildKit"), "{with_kaniko}");
        assert!(
            with_kaniko.contains("| kaniko-failed | Kaniko: kaniko: x |"),
            "{with_kaniko}"
        );
        assert!(with_kaniko.contains("| why | - | |"), "{with_kaniko}");
        for line in with_kaniko.lines() {
            assert_eq!(line.matches('|').count(), 8, "{line}");
        }
    }
}
