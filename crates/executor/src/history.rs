//! BuildKit's history strings (`created_by`), reproduced from dockerfile2llb's
//! `commitToHistory` calls, and the Go value formatting they rely on (`%q`, `%v`,
//! `time.Duration`), plus RFC 3339 timestamps.

/// BuildKit appends this to every instruction that ran against the filesystem state
/// (RUN, COPY, ADD), but not to WORKDIR or config-only instructions.
pub(crate) const BUILDKIT_SUFFIX: &str = " # buildkit";

// Go's `strconv.Quote` and `%q` of a string list: the parser's own, checked against
// BuildKit's dump files.
pub(crate) use rbuild_dockerfile::syntax::quote::{go_quote, go_quote_list};

/// `fmt.Sprintf("%v", []string{...})`: `[a b]`.
pub(crate) fn go_list(words: &[String]) -> String {
    format!("[{}]", words.join(" "))
}

/// Go's `time.Duration.String()` for a number of nanoseconds.
pub(crate) fn go_duration(ns: i64) -> String {
    if ns == 0 {
        return "0s".into();
    }
    let neg = ns < 0;
    let u = ns.unsigned_abs();
    let body = if u < 1_000_000_000 {
        let (unit, scale) = if u < 1_000 {
            ("ns", 1u64)
        } else if u < 1_000_000 {
            ("µs", 1_000)
        } else {
            ("ms", 1_000_000)
        };
        format!("{}{}", fraction(u, scale), unit)
    } else {
        let total_secs = u / 1_000_000_000;
        let frac_ns = u % 1_000_000_000;
        let hours = total_secs / 3600;
        let minutes = (total_secs % 3600) / 60;
        let secs = total_secs % 60;
        let secs_text = fraction(secs * 1_000_000_000 + frac_ns, 1_000_000_000);
        if hours > 0 {
            format!("{hours}h{minutes}m{secs_text}s")
        } else if minutes > 0 {
            format!("{minutes}m{secs_text}s")
        } else {
            format!("{secs_text}s")
        }
    };
    if neg {
        format!("-{body}")
    } else {
        body
    }
}

/// `value / scale` with Go's trailing-zero-free fraction.
fn fraction(value: u64, scale: u64) -> String {
    let whole = value / scale;
    let rest = value % scale;
    if rest == 0 {
        return whole.to_string();
    }
    let width = scale.to_string().len() - 1;
    let digits = format!("{rest:0width$}");
    format!("{whole}.{}", digits.trim_end_matches('0'))
}

/// `fmt.Sprintf("HEALTHCHECK %+v", HealthConfig{...})` as BuildKit v0.32 writes it (v0.8
/// wrote `%q` of a pointer: `HEALTHCHECK &{["CMD" "x"] "0s" ...}`).
pub(crate) fn healthcheck(h: &rbuild_image::Healthcheck) -> String {
    format!(
        "HEALTHCHECK {{Test:{} Interval:{} Timeout:{} StartPeriod:{} StartInterval:{} Retries:{}}}",
        go_list(&h.test),
        go_duration(h.interval),
        go_duration(h.timeout),
        go_duration(h.start_period),
        go_duration(h.start_interval),
        h.retries
    )
}

/// BuildKit's `runCommandString`: the build args in scope prefixed as `|N K=v ...`.
pub(crate) fn run_command_string(build_args: &[(String, String)], argv: &[String]) -> String {
    let mut words: Vec<String> = Vec::new();
    if !build_args.is_empty() {
        words.push(format!("|{}", build_args.len()));
        words.extend(build_args.iter().map(|(k, v)| format!("{k}={v}")));
    }
    words.extend(argv.iter().cloned());
    words.join(" ")
}

/// RFC 3339 UTC with nanoseconds trimmed as Go's `time.RFC3339Nano` does.
pub(crate) fn rfc3339(secs: i64, nanos: u32) -> String {
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    let mut out = format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60
    );
    if nanos > 0 {
        let digits = format!("{nanos:09}");
        out.push('.');
        out.push_str(digits.trim_end_matches('0'));
    }
    out.push('Z');
    out
}

/// Howard Hinnant's days-to-civil algorithm.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_formats() {
        assert_eq!(go_quote_list(&["a".into(), "b c".into()]), r#"["a" "b c"]"#);
        assert_eq!(go_duration(30_000_000_000), "30s");
        assert_eq!(go_duration(300_000_000_000), "5m0s");
        assert_eq!(go_duration(3_600_000_000_000), "1h0m0s");
        assert_eq!(go_duration(1_500_000_000), "1.5s");
        assert_eq!(go_duration(100_000_000), "100ms");
        assert_eq!(
            run_command_string(
                &[("A".into(), "1".into())],
                &["/bin/sh".into(), "-c".into(), "x".into()]
            ),
            "|1 A=1 /bin/sh -c x"
        );
    }

    #[test]
    fn healthcheck_matches_docker_history() {
        let h = rbuild_image::Healthcheck {
            test: vec![
                "CMD-SHELL".into(),
                "curl -f http://localhost/ || exit 1".into(),
            ],
            interval: 300_000_000_000,
            timeout: 3_000_000_000,
            ..Default::default()
        };
        assert_eq!(
            healthcheck(&h),
            "HEALTHCHECK {Test:[CMD-SHELL curl -f http://localhost/ || exit 1] Interval:5m0s \
             Timeout:3s StartPeriod:0s StartInterval:0s Retries:0}"
        );
    }

    #[test]
    fn timestamps() {
        assert_eq!(rfc3339(0, 0), "1970-01-01T00:00:00Z");
        assert_eq!(
            rfc3339(1_700_000_000, 500_000_000),
            "2023-11-14T22:13:20.5Z"
        );
    }
}
