//! MessagePack-RPC frame codec (being written).
