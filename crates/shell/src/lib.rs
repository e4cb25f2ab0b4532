//! BuildKit's shell-lexer word expansion ($VAR, ${VAR:-w}, quoting) for Dockerfile arguments.
