//! Membership sources. Each yields the same stream of [`Update`](crate::Update)s
//! (docs/style.md #8), which [`Pool::run`](crate::Pool::run) applies: a static list, a watched
//! file, DNS, and Kubernetes EndpointSlices.

mod dns;
mod file;
mod fixed;
pub mod kubernetes;

pub use dns::dns;
pub use file::{FileError, file, read_file};
pub use fixed::fixed;
pub use kubernetes::kubernetes;
