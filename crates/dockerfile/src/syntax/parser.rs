//! BuildKit's `parser.Parse`: physical lines -> logical lines -> instruction nodes, with
//! directives, comments, continuations and heredoc bodies.

use serde::Serialize;

use super::directives::{Directive, DirectiveParser};
use super::heredoc::heredocs_from_line;
use super::line_parsers::parse_args;
use super::node::{Ast, Node};
use super::split_command::split_command;

/// BuildKit's bufio.Scanner limit: longer physical lines are rejected.
const MAX_LINE: usize = 64 * 1024 - 1;

/// A parse warning (BuildKit only emits "empty continuation line").
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Warning {
    pub short: String,
    pub detail: String,
    pub url: String,
    /// 1-based line where the instruction ended.
    pub line: usize,
}

/// The parsed file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ParseResult {
    pub ast: Ast,
    pub escape: char,
    pub warnings: Vec<Warning>,
    pub directives: Vec<Directive>,
}

/// A syntax error, with the 1-based lines it concerns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyntaxError {
    pub start_line: usize,
    pub end_line: usize,
    pub message: String,
}

impl std::fmt::Display for SyntaxError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "line {}: {}", self.start_line, self.message)
    }
}

impl std::error::Error for SyntaxError {}

fn err(start_line: usize, end_line: usize, message: impl Into<String>) -> SyntaxError {
    SyntaxError {
        start_line,
        end_line,
        message: message.into(),
    }
}

struct State {
    escape: char,
    directives: DirectiveParser,
    found: Vec<Directive>,
}

impl State {
    /// BuildKit's `processLine`: strip the newline (and leading blanks on a first line),
    /// look for a directive, drop a comment. Returns the remaining text and whether the line
    /// was a directive.
    fn process_line<'a>(
        &mut self,
        raw: &'a str,
        strip_left: bool,
    ) -> Result<(&'a str, bool), String> {
        let mut line = trim_newline(raw);
        if strip_left {
            line = line.trim_start();
        }
        let is_directive = match self.directives.parse_line(line)? {
            Some(d) => {
                if d.name == "escape" {
                    self.escape = match d.value.as_str() {
                        "`" => '`',
                        "\\" => '\\',
                        v => {
                            return Err(format!(
                                "invalid escape token '{v}' does not match ` or \\"
                            ))
                        }
                    };
                }
                self.found.push(d);
                true
            }
            None => false,
        };
        Ok((if is_comment(line) { "" } else { line }, is_directive))
    }
}

fn trim_newline(s: &str) -> &str {
    s.trim_end_matches(['\r', '\n'])
}

fn is_comment(line: &str) -> bool {
    line.trim_start().starts_with('#')
}

fn is_empty_continuation_line(line: &str) -> bool {
    trim_newline(line).trim_start().is_empty()
}

/// BuildKit's continuation regex ``([^\\])\\[ \t]*$|^\\[ \t]*$`` (for escape `\`): the escape
/// character as last non-blank, not itself escaped. Returns the line without it and whether
/// the instruction ends here.
fn trim_continuation(line: &str, escape: char) -> (&str, bool) {
    let t = line.trim_end_matches([' ', '\t']);
    let Some(before) = t.strip_suffix(escape) else {
        return (line, true);
    };
    if before.is_empty() || !before.ends_with(escape) {
        (before, false)
    } else {
        (line, true)
    }
}

/// Splits into physical lines, each keeping its `\n`.
fn scan_lines(text: &str) -> Vec<&str> {
    text.split_inclusive('\n').collect()
}

/// Builds one instruction node from a logical line (BuildKit's `newNodeFromLine`).
fn node_from_line(line: &str, escape: char, comments: Vec<String>) -> Result<Node, String> {
    let (cmd, flags, rest) = split_command(line, escape);
    let nested = |rest: &str| node_from_line(rest, escape, Vec::new());
    let parsed = parse_args(&cmd.to_lowercase(), &rest, escape, &nested)?;
    Ok(Node {
        value: cmd,
        flags,
        args: parsed.args,
        json: parsed.json,
        heredocs: Vec::new(),
        original: line.to_string(),
        start_line: 0,
        end_line: 0,
        prev_comment: comments,
    })
}

fn can_contain_heredoc(node: &Node) -> bool {
    let target = if node.value.eq_ignore_ascii_case("onbuild") {
        node.nested().unwrap_or(node)
    } else {
        node
    };
    let kw = target.value.to_lowercase();
    matches!(kw.as_str(), "add" | "copy" | "run") && !target.json
}

