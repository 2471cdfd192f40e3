//! The link's parts on their own: the DevNonce counter fed through lorawan-device's RNG,
//! the MAC record across a reset, the transmit budget's off times and the multicast
//! receiver's use of the radio. The whole loop runs against the agent in the agent's
//! `device_link` test.

use std::cell::RefCell;
use std::rc::Rc;

use fuota_device::transmit_budget::{airtime_us, DATA_UPLINK_OVERHEAD, JOIN_REQUEST_LEN};
use fuota_device::{
    DevNonceRng, DevNonceSlot, MacRecordStore, MacState, MulticastReceiver, TransmitBudget,
};
use fuota_node::Instant;
use lora_modulation::{Bandwidth, SpreadingFactor};
use lorawan_device::async_device::radio::{
    PhyRxTx, RxConfig, RxMode, RxQuality, RxStatus, TxConfig,
};
use lorawan_device::mac::Session;
use lorawan_device::region::DR;
use lorawan_device::{AppSKey, DevAddr, NewSKey, RngCore};

/// A record store in RAM, shared by the "before" and "after" of a reset.
#[derive(Clone, Default)]
struct RamStore(Rc<RefCell<Option<Vec<u8>>>>);

impl MacRecordStore for RamStore {
    type Error = ();

    fn load_mac_record(&mut self, buffer: &mut [u8]) -> Result<Option<usize>, ()> {
        Ok(self.0.borrow().as_ref().map(|record| {
            buffer[..record.len()].copy_from_slice(record);
            record.len()
        }))
    }

    fn save_mac_record(&mut self, record: &[u8]) -> Result<(), ()> {
        *self.0.borrow_mut() = Some(record.to_vec());
        Ok(())
    }
}

/// An RNG that always says 0xABCD_1234.
struct FixedRng;

impl RngCore for FixedRng {
    fn next_u32(&mut self) -> u32 {
        0xABCD_1234
    }
    fn next_u64(&mut self) -> u64 {
        0xABCD_1234
    }
    fn fill_bytes(&mut self, dest: &mut [u8]) {
        dest.fill(0xAB)
    }
    fn try_fill_bytes(&mut self, dest: &mut [u8]) -> Result<(), rand_core::Error> {
        dest.fill(0xAB);
        Ok(())
    }
}

fn session(dev_addr: u32, fcnt_up: u32, fcnt_down: u32) -> Session {
    let mut session = Session::new(
        NewSKey::from([1; 16]),
        AppSKey::from([2; 16]),
        DevAddr::from(dev_addr.to_le_bytes()),
    );
    session.fcnt_up = fcnt_up;
    session.fcnt_down = fcnt_down;
    session
}

/// The DevNonce field of the join request lorawan-device builds from a draw, as the
/// network reads it (little-endian on air).
fn dev_nonce_on_air(draw: u32) -> u16 {
    // lorawan-device: `DevNonce::from(rng.next_u32() as u16)`, copied into the frame.
    let field = lorawan::parser::DevNonce::<[u8; 2]>::from(draw as u16);
    let bytes: &[u8] = field.as_ref();
    u16::from_le_bytes([bytes[0], bytes[1]])
}

#[test]
fn a_join_draws_the_saved_dev_nonce_once_and_the_counter_survives_a_reset() {
    let store = RamStore::default();
    let slot = DevNonceSlot::new();
    let mut rng = DevNonceRng::new(FixedRng, &slot);
    let mut mac = MacState::load(Some(store.clone()), &slot);
    assert_eq!(rng.next_u32(), 0xABCD_1234, "not armed: the RNG's own draw");

    assert_eq!(mac.before_join(), Ok(0));
    assert_eq!(
        dev_nonce_on_air(rng.next_u32()),
        0,
        "the join request's draw is the counter"
    );
    assert_eq!(rng.next_u32(), 0xABCD_1234, "only once");
    mac.after_join_request();

    // A join request that failed before drawing: disarmed all the same.
    assert_eq!(mac.before_join(), Ok(1));
    mac.after_join_request();
    assert_eq!(rng.next_u32(), 0xABCD_1234);

    // After a reset the counter goes on from the saved value.
    let slot = DevNonceSlot::new();
    let mut rng = DevNonceRng::new(FixedRng, &slot);
    let mut mac = MacState::load(Some(store), &slot);
    assert_eq!(mac.before_join(), Ok(2));
    assert_eq!(dev_nonce_on_air(rng.next_u32()), 2);
    // Past one byte too (the order of the two on air matters).
    let record = fuota_node::MacRecord {
        next_dev_nonce: 0x0123,
        session: None,
    };
    let mut store = RamStore::default();
    let (bytes, len) = record.encode();
    store.save_mac_record(&bytes[..len]).unwrap();
    let mut mac = MacState::load(Some(store), &slot);
    assert_eq!(mac.before_join(), Ok(0x0123));
    assert_eq!(dev_nonce_on_air(rng.next_u32()), 0x0123);
}

