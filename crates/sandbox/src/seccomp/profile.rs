//! Docker's seccomp profile format (moby's `profiles/seccomp`), evaluated for one target the
//! way moby's `setupSeccomp` does: entries whose `includes`/`excludes` (architecture,
//! capabilities, minimum kernel) do not fit are dropped, names unknown on the architecture
//! are skipped (as runc does), and what is left becomes a rule table per syscall number.

use std::collections::{BTreeMap, BTreeSet};

use serde::Deserialize;

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ProfileJson {
    default_action: String,
    #[serde(default)]
    default_errno_ret: Option<u32>,
    syscalls: Vec<SyscallJson>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct SyscallJson {
    names: Vec<String>,
    action: String,
    #[serde(default)]
    errno_ret: Option<u32>,
    #[serde(default)]
    args: Option<Vec<ArgJson>>,
    #[serde(default)]
    includes: Option<ConditionJson>,
    #[serde(default)]
    excludes: Option<ConditionJson>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ArgJson {
    index: u8,
    value: u64,
    #[serde(default)]
    value_two: u64,
    op: String,
}

#[derive(Debug, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct ConditionJson {
    #[serde(default)]
    caps: Option<Vec<String>>,
    #[serde(default)]
    arches: Option<Vec<String>>,
    #[serde(default)]
    min_kernel: Option<String>,
}

/// A comparison of one syscall argument (all 64 bits, as libseccomp compares them).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cmp {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
    /// `(arg & mask) == value`.
    MaskedEq(u64),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ArgCondition {
    pub index: u8,
    pub cmp: Cmp,
    pub value: u64,
}

/// What an allowed syscall needs: nothing, or one of several rules (each a conjunction).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Allow {
    Always,
    AnyOf(Vec<Vec<ArgCondition>>),
}

/// Where the profile is applied.
#[derive(Debug, Clone, Copy)]
pub struct Target<'a> {
    /// Go's name for the architecture (`amd64`), the profile's spelling.
    pub arch: &'a str,
    /// Capability names (`CAP_CHOWN`, ...) the step is evaluated against.
    pub caps: &'a [&'a str],
    /// (major, minor) of the running kernel.
    pub kernel: (u32, u32),
    /// (name, number) of this architecture's syscalls.
    pub syscalls: &'a [(&'a str, i64)],
}

/// The profile evaluated for a target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rules {
    /// The errno of every syscall no rule allows.
    pub default_errno: u32,
    pub allow: BTreeMap<i64, Allow>,
    /// Syscalls answered with a specific errno (e.g. `clone3` → ENOSYS, so that libc falls
    /// back to `clone`, whose flags the profile can inspect).
    pub errno: BTreeMap<u32, BTreeSet<i64>>,
}

impl Rules {
    /// Refuses `number` with the default errno whatever the profile said.
    pub fn refuse(&mut self, number: i64) {
        self.allow.remove(&number);
        for set in self.errno.values_mut() {
            set.remove(&number);
        }
        self.errno.retain(|_, set| !set.is_empty());
    }
}

fn parse_cmp(arg: &ArgJson) -> Result<Cmp, String> {
    Ok(match arg.op.as_str() {
        "SCMP_CMP_EQ" => Cmp::Eq,
        "SCMP_CMP_NE" => Cmp::Ne,
        "SCMP_CMP_LT" => Cmp::Lt,
        "SCMP_CMP_LE" => Cmp::Le,
        "SCMP_CMP_GT" => Cmp::Gt,
        "SCMP_CMP_GE" => Cmp::Ge,
        // libseccomp's masked equality: `value` is the mask, `valueTwo` the expected bits.
        "SCMP_CMP_MASKED_EQ" => Cmp::MaskedEq(arg.value),
        other => return Err(format!("unknown argument comparison {other:?}")),
    })
}

fn condition(arg: &ArgJson) -> Result<ArgCondition, String> {
    if arg.index > 5 {
        return Err(format!("argument index {} out of range 0-5", arg.index));
    }
    let cmp = parse_cmp(arg)?;
    let value = match cmp {
        Cmp::MaskedEq(_) => arg.value_two,
        _ => arg.value,
    };
    Ok(ArgCondition {
        index: arg.index,
        cmp,
        value,
    })
}

