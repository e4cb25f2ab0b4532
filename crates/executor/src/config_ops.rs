//! Config-only instructions (ENV, ARG, LABEL, MAINTAINER, EXPOSE, VOLUME, USER, CMD,
//! ENTRYPOINT, HEALTHCHECK, SHELL, STOPSIGNAL, ONBUILD): they change the image config and
//! the stage's environment, never the file system, and have no cache key (docs/cache.md).

use rbuild_dockerfile::instructions::{Instruction, ShellOrExec};

use crate::context::{BuildContext, Origin};
use crate::error::{BuildError, Result};
use crate::history::{self, go_list, go_quote_list};
use crate::state::StageState;

impl BuildContext<'_> {
    /// Applies a config-only instruction (already expanded, but ARG's default) to the
    /// stage; returns its history text, `None` for ONBUILD (BuildKit records no entry).
    pub(crate) fn apply_config(
        &self,
        st: &mut StageState,
        origin: &Origin<'_>,
        instruction: &Instruction,
    ) -> Result<Option<String>> {
        let cfg = &mut st.config.config;
        let created_by = match instruction {
            Instruction::From(_)
            | Instruction::Run(_)
            | Instruction::Copy(_)
            | Instruction::Add(_)
            | Instruction::Workdir(_) => {
                return Err(BuildError::other(format!(
                    "{} is not a config-only instruction",
                    instruction.keyword()
                )))
            }
            Instruction::Env(env) => {
                let mut msg = String::from("ENV");
                for pair in &env.pairs {
                    // BuildKit's addEnv: a variable already set keeps its place.
                    let entry = format!("{}={}", pair.key, pair.value);
                    let existing = cfg
                        .env
                        .iter_mut()
                        .find(|e| e.split_once('=').map_or(e.as_str(), |(k, _)| k) == pair.key);
                    match existing {
                        Some(e) => *e = entry,
                        None => cfg.env.push(entry),
                    }
                    msg.push_str(&format!(" {}={}", pair.key, pair.value));
                }
                for pair in &env.pairs {
                    st.set_env(&pair.key, &pair.value);
                }
                msg
            }
            Instruction::Arg(arg) => {
                let mut parts = Vec::new();
                for decl in &arg.args {
                    let default = match &decl.value {
                        Some(raw) if !self.opts.build_args.contains_key(&decl.key) => Some(
                            self.df
                                .lexer()
                                .process_word(raw, &st.env)
                                .map_err(|e| origin.error(e.to_string()))?,
                        ),
                        other => other.clone(),
                    };
                    let value = self.df.stage_arg_value(
                        &decl.key,
                        default.as_deref(),
                        &self.global,
                        self.opts,
                    );
                    match &value {
                        Some(v) => {
                            parts.push(format!("{}={v}", decl.key));
                            st.set_env(&decl.key, v);
                        }
                        None => parts.push(decl.key.clone()),
                    }
                    // BuildKit's runCommandString shows a redeclared ARG at its first
                    // place, with the newest value.
                    let value = value.unwrap_or_default();
                    match st.build_args.iter_mut().find(|(k, _)| k == &decl.key) {
                        Some(entry) => entry.1 = value,
                        None => st.build_args.push((decl.key.clone(), value)),
                    }
                }
                format!("ARG {}", parts.join(" "))
            }
            Instruction::Label(label) => {
                let mut msg = String::from("LABEL");
                for pair in &label.pairs {
                    cfg.labels.insert(pair.key.clone(), pair.value.clone());
                    msg.push_str(&format!(" {}={}", pair.key, pair.value));
                }
                msg
            }
            Instruction::Maintainer(m) => {
                st.config.author = m.maintainer.clone();
                format!("MAINTAINER {}", m.maintainer)
            }
            Instruction::Expose(expose) => {
                // BuildKit v0.32's `dispatchExpose` records the ports in the parser's order
                // (the words sorted as text), each range expanded (`fmt.Sprintf("EXPOSE %v",
                // ps)` of a list): `EXPOSE [53/udp 80/tcp]`; v0.8 printed the map it made
                // (`EXPOSE map[53/udp:{} 80/tcp:{}]`).
                let mut added = Vec::new();
                for spec in &expose.ports {
                    // An IP address or host port is BuildKit's ExposeInvalidFormat check
                    // (`rbuild_dockerfile::lint`, before the build); the container port is
                    // exposed.
                    let (ports, _with_host_part) =
                        expand_port_spec(spec).map_err(|e| origin.error(e))?;
                    added.extend(ports);
                }
                for port in &added {
                    cfg.exposed_ports.insert(port.clone(), Default::default());
                }
                format!("EXPOSE [{}]", added.join(" "))
            }
            Instruction::Volume(v) => {
                for path in &v.volumes {
                    if path.trim().is_empty() {
                        return Err(origin.error("VOLUME specified can not be an empty string"));
                    }
                    cfg.volumes.insert(path.clone(), Default::default());
                }
                format!("VOLUME {}", go_list(&v.volumes))
            }
            Instruction::User(u) => {
                cfg.user = u.user.clone();
                format!("USER {}", u.user)
            }
            Instruction::Cmd(c) => {
                let args = command_args(&c.cmd, &st.shell());
                st.config.config.cmd = Some(args.clone());
                // BuildKit sets it on every CMD (not on ENTRYPOINT).
                st.config.config.args_escaped = true;
                st.cmd_set = true;
                format!("CMD {}", go_quote_list(&args))
            }
            Instruction::Entrypoint(e) => {
                let args = command_args(&e.cmd, &st.shell());
                st.config.config.entrypoint = Some(args.clone());
                if !st.cmd_set {
                    st.config.config.cmd = None;
                }
                format!("ENTRYPOINT {}", go_quote_list(&args))
            }
            Instruction::Healthcheck(h) => {
                let hc = rbuild_image::Healthcheck {
                    test: h.test.clone(),
                    interval: h.interval,
                    timeout: h.timeout,
                    start_period: h.start_period,
                    start_interval: h.start_interval,
                    retries: h.retries,
                    ..Default::default()
                };
                let msg = history::healthcheck(&hc);
                cfg.healthcheck = Some(hc);
                msg
            }
            Instruction::Shell(s) => {
                cfg.shell = s.shell.clone();
                format!("SHELL {}", go_list(&s.shell))
            }
            Instruction::StopSignal(s) => {
                cfg.stop_signal = s.signal.clone();
                format!("STOPSIGNAL {}", s.signal)
            }
            Instruction::OnBuild(o) => {
                // BuildKit records no history entry for ONBUILD.
                cfg.on_build.push(o.expression.clone());
                return Ok(None);
            }
        };
        Ok(Some(created_by))
    }
}

