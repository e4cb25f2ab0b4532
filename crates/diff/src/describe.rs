//! A deterministic description of what a build added to its base image: every entry of each
//! layer after the base's (path, kind, mode, owner, size, content digest, link target, device
//! numbers, xattrs), the runtime config, and the history entries after the base's. Nothing
//! that moves from one build to the next is in it (no mtimes, no `created`, no layer or
//! config digests), so two builders' images of one Dockerfile can be compared by comparing
//! their descriptions, and a description can be stored as a golden result.
//!
//! A directory a layer re-records unchanged (the same kind, mode, owner and xattrs as the one
//! below it) is left out: BuildKit's runc creates and removes mount points such as
//! `/etc/hosts` in every RUN, so `/etc` appears in each of its RUN layers with only a new
//! mtime, which is not a difference a user can see.

use std::collections::BTreeMap;

use serde_json::{json, Map, Value};

use crate::{FileMeta, Image};

/// The runtime config fields described, in this order (`config` of the image config).
pub(crate) const CONFIG_FIELDS: &[&str] = &[
    "User",
    "ExposedPorts",
    "Env",
    "Entrypoint",
    "Cmd",
    "Volumes",
    "WorkingDir",
    "Labels",
    "StopSignal",
    "ArgsEscaped",
    "Healthcheck",
    "OnBuild",
    "Shell",
];

/// How many layers and history entries of the image came from its base.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BaseCounts {
    pub layers: usize,
    pub history: usize,
}

impl BaseCounts {
    /// The counts of `base` itself: its layers and history entries.
    pub fn of(base: &Image) -> BaseCounts {
        BaseCounts {
            layers: base.diff_ids.len(),
            history: history(&base.config).len(),
        }
    }
}

fn history(config: &Value) -> Vec<Value> {
    config
        .get("history")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default()
}

/// Sorts every object's keys (serde_json here keeps insertion order), so that the same
/// content always prints the same.
fn sorted(value: &Value) -> Value {
    match value {
        Value::Object(map) => {
            let ordered: BTreeMap<&String, Value> =
                map.iter().map(|(k, v)| (k, sorted(v))).collect();
            let mut out = Map::new();
            for (k, v) in ordered {
                out.insert(k.clone(), v);
            }
            Value::Object(out)
        }
        Value::Array(items) => Value::Array(items.iter().map(sorted).collect()),
        other => other.clone(),
    }
}

fn entry(path: &str, meta: &FileMeta) -> Value {
    let mut out = Map::new();
    out.insert("path".into(), json!(path));
    out.insert("kind".into(), json!(meta.kind));
    if meta.kind != "whiteout" && meta.kind != "opaque" {
        out.insert("mode".into(), json!(format!("{:04o}", meta.mode)));
        out.insert("uid".into(), json!(meta.uid));
        out.insert("gid".into(), json!(meta.gid));
    }
    if meta.kind == "file" {
        out.insert("size".into(), json!(meta.size));
    }
    if let Some(sha) = &meta.sha256 {
        out.insert("sha256".into(), json!(sha));
    }
    if let Some(link) = &meta.link {
        out.insert("link".into(), json!(link));
    }
    if let Some((major, minor)) = meta.rdev {
        out.insert("rdev".into(), json!(format!("{major},{minor}")));
    }
    if !meta.xattrs.is_empty() {
        out.insert("xattrs".into(), json!(meta.xattrs));
    }
    Value::Object(out)
}

/// What a lower directory looks like, for spotting one a layer re-records unchanged.
type DirShape = (u32, u64, u64, BTreeMap<String, String>);

fn dir_shape(meta: &FileMeta) -> DirShape {
    (meta.mode, meta.uid, meta.gid, meta.xattrs.clone())
}

fn under(path: &str, dir: &str) -> bool {
    dir == "/" && path != "/"
        || path.len() > dir.len() && path.starts_with(dir) && path.as_bytes()[dir.len()] == b'/'
}

