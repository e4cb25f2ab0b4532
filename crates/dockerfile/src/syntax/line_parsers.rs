//! BuildKit's `line_parsers.go`: the per-keyword argument grammars. No expansion and no quote
//! removal happen here.

use super::node::{Node, NodeArg};
use super::split_command::split_re_whitespace;

/// What a line parser produced: the arguments and whether they were a JSON array.
pub(crate) struct Parsed {
    pub args: Vec<NodeArg>,
    pub json: bool,
}

impl Parsed {
    fn words(words: Vec<String>) -> Parsed {
        Parsed {
            args: words.into_iter().map(NodeArg::Word).collect(),
            json: false,
        }
    }
    fn none() -> Parsed {
        Parsed {
            args: Vec::new(),
            json: false,
        }
    }
}

pub(crate) const NOT_STRING_ARRAY: &str =
    "when using JSON array syntax, arrays must be comprised of strings only";

/// Dispatches on the lower-cased keyword. `nested` builds an ONBUILD's inner instruction.
pub(crate) fn parse_args(
    keyword: &str,
    rest: &str,
    escape: char,
    nested: &dyn Fn(&str) -> Result<Node, String>,
) -> Result<Parsed, String> {
    match keyword {
        "add" | "copy" | "volume" => parse_maybe_json_to_list(rest),
        "run" | "cmd" | "entrypoint" | "shell" => parse_maybe_json(rest),
        "from" | "expose" => Ok(parse_strings_whitespace_delimited(rest)),
        "env" => parse_name_val(rest, "ENV", escape),
        "label" => parse_name_val(rest, "LABEL", escape),
        "arg" => Ok(Parsed::words(parse_words(rest, escape))),
        "maintainer" | "stopsignal" | "user" | "workdir" => Ok(parse_string(rest)),
        "healthcheck" => parse_health_config(rest),
        "onbuild" => {
            if rest.is_empty() {
                return Ok(Parsed::none());
            }
            let child = nested(rest)?;
            Ok(Parsed {
                args: vec![NodeArg::Nested(Box::new(child))],
                json: false,
            })
        }
        // Unknown instructions are kept with one empty argument (BuildKit's parseIgnore).
        _ => Ok(Parsed::words(vec![String::new()])),
    }
}

/// Quote-aware word split; quotes and escapes are kept in the words.
pub(crate) fn parse_words(rest: &str, escape: char) -> Vec<String> {
    #[derive(PartialEq)]
    enum Phase {
        Spaces,
        Word,
        Quote,
    }
    let chars: Vec<char> = rest.chars().collect();
    let mut words = Vec::new();
    let mut phase = Phase::Spaces;
    let mut quote = '\0';
    let mut blank_ok = false;
    let mut word = String::new();
    let mut pos = 0;
    while pos <= chars.len() {
        let mut ch = chars.get(pos).copied().unwrap_or('\0');
        if phase == Phase::Spaces {
            if pos == chars.len() {
                break;
            }
            if ch.is_whitespace() {
                pos += 1;
                continue;
            }
            phase = Phase::Word;
        }
        if pos == chars.len() {
            if blank_ok || !word.is_empty() {
                words.push(word.clone());
            }
            break;
        }
        if phase == Phase::Word {
            if ch.is_whitespace() {
                phase = Phase::Spaces;
                if blank_ok || !word.is_empty() {
                    words.push(std::mem::take(&mut word));
                }
                word.clear();
                blank_ok = false;
                pos += 1;
                continue;
            }
            if ch == '\'' || ch == '"' {
                quote = ch;
                blank_ok = true;
                phase = Phase::Quote;
            }
            if ch == escape {
                if pos + 1 == chars.len() {
                    pos += 1;
                    continue;
                }
                word.push(ch);
                pos += 1;
                ch = chars[pos];
            }
            word.push(ch);
            pos += 1;
            continue;
        }
        // Phase::Quote
        if ch == quote {
            phase = Phase::Word;
        }
        if ch == escape && quote != '\'' {
            if pos + 1 == chars.len() {
                phase = Phase::Word;
                pos += 1;
                continue;
            }
            pos += 1;
            word.push(ch);
            ch = chars[pos];
        }
        word.push(ch);
        pos += 1;
    }
    words
}

/// ENV and LABEL: `k=v k2=v2` (triples with separator `=`) or legacy `k some value`.
fn parse_name_val(rest: &str, key: &str, escape: char) -> Result<Parsed, String> {
    let words = parse_words(rest, escape);
    if words.is_empty() {
        return Ok(Parsed::none());
    }
    if !words[0].contains('=') {
        let parts = split_re_whitespace(rest, Some(2));
        if parts.len() < 2 {
            return Err(format!("{key} must have two arguments"));
        }
        return Ok(Parsed::words(vec![
            parts[0].to_string(),
            parts[1].to_string(),
            String::new(),
        ]));
    }
    let mut out = Vec::new();
    for word in words {
        let Some((k, v)) = word.split_once('=') else {
            return Err(format!(
                "Syntax error - can't find = in {}. Must be of the form: name=value",
                super::quote::go_quote(&word)
            ));
        };
        out.extend([k.to_string(), v.to_string(), "=".to_string()]);
    }
    Ok(Parsed::words(out))
}

