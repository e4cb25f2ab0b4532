//! `rbuild info [--json]`: what isolation this machine allows and what `auto` picks.

use rbuild_sandbox::{Capabilities, Check, Sandbox, SeccompError, SeccompSummary, SubIdRange};

use crate::cmd::Globals;

#[derive(clap::Args, Debug)]
pub struct InfoArgs {
    /// Print the probe results as JSON.
    #[arg(long)]
    pub json: bool,
}

fn check_line(check: &Check) -> String {
    match (&check.ok, &check.error) {
        (true, _) => "yes".to_string(),
        (false, Some(e)) => format!("no ({e})"),
        (false, None) => "no".to_string(),
    }
}

fn ranges(ranges: &[SubIdRange]) -> String {
    if ranges.is_empty() {
        return "none".to_string();
    }
    ranges
        .iter()
        .map(|r| {
            format!(
                "{}-{} ({} ids)",
                r.start,
                u64::from(r.start) + u64::from(r.count) - 1,
                r.count
            )
        })
        .collect::<Vec<_>>()
        .join(", ")
}

fn tool(path: &Option<std::path::PathBuf>) -> String {
    path.as_ref()
        .map(|p| p.display().to_string())
        .unwrap_or_else(|| "not found (Debian package uidmap)".to_string())
}

/// The seccomp line: the profile steps run under, or why there is none.
fn seccomp_line(seccomp: &Result<SeccompSummary, SeccompError>) -> String {
    match seccomp {
        Ok(s) => format!(
            "{} ({} syscalls allowed, {} of them only with certain arguments; chroot isolation \
             also refuses ptrace, process_vm_*, chroot)",
            s.profile,
            s.allowed_syscalls,
            s.conditional_syscalls.len(),
        ),
        Err(e) => format!("unavailable ({e})"),
    }
}

/// The report as JSON: the probe's fields plus `seccomp` (the summary, or `{"error": ...}`).
pub fn render_json(
    caps: &Capabilities,
    seccomp: &Result<SeccompSummary, SeccompError>,
) -> anyhow::Result<serde_json::Value> {
    let mut value = serde_json::to_value(caps)?;
    let seccomp = match seccomp {
        Ok(summary) => serde_json::to_value(summary)?,
        Err(e) => serde_json::json!({ "error": e.to_string() }),
    };
    if let Some(map) = value.as_object_mut() {
        map.insert("seccomp".into(), seccomp);
        if let Some(restricted) = map.get_mut("restricted").and_then(|r| r.as_object_mut()) {
            restricted.insert(
                "cannot".into(),
                serde_json::to_value(rbuild_sandbox::restricted::LIMITS)?,
            );
            let in_place = match rbuild_sandbox::restricted::in_place_root_refusal() {
                None => serde_json::json!({ "ok": true }),
                Some(why) => serde_json::json!({ "ok": false, "error": why }),
            };
            restricted.insert("in_place_root".into(), in_place);
        }
    }
    Ok(value)
}

/// The report as text, one fact per line.
pub fn render_text(caps: &Capabilities, seccomp: &Result<SeccompSummary, SeccompError>) -> String {
    let mut out = String::new();
    let mut line = |label: &str, value: String| out.push_str(&format!("{label:<28} {value}\n"));
    line("user", format!("{} (uid {})", caps.user, caps.euid));
    line("user namespaces", check_line(&caps.checks.userns));
    line("subuid ranges", ranges(&caps.subuid_ranges));
    line("subgid ranges", ranges(&caps.subgid_ranges));
    line("newuidmap", tool(&caps.newuidmap));
    line("newgidmap", tool(&caps.newgidmap));
    let ids = if caps.euid == 0 && caps.auto == Ok(rbuild_sandbox::Isolation::Userns) {
        "65536, an unprivileged host range (see the step's confinement)".to_string()
    } else if caps.euid == 0 {
        "all, host ids (real root, no user namespace)".to_string()
    } else if caps.full_id_range() {
        "subordinate ranges".to_string()
    } else {
        "single id only: chown to other ids fails; add a subuid/subgid range".to_string()
    };
    line("ids in a step", ids);
    line(
        "overlayfs in a userns",
        check_line(&caps.checks.overlay_in_userns),
    );
    line(
        "fresh /proc in a userns",
        check_line(&caps.checks.fresh_proc),
    );
    line("chroot", check_line(&caps.checks.chroot));
    line("seccomp", seccomp_line(seccomp));
    line(
        "landlock (chroot steps)",
        rbuild_sandbox::landlock::describe(&caps.landlock),
    );
    let restricted = &caps.checks.restricted;
    line(
        "restricted: seccomp notify",
        check_line(&restricted.seccomp_user_notif),
    );
    line(
        "restricted: ptrace child",
        check_line(&restricted.ptrace_child),
    );
    line(
        "restricted: in-place root",
        match rbuild_sandbox::restricted::in_place_root_refusal() {
            None => format!(
                "yes ({} marks `/` for laying stages out)",
                rbuild_sandbox::restricted::IN_PLACE_MARKER
            ),
            Some(why) => format!("no: {why}"),
        },
    );
    line(
        "restricted cannot",
        rbuild_sandbox::restricted::LIMITS.join("; "),
    );
    line(
        "isolation auto picks",
        match &caps.auto {
            Ok(isolation) => isolation.to_string(),
            Err(e) => format!("nothing: {e}"),
        },
    );
    let c = &caps.confinement;
    let list = |items: &[String]| {
        if items.is_empty() {
            "none".to_string()
        } else {
            items.join(", ")
        }
    };
    line("step id mapping", c.id_mapping.clone());
    line("step masked paths", list(&c.masked_paths));
    line("step read-only paths", list(&c.readonly_paths));
    line("step /sys", c.sys.clone());
    line("step nodev mounts", c.nodev.clone());
    line("step capabilities", list(&c.capabilities));
    line(
        "step cgroup namespace",
        if c.cgroup_namespace { "yes" } else { "no" }.to_string(),
    );
    line(
        "step seccomp",
        c.seccomp.clone().unwrap_or_else(|| "none".into()),
    );
    line(
        "step landlock",
        c.landlock.clone().unwrap_or_else(|| "none".into()),
    );
    out
}

pub fn run(_globals: &Globals, args: InfoArgs) -> anyhow::Result<u8> {
    let caps = Sandbox::new().probe();
    let seccomp = rbuild_sandbox::seccomp::summary();
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&render_json(caps, &seccomp)?)?
        );
    } else {
        print!("{}", render_text(caps, &seccomp));
    }
    Ok(0)
}
