//! AWS IAM User Guide examples.
