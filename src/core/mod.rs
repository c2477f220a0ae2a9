//! Pure domain logic: no I/O, no clock reads, no ambient randomness.
//!
//! Everything here takes `now` and random bytes as arguments so it can be tested with tables
//! and a controlled clock.

pub mod authn;
pub mod der;
pub mod error;
pub mod model;
pub mod policy;
pub mod proxy_header;
pub mod secret;
pub mod time;
pub mod token;
