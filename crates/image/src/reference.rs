//! Image references (`[registry/]repository[:tag][@digest]`), normalised as Docker does.
//! Written by the registry work; placeholder type so the crate compiles meanwhile.

/// A normalised image reference.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reference {
    pub registry: String,
    pub repository: String,
    pub tag: Option<String>,
    pub digest: Option<crate::Digest>,
}