#[test]
fn a_restored_session_starts_past_every_frame_counter_used_before_the_reset() {
    let store = RamStore::default();
    let slot = DevNonceSlot::new();
    let mut mac = MacState::load(Some(store.clone()), &slot);
    mac.before_join().unwrap();
    mac.after_join_request();
    mac.joined(&session(0x2601_0042, 0, 0), 3);
    let mut used = 0;
    for fcnt_up in 0..100 {
        mac.before_uplink(&session(0x2601_0042, fcnt_up, 7));
        used = fcnt_up;
    }
    mac.before_reset(Some(&session(0x2601_0042, used + 1, 9)));

    let slot = DevNonceSlot::new();
    let restored = MacState::load(Some(store.clone()), &slot)
        .saved_session()
        .expect("the session was saved");
    assert_eq!(
        fuota_device::dev_addr_value(restored.devaddr()),
        0x2601_0042
    );
    // On air (and in lorawan-device's frames) the address is little-endian.
    assert_eq!(restored.devaddr().as_ref(), &[0x42, 0x00, 0x01, 0x26]);
    let record = MacState::load(Some(store.clone()), &slot).record().session;
    assert_eq!(record.map(|session| session.dev_addr), Some(0x2601_0042));
    assert!(
        restored.fcnt_up > used,
        "FCntUp {} reused",
        restored.fcnt_up
    );
    assert_eq!(restored.fcnt_down, 9);
    assert_eq!(restored.newskey().inner().0, [1; 16]);
    assert_eq!(
        MacState::load(Some(store.clone()), &slot).saved_data_rate(),
        Some(3),
        "the uplinks go on at the data rate the join was accepted at"
    );

    // A lost session is not resumed.
    let mut mac = MacState::load(Some(store.clone()), &slot);
    mac.session_lost();
    assert!(MacState::load(Some(store), &slot).saved_session().is_none());
}

#[test]
fn a_record_in_a_format_this_image_does_not_read_keeps_its_dev_nonce_counter() {
    let load = |bytes: Vec<u8>| {
        let slot = DevNonceSlot::new();
        let mut mac = MacState::load(Some(RamStore(Rc::new(RefCell::new(Some(bytes))))), &slot);
        (mac.saved_session().is_none(), mac.before_join())
    };
    // A newer image's record (version 2, with a session and more), found after a revert
    // to this image: the counter goes on (a restart at 0 would be refused by the network
    // for good), the session is joined again.
    let mut newer = vec![2, 0x07, 0x10, 0x02];
    newer.extend_from_slice(&[0x5a; 60]);
    assert_eq!(load(newer), (true, Ok(0x0210)));
    // What is no record at all starts a fresh device instead of failing.
    assert_eq!(load(vec![0xFF; 5]), (true, Ok(0)));
    assert_eq!(load(vec![0x01, 0x00]), (true, Ok(0)));
}

#[test]
fn an_uplink_is_followed_by_99_times_its_airtime() {
    let start = Instant::from_secs(100);
    let mut budget = TransmitBudget::new(start, 7);
    assert_eq!(budget.next_transmission(), start);
    budget.record_uplink(start, DR::_5, 11);
    let airtime = airtime_us(DR::_5, DATA_UPLINK_OVERHEAD + 11);
    // 39 bytes at SF7/125 kHz, CR 4/5, 8-symbol preamble, explicit header, CRC:
    // (8 + 4.25) + 8 + ceil((8·39 − 28 + 28 + 16) / 28)·5 = 80.25 symbols of 1.024 ms.
    assert_eq!(airtime, 82_176);
    assert_eq!(
        budget.next_transmission().millis_since(start),
        (airtime * 99).div_ceil(1_000)
    );
    // A shorter transmission later does not shorten the off time already owed.
    budget.record_uplink(start.plus_millis(1), DR::_5, 0);
    assert_eq!(
        budget.next_transmission().millis_since(start),
        (airtime * 99).div_ceil(1_000)
    );
}

#[test]
fn after_a_reset_the_first_transmission_waits_out_the_longest_frame_before_it() {
    // The clock restarted: the frame just before the reset may have been the longest
    // the region allows at the data rate the device used (64 bytes at SF10).
    let start = Instant::from_secs(3);
    let budget = TransmitBudget::after_reset(start, 7, DR::_2);
    let longest = airtime_us(DR::_2, 64);
    assert!(longest > airtime_us(DR::_2, DATA_UPLINK_OVERHEAD + 4));
    assert_eq!(
        budget.next_transmission().millis_since(start),
        (longest * 99).div_ceil(1_000)
    );
    // Faster data rates allow longer frames (255 bytes at SF7) but still owe less.
    let at_sf7 = TransmitBudget::after_reset(start, 7, DR::_5);
    assert_eq!(
        at_sf7.next_transmission().millis_since(start),
        (airtime_us(DR::_5, 255) * 99).div_ceil(1_000)
    );
    assert!(at_sf7.next_transmission() < budget.next_transmission());
}

