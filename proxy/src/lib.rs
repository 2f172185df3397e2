//! `sigsci-proxy`: a MessagePack-RPC proxy that lets Signal Sciences modules talk to a separately
//! scaled pool of `sigsci-agent` pods through one `host:port`.
//!
//! Modules open a connection per RPC, so the proxy balances each RPC (not each connection) and
//! keeps every `RPC.UpdateRequest` on the agent that issued its `RequestID` by carrying an opaque
//! affinity token inside that ID. See `DESIGN.md` and `PROTOCOL.md` in the shared folder.
#![warn(missing_docs)]

pub mod codec;
pub mod message;