/// Describes `image` past its base's layers and history. Fails when the image has fewer
/// layers or history entries than `base` says it starts with.
pub fn describe(image: &Image, base: BaseCounts) -> Result<Value, String> {
    let layers = &image.filesystem.layers;
    if layers.len() < base.layers {
        return Err(format!(
            "the image has {} layers, fewer than its base's {}",
            layers.len(),
            base.layers
        ));
    }
    let all_history = history(&image.config);
    if all_history.len() < base.history {
        return Err(format!(
            "the image has {} history entries, fewer than its base's {}",
            all_history.len(),
            base.history
        ));
    }

    // The directories below each layer, to leave out the ones re-recorded unchanged.
    let mut lower_dirs: BTreeMap<String, DirShape> = BTreeMap::new();
    let mut described_layers = Vec::new();
    for (index, layer) in layers.iter().enumerate() {
        let mut entries = Vec::new();
        for (path, meta) in layer {
            let unchanged_dir =
                meta.kind == "dir" && lower_dirs.get(path) == Some(&dir_shape(meta));
            if index >= base.layers && !unchanged_dir {
                entries.push(entry(path, meta));
            }
        }
        for (path, meta) in layer {
            match meta.kind {
                "whiteout" => {
                    let (parent, name) = path.rsplit_once('/').unwrap_or(("", path));
                    let victim = format!("{parent}/{}", name.trim_start_matches(".wh."));
                    lower_dirs.retain(|p, _| p != &victim && !under(p, &victim));
                }
                "opaque" => {
                    let parent = path.rsplit_once('/').map_or("", |(p, _)| p);
                    let parent = if parent.is_empty() { "/" } else { parent };
                    lower_dirs.retain(|p, _| !under(p, parent));
                }
                "dir" => {
                    lower_dirs.insert(path.clone(), dir_shape(meta));
                }
                _ => {
                    lower_dirs.retain(|p, _| p != path && !under(p, path));
                }
            }
        }
        if index >= base.layers {
            described_layers.push(Value::Array(entries));
        }
    }

    let runtime = image.config.get("config").cloned().unwrap_or(Value::Null);
    let mut config = Map::new();
    for field in CONFIG_FIELDS {
        if let Some(value) = runtime.get(*field) {
            if !value.is_null() {
                config.insert((*field).to_string(), sorted(value));
            }
        }
    }
    for field in ["os", "architecture", "variant", "author"] {
        if let Some(value) = image.config.get(field) {
            config.insert(field.to_string(), sorted(value));
        }
    }

    let history: Vec<Value> = all_history[base.history..]
        .iter()
        .map(|h| {
            let mut out = Map::new();
            for field in ["created_by", "comment", "author"] {
                if let Some(value) = h.get(field).and_then(Value::as_str) {
                    out.insert(field.into(), json!(value));
                }
            }
            out.insert(
                "empty_layer".into(),
                json!(h
                    .get("empty_layer")
                    .and_then(Value::as_bool)
                    .unwrap_or(false)),
            );
            Value::Object(out)
        })
        .collect();

    Ok(json!({
        "layers": described_layers,
        "config": Value::Object(config),
        "history": history,
    }))
}

/// Adds the image's `created` and the `created` of each history entry past the base (as
/// `times`), for cases about time (`SOURCE_DATE_EPOCH`), where the times are the result.
pub fn add_times(description: &mut Value, image: &Image, base: BaseCounts) {
    let history: Vec<Value> = history(&image.config)
        .iter()
        .skip(base.history)
        .map(|h| h.get("created").cloned().unwrap_or(Value::Null))
        .collect();
    description["times"] = json!({
        "created": image.config.get("created").cloned().unwrap_or(Value::Null),
        "history": history,
    });
}

/// BuildKit's annotation of a layer whose times `-o …,rewrite-timestamp=true` rewrote.
pub const REWRITTEN_TIMESTAMP: &str = "buildkit/rewritten-timestamp";

