//! The image config: a Docker superset of the OCI image config (moby/docker-image-spec), with
//! Docker's JSON field names and Go's `omitempty` rules. Maps are `BTreeMap`s so output order
//! is fixed, and every struct keeps unknown fields in `extra` so a pulled config (e.g. a legacy
//! Docker config with `Hostname`, `Image`, `container_config`) survives a round trip intact.

use std::collections::BTreeMap;

use serde::{Deserialize, Deserializer, Serialize};

use crate::Digest;

/// Go's decoder accepts `null` for slices, maps and strings and treats it as empty; legacy
/// Docker configs are full of `"Cmd": null`, `"Volumes": null`. Serde would refuse those.
pub(crate) fn null_as_default<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

/// `Some(vec![])` and `None` are both omitted, as Go's `omitempty` omits empty slices.
fn none_or_empty(v: &Option<Vec<String>>) -> bool {
    v.as_ref().is_none_or(|v| v.is_empty())
}

fn is_false(b: &bool) -> bool {
    !*b
}

fn is_zero(n: &i64) -> bool {
    *n == 0
}

/// The value in `ExposedPorts` and `Volumes` maps: always `{}`, whatever was read.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EmptyObject;

impl Serialize for EmptyObject {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        s.serialize_map(Some(0))?.end()
    }
}

impl<'de> Deserialize<'de> for EmptyObject {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        serde::de::IgnoredAny::deserialize(d)?;
        Ok(EmptyObject)
    }
}

/// The whole image config blob.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct ImageConfig {
    /// RFC 3339 creation time. Kept as text: the store only displays and copies it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created: Option<String>,
    #[serde(
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "String::is_empty"
    )]
    pub author: String,
    #[serde(default, deserialize_with = "null_as_default")]
    pub architecture: String,
    #[serde(default, deserialize_with = "null_as_default")]
    pub os: String,
    #[serde(
        rename = "os.version",
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "String::is_empty"
    )]
    pub os_version: String,
    #[serde(
        rename = "os.features",
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub os_features: Vec<String>,
    #[serde(
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "String::is_empty"
    )]
    pub variant: String,
    /// Go's `omitempty` never omits a struct, so `config` is always written (as `{}` if empty).
    #[serde(default, deserialize_with = "null_as_default")]
    pub config: ContainerConfig,
    #[serde(default)]
    pub rootfs: RootFs,
    #[serde(
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub history: Vec<History>,
    #[serde(flatten)]
    pub extra: BTreeMap<String, serde_json::Value>,
}

/// The `config` object: how to run a container from the image.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct ContainerConfig {
    #[serde(
        rename = "User",
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "String::is_empty"
    )]
    pub user: String,
    #[serde(
        rename = "ExposedPorts",
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "BTreeMap::is_empty"
    )]
    pub exposed_ports: BTreeMap<String, EmptyObject>,
    #[serde(
        rename = "Env",
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub env: Vec<String>,
    /// `None` = not set (inherit); `Some(vec![])` = explicitly cleared. Both serialise as absent.
    #[serde(rename = "Entrypoint", default, skip_serializing_if = "none_or_empty")]
    pub entrypoint: Option<Vec<String>>,
    #[serde(rename = "Cmd", default, skip_serializing_if = "none_or_empty")]
    pub cmd: Option<Vec<String>>,
    #[serde(
        rename = "Volumes",
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "BTreeMap::is_empty"
    )]
    pub volumes: BTreeMap<String, EmptyObject>,
    #[serde(
        rename = "WorkingDir",
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "String::is_empty"
    )]
    pub working_dir: String,
    #[serde(
        rename = "Labels",
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "BTreeMap::is_empty"
    )]
    pub labels: BTreeMap<String, String>,
    #[serde(
        rename = "StopSignal",
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "String::is_empty"
    )]
    pub stop_signal: String,
    #[serde(
        rename = "ArgsEscaped",
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "is_false"
    )]
    pub args_escaped: bool,
    #[serde(
        rename = "Healthcheck",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub healthcheck: Option<Healthcheck>,
    #[serde(
        rename = "OnBuild",
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub on_build: Vec<String>,
    #[serde(
        rename = "Shell",
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub shell: Vec<String>,
    #[serde(flatten)]
    pub extra: BTreeMap<String, serde_json::Value>,
}

