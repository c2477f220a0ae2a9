//! The `stint` command line.

pub mod audit;
