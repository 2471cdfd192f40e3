//! `fuota-node`: the device side of FUOTA, sans IO and host-testable.
//!
//! The STM32WL application links this crate: it answers the four application-layer
//! packages on their FPorts (TS003 clock sync, TS005 multicast setup, TS004
//! fragmentation, TS006 firmware management, v1 and v2), receives the multicast frames
//! of a Class C session, writes fragments straight into the download slot through a
//! flash trait (resuming after a reboot), and hands a verified image to the bootloader.
//! It does no I/O of its own: the firmware feeds it downlinks and the time, and sends
//! the uplinks and applies the actions it returns. No heap; the FEC decoder's RAM is one
//! workspace buffer the firmware lends.
//!
//! # The firmware loop
//!
//! ```ignore
//! let parts = NodeParts::<Stm32wl>::new(config, slot, log, store, rng, Eu868, bootloader);
//! let (mut node, _report) = FuotaNode::start(parts, &mut WORKSPACE, clock.now());
//! loop {
//!     let now = clock.now();
//!     while let Some(action) = node.poll_action(now) {
//!         match action {
//!             Action::StartClassC { frequency_hz, data_rate, .. } => radio.listen_multicast(frequency_hz, data_rate),
//!             Action::ReturnToClassA => radio.stop_multicast(),
//!             Action::Reboot { .. } => cortex_m::peripheral::SCB::sys_reset(),
//!             Action::RecycleWorkspace => node = FuotaNode::start(node.into_parts(), &mut WORKSPACE, now).0,
//!         }
//!     }
//!     if let Some(uplink) = node.poll_uplink(now) {          // when the MAC may transmit
//!         device.send(&uplink.payload, uplink.fport, false).await?;
//!         while let Some(downlink) = device.take_downlink() {
//!             node.handle_downlink(clock.now(), downlink.fport, &downlink.data);
//!         }
//!     }
//!     match select(radio.multicast_frame(), timer.at(node.next_wakeup(now))).await {
//!         First(phy_payload) => { let _ = node.handle_multicast_frame(clock.now(), &phy_payload); }
//!         Second(()) => {}
//!     }
//! }
//! ```
//!
//! [`Instant`] is the firmware's monotonic clock in milliseconds; the node keeps GPS
//! time as that clock plus an offset learnt through TS003 (or set from a MAC
//! DeviceTimeAns with [`FuotaNode::set_gps_time`]).
//!
//! # Feeding it from `lorawan-device`
//!
//! `lorawan-device` (0.12) runs the unicast session: OTAA, Class A, and
//! `take_downlink()` gives each application downlink's FPort and decrypted payload, which
//! go to [`FuotaNode::handle_downlink`]. It drops every frame whose DevAddr is not the
//! session's, and its Class C listens on the RX2 channel only, so multicast is received
//! beside it: on [`Action::StartClassC`] the firmware puts the radio (lorawan-device's
//! `get_mut_radio()`) in continuous receive on the session's frequency and data rate
//! between its own uplinks, and passes every raw PHYPayload to
//! [`FuotaNode::handle_multicast_frame`], which does the McAddr match, FCnt window, MIC
//! and decryption with the `lorawan` crate.
//!
//! # Modules
//!
//! - [`node`]: [`FuotaNode`] and [`NodeParts`]; [`outbox`]: [`Uplink`], [`Action`].
//! - [`clock_sync`], [`multicast`], [`fragmentation`], [`firmware_management`]: the
//!   four packages.
//! - [`fragment_store`]: download slot, FEC decoder, and how a download resumes after a
//!   reboot (persisted setup + a journal of uncoded fragments, re-fed to a new decoder).
//! - [`update`]: the hand-over with the bootloader after a reset (trial, confirmation,
//!   what became of the last update).
//! - [`persistence`]: the state record format; [`flash_store`]: the session store on
//!   flash (settings pages and fragment journal); [`platform`]: the traits the firmware
//!   implements; [`mac_record`]: the firmware's LoRaWAN session and DevNonce counter;
//!   [`config`], [`time`], [`report`].
#![cfg_attr(not(feature = "std"), no_std)]
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod clock_sync;
pub mod config;
pub mod firmware_management;
pub mod flash_store;
pub mod fragment_store;
pub mod fragmentation;
pub mod mac_record;
pub mod multicast;
pub mod node;
pub mod outbox;
pub mod persistence;
pub mod platform;
pub mod report;
pub mod time;
pub mod update;

pub use config::{ClockSyncSettings, FuotaPorts, NodeConfig, MAX_TRUSTED_KEYS, MAX_UPLINK_PAYLOAD};
pub use firmware_management::ImageCheck;
pub use flash_store::{FlashSessionStore, FlashStoreError, RECORD_LORAWAN, RECORD_NODE_STATE};
pub use fragment_store::regions::RegionError;
pub use fragment_store::{ResumeSummary, SessionMemoryError};
pub use fragmentation::{FragmentationProgress, FragmentationStats, MicCheck};
pub use mac_record::{
    DevNoncesExhausted, MacRecord, MacRecordError, MacSession, FCNT_UP_RESERVATION,
    MAC_RECORD_MAX_LEN, MAC_RECORD_READ_LEN,
};
pub use multicast::reception::{MulticastDrop, MAX_PHY_PAYLOAD};
pub use multicast::GroupInfo;
pub use node::{FuotaNode, MulticastReceived, NodeParts, NodeStats, StartReport, StateLoad};
pub use outbox::{Action, Uplink, UplinkPayload};
pub use persistence::StateRecordError;
pub use platform::{
    As923, ErasableRegion, Eu868, PendingUpdate, Platform, RamSessionStore, RamStoreError,
    RandomSource, RegionCheck, SessionStore, UpdateAgent, Us915, XorShiftRng, FRAGMENT_RECORD_LEN,
    STATE_RECORD_MAX_LEN,
};
pub use report::{DownlinkReport, PackageReport};
pub use time::{DeviceClock, Instant};
pub use update::{LastUpdate, RunningImage};
