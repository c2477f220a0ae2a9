//! The `stint` command line.

pub mod policy;
