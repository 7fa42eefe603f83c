//! Flotilla's deterministic cluster simulator and linearizability checker.
//!
//! [`linearizability`] records what clients asked and were told, and decides whether a real
//! atomic key-value store could have answered that way.
#![deny(missing_docs)]

pub mod linearizability;