/// `HEALTHCHECK`; durations are Go `time.Duration`s, i.e. integer nanoseconds.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Healthcheck {
    /// `["NONE"]`, `["CMD", ...]` or `["CMD-SHELL", "..."]`.
    #[serde(
        rename = "Test",
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub test: Vec<String>,
    #[serde(rename = "Interval", default, skip_serializing_if = "is_zero")]
    pub interval: i64,
    #[serde(rename = "Timeout", default, skip_serializing_if = "is_zero")]
    pub timeout: i64,
    #[serde(rename = "StartPeriod", default, skip_serializing_if = "is_zero")]
    pub start_period: i64,
    #[serde(rename = "StartInterval", default, skip_serializing_if = "is_zero")]
    pub start_interval: i64,
    #[serde(rename = "Retries", default, skip_serializing_if = "is_zero")]
    pub retries: i64,
    #[serde(flatten)]
    pub extra: BTreeMap<String, serde_json::Value>,
}

/// `rootfs`: the uncompressed digests (diff ids) of the layers, bottom first. Both fields are
/// always written, as in the OCI spec (no `omitempty`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RootFs {
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default, deserialize_with = "null_as_default")]
    pub diff_ids: Vec<Digest>,
    #[serde(flatten)]
    pub extra: BTreeMap<String, serde_json::Value>,
}

impl Default for RootFs {
    fn default() -> Self {
        RootFs {
            kind: "layers".into(),
            diff_ids: Vec::new(),
            extra: BTreeMap::new(),
        }
    }
}

/// One `history` entry per Dockerfile instruction; `empty_layer` marks those without a layer.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct History {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created: Option<String>,
    #[serde(
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "String::is_empty"
    )]
    pub created_by: String,
    #[serde(
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "String::is_empty"
    )]
    pub author: String,
    #[serde(
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "String::is_empty"
    )]
    pub comment: String,
    #[serde(
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "is_false"
    )]
    pub empty_layer: bool,
    #[serde(flatten)]
    pub extra: BTreeMap<String, serde_json::Value>,
}

impl ImageConfig {
    /// Parses a config blob.
    pub fn from_slice(bytes: &[u8]) -> Result<Self, serde_json::Error> {
        serde_json::from_slice(bytes)
    }

    /// The canonical JSON bytes of this config (what gets stored and hashed).
    pub fn to_canonical_json(&self) -> Result<Vec<u8>, serde_json::Error> {
        crate::canonical::to_vec(self)
    }

