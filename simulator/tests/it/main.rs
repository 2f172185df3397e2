//! The simulator's integration tests, one binary: the module protocol (`agent`), judging,
//! faults and startup as an agent does (`agent_fidelity`).

mod agent;
mod agent_fidelity;
