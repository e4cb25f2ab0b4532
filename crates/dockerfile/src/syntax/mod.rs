//! The syntax layer: BuildKit's `frontend/dockerfile/parser`. Text in, a tree of
//! instruction nodes out; no expansion and no meaning given to the arguments yet.

mod directives;
mod heredoc;
mod line_parsers;
mod node;
mod parser;
pub mod quote;
mod split_command;

pub use directives::Directive;
pub use heredoc::{heredocs_from_line, must_parse_heredoc, parse_heredoc};
pub use node::{chomp_heredoc_content, Ast, Heredoc, Node, NodeArg};
pub use parser::{parse, ParseResult, SyntaxError, Warning};
pub use quote::{go_quote, go_quote_list};