    /// The image's platform, as recorded in the config.
    pub fn platform(&self) -> crate::Platform {
        crate::Platform {
            os_version: self.os_version.clone(),
            os_features: self.os_features.clone(),
            ..crate::Platform::new(&self.os, &self.architecture, &self.variant)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    const DOCKER_CONFIG: &str = r#"{
      "architecture": "amd64",
      "author": "me",
      "config": {
        "Hostname": "",
        "User": "app",
        "ExposedPorts": {"80/tcp": {}, "443/tcp": {}},
        "Env": ["PATH=/usr/bin"],
        "Entrypoint": null,
        "Cmd": ["/bin/sh"],
        "Volumes": null,
        "WorkingDir": "/srv",
        "Labels": {"b": "2", "a": "1"},
        "StopSignal": "SIGTERM",
        "ArgsEscaped": true,
        "Healthcheck": {"Test": ["CMD-SHELL", "true"], "Interval": 30000000000, "Retries": 3, "StartInterval": 5000000000},
        "OnBuild": ["RUN echo hi"],
        "Shell": ["/bin/bash", "-c"]
      },
      "container_config": {"Cmd": ["x"]},
      "created": "2024-01-02T03:04:05.123456789Z",
      "docker_version": "24.0.7",
      "history": [
        {"created": "2024-01-02T03:04:05Z", "created_by": "ADD file:abc in /", "empty_layer": false},
        {"created_by": "CMD [\"/bin/sh\"]", "empty_layer": true, "comment": "buildkit.dockerfile.v0"}
      ],
      "os": "linux",
      "rootfs": {"type": "layers", "diff_ids": ["sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"]},
      "variant": "v2"
    }"#;

    #[test]
    fn docker_fields_parse_into_the_model() {
        let c = ImageConfig::from_slice(DOCKER_CONFIG.as_bytes()).unwrap();
        assert_eq!(c.config.shell, ["/bin/bash", "-c"]);
        assert_eq!(c.config.on_build, ["RUN echo hi"]);
        assert!(c.config.args_escaped);
        let hc = c.config.healthcheck.as_ref().unwrap();
        assert_eq!(
            (hc.interval, hc.retries, hc.start_interval),
            (30_000_000_000, 3, 5_000_000_000)
        );
        assert_eq!(c.config.entrypoint, None);
        assert_eq!(c.config.cmd.as_deref(), Some(&["/bin/sh".to_string()][..]));
        assert_eq!(c.config.exposed_ports.len(), 2);
        assert_eq!(c.rootfs.diff_ids.len(), 1);
        assert!(c.history[1].empty_layer);
        assert_eq!(c.platform().to_string(), "linux/amd64/v2");
        assert!(c.extra.contains_key("docker_version"));
        assert!(c.config.extra.contains_key("Hostname"));
    }

    #[test]
    fn round_trip_keeps_every_non_null_field() {
        let c = ImageConfig::from_slice(DOCKER_CONFIG.as_bytes()).unwrap();
        let out: Value = serde_json::from_slice(&c.to_canonical_json().unwrap()).unwrap();
        let mut expected: Value = serde_json::from_str(DOCKER_CONFIG).unwrap();
        // Go's omitempty drops nulls and `false`s; everything else must come back unchanged.
        let cfg = expected["config"].as_object_mut().unwrap();
        cfg.remove("Entrypoint");
        cfg.remove("Volumes");
        expected["history"][0]
            .as_object_mut()
            .unwrap()
            .remove("empty_layer");
        assert_eq!(out, expected);
    }

    #[test]
    fn omission_rules_follow_go_omitempty() {
        let c = ImageConfig {
            architecture: "arm64".into(),
            os: "linux".into(),
            config: ContainerConfig {
                cmd: Some(vec![]),
                ..Default::default()
            },
            ..Default::default()
        };
        assert_eq!(
            String::from_utf8(c.to_canonical_json().unwrap()).unwrap(),
            r#"{"architecture":"arm64","config":{},"os":"linux","rootfs":{"diff_ids":[],"type":"layers"}}"#
        );
    }

    #[test]
    fn same_config_built_in_different_orders_has_one_digest() {
        let mut a = ImageConfig::default();
        let mut b = ImageConfig::default();
        for i in 0..20 {
            a.config.labels.insert(format!("l{i}"), i.to_string());
            a.config
                .exposed_ports
                .insert(format!("{}/tcp", 1000 + i), EmptyObject);
        }
        for i in (0..20).rev() {
            b.config
                .exposed_ports
                .insert(format!("{}/tcp", 1000 + i), EmptyObject);
            b.config.labels.insert(format!("l{i}"), i.to_string());
        }
        a.extra.insert("zeta".into(), Value::from(1));
        a.extra
            .insert("alpha".into(), serde_json::json!({"y": 1, "x": 2}));
        b.extra
            .insert("alpha".into(), serde_json::json!({"x": 2, "y": 1}));
        b.extra.insert("zeta".into(), Value::from(1));
        let da = crate::Digest::of(&a.to_canonical_json().unwrap());
        let db = crate::Digest::of(&b.to_canonical_json().unwrap());
        assert_eq!(da, db);
        // A second serialisation of the same value gives the same bytes.
        assert_eq!(
            a.to_canonical_json().unwrap(),
            a.to_canonical_json().unwrap()
        );
    }
}
