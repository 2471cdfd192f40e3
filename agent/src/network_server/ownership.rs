//! Which frames are the agent's own: an in-memory index of the registered DevEUIs and
//! the DevAddrs of their sessions, shared (cheaply cloned, read-mostly) between the
//! network server, which keeps it current, and the packet-forwarder link, which asks it
//! for every uplink whether to pass the frame through to an upstream network server.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, PoisonError, RwLock};

use crate::identifiers::{DevAddr, DevEui};
use crate::storage::{Storage, StorageError};

#[derive(Debug, Default)]
struct Index {
    devices: HashSet<DevEui>,
    /// Sessions per DevAddr (several devices may share one).
    sessions: HashMap<DevAddr, HashSet<DevEui>>,
    /// The DevAddr of each device's session.
    session_of: HashMap<DevEui, DevAddr>,
}

/// A shared handle to the index.
#[derive(Debug, Clone, Default)]
pub struct OwnershipIndex {
    index: Arc<RwLock<Index>>,
}

impl OwnershipIndex {
    /// An index of every device and session in `storage`.
    pub fn load(storage: &Storage) -> Result<Self, StorageError> {
        let index = OwnershipIndex::default();
        for device in storage.devices()? {
            index.add_device(device.dev_eui);
            if let Some(session) = storage.session(device.dev_eui)? {
                index.set_session(device.dev_eui, session.dev_addr);
            }
        }
        Ok(index)
    }

    /// Whether a PHYPayload belongs to the agent: a JoinRequest of a registered DevEUI,
    /// or an uplink data frame whose DevAddr is one of our sessions'. Anything else
    /// (other message types, garbage) is not ours.
    pub fn owns(&self, phy_payload: &[u8]) -> bool {
        let Some(&mhdr) = phy_payload.first() else {
            return false;
        };
        let index = self.index.read().unwrap_or_else(PoisonError::into_inner);
        match mhdr >> 5 {
            // JoinRequest: MHDR, JoinEUI (8), DevEUI (8, little-endian), DevNonce, MIC.
            0b000 if phy_payload.len() == 23 => {
                let mut dev_eui = [0u8; 8];
                dev_eui.copy_from_slice(&phy_payload[9..17]);
                dev_eui.reverse();
                index.devices.contains(&DevEui::from_bytes(dev_eui))
            }
            // Unconfirmed / confirmed data up: MHDR, DevAddr (4, little-endian), ...
            0b010 | 0b100 if phy_payload.len() >= 12 => {
                let mut dev_addr = [0u8; 4];
                dev_addr.copy_from_slice(&phy_payload[1..5]);
                dev_addr.reverse();
                index.sessions.contains_key(&DevAddr::from_bytes(dev_addr))
            }
            _ => false,
        }
    }

    /// Whether the DevEUI is registered.
    pub fn has_device(&self, dev_eui: DevEui) -> bool {
        self.read().devices.contains(&dev_eui)
    }

    /// A device was registered.
    pub fn add_device(&self, dev_eui: DevEui) {
        self.write().devices.insert(dev_eui);
    }

    /// A device was removed, with its session.
    pub fn remove_device(&self, dev_eui: DevEui) {
        let mut index = self.write();
        index.devices.remove(&dev_eui);
        remove_session(&mut index, dev_eui);
    }

    /// A device has a new session.
    pub fn set_session(&self, dev_eui: DevEui, dev_addr: DevAddr) {
        let mut index = self.write();
        remove_session(&mut index, dev_eui);
        index.sessions.entry(dev_addr).or_default().insert(dev_eui);
        index.session_of.insert(dev_eui, dev_addr);
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Index> {
        self.index.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Index> {
        self.index.write().unwrap_or_else(PoisonError::into_inner)
    }
}

fn remove_session(index: &mut Index, dev_eui: DevEui) {
    if let Some(old) = index.session_of.remove(&dev_eui) {
        if let Some(devices) = index.sessions.get_mut(&old) {
            devices.remove(&dev_eui);
            if devices.is_empty() {
                index.sessions.remove(&old);
            }
        }
    }
}

impl crate::packet_forwarder::UplinkOwnership for OwnershipIndex {
    fn owns(&self, phy_payload: &[u8]) -> bool {
        OwnershipIndex::owns(self, phy_payload)
    }
}
