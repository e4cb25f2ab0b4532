//! The differences found, as data (for `--json` and tests) and as text (`diffoci`-like).

use std::fmt::Write as _;

use serde::Serialize;
use serde_json::Value;

use crate::describe::CONFIG_FIELDS;
use crate::flatten::{FileMeta, Filesystem};
use crate::Options;

/// One difference: what, and its value in each image (`null` when absent).
#[derive(Debug, Clone, PartialEq, Serialize)]
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
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
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
