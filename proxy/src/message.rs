//! Typed RPC messages (being written).
