//! The differences found, as data (for `--json` and tests) and as text (`diffoci`-like).

use std::fmt::Write as _;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::describe::CONFIG_FIELDS;
use crate::flatten::{FileMeta, Filesystem};
use crate::Options;

/// One difference: what, and its value in each image (`null` when absent).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Change {
    pub what: String,
    pub a: Value,
    pub b: Value,
}

impl Change {
    pub fn changed(what: impl Into<String>, a: Value, b: Value) -> Change {
        Change {
            what: what.into(),
            a,
            b,
        }
    }
}

/// Every difference between two images, by section.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Report {
    pub equal: bool,
    /// Per path: `<path>` (present in one image only: the other side is null) or
    /// `<path> <field>`.
    pub files: Vec<Change>,
    pub layers: Vec<Change>,
    pub config: Vec<Change>,
    pub history: Vec<Change>,
}

impl Report {
    pub fn is_equal(&self) -> bool {
        self.files.is_empty()
            && self.layers.is_empty()
            && self.config.is_empty()
            && self.history.is_empty()
    }

    /// One line per difference, each naming its section, for checks that match known
    /// differences line by line (the fidelity checks):
    /// `[files] only in A: PATH  [KIND MODE UID:GID]`, `[files] PATH: FIELD A -> B`, the
    /// same per layer as `[layer[i]] ...`, `[layers] layer count: A != B`,
    /// `[config] KEY: A != B`, `[history] [i] FIELD: 'A' != 'B'`,
    /// `[history] history entries: A != B`; the `empty_layer` flags that differ are one
    /// line, `[history] empty_layer sequence differs (i, j, ...)`.
    pub fn lines(&self) -> Vec<String> {
        let mut lines = Vec::new();
        for c in &self.files {
            lines.push(entry_line("[files]", &c.what, &c.a, &c.b));
        }
        for c in &self.layers {
            if c.what == "layers" {
                lines.push(format!("[layers] layer count: {} != {}", c.a, c.b));
            } else if let Some((index, rest)) =
                c.what.strip_prefix('[').and_then(|w| w.split_once("] "))
            {
                lines.push(entry_line(&format!("[layer[{index}]]"), rest, &c.a, &c.b));
            } else {
                lines.push(format!("[layers] {}: {} != {}", c.what, c.a, c.b));
            }
        }
        for c in &self.config {
            lines.push(format!("[config] {}: {} != {}", c.what, c.a, c.b));
        }
        let mut empty_layers_differ = Vec::new();
        for c in &self.history {
            if c.what == "entries" {
                lines.push(format!("[history] history entries: {} != {}", c.a, c.b));
                empty_layers_differ.push("count".to_string());
            } else if let Some(index) = c.what.strip_suffix(" empty_layer") {
                empty_layers_differ.push(index.to_string());
            } else {
                let quoted = |v: &Value| match v {
                    Value::String(s) => format!("'{s}'"),
                    other => other.to_string(),
                };
                lines.push(format!(
                    "[history] {}: {} != {}",
                    c.what,
                    quoted(&c.a),
                    quoted(&c.b)
                ));
            }
        }
        if !empty_layers_differ.is_empty() {
            lines.push(format!(
                "[history] empty_layer sequence differs ({})",
                empty_layers_differ.join(", ")
            ));
        }
        lines.iter().map(|l| escape_controls(l)).collect()
    }

    /// Without the layer entries that only re-record a directory: a directory present in one
    /// image's layer only, where the flattened trees agree on that path (no `files` change
    /// names it). BuildKit's runc does that to `/etc` in every RUN layer (it creates and
    /// removes the /etc/hosts and /etc/resolv.conf mount points there): an mtime
    /// difference, which a comparison ignoring timestamps ignores. A directory a layer
    /// really adds or changes also shows in `files` and is kept.
    pub fn without_rerecorded_dirs(mut self) -> Report {
        let files_name = |path: &str| {
            self.files.iter().any(|c| {
                c.what == path
                    || c.what
                        .strip_prefix(path)
                        .is_some_and(|rest| rest.starts_with(' '))
            })
        };
        let rerecorded: Vec<bool> = self
            .layers
            .iter()
            .map(|c| {
                let Some((_, path)) = c.what.strip_prefix('[').and_then(|w| w.split_once("] "))
                else {
                    return false;
                };
                let only_side = match (&c.a, &c.b) {
                    (Value::Null, side) | (side, Value::Null) => side,
                    _ => return false,
                };
                only_side["kind"] == "dir" && !files_name(path)
            })
            .collect();
        let mut flags = rerecorded.into_iter();
        self.layers.retain(|_| !flags.next().unwrap_or(false));
        self.equal = self.is_equal();
        self
    }

