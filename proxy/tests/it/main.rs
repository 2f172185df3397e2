//! The proxy's integration tests, one binary (one link instead of one per file): a module per
//! area, the fixtures in `support`. Run one area with `cargo test -p sigsci-proxy --test it
//! routing::`, one test by (part of) its name.
//!
//! In-process proxies share this process's metrics recorder: tests that assert how much a
//! counter rose run their proxies alone (`support/recorder.rs`).

mod support;

mod accept;
mod check;
mod cli;
mod close;
mod codec_golden;
mod codec_limits;
mod codec_props;
mod control;
mod drain;
mod faults;
mod fidelity;
mod hostile;
mod ipv6;
mod layout;
mod memory;
mod metrics;
mod module_init;
mod routing;