/// Parses a Dockerfile's text into BuildKit's syntax tree.
pub fn parse(text: &str) -> Result<ParseResult, SyntaxError> {
    let lines = scan_lines(text);
    if let Some(i) = lines.iter().position(|l| trim_newline(l).len() > MAX_LINE) {
        return Err(err(
            i + 1,
            i + 1,
            format!("dockerfile line greater than max allowed size of {MAX_LINE}"),
        ));
    }
    let mut st = State {
        escape: '\\',
        directives: DirectiveParser::default(),
        found: Vec::new(),
    };
    let mut children: Vec<Node> = Vec::new();
    let mut warnings = Vec::new();
    let mut comments: Vec<String> = Vec::new();
    let mut current_line = 0usize;
    let mut it = lines.into_iter();

    while let Some(raw_first) = it.next() {
        let raw = if current_line == 0 {
            raw_first.strip_prefix('\u{feff}').unwrap_or(raw_first)
        } else {
            raw_first
        };
        if is_comment(raw) {
            let comment = raw.get(1..).map(str::trim).unwrap_or("").to_string();
            if comment.is_empty() {
                comments.clear();
            } else {
                comments.push(comment);
            }
        }
        let (line, is_directive) = st
            .process_line(raw, true)
            .map_err(|m| err(current_line + 1, current_line + 1, m))?;
        if is_directive {
            comments.pop();
        }
        current_line += 1;
        let start_line = current_line;
        let (line, mut end_of_line) = trim_continuation(line, st.escape);
        if end_of_line && line.is_empty() {
            continue;
        }
        let mut buf = line.to_string();
        let mut has_empty_continuation = false;
        while !end_of_line {
            let Some(next_raw) = it.next() else { break };
            let (next, _) = st
                .process_line(next_raw, false)
                .map_err(|m| err(current_line + 1, current_line + 1, m))?;
            current_line += 1;
            if is_comment(next_raw) {
                continue;
            }
            if is_empty_continuation_line(next) {
                has_empty_continuation = true;
                continue;
            }
            let (next, eol) = trim_continuation(next, st.escape);
            end_of_line = eol;
            buf.push_str(next);
        }

        if has_empty_continuation {
            warnings.push(Warning {
                short: format!("Empty continuation line found in: {buf}"),
                detail: "Empty continuation lines will become errors in a future release".into(),
                url: "https://docs.docker.com/go/dockerfile/rule/no-empty-continuation/".into(),
                line: current_line,
            });
        }

        let mut child = node_from_line(&buf, st.escape, std::mem::take(&mut comments))
            .map_err(|m| err(start_line, current_line, m))?;

        if can_contain_heredoc(&child) && buf.contains("<<") {
            let heredocs =
                heredocs_from_line(&buf).map_err(|m| err(start_line, current_line, m))?;
            for mut heredoc in heredocs {
                let mut terminated = false;
                let mut content = String::new();
                for body_line in it.by_ref() {
                    current_line += 1;
                    let mut candidate = trim_newline(body_line);
                    if heredoc.chomp {
                        candidate = candidate.trim_start_matches('\t');
                    }
                    if candidate == heredoc.name {
                        terminated = true;
                        break;
                    }
                    content.push_str(body_line);
                }
                if !terminated {
                    return Err(err(
                        start_line,
                        current_line,
                        format!("unterminated heredoc {}", heredoc.name),
                    ));
                }
                heredoc.content = content;
                child.heredocs.push(heredoc);
            }
        }

        child.start_line = start_line;
        child.end_line = current_line;
        children.push(child);
    }

    if children.is_empty() {
        return Err(err(
            current_line.max(1),
            current_line.max(1),
            "file with no instructions",
        ));
    }
    let ast = Ast {
        start_line: children[0].start_line,
        end_line: children.last().map_or(0, |c| c.end_line),
        children,
    };
    Ok(ParseResult {
        ast,
        escape: st.escape,
        warnings,
        directives: st.found,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn continuation_regex() {
        assert_eq!(trim_continuation("foo \\  ", '\\'), ("foo ", false));
        assert_eq!(trim_continuation("\\", '\\'), ("", false));
        assert_eq!(trim_continuation("foo\\\\", '\\'), ("foo\\\\", true));
        assert_eq!(trim_continuation("foo `", '`'), ("foo ", false));
        assert_eq!(trim_continuation("foo \\", '`'), ("foo \\", true));
    }
}
