//! What the node tells the firmware about a downlink it was given: which package took
//! it, how many commands were acted on or ignored, and why decoding stopped. For logs
//! and counters only; the node has already acted on it.

use lorawan_fuota::codec::{DecodeError, Package};

/// Outcome of one application downlink.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DownlinkReport {
    /// The FPort is not one of the four packages': not for the node.
    NotFuota {
        /// The FPort.
        fport: u8,
    },
    /// A package handled the payload.
    Package(PackageReport),
}

/// How a package handled one FRMPayload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PackageReport {
    /// The package.
    pub package: Package,
    /// Commands acted on.
    pub handled: u8,
    /// Commands decoded but dropped (wrong token, not allowed on multicast, unknown
    /// session, fragment for another session, ...).
    pub ignored: u8,
    /// Decoding stopped here: the rest of the payload was not read.
    pub decode_error: Option<DecodeError>,
}

impl PackageReport {
    /// An empty report for `package`.
    pub(crate) fn new(package: Package) -> Self {
        PackageReport {
            package,
            handled: 0,
            ignored: 0,
            decode_error: None,
        }
    }

    pub(crate) fn handled(&mut self) {
        self.handled = self.handled.saturating_add(1);
    }

    pub(crate) fn ignored(&mut self) {
        self.ignored = self.ignored.saturating_add(1);
    }
}
