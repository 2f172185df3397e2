//! The load tester's integration tests, one binary: the module emulator and the binaries as
//! processes (`drive`), `loadtest cluster` against a fake API server (`cluster`).

mod cluster;
mod drive;