/// Exec form as is; shell form through the SHELL.
pub(crate) fn command_args(cmd: &ShellOrExec, shell: &[String]) -> Vec<String> {
    match cmd {
        ShellOrExec::Exec(v) => v.clone(),
        ShellOrExec::Shell(s) => {
            let mut args = shell.to_vec();
            args.push(s.clone());
            args
        }
    }
}

/// `80`, `80/udp`, `8000-8002/tcp` → `80/tcp`, ... (Docker's `nat.ParsePortSpecs`).
/// The container ports `spec` exposes (`80`, `8000-8001/udp`), and whether it also named an
/// IP address or host port (`127.0.0.1:80:80/tcp`, `8080:80`), which only the container
/// port is kept of (Docker's `nat.ParsePortSpec`).
fn expand_port_spec(spec: &str) -> Result<(Vec<String>, bool)> {
    let (ports, proto) = match spec.rsplit_once('/') {
        Some((p, proto)) => (p, proto.to_lowercase()),
        None => (spec, "tcp".to_string()),
    };
    let (ports, with_host_part) = match ports.rsplit_once(':') {
        Some((_, container)) => (container, true),
        None => (ports, false),
    };
    if !matches!(proto.as_str(), "tcp" | "udp" | "sctp") {
        return Err(BuildError::other(format!("invalid proto: {proto}")));
    }
    let bad = || BuildError::other(format!("invalid containerPort: {ports}"));
    let (lo, hi) = match ports.split_once('-') {
        Some((a, b)) => (
            a.parse::<u16>().map_err(|_| bad())?,
            b.parse::<u16>().map_err(|_| bad())?,
        ),
        None => {
            let p = ports.parse::<u16>().map_err(|_| bad())?;
            (p, p)
        }
    };
    if hi < lo {
        return Err(BuildError::other(format!(
            "invalid range specified for container port: {ports}"
        )));
    }
    Ok((
        (lo..=hi).map(|p| format!("{p}/{proto}")).collect(),
        with_host_part,
    ))
}

#[cfg(test)]
mod tests {
    use super::expand_port_spec;

    #[test]
    fn port_specs_expand_to_container_ports() {
        let ports = |spec: &str| expand_port_spec(spec).unwrap();
        assert_eq!(ports("80"), (vec!["80/tcp".to_string()], false));
        assert_eq!(
            ports("9000-9001/UDP"),
            (vec!["9000/udp".to_string(), "9001/udp".into()], false)
        );
        // An IP address or host port: only the container port is exposed, with a warning.
        assert_eq!(
            ports("127.0.0.1:8080:80/tcp"),
            (vec!["80/tcp".to_string()], true)
        );
        assert_eq!(ports("8080:80"), (vec!["80/tcp".to_string()], true));
        for bad in ["x", "80/icmp", "2-1", "1.2.3.4:80:", "70000"] {
            assert!(expand_port_spec(bad).is_err(), "{bad}");
        }
    }
}
