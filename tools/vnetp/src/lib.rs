//! Library side of the `vnetp` binary: the control-socket client, and the helpers that
//! build test hosts in network namespaces, shared by `vnetp demo` and the integration
//! tests.
#![forbid(unsafe_code)]

pub mod client;
pub mod netns;
