//! `fuota-agent`: the gateway-resident FUOTA agent.
//!
//! It is the LoRaWAN network server for the devices registered with it (beside the
//! Semtech UDP packet forwarder), runs FUOTA campaigns on the gateway alone, passes all
//! other traffic through to an upstream network server, and syncs results upstream.
//! One folder per concern (design.md §2); each module's doc says what it owns.

pub mod api;
pub mod backup;
pub mod campaign;
pub mod clock;
pub mod config;
pub mod firmware;
pub mod identifiers;
pub mod lorawan;
pub mod manpages;
pub mod network_server;
pub mod packet_forwarder;
pub mod service;
pub mod simulator;
pub mod storage;
pub mod systemd;
pub mod upstream;
