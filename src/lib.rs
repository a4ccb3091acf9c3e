//! fast_litellm: a real HTTP connection pool for LiteLLM, in Rust.
//!
//! `pool` is the pure-Rust pool core; `python` (feature `python`) holds the PyO3 bindings.
#![forbid(unsafe_code)]

pub mod pool;

#[cfg(feature = "python")]
mod python;
