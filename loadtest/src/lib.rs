//! Load testing for sigsci-proxy: a faithful agent simulator ([`agent`]), a module emulator that
//! drives load the way the real modules do ([`drive`]), and a local orchestrator that wires them
//! to the real proxy binary ([`local`]), or runs the same scenarios against a cluster through
//! its API server ([`cluster`]); [`autoscale`] closes the loop through an HPA emulation.
#![warn(missing_docs)]

pub(crate) mod abuse;
pub mod addr;
pub mod agent;
pub mod autoscale;
pub mod bench;
pub mod cli;
pub mod cluster;
pub mod drive;
pub mod engine;
pub mod http;
pub(crate) mod judge;
pub mod local;
pub mod netbed;
pub mod rpc;
pub mod scenario;
pub mod units;
