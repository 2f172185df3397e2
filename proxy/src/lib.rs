//! `sigsci-proxy`: a MessagePack-RPC proxy that lets Signal Sciences modules talk to a separately
//! scaled pool of `sigsci-agent` pods through one `host:port`.
//!
//! Modules open a connection per RPC, so the proxy balances each RPC (not each connection) and
//! keeps every `RPC.UpdateRequest` on the agent that issued its `RequestID` by carrying an opaque
//! affinity token inside that ID. See `docs/architecture.md` and `docs/protocol.md`.
//!
//! Layout: [`config`] (flags, env, TOML), `listener` (sockets, accept loop), `downstream` (one
//! module connection), `route` (method → agent, affinity, retry), [`affinity`] (the token in the
//! RequestID), `upstream` (persistent multiplexed or per-call agent connections), `admin`
//! (read-only HTTP: metrics, health, readiness), `control` (the local control socket: drain),
//! `server` (wiring and drain); [`check`] is the `sigsci-proxy check` subcommand (what is wrong
//! with an install, asked of the cluster).
#![warn(missing_docs)]

pub mod affinity;
pub mod check;
pub mod codec;

mod admin;
mod admission;
mod busy_poll;
pub mod config;
mod control;
mod downstream;
mod drain;
mod error;
mod heap_trim;
mod in_flight;
mod listener;
mod metrics;
mod module_init;
mod overload;
mod retry_budget;
mod route;
mod server;
mod stream;
mod upstream;

pub use config::Config;
pub use control::request_drain;
pub use drain::DrainReport;
pub use server::{Proxy, run};
