//! The IAM policy language (placeholder until the engine lands).
