//! The LoRaWAN MAC state the device keeps across resets (`fuota_node::MacRecord`, saved
//! through a [`MacRecordStore`]): the DevNonce counter and the unicast session with its
//! frame counters.
//!
//! - **DevNonce as a counter** (LoRaWAN 1.0.4). lorawan-device 0.12 draws each join
//!   request's DevNonce from its RNG (the first draw of a join), so the RNG it is given
//!   is a [`DevNonceRng`]: [`MacState::before_join`] saves the advanced counter, then
//!   arms the shared [`DevNonceSlot`] so that the RNG returns the counter's value for
//!   that one draw (byte-swapped: see [`DevNonceRng`]).
//! - **Session across resets.** After a reset (an update's reboot included) the device
//!   starts with the saved session instead of joining again; FCntUp continues from the
//!   saved reservation, so no counter is reused ([`MacState::before_uplink`] saves once
//!   per reservation of uplinks).
//!
//! Not restored, because lorawan-device offers no way to set them: the join accept's
//! RX1 delay, RX2 data rate and CFList channels. A restored session uses the region's
//! defaults (RX1 delay 1 s, RX2 869.525 MHz DR0, the three default channels), which are
//! the agent's defaults too; a network that changes them should set
//! `LinkConfig::resume_session_after_reset` to false, and the device joins after every
//! reset.

use core::sync::atomic::{AtomicU32, Ordering};

use fuota_node::{MacRecord, MAC_RECORD_READ_LEN};
use lorawan_device::mac::Session;
use lorawan_device::{AppSKey, DevAddr, NewSKey, RngCore};

use crate::fmt::Loggable;

/// Where the device's MAC record is kept (on the STM32WL: a record of the session store
/// in the application state pages, beside the node's own).
pub trait MacRecordStore {
    /// Why loading or saving failed.
    type Error: Loggable;

    /// Reads the record into `buffer`: its length, or `None` if none was ever saved.
    fn load_mac_record(&mut self, buffer: &mut [u8]) -> Result<Option<usize>, Self::Error>;

    /// Replaces the record, atomically (a power cut leaves the old or the new one).
    fn save_mac_record(&mut self, record: &[u8]) -> Result<(), Self::Error>;
}

/// The DevNonce the next draw of a [`DevNonceRng`] returns, shared between the RNG
/// (owned by lorawan-device) and the [`MacState`] that arms it.
pub struct DevNonceSlot(AtomicU32);

/// Set in the slot while a DevNonce is armed (the low 16 bits are the nonce).
const ARMED: u32 = 1 << 16;

impl DevNonceSlot {
    /// Not armed.
    pub const fn new() -> Self {
        DevNonceSlot(AtomicU32::new(0))
    }

    fn arm(&self, dev_nonce: u16) {
        self.0.store(ARMED | u32::from(dev_nonce), Ordering::SeqCst);
    }

    fn disarm(&self) {
        self.0.store(0, Ordering::SeqCst);
    }

    /// The armed DevNonce, once.
    fn take(&self) -> Option<u16> {
        let armed = self.0.swap(0, Ordering::SeqCst);
        (armed & ARMED != 0).then_some((armed & 0xFFFF) as u16)
    }
}

impl Default for DevNonceSlot {
    fn default() -> Self {
        Self::new()
    }
}

/// The RNG lorawan-device draws from: `G`, except for the draw a join request makes for
/// its DevNonce, which returns the saved counter (armed in the [`DevNonceSlot`]).
pub struct DevNonceRng<'a, G> {
    rng: G,
    slot: &'a DevNonceSlot,
}

impl<'a, G> DevNonceRng<'a, G> {
    /// Draws from `rng` unless `slot` is armed.
    pub fn new(rng: G, slot: &'a DevNonceSlot) -> Self {
        DevNonceRng { rng, slot }
    }
}

impl<G: RngCore> RngCore for DevNonceRng<'_, G> {
    fn next_u32(&mut self) -> u32 {
        match self.slot.take() {
            // lorawan-device turns the draw into the join request's DevNonce through
            // `lorawan`'s `From<u16> for DevNonce`, which lays the value out big-endian,
            // while the field goes on air little-endian (LoRaWAN 1.0.4 §4.3.2): the bytes
            // are swapped here so that the network reads the counter's value.
            Some(dev_nonce) => u32::from(dev_nonce.swap_bytes()),
            None => self.rng.next_u32(),
        }
    }

    fn next_u64(&mut self) -> u64 {
        self.rng.next_u64()
    }

    fn fill_bytes(&mut self, dest: &mut [u8]) {
        self.rng.fill_bytes(dest)
    }

    fn try_fill_bytes(&mut self, dest: &mut [u8]) -> Result<(), rand_core::Error> {
        self.rng.try_fill_bytes(dest)
    }
}

/// The session's DevAddr as network servers write it. Not `u32::from`: `lorawan`'s
/// conversions read the address's on-air (little-endian) bytes as big-endian, which
/// would log and save it byte-reversed.
pub fn dev_addr_value(dev_addr: &DevAddr<[u8; 4]>) -> u32 {
    let bytes: &[u8] = dev_addr.as_ref();
    match *bytes {
        [b0, b1, b2, b3] => u32::from_le_bytes([b0, b1, b2, b3]),
        _ => 0,
    }
}

