//! Authentication: challenges, credentials from Docker's config, and bearer tokens.

pub mod challenge;
pub mod credentials;
pub mod token;

/// The token scope for pulling from `repository`.
pub fn pull_scope(repository: &str) -> String {
    format!("repository:{repository}:pull")
}

/// The token scope for pushing to `repository` (pushing also needs pull: HEAD checks).
pub fn push_scope(repository: &str) -> String {
    format!("repository:{repository}:pull,push")
}
