//! Agent simulator, module emulator and local orchestrator (being written).
