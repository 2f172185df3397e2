//! The pool of `sigsci-agent` endpoints as the proxy sees it (being written).
#![warn(missing_docs)]
