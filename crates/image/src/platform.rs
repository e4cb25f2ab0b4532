//! Platforms (`os/arch[/variant]`) with containerd's normalisation, so `linux/aarch64`,
//! `linux/arm64/v8` and `linux/arm64` all name the same thing.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// A platform as it appears in an index entry or an image config.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Platform {
    pub architecture: String,
    pub os: String,
    #[serde(
        rename = "os.version",
        default,
        skip_serializing_if = "String::is_empty"
    )]
    pub os_version: String,
    #[serde(rename = "os.features", default, skip_serializing_if = "Vec::is_empty")]
    pub os_features: Vec<String>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub variant: String,
    /// Fields we do not model (e.g. Docker's `features`), kept for round trips.
    #[serde(flatten)]
    pub extra: BTreeMap<String, serde_json::Value>,
}

/// Why a platform string was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("invalid platform {0:?}: expected os/arch[/variant], e.g. linux/arm64/v8")]
pub struct PlatformError(pub String);

impl Platform {
    /// A platform from its parts, normalised.
    pub fn new(os: &str, architecture: &str, variant: &str) -> Self {
        let (architecture, variant) = normalize_arch(architecture, variant);
        Platform {
            architecture,
            os: os.to_ascii_lowercase(),
            variant,
            ..Default::default()
        }
    }

    /// The platform this binary runs on (Linux, as rbuild only builds Linux images).
    pub fn host() -> Self {
        let (arch, variant) = match std::env::consts::ARCH {
            "x86_64" => ("amd64", ""),
            "x86" => ("386", ""),
            "aarch64" => ("arm64", ""),
            "arm" => ("arm", "v7"),
            "powerpc64" if cfg!(target_endian = "little") => ("ppc64le", ""),
            "powerpc64" => ("ppc64", ""),
            "riscv64" => ("riscv64", ""),
            "s390x" => ("s390x", ""),
            "loongarch64" => ("loong64", ""),
            other => (other, ""),
        };
        Platform::new("linux", arch, variant)
    }

    /// This platform with os, architecture and variant normalised as containerd does.
    pub fn normalized(&self) -> Self {
        let (architecture, variant) = normalize_arch(&self.architecture, &self.variant);
        Platform {
            architecture,
            os: self.os.to_ascii_lowercase(),
            variant,
            ..self.clone()
        }
    }

    /// Whether `self` and `other` name the same platform after normalisation (os, arch and
    /// variant; os.version and features are ignored as containerd's default matcher does).
    pub fn matches(&self, other: &Platform) -> bool {
        let (a, b) = (self.normalized(), other.normalized());
        a.os == b.os && a.architecture == b.architecture && a.variant == b.variant
    }
}

/// containerd's `platforms.Normalize` for architecture and variant.
fn normalize_arch(arch: &str, variant: &str) -> (String, String) {
    let arch = arch.to_ascii_lowercase();
    let variant = variant.to_ascii_lowercase();
    let (arch, variant): (&str, String) = match arch.as_str() {
        "i386" => ("386", String::new()),
        "x86_64" | "x86-64" | "amd64" => (
            "amd64",
            if variant == "v1" {
                String::new()
            } else {
                variant
            },
        ),
        "aarch64" | "arm64" => (
            "arm64",
            if variant == "8" || variant == "v8" || variant.is_empty() {
                String::new()
            } else {
                variant
            },
        ),
        "armhf" => ("arm", "v7".into()),
        "armel" => ("arm", "v6".into()),
        "arm" => (
            "arm",
            match variant.as_str() {
                "" | "7" => "v7".into(),
                "5" | "6" | "8" => format!("v{variant}"),
                _ => variant,
            },
        ),
        other => return (other.to_string(), variant),
    };
    (arch.to_string(), variant)
}

impl FromStr for Platform {
    type Err = PlatformError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let parts: Vec<&str> = s.split('/').collect();
        if parts.iter().any(|p| p.is_empty()) || !(2..=3).contains(&parts.len()) {
            return Err(PlatformError(s.to_string()));
        }
        Ok(Platform::new(
            parts[0],
            parts[1],
            parts.get(2).copied().unwrap_or(""),
        ))
    }
}

impl fmt::Display for Platform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        if !self.variant.is_empty() {
            write!(f, "/{}", self.variant)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_normalises_like_containerd() {
        let p: Platform = "linux/arm64/v8".parse().unwrap();
        assert_eq!(p.to_string(), "linux/arm64");
        assert!(p.matches(&"linux/aarch64".parse().unwrap()));
        assert!(p.matches(&Platform {
            architecture: "arm64".into(),
            os: "linux".into(),
            variant: "v8".into(),
            ..Default::default()
        }));
        assert_eq!(
            "linux/arm".parse::<Platform>().unwrap().to_string(),
            "linux/arm/v7"
        );
        assert_eq!(
            "linux/armhf".parse::<Platform>().unwrap().to_string(),
            "linux/arm/v7"
        );
        assert_eq!(
            "Linux/x86_64".parse::<Platform>().unwrap().to_string(),
            "linux/amd64"
        );
        assert_eq!(
            "linux/i386".parse::<Platform>().unwrap().to_string(),
            "linux/386"
        );
        let v6: Platform = "linux/arm/v6".parse().unwrap();
        assert!(!v6.matches(&"linux/arm/v7".parse().unwrap()));
        assert!(!"linux/amd64"
            .parse::<Platform>()
            .unwrap()
            .matches(&"linux/arm64".parse().unwrap()));
    }

    #[test]
    fn rejects_malformed_platforms() {
        for bad in ["", "linux", "linux/", "/amd64", "linux/arm/v7/x"] {
            assert!(bad.parse::<Platform>().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn host_platform_is_linux_and_normalised() {
        let host = Platform::host();
        assert_eq!(host.os, "linux");
        assert_eq!(host, host.normalized());
    }

    #[test]
    fn serde_uses_oci_field_names_and_keeps_unknown_fields() {
        let json = r#"{"architecture":"amd64","os":"windows","os.version":"10.0.17763.1","features":["sse4"]}"#;
        let p: Platform = serde_json::from_str(json).unwrap();
        assert_eq!(p.os_version, "10.0.17763.1");
        assert_eq!(
            crate::canonical::to_string(&p).unwrap(),
            r#"{"architecture":"amd64","features":["sse4"],"os":"windows","os.version":"10.0.17763.1"}"#
        );
    }
}
