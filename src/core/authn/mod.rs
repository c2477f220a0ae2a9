//! Proving who a principal is: password hashing, TOTP, and the brute-force lockout that
//! guards both. Everything is pure; the broker loads state, calls these, and stores the
//! result.

pub mod lockout;
pub mod password;
pub mod qr;
pub mod totp;
