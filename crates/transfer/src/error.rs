//! Transfer errors: a registry error, a store error, or an image that cannot be moved.

use rbuild_registry::RegistryError;
use rbuild_store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum TransferError {
    #[error(transparent)]
    Registry(#[from] RegistryError),
    #[error(transparent)]
    Store(#[from] StoreError),
    /// An image that cannot be moved as asked (a nested index, a blob missing locally, ...).
    #[error("{0}")]
    Invalid(String),
}

pub type Result<T> = std::result::Result<T, TransferError>;
