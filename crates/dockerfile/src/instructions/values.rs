//! Value grammars BuildKit borrows from Go's standard library and friends: durations
//! (`time.ParseDuration`), booleans (`strconv.ParseBool`), sizes (`go-units.RAMInBytes`)
//! and one CSV record (`csvvalue.Fields`).

/// Go's `time.ParseDuration`, in nanoseconds.
pub(crate) fn parse_go_duration(s: &str) -> Result<i64, String> {
    let invalid = || format!("time: invalid duration {}", crate::syntax::go_quote(s));
    let (neg, mut rest) = match s.as_bytes().first() {
        Some(b'-') => (true, &s[1..]),
        Some(b'+') => (false, &s[1..]),
        _ => (false, s),
    };
    if rest == "0" {
        return Ok(0);
    }
    if rest.is_empty() {
        return Err(invalid());
    }
    let mut total: f64 = 0.0;
    while !rest.is_empty() {
        let int_len = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        let int_part = &rest[..int_len];
        rest = &rest[int_len..];
        let mut frac_part = "";
        if let Some(r) = rest.strip_prefix('.') {
            let frac_len = r.find(|c: char| !c.is_ascii_digit()).unwrap_or(r.len());
            frac_part = &r[..frac_len];
            rest = &r[frac_len..];
        }
        if int_part.is_empty() && frac_part.is_empty() {
            return Err(invalid());
        }
        let unit_len = rest
            .find(|c: char| c == '.' || c.is_ascii_digit())
            .unwrap_or(rest.len());
        let unit = &rest[..unit_len];
        rest = &rest[unit_len..];
        let scale: f64 = match unit {
            "ns" => 1.0,
            "us" | "µs" | "μs" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "m" => 60e9,
            "h" => 3600e9,
            "" => {
                return Err(format!(
                    "time: missing unit in duration {}",
                    crate::syntax::go_quote(s)
                ))
            }
            _ => {
                return Err(format!(
                    "time: unknown unit {} in duration {}",
                    crate::syntax::go_quote(unit),
                    crate::syntax::go_quote(s)
                ))
            }
        };
        let number: f64 = format!(
            "{}.{}",
            if int_part.is_empty() { "0" } else { int_part },
            frac_part
        )
        .trim_end_matches('.')
        .parse()
        .map_err(|_| invalid())?;
        total += number * scale;
        if total > i64::MAX as f64 {
            return Err(invalid());
        }
    }
    let ns = total.round() as i64;
    Ok(if neg { -ns } else { ns })
}

/// Go's `strconv.ParseBool`.
pub(crate) fn parse_go_bool(s: &str) -> Option<bool> {
    match s {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Some(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Some(false),
        _ => None,
    }
}

/// `go-units.RAMInBytes`: `64m`, `1.5GiB`, `512` (binary multiples).
pub(crate) fn parse_ram_in_bytes(s: &str) -> Result<i64, String> {
    let invalid = || format!("invalid size: '{s}'");
    let num_len = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (num, suffix) = s.split_at(num_len);
    if num.is_empty() || !num.as_bytes()[0].is_ascii_digit() || num.ends_with('.') {
        return Err(invalid());
    }
    let value: f64 = num.parse().map_err(|_| invalid())?;
    let suffix = suffix.strip_prefix(' ').unwrap_or(suffix).to_lowercase();
    let mut chars = suffix.chars().peekable();
    let mult: f64 = match chars.peek() {
        Some('k') => 1024f64,
        Some('m') => 1024f64.powi(2),
        Some('g') => 1024f64.powi(3),
        Some('t') => 1024f64.powi(4),
        Some('p') => 1024f64.powi(5),
        _ => 1.0,
    };
    if mult != 1.0 {
        chars.next();
    }
    if chars.peek() == Some(&'i') {
        chars.next();
    }
    if chars.peek() == Some(&'b') {
        chars.next();
    }
    if chars.next().is_some() {
        return Err(invalid());
    }
    Ok((value * mult) as i64)
}

/// One CSV record (`encoding/csv` rules: `"` quotes a whole field, `""` inside is a quote).
pub(crate) fn csv_fields(s: &str) -> Result<Vec<String>, String> {
    let mut fields = Vec::new();
    let mut chars = s.chars().peekable();
    loop {
        let mut field = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            loop {
                match chars.next() {
                    None => return Err("extraneous or missing \" in quoted-field".into()),
                    Some('"') if chars.peek() == Some(&'"') => {
                        chars.next();
                        field.push('"');
                    }
                    Some('"') => break,
                    Some(c) => field.push(c),
                }
            }
            match chars.next() {
                None => {
                    fields.push(field);
                    return Ok(fields);
                }
                Some(',') => fields.push(field),
                Some(_) => return Err("extraneous or missing \" in quoted-field".into()),
            }
        } else {
            loop {
                match chars.next() {
                    None => {
                        fields.push(field);
                        return Ok(fields);
                    }
                    Some(',') => {
                        fields.push(field);
                        break;
                    }
                    Some('"') => return Err("bare \" in non-quoted-field".into()),
                    Some(c) => field.push(c),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_go_duration("30s"), Ok(30_000_000_000));
        assert_eq!(parse_go_duration("1m30s"), Ok(90_000_000_000));
        assert_eq!(parse_go_duration("1.5h"), Ok(5_400_000_000_000));
        assert_eq!(parse_go_duration("100ms"), Ok(100_000_000));
        assert_eq!(parse_go_duration("0"), Ok(0));
        assert_eq!(parse_go_duration("-1s"), Ok(-1_000_000_000));
        assert_eq!(
            parse_go_duration("10").unwrap_err(),
            "time: missing unit in duration \"10\""
        );
        assert!(parse_go_duration("1x")
            .unwrap_err()
            .contains("unknown unit \"x\""));
        assert!(parse_go_duration("").is_err());
        assert!(parse_go_duration(".s").is_err());
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_ram_in_bytes("64m"), Ok(64 << 20));
        assert_eq!(parse_ram_in_bytes("1GiB"), Ok(1 << 30));
        assert_eq!(parse_ram_in_bytes("512"), Ok(512));
        assert_eq!(parse_ram_in_bytes("1.5k"), Ok(1536));
        assert!(parse_ram_in_bytes("lots").is_err());
        assert!(parse_ram_in_bytes("1q").is_err());
    }

    #[test]
    fn csv() {
        assert_eq!(
            csv_fields("type=cache,target=/x").unwrap(),
            vec!["type=cache", "target=/x"]
        );
        assert_eq!(csv_fields("\"a,b\",c").unwrap(), vec!["a,b", "c"]);
        assert_eq!(csv_fields("\"x\"\"y\"").unwrap(), vec!["x\"y"]);
        assert!(csv_fields("a\"b").is_err());
        assert!(csv_fields("\"ab").is_err());
    }
}