/// The rules an entry's `args` make, as runc builds them: one rule with every condition when
/// the argument indexes are distinct, else one rule per condition.
fn arg_rules(args: &[ArgJson]) -> Result<Vec<Vec<ArgCondition>>, String> {
    let conditions = args.iter().map(condition).collect::<Result<Vec<_>, _>>()?;
    let distinct: BTreeSet<u8> = conditions.iter().map(|c| c.index).collect();
    if distinct.len() == conditions.len() {
        Ok(vec![conditions])
    } else {
        Ok(conditions.into_iter().map(|c| vec![c]).collect())
    }
}

fn parse_kernel(version: &str) -> Result<(u32, u32), String> {
    let mut parts = version.split(['.', '-']);
    let mut next = || -> Result<u32, String> {
        parts
            .next()
            .unwrap_or("0")
            .parse()
            .map_err(|_| format!("bad kernel version {version:?}"))
    };
    Ok((next()?, next()?))
}

/// Whether an entry applies to `target` (moby's `setupSeccomp` filter).
fn applies(
    includes: &Option<ConditionJson>,
    excludes: &Option<ConditionJson>,
    target: &Target,
) -> Result<bool, String> {
    if let Some(ex) = excludes {
        if ex
            .arches
            .as_ref()
            .is_some_and(|a| a.iter().any(|a| a == target.arch))
        {
            return Ok(false);
        }
        if ex
            .caps
            .as_ref()
            .is_some_and(|c| c.iter().any(|c| target.caps.contains(&c.as_str())))
        {
            return Ok(false);
        }
        if let Some(min) = &ex.min_kernel {
            if target.kernel >= parse_kernel(min)? {
                return Ok(false);
            }
        }
    }
    if let Some(inc) = includes {
        if inc
            .arches
            .as_ref()
            .is_some_and(|a| !a.is_empty() && !a.iter().any(|a| a == target.arch))
        {
            return Ok(false);
        }
        if inc
            .caps
            .as_ref()
            .is_some_and(|c| !c.iter().all(|c| target.caps.contains(&c.as_str())))
        {
            return Ok(false);
        }
        if let Some(min) = &inc.min_kernel {
            if target.kernel < parse_kernel(min)? {
                return Ok(false);
            }
        }
    }
    Ok(true)
}

/// Evaluates the profile `json` for `target`.
pub fn evaluate(json: &str, target: &Target) -> Result<Rules, String> {
    let profile: ProfileJson =
        serde_json::from_str(json).map_err(|e| format!("parsing the profile: {e}"))?;
    if profile.default_action != "SCMP_ACT_ERRNO" {
        return Err(format!(
            "unsupported default action {:?} (only SCMP_ACT_ERRNO)",
            profile.default_action
        ));
    }
    let number = |name: &str| {
        target
            .syscalls
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, nr)| *nr)
    };
    let mut rules = Rules {
        default_errno: profile.default_errno_ret.unwrap_or(libc::EPERM as u32),
        allow: BTreeMap::new(),
        errno: BTreeMap::new(),
    };
    for entry in &profile.syscalls {
        if !applies(&entry.includes, &entry.excludes, target)? {
            continue;
        }
        let args = entry.args.as_deref().unwrap_or_default();
        for name in &entry.names {
            // A name this architecture does not have (e.g. `_llseek` on x86_64) is skipped.
            let Some(nr) = number(name) else { continue };
            match entry.action.as_str() {
                "SCMP_ACT_ALLOW" if args.is_empty() => {
                    rules.allow.insert(nr, Allow::Always);
                }
                "SCMP_ACT_ALLOW" => {
                    let new = arg_rules(args).map_err(|e| format!("{name}: {e}"))?;
                    match rules.allow.entry(nr).or_insert(Allow::AnyOf(Vec::new())) {
                        Allow::Always => {}
                        Allow::AnyOf(existing) => existing.extend(new),
                    }
                }
                "SCMP_ACT_ERRNO" if args.is_empty() => {
                    let errno = entry.errno_ret.unwrap_or(rules.default_errno);
                    rules.errno.entry(errno).or_default().insert(nr);
                }
                other => {
                    return Err(format!(
                        "{name}: unsupported action {other:?}{}",
                        if args.is_empty() {
                            ""
                        } else {
                            " with argument conditions"
                        }
                    ))
                }
            }
        }
    }
    for set in rules.errno.values() {
        if let Some(nr) = set.iter().find(|nr| rules.allow.contains_key(nr)) {
            return Err(format!(
                "syscall {nr} is both allowed and answered with an errno"
            ));
        }
    }
    Ok(rules)
}

