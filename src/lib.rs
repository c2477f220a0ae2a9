//! Stint: a temporary-credential broker.
//!
//! # Layout
//!
//! Data flows down: `cli`/`rpc` → `broker` → `core` / `store` / `audit`.
//!
//! - [`core`]: pure domain logic (policy engine, authentication, tokens, model); no I/O,
//!   time and randomness come in as parameters.
//! - [`store`]: persistence behind a trait, with sled and in-memory implementations, and
//!   AEAD sealing of secrets at rest.
//! - [`audit`]: the hash-chained audit log and its durable group-commit writer.
//! - [`broker`]: one function per use case (login, assume role, authorize, IAM admin…).
//! - [`rpc`]: tonic services; wire ↔ domain conversion and the one error → status table.
//! - [`daemon`]: assembles a server over any store (used by `serve` and the tests).
//! - [`metrics`]: the Prometheus registry behind the ops listener's `/metrics`.
//! - [`cli`]: the `stint` command line.
//! - [`config`]: layered configuration (defaults → TOML → env → flags).
//! - [`proto`]: generated protobuf types.
#![forbid(unsafe_code)]

pub mod audit;
pub mod broker;
pub mod cli;
pub mod config;
pub mod core;
pub mod daemon;
pub mod metrics;
pub mod rpc;
pub mod store;

/// Generated wire types for package `stint.v1`.
pub mod proto {
    #![allow(clippy::all, clippy::pedantic, missing_docs)]
    tonic::include_proto!("stint.v1");
    /// Encoded descriptor set, for gRPC server reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("stint_descriptor");
}
