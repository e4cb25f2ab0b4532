//! GitHub Actions workflows as the CI recipes write them: the steps of a job read from a
//! document's yaml block, and `${{ … }}` expressions filled in, so tests can run the recipes
//! as written.

/// One step of a workflow job.
#[derive(Debug, Default)]
pub struct Step {
    pub uses: Option<String>,
    pub name: Option<String>,
    pub env: Vec<(String, String)>,
    pub run: Option<String>,
}

/// A job of the recipe: its `env:` and its steps.
#[derive(Debug, Default)]
pub struct Job {
    pub env: Vec<(String, String)>,
    pub steps: Vec<Step>,
}

fn indent(line: &str) -> usize {
    line.len() - line.trim_start().len()
}

/// The ```yaml blocks of `doc`, in order.
pub fn yaml_blocks(doc: &str) -> Vec<Vec<&str>> {
    let mut blocks = Vec::new();
    let mut lines = doc.lines();
    while lines.by_ref().any(|l| l.trim() == "```yaml") {
        blocks.push(lines.by_ref().take_while(|l| l.trim() != "```").collect());
    }
    blocks
}

fn key_value(text: &str) -> (String, String) {
    let (k, v) = text
        .split_once(':')
        .unwrap_or_else(|| panic!("not a key: {text:?}"));
    (k.trim().to_string(), v.trim().to_string())
}

/// Reads the one job of a workflow written in the recipes' shape (a job with `env:` and
/// `steps:`).
pub fn parse_job(lines: &[&str]) -> Job {
    let mut job = Job::default();
    let mut i = 0;
    while i < lines.len() {
        let line = lines[i];
        let trimmed = line.trim();
        if trimmed == "env:" {
            let level = indent(line);
            i += 1;
            while i < lines.len() && indent(lines[i]) > level {
                job.env.push(key_value(lines[i].trim()));
                i += 1;
            }
            continue;
        }
        i += 1;
        if trimmed == "steps:" {
            break;
        }
    }
    job.steps = parse_steps(&lines[i..]);
    job
}

/// Reads a list of steps, each with the keys `uses`, `name`, `env` and a `run: |` block.
/// Any other key fails the test, so a recipe cannot grow a key its test would ignore.
pub fn parse_steps(lines: &[&str]) -> Vec<Step> {
    let mut steps = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        let line = lines[i];
        let Some(first) = line.trim_start().strip_prefix("- ") else {
            panic!("expected a step at {line:?}");
        };
        let key_level = indent(line) + 2;
        let mut step = Step::default();
        // (line index, text) of each line of the step; the first key shares the `- ` line.
        let mut fields: Vec<(usize, String)> = vec![(i, first.to_string())];
        i += 1;
        while i < lines.len() && indent(lines[i]) >= key_level && !lines[i].trim().is_empty() {
            fields.push((i, lines[i].trim().to_string()));
            i += 1;
        }
        let deeper = |f: usize| indent(lines[fields[f].0]) > key_level;
        let mut f = 0;
        while f < fields.len() {
            let (at, text) = &fields[f];
            let (key, value) = key_value(text);
            f += 1;
            match key.as_str() {
                "uses" => step.uses = Some(value),
                "name" => step.name = Some(value),
                "env" => {
                    while f < fields.len() && deeper(f) {
                        step.env.push(key_value(&fields[f].1));
                        f += 1;
                    }
                }
                "run" => {
                    assert_eq!(value, "|", "run: must be a block at line {at}");
                    let mut script = String::new();
                    while f < fields.len() && deeper(f) {
                        script.push_str(&lines[fields[f].0][key_level + 2..]);
                        script.push('\n');
                        f += 1;
                    }
                    step.run = Some(script);
                }
                other => panic!("step key {other:?} (line {at}) is not run by the tests"),
            }
        }
        steps.push(step);
    }
    steps
}

/// Fills in `${{ expr }}` from `values` (expression, value); an expression not there fails
/// the test.
pub fn expand(text: &str, values: &[(&str, &str)]) -> String {
    let mut out = String::new();
    let mut rest = text;
    while let Some(start) = rest.find("${{") {
        out.push_str(&rest[..start]);
        let end = rest[start..].find("}}").expect("unclosed ${{") + start;
        let expr = rest[start + 3..end].trim();
        let value = values
            .iter()
            .find(|(e, _)| *e == expr)
            .unwrap_or_else(|| panic!("the recipe uses ${{{{ {expr} }}}}, unknown to the test"))
            .1;
        out.push_str(value);
        rest = &rest[end + 2..];
    }
    out.push_str(rest);
    out
}
