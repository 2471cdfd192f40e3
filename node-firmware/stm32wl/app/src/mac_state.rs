//! The LoRaWAN MAC state the device keeps across resets (`fuota_node::MacRecord` in the
//! session store's `RECORD_LORAWAN` record): the DevNonce counter and the unicast
//! session with its frame counters.
//!
//! - **DevNonce as a counter** (LoRaWAN 1.0.4). lorawan-device 0.12 draws each join
//!   request's DevNonce from its RNG (the first draw of a join), so the RNG it is given
//!   is a [`DevNonceRng`]: [`MacState::before_join`] saves the advanced counter, then
//!   arms the RNG to return the counter's value for that one draw.
//! - **Session across resets.** After a reset (an update's reboot included) the device
//!   starts with the saved session instead of joining again; FCntUp continues from the
//!   saved reservation, so no counter is reused ([`MacState::before_uplink`] saves once
//!   per `FCNT_UP_RESERVATION` uplinks).
//!
//! Not restored, because lorawan-device offers no way to set them: the join accept's
//! RX1 delay, RX2 data rate and CFList channels. A restored session uses the region's
//! defaults (RX1 delay 1 s, RX2 869.525 MHz DR0, the three default channels), which are
//! the agent's defaults too; a network that changes them should set
//! `config::RESUME_SESSION_AFTER_RESET` to false, and the device joins after every reset.

use core::sync::atomic::{AtomicU32, Ordering};

use defmt::{error, info, warn};
use fuota_node::{MacRecord, MAC_RECORD_MAX_LEN, RECORD_LORAWAN};
use lorawan_device::mac::Session;
use lorawan_device::{AppSKey, DevAddr, NewSKey, RngCore};

use crate::node_platform::SharedStore;

/// The DevNonce the next RNG draw returns, with [`ARMED`] set; 0 when not armed.
static ARMED_DEV_NONCE: AtomicU32 = AtomicU32::new(0);
const ARMED: u32 = 1 << 16;

/// The RNG lorawan-device draws from: the hardware RNG, except for the draw a join
/// request makes for its DevNonce, which returns the saved counter.
pub struct DevNonceRng<G>(pub G);

impl<G: RngCore> RngCore for DevNonceRng<G> {
    fn next_u32(&mut self) -> u32 {
        let armed = ARMED_DEV_NONCE.swap(0, Ordering::SeqCst);
        if armed & ARMED != 0 {
            armed & 0xFFFF
        } else {
            self.0.next_u32()
        }
    }

    fn next_u64(&mut self) -> u64 {
        self.0.next_u64()
    }

    fn fill_bytes(&mut self, dest: &mut [u8]) {
        self.0.fill_bytes(dest)
    }

    fn try_fill_bytes(&mut self, dest: &mut [u8]) -> Result<(), rand_core::Error> {
        self.0.try_fill_bytes(dest)
    }
}

/// Why no join request may be sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, defmt::Format)]
pub enum JoinRefused {
    /// Every DevNonce has been used: the device needs a new JoinEUI (re-provisioning).
    DevNoncesExhausted,
}

/// The MAC record in RAM and where it is saved.
pub struct MacState {
    record: MacRecord,
    store: Option<SharedStore>,
}

impl MacState {
    /// Loads the record (a fresh device, or one whose record cannot be read, starts
    /// from DevNonce 0 without a session).
    pub fn load(store: Option<SharedStore>) -> Self {
        let mut record = MacRecord::default();
        if let Some(store) = &store {
            let mut buffer = [0u8; MAC_RECORD_MAX_LEN];
            match store.with(|store| store.load_record(RECORD_LORAWAN, &mut buffer)) {
                Ok(Some(len)) => match MacRecord::decode(&buffer[..len]) {
                    Ok(loaded) => record = loaded,
                    Err(_) => error!(
                        "saved LoRaWAN state unreadable (damaged, or from a newer image): \
                         DevNonce restarts at 0"
                    ),
                },
                Ok(None) => info!("no saved LoRaWAN state: a fresh device"),
                Err(failure) => error!("reading the LoRaWAN state failed: {}", failure),
            }
        }
        MacState { record, store }
    }

    /// The saved session for lorawan-device, if there is one to resume.
    pub fn saved_session(&self) -> Option<Session> {
        let saved = self.record.session?;
        let mut session = Session::new(
            NewSKey::from(saved.nwk_s_key),
            AppSKey::from(saved.app_s_key),
            DevAddr::from(saved.dev_addr),
        );
        session.fcnt_up = saved.fcnt_up_limit;
        session.fcnt_down = saved.fcnt_down;
        Some(session)
    }

    /// Before a join request: advances and saves the DevNonce counter and arms the RNG
    /// for the request's draw.
    pub fn before_join(&mut self) -> Result<u16, JoinRefused> {
        let nonce = self
            .record
            .take_dev_nonce()
            .map_err(|_| JoinRefused::DevNoncesExhausted)?;
        self.save();
        ARMED_DEV_NONCE.store(ARMED | u32::from(nonce), Ordering::SeqCst);
        Ok(nonce)
    }

    /// After a join request: the RNG is disarmed whatever happened (a request that
    /// failed before drawing must not hand the nonce to a later draw).
    pub fn after_join_request(&mut self) {
        ARMED_DEV_NONCE.store(0, Ordering::SeqCst);
    }

    /// A join was accepted: saves the new session.
    pub fn joined(&mut self, session: &Session) {
        self.record.joined(
            u32::from(*session.devaddr()),
            session.newskey().inner().0,
            session.appskey().inner().0,
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
        let Some(store) = &self.store else {
            warn!("no session store: LoRaWAN state not saved");
            return;
        };
        let (bytes, len) = self.record.encode();
        if let Err(failure) = store.with(|store| store.save_record(RECORD_LORAWAN, &bytes[..len])) {
            error!("saving the LoRaWAN state failed: {}", failure);
        }
    }
}
