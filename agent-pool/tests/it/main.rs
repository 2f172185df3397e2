//! agent-pool's integration tests, one binary: membership sources feeding a real pool
//! (`sources`), and the Kubernetes source against a fake API server (`kubernetes`).

mod kubernetes;
mod sources;
