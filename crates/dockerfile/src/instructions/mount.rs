//! `RUN --mount=...`: BuildKit's CSV grammar (`commands_runmount.go`).

use serde::Serialize;

use super::values::{csv_fields, parse_go_bool, parse_ram_in_bytes};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum MountType {
    Bind,
    Cache,
    Tmpfs,
    Secret,
    Ssh,
}

impl MountType {
    pub fn as_str(self) -> &'static str {
        match self {
            MountType::Bind => "bind",
            MountType::Cache => "cache",
            MountType::Tmpfs => "tmpfs",
            MountType::Secret => "secret",
            MountType::Ssh => "ssh",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Sharing {
    Shared,
    Private,
    Locked,
}

/// One parsed `--mount`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Mount {
    #[serde(rename = "type")]
    pub kind: MountType,
    /// A stage name/index or image (`from=`).
    pub from: Option<String>,
    pub source: Option<String>,
    pub target: Option<String>,
    pub read_only: bool,
    /// tmpfs `size=` in bytes.
    pub size_limit: Option<i64>,
    /// `id=` (cache id, secret id, ssh id).
    pub id: Option<String>,
    pub sharing: Option<Sharing>,
    pub required: bool,
    /// secret `env=`: expose the secret as this environment variable.
    pub env: Option<String>,
    pub mode: Option<u32>,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
}

/// One `--mount` flag: its text and, once its variables are expanded (or when it has none),
/// the parsed mount.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MountFlag {
    pub spec: String,
    pub parsed: Option<Mount>,
}

/// BuildKit's parse-time check (no expander): only `from=` is looked at, and may not use
/// variables.
pub(crate) fn check_mount_unexpanded(spec: &str) -> Result<(), String> {
    let fields = csv_fields(spec).map_err(|e| format!("failed to parse csv mounts: {e}"))?;
    for field in fields {
        if let Some((key, value)) = field.split_once('=') {
            if key.eq_ignore_ascii_case("from") {
                if let Some(i) = value.find('$') {
                    if i != value.len() - 1 {
                        return Err(
                            "'from' doesn't support variable expansion, define alias stage instead"
                                .into(),
                        );
                    }
                }
            }
        }
    }
    Ok(())
}

