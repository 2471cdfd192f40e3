//! The LoRaWAN layer of the edge network server: regions, time on air, the duty-cycle
//! accountant and the downlink scheduler for the concentrator.
//!
//! Everything here is pure logic over plain values (no sockets, no storage, no clock
//! reads), so the same code runs over real UDP and inside the simulator:
//!
//! * [`region`]: regional parameters (EU868, US915, AS923) over lrwn's tables;
//! * [`airtime`]: LoRa and FSK time on air;
//! * [`time`]: the monotonic timeline and the concentrator's wrapping `tmst` counter;
//! * [`duty_cycle`]: regulatory sub-bands and the per-gateway airtime accountant;
//! * [`scheduler`]: the downlink scheduler of one concentrator (Class A windows,
//!   multicast in the gaps, TX_ACK handling).

pub mod airtime;
pub mod duty_cycle;
pub mod region;
pub mod scheduler;
pub mod time;
