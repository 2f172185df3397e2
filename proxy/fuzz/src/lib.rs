//! The proxy's frame codec, compiled from its own sources for fuzzing (see Cargo.toml for why):
//! `codec.rs` and `codec/` here are symlinks to `proxy/src/`.
#![allow(missing_docs, dead_code)]

pub mod codec;
