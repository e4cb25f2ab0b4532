//! .dockerignore parsing and Docker's pattern matching semantics.
