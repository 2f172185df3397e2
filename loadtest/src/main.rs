//! The `loadtest` binary.
fn main() {}