#[test]
fn join_requests_back_off_to_a_tenth_and_a_hundredth_of_a_percent() {
    let airtime = airtime_us(DR::_0, JOIN_REQUEST_LEN);
    let start = Instant::from_secs(0);
    let mut budget = TransmitBudget::new(start, 99);
    let off_time_at = |budget: &TransmitBudget, finished: Instant| {
        budget.next_transmission().millis_since(finished)
    };
    for (at_hours, divisor) in [
        (0, 100),
        (1, 1_000),
        (10, 1_000),
        (11, 10_000),
        (30, 10_000),
    ] {
        let finished = start.plus_secs(at_hours * 3_600);
        budget.record_join_request(finished, DR::_0, false);
        let minimum = (airtime * (divisor - 1)).div_ceil(1_000);
        let off = off_time_at(&budget, finished);
        assert!(
            (minimum..=minimum + minimum / 2).contains(&off),
            "hour {at_hours}: off time {off} ms, expected {minimum} plus at most half"
        );
    }
    // Accepted: only the 1 % off time, and the next loss of session starts over.
    let finished = start.plus_secs(40 * 3_600);
    budget.record_join_request(finished, DR::_0, true);
    assert_eq!(
        off_time_at(&budget, finished),
        (airtime * 99).div_ceil(1_000)
    );
    let later = finished.plus_secs(3_600);
    budget.record_join_request(later, DR::_0, false);
    assert!(off_time_at(&budget, later) <= (airtime * 99).div_ceil(1_000) * 3 / 2);
}

/// A radio that records how it was set up and has frames to give.
#[derive(Default)]
struct RecordingRadio {
    setups: Vec<RxConfig>,
    frames: Vec<Result<Vec<u8>, &'static str>>,
}

impl PhyRxTx for RecordingRadio {
    type PhyError = &'static str;
    const MAX_RADIO_POWER: u8 = 14;

    async fn tx(&mut self, _config: TxConfig, _buf: &[u8]) -> Result<u32, &'static str> {
        Ok(0)
    }

    async fn setup_rx(&mut self, config: RxConfig) -> Result<(), &'static str> {
        self.setups.push(config);
        Ok(())
    }

    async fn rx_continuous(&mut self, buf: &mut [u8]) -> Result<(usize, RxQuality), &'static str> {
        let frame = self.frames.remove(0)?;
        buf[..frame.len()].copy_from_slice(&frame);
        Ok((frame.len(), RxQuality::new(-80, 5)))
    }

    async fn rx_single(&mut self, _buf: &mut [u8]) -> Result<RxStatus, &'static str> {
        Ok(RxStatus::RxTimeout)
    }
}

#[test]
fn the_multicast_receiver_listens_on_the_sessions_channel_and_sets_up_again_after_an_uplink() {
    futures::executor::block_on(async {
        let mut radio = RecordingRadio {
            frames: vec![Ok(vec![1]), Ok(vec![2, 2]), Err("crc"), Ok(vec![3])],
            ..RecordingRadio::default()
        };
        let mut receiver = MulticastReceiver::new();
        assert!(!receiver.start(869_525_000, 7), "DR7 is FSK: refused");
        assert!(!receiver.in_session());
        assert!(receiver.start(869_525_000, 5));
        let mut buffer = [0u8; 256];
        assert_eq!(
            receiver.receive(&mut radio, &mut buffer).await.unwrap().0,
            1
        );
        assert_eq!(
            receiver.receive(&mut radio, &mut buffer).await.unwrap().0,
            2
        );
        assert_eq!(radio.setups.len(), 1, "continuous: set up once");
        let setup = radio.setups[0];
        assert_eq!(setup.rf.frequency, 869_525_000);
        assert_eq!(setup.rf.bb.sf, SpreadingFactor::_7);
        assert_eq!(setup.rf.bb.bw, Bandwidth::_125KHz);
        assert!(matches!(setup.mode, RxMode::Continuous));

        // A failed reception sets the radio up again before the next.
        assert!(receiver.receive(&mut radio, &mut buffer).await.is_err());
        receiver.stop(); // an uplink used the radio in between
        assert_eq!(
            receiver.receive(&mut radio, &mut buffer).await.unwrap().0,
            1
        );
        assert_eq!(radio.setups.len(), 2);

        // Back to Class A: nothing to receive (pending forever).
        receiver.end();
        let pending = futures::poll!(std::pin::pin!(receiver.receive(&mut radio, &mut buffer)));
        assert!(pending.is_pending());
    });
}
