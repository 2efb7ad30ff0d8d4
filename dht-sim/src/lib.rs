//! # dht-sim
//!
//! Runs many [`dht_core::Node`]s in one process over a virtual network: a virtual clock, per-link
//! latency drawn from a seeded distribution, message loss, and churn. The same seed gives the same trace.
//!
//! [`Sim`] is the network; [`experiment`] bootstraps a swarm through one seed node, runs lookups and
//! put/get pairs, and judges each lookup against the true k closest computed globally.
#![warn(missing_docs)]

pub mod experiment;
mod net;
mod truth;
mod wheel;

pub use net::{NetStats, Sim, SimConfig, SimEvent};
pub use truth::AliveSet;
