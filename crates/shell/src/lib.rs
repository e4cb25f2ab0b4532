//! BuildKit's shell-lexer word expansion (`$VAR`, `${VAR:-w}`, quoting) for Dockerfile
//! arguments: a port of the behaviour of `frontend/dockerfile/shell/lex.go`.
//!
//! ```
//! use std::collections::BTreeMap;
//! use rbuild_shell::Lexer;
//!
//! let env: BTreeMap<String, String> = [("V".to_string(), "1.2".to_string())].into();
//! let lexer = Lexer::new('\\');
//! assert_eq!(lexer.process_word("app-${V:-dev}.tar", &env).unwrap(), "app-1.2.tar");
//! assert_eq!(lexer.process_words("a 'b c'", &env).unwrap(), ["a", "b c"]);
//! ```

mod chars;
mod env;
mod error;
mod lexer;
mod pattern;
mod scanner;
mod word;

pub use env::Env;
pub use error::{ExpandError, ExpandErrorKind};
pub use lexer::{Expansion, ExpansionBudget, Lexer, MAX_WORD_BYTES};
