//! The syntax tree: BuildKit's `parser.Node`, reshaped for Rust (the `Next` chain becomes a
//! vector of arguments) while keeping everything its `Dump()` and the instruction layer need.

use serde::Serialize;

use super::quote::{go_quote, go_quote_list};

/// One argument of an instruction: a word, or (only for `ONBUILD`) a nested instruction.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum NodeArg {
    Word(String),
    Nested(Box<Node>),
}

/// A heredoc attached to an instruction (`RUN <<EOF` ... `EOF`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Heredoc {
    /// The delimiter word with quotes removed (also the file name for COPY/ADD).
    pub name: String,
    /// The leading digits of `3<<EOF`, else 0.
    pub file_descriptor: u32,
    /// False when any part of the delimiter was quoted: the body is then taken literally.
    pub expand: bool,
    /// `<<-`: leading tabs are to be removed from the body (see [`chomp_heredoc_content`]).
    pub chomp: bool,
    /// The body, unchomped, each line with its line ending.
    pub content: String,
}

/// One instruction of the Dockerfile.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Node {
    /// The keyword as written (`FROM`, `From`, ...).
    pub value: String,
    /// Leading `--flag` words, quotes removed.
    pub flags: Vec<String>,
    /// The arguments as BuildKit's line parser for this keyword produced them.
    pub args: Vec<NodeArg>,
    /// The arguments were a JSON array (exec form).
    pub json: bool,
    pub heredocs: Vec<Heredoc>,
    /// The logical line (continuations joined, comments removed).
    pub original: String,
    /// 1-based physical lines; 0 for an instruction nested in ONBUILD (as in BuildKit).
    pub start_line: usize,
    pub end_line: usize,
    /// The comment lines directly above the instruction.
    pub prev_comment: Vec<String>,
}

impl Node {
    /// BuildKit's `Node.Dump()` for one instruction, e.g. `copy ["--from=a"] "x" "y"`.
    pub fn dump(&self) -> String {
        let mut s = self.value.to_lowercase();
        if !self.flags.is_empty() {
            s.push(' ');
            s.push_str(&go_quote_list(&self.flags));
        }
        for arg in &self.args {
            s.push(' ');
            match arg {
                NodeArg::Word(w) => s.push_str(&go_quote(w)),
                NodeArg::Nested(child) => {
                    s.push('(');
                    s.push_str(&child.dump());
                    s.push(')');
                }
            }
        }
        s.trim().to_string()
    }

    /// The arguments as BuildKit's `nodeArgs`: words, with a nested instruction flattened
    /// into its keyword followed by its arguments.
    pub fn arg_words(&self) -> Vec<String> {
        let mut out = Vec::new();
        for arg in &self.args {
            match arg {
                NodeArg::Word(w) => out.push(w.clone()),
                NodeArg::Nested(child) => {
                    out.push(child.value.clone());
                    out.extend(child.arg_words());
                }
            }
        }
        out
    }

    /// The nested instruction of an ONBUILD.
    pub fn nested(&self) -> Option<&Node> {
        self.args.iter().find_map(|a| match a {
            NodeArg::Nested(n) => Some(n.as_ref()),
            NodeArg::Word(_) => None,
        })
    }
}

/// The whole file: BuildKit's root node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Ast {
    pub children: Vec<Node>,
    pub start_line: usize,
    pub end_line: usize,
}

impl Ast {
    /// BuildKit's `Dump()` of the root node (one `(instruction)` per line, no final newline).
    pub fn dump(&self) -> String {
        let mut s = String::new();
        for child in &self.children {
            s.push('(');
            s.push_str(&child.dump());
            s.push_str(")\n");
        }
        s.trim().to_string()
    }
}

/// Removes the leading tabs of every line (what `<<-` asks for), as BuildKit's
/// `ChompHeredocContent` does.
pub fn chomp_heredoc_content(src: &str) -> String {
    let mut out = String::with_capacity(src.len());
    for line in src.split_inclusive('\n') {
        out.push_str(line.trim_start_matches('\t'));
    }
    out
}
