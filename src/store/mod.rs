//! Persistence. (Placeholder: the lead replaces this with the store traits.)

pub mod seal;
