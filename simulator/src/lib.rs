//! The test agent of sigsci-proxy: a simulated `sigsci-agent` ([`agent`]), the MessagePack-RPC
//! implementation it and the load tester speak ([`rpc`]), independent of the proxy's codec so
//! that tests do not share the proxy's bugs, and what they are built on: RPC addresses and
//! streams ([`addr`]), minimal HTTP/1 ([`http`]) and the quantities options take ([`units`]).
//!
//! A crate of its own so that the proxy's tests depend on the simulator alone; the load tester
//! (`sigsci-loadtest`) runs it as `loadtest agent` and drives load with its [`rpc`].
#![warn(missing_docs)]

pub mod addr;
pub mod agent;
pub mod http;
pub mod rpc;
pub mod units;
