//! Integration tests: each test starts the real daemon on `127.0.0.1:0` with a temp data
//! dir and a manual clock (see `common.rs`) and talks to it over gRPC and HTTP.
// Tests start the manual clock from, and compare processes against, the wall clock.
#![allow(clippy::disallowed_methods)]
// A failed expectation in a test is the test failing.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

mod assume_role;
mod attacks_iam;
mod attacks_login;
mod attacks_ops;
mod attacks_policy;
mod attacks_sts;
mod audit;
mod authn;
mod cli_output;
mod client_lib;
mod crash;
mod deploy_files;
mod disk_full;
mod durability;
mod exec;
mod failover;
mod hot_path;
mod iam;
mod lifecycle;
mod load_limits;
mod login;
mod newuser;
mod ops_http;
mod postgres;
mod process;
mod python_example;
mod server;
mod tls;
mod tokens;
mod web_identity;
mod web_identity_client;