/// Adds each layer's [`REWRITTEN_TIMESTAMP`] annotation (`null` where there is none, the
/// base's layers included, as `rewritten_timestamps`), for cases with exporter attributes.
pub fn add_rewritten_timestamps(description: &mut Value, image: &Image) {
    description["rewritten_timestamps"] = image
        .layer_annotations
        .iter()
        .map(|a| {
            a.get(REWRITTEN_TIMESTAMP)
                .map_or(Value::Null, |v| Value::String(v.clone()))
        })
        .collect();
}

/// The description as the text stored in a golden file: JSON with one layer entry per line
/// (so a changed file is a one-line change), the rest pretty-printed, and a final newline.
pub fn to_golden_text(description: &Value) -> String {
    let compact = |v: &Value| serde_json::to_string(v).unwrap_or_default();
    let pretty = |v: &Value| {
        serde_json::to_string_pretty(v)
            .unwrap_or_default()
            .replace('\n', "\n  ")
    };
    let empty = Vec::new();
    let Some(layers) = description.get("layers").and_then(Value::as_array) else {
        // Not an image's description (a build's error, say): plain pretty JSON.
        return format!(
            "{}\n",
            serde_json::to_string_pretty(description).unwrap_or_default()
        );
    };
    let mut text = String::from("{\n  \"layers\": [");
    for (i, layer) in layers.iter().enumerate() {
        text.push_str(if i == 0 { "\n    [" } else { ",\n    [" });
        let entries = layer.as_array().unwrap_or(&empty);
        for (j, entry) in entries.iter().enumerate() {
            text.push_str(if j == 0 { "\n      " } else { ",\n      " });
            text.push_str(&compact(entry));
        }
        text.push_str(if entries.is_empty() { "]" } else { "\n    ]" });
    }
    text.push_str(if layers.is_empty() {
        "],\n"
    } else {
        "\n  ],\n"
    });
    text.push_str(&format!(
        "  \"config\": {},\n  \"history\": {}",
        pretty(&description["config"]),
        pretty(&description["history"])
    ));
    if let Some(times) = description.get("times") {
        text.push_str(&format!(",\n  \"times\": {}", pretty(times)));
    }
    // The layers' `buildkit/rewritten-timestamp` annotations, of a case with exporter
    // attributes.
    if let Some(rewritten) = description.get("rewritten_timestamps") {
        text.push_str(&format!(
            ",\n  \"rewritten_timestamps\": {}",
            pretty(rewritten)
        ));
    }
    text.push_str("\n}\n");
    text
}

/// The differences between two descriptions, one line each (`where: expected → found`);
/// empty when they are equal.
pub fn differences(expected: &Value, found: &Value) -> Vec<String> {
    let mut out = Vec::new();
    walk("", expected, found, &mut out);
    out
}

fn walk(at: &str, expected: &Value, found: &Value, out: &mut Vec<String>) {
    match (expected, found) {
        (Value::Object(a), Value::Object(b)) => {
            let keys: std::collections::BTreeSet<&String> = a.keys().chain(b.keys()).collect();
            for key in keys {
                let here = format!("{at}.{key}");
                match (a.get(key), b.get(key)) {
                    (Some(x), Some(y)) => walk(&here, x, y, out),
                    (Some(x), None) => out.push(format!("{here}: expected {x}, missing")),
                    (None, Some(y)) => out.push(format!("{here}: unexpected {y}")),
                    (None, None) => {}
                }
            }
        }
        // A layer: entries matched by path, so one extra entry is one line.
        (Value::Array(a), Value::Array(b)) if is_entry_list(a) && is_entry_list(b) => {
            let index = |items: &[Value]| -> BTreeMap<String, Value> {
                items
                    .iter()
                    .map(|e| (e["path"].as_str().unwrap_or("").to_string(), e.clone()))
                    .collect()
            };
            let (a, b) = (index(a), index(b));
            let paths: std::collections::BTreeSet<&String> = a.keys().chain(b.keys()).collect();
            for path in paths {
                let here = format!("{at}[{path}]");
                match (a.get(path), b.get(path)) {
                    (Some(x), Some(y)) => walk(&here, x, y, out),
                    (Some(x), None) => out.push(format!("{here}: expected {x}, missing")),
                    (None, Some(y)) => out.push(format!("{here}: unexpected {y}")),
                    (None, None) => {}
                }
            }
        }
        (Value::Array(a), Value::Array(b)) => {
            if a.len() != b.len() {
                out.push(format!(
                    "{at}: expected {} items, found {}",
                    a.len(),
                    b.len()
                ));
            }
            for (i, (x, y)) in a.iter().zip(b).enumerate() {
                walk(&format!("{at}[{i}]"), x, y, out);
            }
            if a.len() != b.len() {
                for (i, y) in b.iter().enumerate().skip(a.len()) {
                    out.push(format!("{at}[{i}]: unexpected {y}"));
                }
                for (i, x) in a.iter().enumerate().skip(b.len()) {
                    out.push(format!("{at}[{i}]: expected {x}, missing"));
                }
            }
        }
        (x, y) if x != y => out.push(format!("{at}: expected {x}, found {y}")),
        _ => {}
    }
}