/// Why no join request may be sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum JoinRefused {
    /// Every DevNonce has been used: the device needs a new JoinEUI (re-provisioning).
    DevNoncesExhausted,
}

/// The MAC record in RAM and where it is saved.
pub struct MacState<'a, S> {
    record: MacRecord,
    /// False only when the store said for certain that there is no record: the device
    /// never sent a join request (the counter is saved before each).
    may_have_transmitted: bool,
    store: Option<S>,
    slot: &'a DevNonceSlot,
}

impl<'a, S: MacRecordStore> MacState<'a, S> {
    /// Loads the record. A record in a format this image does not read (a newer image's,
    /// after a revert) still gives its DevNonce counter, without the session; a fresh
    /// device, or one whose record is no record at all, starts from DevNonce 0. Without a
    /// store nothing survives a reset.
    pub fn load(mut store: Option<S>, slot: &'a DevNonceSlot) -> Self {
        let mut record = MacRecord::default();
        let mut may_have_transmitted = true;
        if let Some(store) = &mut store {
            let mut buffer = [0u8; MAC_RECORD_READ_LEN];
            match store.load_mac_record(&mut buffer) {
                Ok(Some(len)) => {
                    let saved = buffer.get(..len).unwrap_or(&buffer);
                    match MacRecord::decode(saved) {
                        Ok(loaded) => record = loaded,
                        Err(_) => match MacRecord::salvage(saved) {
                            Some(salvaged) => {
                                warn!(
                                    "saved LoRaWAN state in a format this image does not \
                                     read (a newer image's): DevNonce continues at {}, \
                                     the session is joined again",
                                    salvaged.next_dev_nonce
                                );
                                record = salvaged;
                            }
                            None => {
                                error!("saved LoRaWAN state unreadable: DevNonce restarts at 0")
                            }
                        },
                    }
                }
                Ok(None) => {
                    info!("no saved LoRaWAN state: a fresh device");
                    may_have_transmitted = false;
                }
                Err(failure) => error!("reading the LoRaWAN state failed: {:?}", failure),
            }
        }
        MacState {
            record,
            may_have_transmitted,
            store,
            slot,
        }
    }

    /// The record as it stands.
    pub fn record(&self) -> &MacRecord {
        &self.record
    }

    /// The saved session for lorawan-device, if there is one to resume.
    pub fn saved_session(&self) -> Option<Session> {
        let saved = self.record.session?;
        let mut session = Session::new(
            NewSKey::from(saved.nwk_s_key),
            AppSKey::from(saved.app_s_key),
            DevAddr::from(saved.dev_addr.to_le_bytes()),
        );
        session.fcnt_up = saved.fcnt_up_limit;
        session.fcnt_down = saved.fcnt_down;
        Some(session)
    }

    /// Whether the device may have transmitted before this start: false only for a
    /// device whose store holds no record (it never sent a join request).
    pub fn may_have_transmitted(&self) -> bool {
        self.may_have_transmitted
    }

    /// The data rate (the region's DR index) of the saved session's uplinks.
    pub fn saved_data_rate(&self) -> Option<u8> {
        self.record.session.map(|session| session.data_rate)
    }

    /// Before a join request: advances and saves the DevNonce counter and arms the RNG
    /// for the request's draw.
    pub fn before_join(&mut self) -> Result<u16, JoinRefused> {
        let nonce = self
            .record
            .take_dev_nonce()
            .map_err(|_| JoinRefused::DevNoncesExhausted)?;
        self.save();
        self.slot.arm(nonce);
        Ok(nonce)
    }

    /// After a join request: the RNG is disarmed whatever happened (a request that
    /// failed before drawing must not hand the nonce to a later draw).
    pub fn after_join_request(&mut self) {
        self.slot.disarm();
    }

    /// A join was accepted at `data_rate` (the region's DR index): saves the new session,
    /// whose uplinks keep that data rate.
    pub fn joined(&mut self, session: &Session, data_rate: u8) {
        self.record.joined(
            dev_addr_value(session.devaddr()),
            session.newskey().inner().0,
            session.appskey().inner().0,
            data_rate,
        );
        self.save();
    }

    /// Before an uplink: extends and saves the FCntUp reservation when it ran out.
    pub fn before_uplink(&mut self, session: &Session) {
        if self
            .record
            .reserve_uplink(session.fcnt_up, session.fcnt_down)
        {
            self.save();
        }
    }

    /// Before a planned reset: saves the session's FCntDown.
    pub fn before_reset(&mut self, session: Option<&Session>) {
        if let Some(session) = session {
            self.record.note_fcnt_down(session.fcnt_down);
            self.save();
        }
    }

    /// The session is gone (frame counter exhausted, or a new join follows).
    pub fn session_lost(&mut self) {
        self.record.forget_session();
        self.save();
    }

    fn save(&mut self) {
        let Some(store) = &mut self.store else {
            warn!("no session store: LoRaWAN state not saved");
            return;
        };
        let (bytes, len) = self.record.encode();
        let Some(encoded) = bytes.get(..len) else {
            return;
        };
        if let Err(failure) = store.save_mac_record(encoded) {
            error!("saving the LoRaWAN state failed: {:?}", failure);
        }
    }
}
