//! Ports
