//! What a build asks of a Dockerfile besides its text: the target platform, build
//! arguments and the proxy arguments every build predefines.

use std::collections::BTreeMap;

use serde::Serialize;

/// Build arguments usable without an ARG declaration (they reach RUN only).
pub const PROXY_ARGS: [&str; 10] = [
    "HTTP_PROXY",
    "http_proxy",
    "HTTPS_PROXY",
    "https_proxy",
    "FTP_PROXY",
    "ftp_proxy",
    "NO_PROXY",
    "no_proxy",
    "ALL_PROXY",
    "all_proxy",
];

/// An OS/architecture/variant triple such as `linux/arm64/v8`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Platform {
    pub os: String,
    pub architecture: String,
    pub variant: Option<String>,
}

impl Platform {
    /// Parses `os/arch[/variant]`.
    pub fn parse(s: &str) -> Result<Platform, String> {
        let parts: Vec<&str> = s.split('/').collect();
        match parts.as_slice() {
            [os, arch] if !os.is_empty() && !arch.is_empty() => Ok(Platform {
                os: os.to_string(),
                architecture: arch.to_string(),
                variant: None,
            }),
            [os, arch, variant] if !os.is_empty() && !arch.is_empty() && !variant.is_empty() => {
                Ok(Platform {
                    os: os.to_string(),
                    architecture: arch.to_string(),
                    variant: Some(variant.to_string()),
                })
            }
            _ => Err(format!(
                "invalid platform {s:?}: expected os/arch[/variant]"
            )),
        }
    }
}

impl std::fmt::Display for Platform {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        if let Some(v) = &self.variant {
            write!(f, "/{v}")?;
        }
        Ok(())
    }
}

/// What the caller asks of a build: target stage, `--build-arg`s, platforms.
#[derive(Debug, Clone)]
pub struct BuildOptions {
    pub target: Option<String>,
    pub build_args: BTreeMap<String, String>,
    pub target_platform: Platform,
    pub build_platform: Platform,
}

impl BuildOptions {
    /// TARGETPLATFORM/OS/ARCH/VARIANT and BUILDPLATFORM/OS/ARCH/VARIANT.
    pub fn predefined_args(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        for (prefix, p) in [
            ("TARGET", &self.target_platform),
            ("BUILD", &self.build_platform),
        ] {
            out.push((format!("{prefix}PLATFORM"), p.to_string()));
            out.push((format!("{prefix}OS"), p.os.clone()));
            out.push((format!("{prefix}ARCH"), p.architecture.clone()));
            out.push((
                format!("{prefix}VARIANT"),
                p.variant.clone().unwrap_or_default(),
            ));
        }
        out
    }
}