#[cfg(test)]
mod tests {
    use super::*;

    const TABLE: &[(&str, i64)] = &[("read", 0), ("clone", 56), ("clone3", 435), ("mount", 165)];

    fn target(caps: &'static [&'static str]) -> Target<'static> {
        Target {
            arch: "amd64",
            caps,
            kernel: (6, 1),
            syscalls: TABLE,
        }
    }

    const PROFILE: &str = r#"{
        "defaultAction": "SCMP_ACT_ERRNO", "defaultErrnoRet": 1,
        "syscalls": [
            {"names": ["read", "_llseek"], "action": "SCMP_ACT_ALLOW"},
            {"names": ["mount"], "action": "SCMP_ACT_ALLOW", "includes": {"caps": ["CAP_SYS_ADMIN"]}},
            {"names": ["clone"], "action": "SCMP_ACT_ALLOW", "includes": {"caps": ["CAP_SYS_ADMIN"]}},
            {"names": ["clone"], "action": "SCMP_ACT_ALLOW",
             "args": [{"index": 0, "value": 2114060288, "op": "SCMP_CMP_MASKED_EQ"}],
             "excludes": {"caps": ["CAP_SYS_ADMIN"], "arches": ["s390x"]}},
            {"names": ["clone3"], "action": "SCMP_ACT_ERRNO", "errnoRet": 38,
             "excludes": {"caps": ["CAP_SYS_ADMIN"]}},
            {"names": ["read"], "action": "SCMP_ACT_ALLOW", "includes": {"minKernel": "7.0"}}
        ]}"#;

    #[test]
    fn capability_groups_follow_the_capability_set() {
        let without = evaluate(PROFILE, &target(&["CAP_CHOWN"])).unwrap();
        assert_eq!(without.default_errno, 1);
        assert_eq!(without.allow.get(&0), Some(&Allow::Always));
        assert!(
            !without.allow.contains_key(&165),
            "mount needs CAP_SYS_ADMIN"
        );
        assert_eq!(
            without.allow.get(&56),
            Some(&Allow::AnyOf(vec![vec![ArgCondition {
                index: 0,
                cmp: Cmp::MaskedEq(0x7E02_0000),
                value: 0
            }]]))
        );
        assert_eq!(without.errno.get(&38), Some(&BTreeSet::from([435])));

        let with = evaluate(PROFILE, &target(&["CAP_SYS_ADMIN"])).unwrap();
        assert_eq!(with.allow.get(&165), Some(&Allow::Always));
        assert_eq!(with.allow.get(&56), Some(&Allow::Always));
        assert!(with.errno.is_empty());
    }

    #[test]
    fn refuse_removes_a_syscall_from_every_table() {
        let mut rules = evaluate(PROFILE, &target(&[])).unwrap();
        rules.refuse(0);
        rules.refuse(435);
        assert!(!rules.allow.contains_key(&0));
        assert!(rules.errno.is_empty());
    }

    #[test]
    fn unsupported_constructs_are_errors_not_ignored() {
        let trace = r#"{"defaultAction": "SCMP_ACT_ERRNO", "syscalls": [
            {"names": ["read"], "action": "SCMP_ACT_TRACE"}]}"#;
        assert!(evaluate(trace, &target(&[]))
            .unwrap_err()
            .contains("SCMP_ACT_TRACE"));
        let allow_default = r#"{"defaultAction": "SCMP_ACT_ALLOW", "syscalls": []}"#;
        assert!(evaluate(allow_default, &target(&[])).is_err());
        let bad_op = r#"{"defaultAction": "SCMP_ACT_ERRNO", "syscalls": [
            {"names": ["read"], "action": "SCMP_ACT_ALLOW",
             "args": [{"index": 0, "value": 1, "op": "SCMP_CMP_WHATEVER"}]}]}"#;
        assert!(evaluate(bad_op, &target(&[]))
            .unwrap_err()
            .contains("SCMP_CMP_WHATEVER"));
    }

    #[test]
    fn kernel_versions_compare_numerically() {
        assert_eq!(parse_kernel("4.8").unwrap(), (4, 8));
        assert_eq!(parse_kernel("6.18.0-12-amd64").unwrap(), (6, 18));
        assert!((6, 18) >= parse_kernel("4.8").unwrap());
        assert!((4, 10) >= parse_kernel("4.8").unwrap());
        assert!((4, 4) < parse_kernel("4.8").unwrap());
    }
}
