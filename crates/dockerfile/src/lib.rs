//! Dockerfile frontend: BuildKit-compatible parser, typed instructions and the stage model.
