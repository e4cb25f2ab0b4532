//! BuildKit's `BFlags`: the `--flag[=value]` words of an instruction, checked against the
//! flags that instruction declares.

use std::collections::BTreeMap;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Bool,
    String,
    Strings,
}

/// A flag-parsing failure: the message, and the flag word at fault (to point at it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct FlagError {
    pub message: String,
    pub flag: String,
}

/// Declared flags and, after [`BFlags::parse`], their values.
#[derive(Debug, Default)]
pub(crate) struct BFlags {
    args: Vec<String>,
    declared: BTreeMap<String, Kind>,
    values: BTreeMap<String, Vec<String>>,
    bools: BTreeMap<String, bool>,
}

impl BFlags {
    pub(crate) fn new(args: &[String]) -> BFlags {
        BFlags {
            args: args.to_vec(),
            ..BFlags::default()
        }
    }

    pub(crate) fn add_bool(&mut self, name: &str) {
        self.declared.insert(name.to_string(), Kind::Bool);
    }
    pub(crate) fn add_string(&mut self, name: &str) {
        self.declared.insert(name.to_string(), Kind::String);
    }
    pub(crate) fn add_strings(&mut self, name: &str) {
        self.declared.insert(name.to_string(), Kind::Strings);
    }

    /// Checks every flag word against the declarations.
    pub(crate) fn parse(&mut self) -> Result<(), FlagError> {
        for a in self.args.clone() {
            if a == "--" {
                return Ok(());
            }
            let fail = |message: String| FlagError {
                message,
                flag: a.clone(),
            };
            if !a.starts_with("--") {
                return Err(fail(format!("arg should start with -- : {a}")));
            }
            let (flag_name, value) = match a.split_once('=') {
                Some((n, v)) => (n, Some(v)),
                None => (a.as_str(), None),
            };
            let name = &flag_name[2..];
            let Some(&kind) = self.declared.get(name) else {
                return Err(fail(format!("unknown flag: {flag_name}")));
            };
            let used = self.values.contains_key(name) || self.bools.contains_key(name);
            if used && kind != Kind::Strings {
                return Err(fail(format!("duplicate flag specified: {flag_name}")));
            }
            match kind {
                Kind::Bool => {
                    if value == Some("") {
                        return Err(fail(format!("missing a value on flag: {flag_name}")));
                    }
                    let b = match value.unwrap_or("").to_lowercase().as_str() {
                        "true" | "" => true,
                        "false" => false,
                        _ => {
                            return Err(fail(format!(
                                "expecting boolean value for flag {flag_name}, not: {}",
                                value.unwrap_or("")
                            )))
                        }
                    };
                    self.bools.insert(name.to_string(), b);
                }
                Kind::String | Kind::Strings => {
                    let Some(v) = value else {
                        return Err(fail(format!("missing a value on flag: {flag_name}")));
                    };
                    self.values
                        .entry(name.to_string())
                        .or_default()
                        .push(v.to_string());
                }
            }
        }
        Ok(())
    }

    /// A string flag's value, `None` when not given.
    pub(crate) fn string(&self, name: &str) -> Option<String> {
        self.values.get(name).and_then(|v| v.last().cloned())
    }
    /// All values of a repeatable flag.
    pub(crate) fn strings(&self, name: &str) -> Vec<String> {
        self.values.get(name).cloned().unwrap_or_default()
    }
    /// A bool flag: `None` when not given.
    pub(crate) fn bool(&self, name: &str) -> Option<bool> {
        self.bools.get(name).copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flags(words: &[&str]) -> BFlags {
        let mut f = BFlags::new(&words.iter().map(|s| s.to_string()).collect::<Vec<_>>());
        f.add_bool("link");
        f.add_string("from");
        f.add_strings("mount");
        f
    }

    #[test]
    fn parses_all_kinds() {
        let mut f = flags(&["--link", "--from=a", "--mount=x", "--mount=y"]);
        f.parse().unwrap();
        assert_eq!(f.bool("link"), Some(true));
        assert_eq!(f.string("from").as_deref(), Some("a"));
        assert_eq!(f.strings("mount"), vec!["x", "y"]);
        let mut f = flags(&["--link=FALSE"]);
        f.parse().unwrap();
        assert_eq!(f.bool("link"), Some(false));
    }

    #[test]
    fn errors_like_buildkit() {
        let e = |w: &[&str]| flags(w).parse().unwrap_err().message;
        assert_eq!(e(&["--frm=a"]), "unknown flag: --frm");
        assert_eq!(e(&["--from"]), "missing a value on flag: --from");
        assert_eq!(
            e(&["--from=a", "--from=b"]),
            "duplicate flag specified: --from"
        );
        assert_eq!(e(&["--link="]), "missing a value on flag: --link");
        assert_eq!(
            e(&["--link=maybe"]),
            "expecting boolean value for flag --link, not: maybe"
        );
    }
}
