//! fast_litellm: a real HTTP connection pool for LiteLLM, in Rust.
//!
//! `pool` is the pool core (pure Rust), `http` the HTTP engine built on it (tokio, our
//! HTTP/1.1 codec, h2, rustls), `bindings` (feature `python`) the PyO3 bindings that make it the `fast_litellm._core` module.
#![forbid(unsafe_code)]

pub mod http;
pub mod pool;

#[cfg(feature = "python")]
mod bindings;
