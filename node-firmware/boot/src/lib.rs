//! `fuota-boot`: the bootloader logic of the STM32WL FUOTA node, host-testable.
//!
//! On every reset: if an update is pending, verify the download slot (signed MCUboot
//! image, anti-rollback), swap it in power-fail-safely and boot it in trial; if the trial
//! image does not confirm itself, revert on the next reset. The primary image is
//! verified before every jump. All flash access goes through a trait, so the same code
//! runs on the device and against a simulated flash that cuts power at any operation.
//!
//! # Modules
//!
//! - [`layout`]: the STM32WL55JC flash layout (the one place it is written), and small
//!   test geometries.
//! - [`flash`]: the [`BootFlash`] trait and [`FlashWindow`], one region of it as an image
//!   source and as the FEC decoder's `FlashRegion`.
//! - [`state`]: the boot state (phase, swap progress, trial, last update result,
//!   security counter) and its records.
//! - `status`: the boot state on flash, in two alternating pages, power-fail-safe.
//! - `swap`: the page-by-page swap, restartable after any cut.
//! - [`boot`](mod@boot): the reset logic, [`boot()`].
//! - [`app`]: the application's calls: request an update, confirm, read the result.
//! - [`device_state`]: which device state survives a swap and where it lives.
//! - `node_hand_over` (feature `node`): [`running_image`], what the boot state tells the
//!   FUOTA node at start.
//! - [`sim`] (feature `sim`): a simulated flash with power cuts and torn writes.
//!
//! Why not `embassy-boot`: see `DESIGN.md` in this crate.
#![cfg_attr(not(feature = "std"), no_std)]
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod app;
pub mod boot;
mod crc;
pub mod device_state;
pub mod flash;
pub mod layout;
#[cfg(feature = "node")]
mod node_hand_over;
#[cfg(feature = "sim")]
pub mod sim;
pub mod state;
mod status;
mod swap;

pub use app::{
    cancel_update, confirm_image, read_boot_state, request_update, Confirmation, RequestError,
};
pub use boot::{boot, BootConfig, BootDecision, BootError, BootImage, BootReport, Watchdog};
pub use device_state::{AppStateAreas, DeviceState, Home, StateHome, DEVICE_STATE};
pub use flash::{BootFlash, FlashWindow, WindowError};
pub use layout::{Layout, LayoutError, LayoutPlan, Region, STM32WL55JC};
#[cfg(feature = "node")]
pub use node_hand_over::running_image;
pub use state::{BootState, Phase, RejectReason, RevertCause, Swap, SwapKind, Trial, UpdateResult};
