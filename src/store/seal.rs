//! Placeholder: replaced by the sealing implementation (AEAD under the master key).
#[derive(Debug, thiserror::Error)]
#[error("sealed data could not be opened")]
pub struct SealError;