fn is_entry_list(items: &[Value]) -> bool {
    !items.is_empty() && items.iter().all(|e| e.get("path").is_some())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Filesystem;

    /// Path, type, mode, content, link target.
    type Entry<'a> = (&'a str, tar::EntryType, u32, &'a [u8], Option<&'a str>);

    fn tar(entries: &[Entry], mtime: u64) -> Vec<u8> {
        let mut builder = tar::Builder::new(Vec::new());
        for (path, kind, mode, data, link) in entries {
            let mut header = tar::Header::new_gnu();
            header.set_entry_type(*kind);
            header.set_mode(*mode);
            header.set_uid(0);
            header.set_gid(0);
            header.set_size(data.len() as u64);
            header.set_mtime(mtime);
            if let Some(link) = link {
                header.set_link_name(link).unwrap();
            }
            builder.append_data(&mut header, path, *data).unwrap();
        }
        builder.into_inner().unwrap()
    }

    fn image(layers: &[Vec<u8>], history: Value) -> Image {
        let mut filesystem = Filesystem::default();
        for layer in layers {
            filesystem.apply(layer.as_slice()).unwrap();
        }
        filesystem.resolve_hardlinks();
        Image {
            layer_annotations: vec![Default::default(); layers.len()],
            config: json!({
                "architecture": "amd64",
                "os": "linux",
                "created": "2024-01-01T00:00:00Z",
                "config": {
                    "Env": ["PATH=/bin", "A=1"],
                    "Labels": {"z": "1", "a": "2"},
                    "Cmd": ["sh"],
                    "WorkingDir": "/",
                },
                "history": history,
            }),
            diff_ids: vec![String::new(); layers.len()],
            filesystem,
        }
    }

    fn base_layer(mtime: u64) -> Vec<u8> {
        use tar::EntryType::*;
        tar(
            &[
                ("etc/", Directory, 0o755, b"", None),
                ("etc/passwd", Regular, 0o644, b"root\n", None),
                ("old", Regular, 0o600, b"x", None),
            ],
            mtime,
        )
    }

    fn build_layer(mtime: u64) -> Vec<u8> {
        use tar::EntryType::*;
        tar(
            &[
                ("etc/", Directory, 0o755, b"", None),
                ("etc/app", Directory, 0o700, b"", None),
                ("etc/app/conf", Regular, 0o640, b"hello", None),
                ("etc/app/link", Symlink, 0o777, b"", Some("conf")),
                ("etc/app/hard", Link, 0o640, b"", Some("etc/app/conf")),
                (".wh.old", Regular, 0o644, b"", None),
            ],
            mtime,
        )
    }

    fn history() -> Value {
        json!([
            {"created": "2024-01-01T00:00:00Z", "created_by": "COPY rootfs/ / # buildkit"},
            {"created": "2024-01-02T00:00:00Z", "created_by": "ENV A=1", "empty_layer": true},
            {"created": "2024-01-03T00:00:00Z", "created_by": "RUN x", "comment": "buildkit.dockerfile.v0"},
        ])
    }

    #[test]
    fn describes_the_layers_after_the_base_without_times() {
        let img = image(&[base_layer(1), build_layer(2)], history());
        let base = BaseCounts {
            layers: 1,
            history: 1,
        };
        let d = describe(&img, base).unwrap();
        let layers = d["layers"].as_array().unwrap();
        assert_eq!(layers.len(), 1);
        let paths: Vec<&str> = layers[0]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["path"].as_str().unwrap())
            .collect();
        // /etc is re-recorded unchanged: left out.
        assert_eq!(
            paths,
            [
                "/.wh.old",
                "/etc/app",
                "/etc/app/conf",
                "/etc/app/hard",
                "/etc/app/link"
            ]
        );
        let conf = &layers[0][2];
        assert_eq!(conf["mode"], "0640");
        assert_eq!(conf["size"], 5);
        assert_eq!(
            conf["sha256"],
            "sha256:2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824"
        );
        assert_eq!(layers[0][3]["kind"], "hardlink");
        assert_eq!(layers[0][3]["link"], "/etc/app/conf");
        assert_eq!(layers[0][4]["link"], "conf");
        assert_eq!(layers[0][0]["kind"], "whiteout");
        assert!(layers[0][0].get("mode").is_none());

        // Config: the runtime fields, object keys sorted; no `created`.
        assert_eq!(d["config"]["Env"], json!(["PATH=/bin", "A=1"]));
        let labels: Vec<&String> = d["config"]["Labels"].as_object().unwrap().keys().collect();
        assert_eq!(labels, ["a", "z"]);
        assert!(!to_golden_text(&d).contains("created\""));
        assert!(!to_golden_text(&d).contains("2024-01"));

        // History past the base, without times; empty_layer always present.
        assert_eq!(
            d["history"],
            json!([
                {"created_by": "ENV A=1", "empty_layer": true},
                {"created_by": "RUN x", "comment": "buildkit.dockerfile.v0", "empty_layer": false},
            ])
        );
    }

    #[test]
    fn mtimes_do_not_change_the_description_and_modes_do() {
        let base = BaseCounts {
            layers: 1,
            history: 1,
        };
        let a = describe(&image(&[base_layer(1), build_layer(2)], history()), base).unwrap();
        let b = describe(&image(&[base_layer(7), build_layer(9)], history()), base).unwrap();
        assert_eq!(to_golden_text(&a), to_golden_text(&b));
        assert!(differences(&a, &b).is_empty());
        // The golden text is JSON that reads back to the description.
        let text = to_golden_text(&a);
        let back: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(back, a);
        assert!(
            text.contains("\n      {\"path\":\"/etc/app/conf\",\"kind\":\"file\","),
            "{text}"
        );

        // A directory whose mode changes is kept, and the difference is named by path.
        use tar::EntryType::*;
        let changed = tar(&[("etc/", Directory, 0o700, b"", None)], 2);
        let c = describe(&image(&[base_layer(1), changed], history()), base).unwrap();
        assert_eq!(c["layers"][0][0]["path"], "/etc");
        let diff = differences(&a, &c);
        assert!(
            diff.iter().any(|l| l.starts_with(".layers[0][/etc/app]:")),
            "{diff:?}"
        );
        assert!(
            diff.iter()
                .any(|l| l.starts_with(".layers[0][/etc]: unexpected")),
            "{diff:?}"
        );
    }

    #[test]
    fn a_base_larger_than_the_image_is_an_error() {
        let img = image(&[base_layer(1)], history());
        let err = describe(
            &img,
            BaseCounts {
                layers: 2,
                history: 0,
            },
        )
        .unwrap_err();
        assert!(err.contains("fewer than its base's 2"), "{err}");
    }
}