fn parse_strings_whitespace_delimited(rest: &str) -> Parsed {
    if rest.is_empty() {
        return Parsed::none();
    }
    Parsed::words(
        split_re_whitespace(rest, None)
            .into_iter()
            .map(str::to_string)
            .collect(),
    )
}

fn parse_string(rest: &str) -> Parsed {
    if rest.is_empty() {
        return Parsed::none();
    }
    Parsed::words(vec![rest.to_string()])
}

enum JsonError {
    NotArray,
    NotStrings,
}

/// A JSON array of strings (exec form).
fn parse_json(rest: &str) -> Result<Vec<String>, JsonError> {
    let rest = rest.trim_start();
    if !rest.starts_with('[') {
        return Err(JsonError::NotArray);
    }
    let value: serde_json::Value = serde_json::from_str(rest).map_err(|_| JsonError::NotArray)?;
    let serde_json::Value::Array(items) = value else {
        return Err(JsonError::NotArray);
    };
    items
        .into_iter()
        .map(|v| match v {
            serde_json::Value::String(s) => Ok(s),
            _ => Err(JsonError::NotStrings),
        })
        .collect()
}

fn parse_maybe_json(rest: &str) -> Result<Parsed, String> {
    if rest.is_empty() {
        return Ok(Parsed::none());
    }
    match parse_json(rest) {
        Ok(words) => Ok(Parsed {
            json: true,
            ..Parsed::words(words)
        }),
        Err(JsonError::NotStrings) => Err(NOT_STRING_ARRAY.to_string()),
        // Invalid JSON silently falls back to the shell form.
        Err(JsonError::NotArray) => Ok(Parsed::words(vec![rest.to_string()])),
    }
}

fn parse_maybe_json_to_list(rest: &str) -> Result<Parsed, String> {
    match parse_json(rest) {
        Ok(words) => Ok(Parsed {
            json: true,
            ..Parsed::words(words)
        }),
        Err(JsonError::NotStrings) => Err(NOT_STRING_ARRAY.to_string()),
        Err(JsonError::NotArray) => Ok(parse_strings_whitespace_delimited(rest)),
    }
}

/// HEALTHCHECK: the first word (CMD, NONE, ...) then the rest as RUN would take it.
fn parse_health_config(rest: &str) -> Result<Parsed, String> {
    // BuildKit looks at single bytes with unicode.IsSpace.
    let is_space = |b: u8| matches!(b, b'\t' | b'\n' | 0x0b | 0x0c | b'\r' | b' ' | 0x85 | 0xa0);
    let bytes = rest.as_bytes();
    let sep = bytes
        .iter()
        .position(|&b| is_space(b))
        .unwrap_or(bytes.len());
    if sep == 0 {
        return Ok(Parsed::none());
    }
    let next = bytes[sep..]
        .iter()
        .position(|&b| !is_space(b))
        .map_or(bytes.len(), |p| sep + p);
    let typ = String::from_utf8_lossy(&bytes[..sep]).into_owned();
    let cmd = parse_maybe_json(&String::from_utf8_lossy(&bytes[next..]))?;
    let mut args = vec![NodeArg::Word(typ)];
    args.extend(cmd.args);
    Ok(Parsed {
        args,
        json: cmd.json,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(p: Parsed) -> Vec<String> {
        p.args
            .into_iter()
            .map(|a| match a {
                NodeArg::Word(w) => w,
                NodeArg::Nested(_) => panic!("nested"),
            })
            .collect()
    }

    #[test]
    fn env_forms() {
        let p = parse_name_val("a=\"b c\" d=e\\ f", "ENV", '\\').unwrap();
        assert_eq!(words(p), vec!["a", "\"b c\"", "=", "d", "e\\ f", "="]);
        let p = parse_name_val("PATH  /usr/bin  /bin", "ENV", '\\').unwrap();
        assert_eq!(words(p), vec!["PATH", "/usr/bin  /bin", ""]);
        assert_eq!(
            parse_name_val("PATH", "ENV", '\\').err().unwrap(),
            "ENV must have two arguments"
        );
        assert!(parse_name_val("a=b c", "LABEL", '\\')
            .err()
            .unwrap()
            .contains("can't find = in \"c\""));
    }

    #[test]
    fn json_fallbacks() {
        let p = parse_maybe_json("['a', 'b']").unwrap();
        assert!(!p.json);
        assert_eq!(words(p), vec!["['a', 'b']"]);
        let p = parse_maybe_json(" [\"a\", \"b\"] ").unwrap();
        assert!(p.json);
        assert_eq!(words(p), vec!["a", "b"]);
        assert_eq!(
            parse_maybe_json("[\"a\", 1]").err().unwrap(),
            NOT_STRING_ARRAY
        );
    }

    #[test]
    fn healthcheck_split() {
        let p = parse_health_config("CMD [\"a\"]").unwrap();
        assert!(p.json);
        assert_eq!(words(p), vec!["CMD", "a"]);
        let p = parse_health_config("NONE").unwrap();
        assert_eq!(words(p), vec!["NONE"]);
    }
}
