//! Load testing for sigsci-proxy: a module emulator that drives load the way the real modules do
//! ([`drive`]), and a local orchestrator that wires it and simulated agents to the real proxy
//! binary ([`local`]), or runs the same scenarios against a cluster through its API server
//! ([`cluster`]), both played by one scenario engine ([`engine`]); [`autoscale`] closes the loop
//! through an HPA emulation. The agent simulator and
//! the RPC implementation are the `sigsci-simulator` crate (`loadtest agent` runs it).
#![warn(missing_docs)]

pub(crate) mod abuse;
pub mod autoscale;
pub mod bench;
pub mod cli;
pub mod cluster;
pub mod drive;
pub mod engine;
pub(crate) mod judge;
pub mod local;
pub mod netbed;
pub mod overload;
pub(crate) mod processes;
pub(crate) mod prometheus;
pub mod run_args;
pub mod scenario;
pub(crate) mod svg;

// The simulator crate's modules, under the paths the rest of this crate names them by.
pub use simulator::{addr, agent, http, rpc, units};