    /// Human-readable lines, one per difference, under section headings.
    pub fn to_text(&self) -> String {
        let mut out = String::new();
        for (title, changes) in [
            ("files", &self.files),
            ("layers", &self.layers),
            ("config", &self.config),
            ("history", &self.history),
        ] {
            if changes.is_empty() {
                continue;
            }
            let _ = writeln!(out, "{title}:");
            for c in changes {
                let line = match (&c.a, &c.b) {
                    (Value::Null, b) => format!("  + {}: {}", c.what, b),
                    (a, Value::Null) => format!("  - {}: {}", c.what, a),
                    (a, b) => format!("  ~ {}: {} -> {}", c.what, a, b),
                };
                let _ = writeln!(out, "{}", escape_controls(&line));
            }
        }
        if out.is_empty() {
            out.push_str("the images are equal\n");
        }
        out
    }
}

/// A JSON value as a difference line shows it: strings bare, the rest as JSON.
fn shown(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// `PREFIX only in A: PATH  [KIND MODE OWNER]` for an entry of one side, `PREFIX PATH:
/// FIELD A -> B` for a field that differs.
fn entry_line(prefix: &str, what: &str, a: &Value, b: &Value) -> String {
    let side = |v: &Value| {
        let kind = v["kind"].as_str().unwrap_or("?");
        if kind == "opaque" || kind == "whiteout" {
            format!("[{kind}]")
        } else {
            format!("[{kind} {} {}]", shown(&v["mode"]), shown(&v["owner"]))
        }
    };
    if a.is_null() {
        format!("{prefix} only in B: {what}  {}", side(b))
    } else if b.is_null() {
        format!("{prefix} only in A: {what}  {}", side(a))
    } else {
        let (path, field) = what.rsplit_once(' ').unwrap_or((what, "?"));
        format!("{prefix} {path}: {field} {} -> {}", shown(a), shown(b))
    }
}

/// Control characters from an image (file names, config values) are shown escaped.
fn escape_controls(text: &str) -> String {
    text.chars()
        .map(|c| {
            if c.is_control() {
                c.escape_default().to_string()
            } else {
                c.to_string()
            }
        })
        .collect()
}

fn file_fields(meta: &FileMeta, options: &Options) -> Vec<(&'static str, Value)> {
    let mut fields = vec![
        ("kind", Value::from(meta.kind)),
        ("mode", Value::from(format!("{:04o}", meta.mode))),
        ("uid", Value::from(meta.uid)),
        ("gid", Value::from(meta.gid)),
        ("size", Value::from(meta.size)),
        (
            "sha256",
            serde_json::to_value(&meta.sha256).unwrap_or(Value::Null),
        ),
        (
            "link",
            serde_json::to_value(&meta.link).unwrap_or(Value::Null),
        ),
        (
            "rdev",
            serde_json::to_value(meta.rdev).unwrap_or(Value::Null),
        ),
        (
            "xattrs",
            serde_json::to_value(&meta.xattrs).unwrap_or(Value::Null),
        ),
        (
            "hardlinks",
            serde_json::to_value(&meta.hardlinks).unwrap_or(Value::Null),
        ),
    ];
    if !options.ignore_timestamps {
        fields.push(("mtime", Value::from(meta.mtime)));
    }
    fields
}

fn summary(meta: &FileMeta) -> Value {
    serde_json::json!({
        "kind": meta.kind,
        "mode": format!("{:04o}", meta.mode),
        "owner": format!("{}:{}", meta.uid, meta.gid),
        "size": meta.size,
    })
}

pub(crate) fn compare_files(
    report: &mut Report,
    a: &Filesystem,
    b: &Filesystem,
    options: &Options,
) {
    compare_entries(&mut report.files, "", &a.files, &b.files, options);
}

/// Compares two path → metadata maps (the flattened trees, or one layer of each image);
/// `prefix` starts each change's name (a layer's `[i] `).
pub(crate) fn compare_entries(
    out: &mut Vec<Change>,
    prefix: &str,
    a: &std::collections::BTreeMap<String, FileMeta>,
    b: &std::collections::BTreeMap<String, FileMeta>,
    options: &Options,
) {
    let paths: std::collections::BTreeSet<&String> = a.keys().chain(b.keys()).collect();
    for path in paths {
        if options.ignored(path) {
            continue;
        }
        let named = |field: Option<&str>| match field {
            Some(field) => format!("{prefix}{path} {field}"),
            None => format!("{prefix}{path}"),
        };
        match (a.get(path), b.get(path)) {
            (Some(x), None) => out.push(Change::changed(named(None), summary(x), Value::Null)),
            (None, Some(y)) => out.push(Change::changed(named(None), Value::Null, summary(y))),
            (Some(x), Some(y)) => {
                let fx = file_fields(x, options);
                let fy = file_fields(y, options);
                for ((name, vx), (_, vy)) in fx.into_iter().zip(fy) {
                    // A directory's size means nothing across file systems.
                    if vx != vy && !(name == "size" && x.kind == "dir") {
                        out.push(Change::changed(named(Some(name)), vx, vy));
                    }
                }
            }
            (None, None) => {}
        }
    }
}

/// The config fields compared: [`CONFIG_FIELDS`] of the runtime config (the OCI image spec's
/// and Docker's additions an image carries to its containers; not the fields of the build
/// container Docker's classic builder also writes, which no runtime reads), the platform,
/// the author, and `created` unless timestamps are ignored. Missing, null and empty values
/// are the same (BuildKit and Docker disagree about which they write).
pub(crate) fn compare_config(report: &mut Report, a: &Value, b: &Value, options: &Options) {
    let empty = |v: Option<&Value>| -> Value {
        match v {
            None | Some(Value::Null) => Value::Null,
            Some(Value::Array(x)) if x.is_empty() => Value::Null,
            Some(Value::Object(x)) if x.is_empty() => Value::Null,
            Some(Value::String(x)) if x.is_empty() => Value::Null,
            Some(Value::Bool(false)) => Value::Null,
            Some(v) => v.clone(),
        }
    };
    for key in CONFIG_FIELDS {
        let va = empty(a.get("config").and_then(|c| c.get(*key)));
        let vb = empty(b.get("config").and_then(|c| c.get(*key)));
        if va != vb {
            report.config.push(Change::changed(*key, va, vb));
        }
    }
    let mut top = vec!["os", "architecture", "variant", "os.version", "author"];
    if !options.ignore_timestamps {
        top.push("created");
    }
    for key in top {
        let va = empty(a.get(key));
        let vb = empty(b.get(key));
        if va != vb {
            report.config.push(Change::changed(key, va, vb));
        }
    }
}

pub(crate) fn compare_history(report: &mut Report, a: &Value, b: &Value, options: &Options) {
    let list = |v: &Value| -> Vec<Value> {
        v.get("history")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default()
    };
    let (ha, hb) = (list(a), list(b));
    if ha.len() != hb.len() {
        report.history.push(Change::changed(
            "entries",
            Value::from(ha.len()),
            Value::from(hb.len()),
        ));
    }
    let mut fields = vec!["created_by", "empty_layer", "comment", "author"];
    if !options.ignore_timestamps {
        fields.push("created");
    }
    for (i, (ea, eb)) in ha.iter().zip(hb.iter()).enumerate() {
        for field in &fields {
            let norm = |v: Option<&Value>| match v {
                None | Some(Value::Null) | Some(Value::Bool(false)) => Value::Null,
                Some(Value::String(s)) if s.is_empty() => Value::Null,
                Some(v) => v.clone(),
            };
            let (va, vb) = (norm(ea.get(*field)), norm(eb.get(*field)));
            if va != vb {
                report
                    .history
                    .push(Change::changed(format!("[{i}] {field}"), va, vb));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn dir(mode: &str) -> Value {
        json!({"kind": "dir", "mode": mode, "owner": "0:0", "size": 0})
    }

    #[test]
    fn rerecorded_directories_are_dropped_only_when_the_trees_agree() {
        let report = Report {
            equal: false,
            files: vec![Change::changed("/new", Value::Null, dir("0755"))],
            layers: vec![
                Change::changed("[3] /etc", Value::Null, dir("0755")),
                Change::changed("[3] /new", Value::Null, dir("0755")),
                Change::changed(
                    "[3] /etc/hosts",
                    Value::Null,
                    json!({"kind": "file", "mode": "0644", "owner": "0:0"}),
                ),
            ],
            config: vec![],
            history: vec![],
        };
        let kept = report.without_rerecorded_dirs();
        assert_eq!(
            kept.lines(),
            [
                "[files] only in B: /new  [dir 0755 0:0]",
                "[layer[3]] only in B: /new  [dir 0755 0:0]",
                "[layer[3]] only in B: /etc/hosts  [file 0644 0:0]",
            ]
        );
        assert!(!kept.equal);
        let only_etc = Report {
            layers: vec![Change::changed("[1] /etc", dir("0755"), Value::Null)],
            ..Report::default()
        };
        assert!(only_etc.without_rerecorded_dirs().equal);
    }

    #[test]
    fn lines_name_each_section_and_group_empty_layer_flags() {
        let report = Report {
            equal: false,
            files: vec![Change::changed("/x mode", json!("0644"), json!("0600"))],
            layers: vec![Change::changed("layers", json!(3), json!(4))],
            config: vec![Change::changed("Env", json!(["A=1"]), json!(["A=2"]))],
            history: vec![
                Change::changed("[1] created_by", json!("RUN a\u{1b}"), json!("RUN b")),
                Change::changed("[1] empty_layer", json!(true), Value::Null),
                Change::changed("[2] empty_layer", Value::Null, json!(true)),
            ],
        };
        assert_eq!(
            report.lines(),
            [
                "[files] /x: mode 0644 -> 0600",
                "[layers] layer count: 3 != 4",
                "[config] Env: [\"A=1\"] != [\"A=2\"]",
                "[history] [1] created_by: 'RUN a\\u{1b}' != 'RUN b'",
                "[history] empty_layer sequence differs ([1], [2])",
            ]
        );
    }
}
