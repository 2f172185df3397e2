//! Crate tests that need the crate-internal clock (`*_at` methods).