/// Parses a mount spec, expanding each value with `expand` first.
pub fn parse_mount(
    spec: &str,
    expand: &mut dyn FnMut(&str) -> Result<String, String>,
) -> Result<Mount, String> {
    let fields = csv_fields(spec).map_err(|e| format!("failed to parse csv mounts: {e}"))?;
    let mut m = Mount {
        kind: MountType::Bind,
        from: None,
        source: None,
        target: None,
        read_only: false,
        size_limit: None,
        id: None,
        sharing: None,
        required: false,
        env: None,
        mode: None,
        uid: None,
        gid: None,
    };
    let mut ro_auto = true;
    let bad_value = |key: &str, value: &str| format!("invalid value for {key}: {value}");
    for field in fields {
        let (key, value) = match field.split_once('=') {
            Some((k, v)) => (k.to_lowercase(), Some(v)),
            None => (field.to_lowercase(), None),
        };
        let Some(value) = value else {
            match key.as_str() {
                "readonly" | "ro" => {
                    m.read_only = true;
                    ro_auto = false;
                }
                "readwrite" | "rw" => {
                    m.read_only = false;
                    ro_auto = false;
                }
                "required" if matches!(m.kind, MountType::Secret | MountType::Ssh) => {
                    m.required = true
                }
                "required" => {
                    return Err(format!(
                        "unexpected key '{key}' for mount type '{}'",
                        m.kind.as_str()
                    ));
                }
                _ => return Err(format!("invalid field '{field}' must be a key=value pair")),
            }
            continue;
        };
        let value = expand(value)?;
        match key.as_str() {
            "type" => {
                m.kind = match value.to_lowercase().as_str() {
                    "bind" => MountType::Bind,
                    "cache" => MountType::Cache,
                    "tmpfs" => MountType::Tmpfs,
                    "secret" => MountType::Secret,
                    "ssh" => MountType::Ssh,
                    _ => {
                        return Err(format!(
                            "unsupported mount type {}",
                            crate::syntax::go_quote(&value)
                        ))
                    }
                }
            }
            "from" => m.from = Some(value),
            "source" | "src" => m.source = Some(value),
            "target" | "dst" | "destination" => m.target = Some(value),
            "readonly" | "ro" => {
                m.read_only = parse_go_bool(&value).ok_or_else(|| bad_value(&key, &value))?;
                ro_auto = false;
            }
            "readwrite" | "rw" => {
                m.read_only = !parse_go_bool(&value).ok_or_else(|| bad_value(&key, &value))?;
                ro_auto = false;
            }
            "required" => {
                if !matches!(m.kind, MountType::Secret | MountType::Ssh) {
                    return Err(format!(
                        "unexpected key '{key}' for mount type '{}'",
                        m.kind.as_str()
                    ));
                }
                m.required = parse_go_bool(&value).ok_or_else(|| bad_value(&key, &value))?;
            }
            "size" => {
                if m.kind != MountType::Tmpfs {
                    return Err(format!(
                        "unexpected key '{key}' for mount type '{}'",
                        m.kind.as_str()
                    ));
                }
                m.size_limit =
                    Some(parse_ram_in_bytes(&value).map_err(|_| bad_value(&key, &value))?);
            }
            "id" => m.id = Some(value),
            "sharing" => {
                m.sharing = Some(match value.to_lowercase().as_str() {
                    "shared" => Sharing::Shared,
                    "private" => Sharing::Private,
                    "locked" => Sharing::Locked,
                    _ => {
                        return Err(format!(
                            "unsupported sharing value {}",
                            crate::syntax::go_quote(&value)
                        ))
                    }
                })
            }
            "mode" => {
                m.mode = Some(
                    u32::from_str_radix(&value, 8)
                        .map_err(|_| format!("invalid value {value} for mode"))?,
                )
            }
            "uid" => {
                m.uid = Some(
                    value
                        .parse()
                        .map_err(|_| format!("invalid value {value} for uid"))?,
                )
            }
            "gid" => {
                m.gid = Some(
                    value
                        .parse()
                        .map_err(|_| format!("invalid value {value} for gid"))?,
                )
            }
            "env" => m.env = Some(value),
            _ => return Err(format!("unexpected key '{key}' in '{field}'")),
        }
    }

    let file_info_allowed = matches!(
        m.kind,
        MountType::Secret | MountType::Ssh | MountType::Cache
    );
    if !file_info_allowed {
        for (name, set) in [
            ("mode", m.mode.is_some()),
            ("uid", m.uid.is_some()),
            ("gid", m.gid.is_some()),
        ] {
            if set {
                return Err(format!(
                    "{name} not allowed for \"{}\" type mounts",
                    m.kind.as_str()
                ));
            }
        }
    }
    if ro_auto {
        m.read_only = !matches!(m.kind, MountType::Cache | MountType::Tmpfs);
    }
    if m.kind == MountType::Secret {
        if m.from.is_some() {
            return Err("secret mount should not have a from".into());
        }
        if m.sharing.is_some() {
            return Err("secret mount should not define sharing".into());
        }
        if m.source.is_none() && m.target.is_none() && m.id.is_none() {
            return Err("invalid secret mount. one of source, target required".into());
        }
        if m.source.is_some() && m.id.is_some() {
            return Err("both source and id can't be set".into());
        }
    }
    if m.sharing.is_some() && m.kind != MountType::Cache {
        return Err(format!(
            "invalid cache sharing set for {} mount",
            m.kind.as_str()
        ));
    }
    Ok(m)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(spec: &str) -> Result<Mount, String> {
        parse_mount(spec, &mut |v| Ok(v.to_string()))
    }

    #[test]
    fn cache_mount() {
        let m = parse("type=cache,target=/root/.cache,id=pip,sharing=locked,mode=0755,uid=1000")
            .unwrap();
        assert_eq!(m.kind, MountType::Cache);
        assert_eq!(m.target.as_deref(), Some("/root/.cache"));
        assert_eq!(m.sharing, Some(Sharing::Locked));
        assert_eq!(m.mode, Some(0o755));
        assert_eq!(m.uid, Some(1000));
        assert!(!m.read_only);
    }

    #[test]
    fn bind_defaults_read_only() {
        let m = parse("source=.,dst=/src,from=build").unwrap();
        assert_eq!(m.kind, MountType::Bind);
        assert!(m.read_only);
        assert_eq!(m.from.as_deref(), Some("build"));
        assert!(!parse("target=/x,rw").unwrap().read_only);
        assert!(!parse("target=/x,readwrite=true").unwrap().read_only);
    }

    #[test]
    fn secret_and_ssh() {
        let m = parse("type=secret,id=tok,env=TOKEN,required").unwrap();
        assert_eq!(
            (m.id.as_deref(), m.env.as_deref(), m.required),
            (Some("tok"), Some("TOKEN"), true)
        );
        assert!(parse("type=ssh,required=false").is_ok());
        assert_eq!(
            parse("type=secret").unwrap_err(),
            "invalid secret mount. one of source, target required"
        );
        assert_eq!(
            parse("type=secret,id=a,from=x").unwrap_err(),
            "secret mount should not have a from"
        );
    }

    #[test]
    fn tmpfs_size() {
        assert_eq!(
            parse("type=tmpfs,target=/t,size=64m").unwrap().size_limit,
            Some(64 << 20)
        );
        assert_eq!(
            parse("target=/t,size=1m").unwrap_err(),
            "unexpected key 'size' for mount type 'bind'"
        );
    }

    #[test]
    fn errors() {
        assert_eq!(
            parse("type=nfs").unwrap_err(),
            "unsupported mount type \"nfs\""
        );
        assert_eq!(
            parse("target=/x,foo=bar").unwrap_err(),
            "unexpected key 'foo' in 'foo=bar'"
        );
        assert_eq!(
            parse("target=/x,bogus").unwrap_err(),
            "invalid field 'bogus' must be a key=value pair"
        );
        assert_eq!(
            parse("type=bind,target=/x,uid=1").unwrap_err(),
            "uid not allowed for \"bind\" type mounts"
        );
        assert_eq!(
            parse("type=tmpfs,target=/x,sharing=shared").unwrap_err(),
            "invalid cache sharing set for tmpfs mount"
        );
        assert_eq!(
            parse("type=cache,target=/x,mode=9").unwrap_err(),
            "invalid value 9 for mode"
        );
        assert!(check_mount_unexpanded("from=$X").is_err());
        assert!(check_mount_unexpanded("target=$X").is_ok());
    }
}
