//! End to end on the STM32WL55JC layout: the agent's encodings → the node core → the
//! bootloader → the new image running the node again.
//!
//! The agent side is built with lorawan-fuota's codec (TS005 McGroupSetupReq, TS004
//! FragSessionSetupReq v2 with its MIC, DataFragment, TS006 requests), its
//! `FragmentEncoder` (uncoded and coded fragments) and the `lorawan` crate (multicast
//! frames encrypted with McAppSKey and signed with McNwkSKey). Fragments go out shuffled,
//! 10 % lost by a seeded RNG. The node's `Platform` writes the simulated flash: the
//! download image area and the FEC log through windows of the boot crate's layout, its
//! state in the application state pages (`FlashSessionStore`), and hands over to the
//! bootloader with `request_update` / `confirm_image`. Each "reboot" drops the node
//! (RAM) and keeps the flash.

mod common;

use std::cell::RefCell;
use std::rc::Rc;

use common::{signing_key, trusted, ImageSpec, WatchdogProbe};
use fuota_boot::sim::{SimFlash, SimFlashError};
use fuota_boot::{
    boot, confirm_image, read_boot_state, request_update, BootConfig, BootDecision, BootReport,
    FlashWindow, Layout, Phase, Region, RejectReason, UpdateResult, WindowError, DEVICE_STATE,
    STM32WL55JC,
};
use fuota_node::{
    Action, ErasableRegion, Eu868, FlashSessionStore, FlashStoreError, FuotaNode, Instant,
    LastUpdate, MacRecord, MacSession, NodeConfig, NodeParts, PendingUpdate, Platform,
    RandomSource, RunningImage, SessionStore, UpdateAgent, XorShiftRng, FRAGMENT_RECORD_LEN,
    RECORD_LORAWAN,
};
use lorawan::creator::DataPayloadCreator;
use lorawan::keys::{AppSKey, NewSKey};
use lorawan::parser::FCtrl;
use lorawan_fuota::codec::firmware_management::{
    Downlink as Ts006, UpgradeImageStatus, Uplink as Ts006Answer, REBOOT_COUNTDOWN_ASAP,
};
use lorawan_fuota::codec::fragmentation::{
    Downlink as Ts004, FragSessionSetup, SessionSetupV2, Uplink as Ts004Answer,
};
use lorawan_fuota::codec::multicast_setup::Downlink as Ts005;
use lorawan_fuota::codec::{decode_all, encode_all, Command, PackageVersion};
use lorawan_fuota::crypto::data_block_mic::{data_block_int_key, data_block_mic};
use lorawan_fuota::crypto::multicast::{
    encrypt_mc_key_for_wire, mc_app_s_key, mc_ke_key, mc_nwk_s_key, mc_root_key, LorawanVersion,
};
use lorawan_fuota::crypto::Key128;
use lorawan_fuota::fec::{FlashRegion, FragmentEncoder};
use lorawan_fuota::image::ImageVersion;

const GEN_APP_KEY: [u8; 16] = [
    0x2b, 0x7e, 0x15, 0x16, 0x28, 0xae, 0xd2, 0xa6, 0xab, 0xf7, 0x15, 0x88, 0x09, 0xcf, 0x4f, 0x3c,
];
const MC_KEY: [u8; 16] = [0x5c; 16];
const MC_ADDR: u32 = 0x2601_1234;
const HARDWARE: u32 = 0x0001_0203;
const FRAG_SIZE: usize = 48;
const LAYOUT: Layout = STM32WL55JC;
/// The FEC decoder's RAM the firmware lends the node.
const WORKSPACE: usize = 16 * 1024;

// ----- the device: flash regions, store, hand-over -----

type Chip = Rc<RefCell<SimFlash>>;

/// A region of the simulated chip, as the node's flash regions.
#[derive(Clone)]
struct Area {
    chip: Chip,
    region: Region,
}

impl Area {
    fn new(chip: &Chip, region: Region) -> Self {
        Area {
            chip: chip.clone(),
            region,
        }
    }
}

impl FlashRegion for Area {
    type Error = WindowError<SimFlashError>;

    fn write_granule(&self) -> usize {
        8
    }

    fn capacity(&self) -> usize {
        self.region.len as usize
    }

    fn read(&mut self, offset: usize, buffer: &mut [u8]) -> Result<(), Self::Error> {
        FlashWindow::new(&mut *self.chip.borrow_mut(), self.region).read_at(offset as u32, buffer)
    }

    fn write(&mut self, offset: usize, data: &[u8]) -> Result<(), Self::Error> {
        FlashWindow::new(&mut *self.chip.borrow_mut(), self.region).program_at(offset as u32, data)
    }
}

impl ErasableRegion for Area {
    fn erase_prefix(&mut self, len: usize) -> Result<(), Self::Error> {
        let len = u32::try_from(len).unwrap_or(u32::MAX);
        FlashWindow::new(&mut *self.chip.borrow_mut(), self.region).erase_prefix(len)
    }
}

/// The settings/journal store in the application state pages, shared with the test (the
/// firmware keeps its LoRaWAN record in it too).
#[derive(Clone)]
struct Store(Rc<RefCell<FlashSessionStore<Area>>>);

impl Store {
    fn open(chip: &Chip) -> Self {
        let areas = LAYOUT.app_state_areas();
        let store = FlashSessionStore::new(
            [
                Area::new(chip, areas.settings[0]),
                Area::new(chip, areas.settings[1]),
            ],
            Area::new(chip, areas.journal),
        )
        .expect("store geometry");
        Store(Rc::new(RefCell::new(store)))
    }
}

type StoreError = FlashStoreError<WindowError<SimFlashError>>;

impl SessionStore for Store {
    type Error = StoreError;

    fn load_state(&mut self, buffer: &mut [u8]) -> Result<Option<usize>, StoreError> {
        self.0.borrow_mut().load_state(buffer)
    }

    fn save_state(&mut self, record: &[u8]) -> Result<(), StoreError> {
        self.0.borrow_mut().save_state(record)
    }

    fn append_fragment(&mut self, record: &[u8; FRAGMENT_RECORD_LEN]) -> Result<(), StoreError> {
        self.0.borrow_mut().append_fragment(record)
    }

    fn read_fragment(
        &mut self,
        index: usize,
    ) -> Result<Option<[u8; FRAGMENT_RECORD_LEN]>, StoreError> {
        self.0.borrow_mut().read_fragment(index)
    }

    fn clear_fragments(&mut self) -> Result<(), StoreError> {
        self.0.borrow_mut().clear_fragments()
    }
}

/// The hand-over to the bootloader: the boot crate's application calls.
struct BootHandOver {
    chip: Chip,
    marked: Rc<RefCell<Vec<PendingUpdate>>>,
}

impl UpdateAgent for BootHandOver {
    type Error = String;

    fn mark_update_pending(&mut self, update: &PendingUpdate) -> Result<(), String> {
        request_update(&mut *self.chip.borrow_mut(), &LAYOUT).map_err(|e| format!("{e:?}"))?;
        self.marked.borrow_mut().push(*update);
        Ok(())
    }

    fn confirm_running_image(&mut self) -> Result<(), String> {
        confirm_image(&mut *self.chip.borrow_mut(), &LAYOUT)
            .map(|_| ())
            .map_err(|e| format!("{e:?}"))
    }
}

/// The node's xorshift64*, and a bounded draw for the test's channel.
type Rng = XorShiftRng;

fn below(rng: &mut Rng, bound: usize) -> usize {
    rng.next_u32() as usize % bound
}

struct Board;

impl Platform for Board {
    type FlashError = WindowError<SimFlashError>;
    type DownloadSlot = Area;
    type FecLog = Area;
    type Store = Store;
    type Rng = Rng;
    type Region = Eu868;
    type Updater = BootHandOver;
}

type Node<'w> = FuotaNode<'w, Board>;

/// The simulated device: its flash survives reboots, RAM does not.
struct Device {
    chip: Chip,
    keys: Vec<lorawan_fuota::image::TrustedKey>,
    marked: Rc<RefCell<Vec<PendingUpdate>>>,
    boots: u64,
    /// The node verifies signatures itself (false: as the STM32WL application, which
    /// leaves them to the bootloader).
    node_verifies_signatures: bool,
}

impl Device {
    /// A device whose primary slot holds `factory`.
    fn new(factory: &[u8]) -> Self {
        let mut flash = SimFlash::for_layout(&LAYOUT);
        flash.load(LAYOUT.primary.start, factory);
        Device {
            chip: Rc::new(RefCell::new(flash)),
            keys: vec![trusted(&signing_key(1))],
            marked: Rc::default(),
            boots: 0,
            node_verifies_signatures: true,
        }
    }

    /// Reset: the bootloader runs.
    fn reset(&mut self) -> BootReport {
        let mut config = BootConfig::new(LAYOUT, &self.keys);
        config.verify_options = config.verify_options.require_hardware(HARDWARE);
        let report = boot(
            &mut *self.chip.borrow_mut(),
            &config,
            &mut WatchdogProbe::default(),
        )
        .expect("boot with power on");
        assert!(self.chip.borrow().violations().is_empty());
        report
    }

    /// The application the bootloader jumped into starts the node (the firmware's
    /// start-up: what the boot state says about the running image goes to the node).
    fn start_node<'w>(
        &mut self,
        report: &BootReport,
        store: &Store,
        workspace: &'w mut [u8],
        now: Instant,
    ) -> Node<'w> {
        let BootDecision::Jump { image, trial } = report.decision else {
            panic!("bootloader halted: {:?}", report.decision);
        };
        self.boots += 1;
        let mut config = NodeConfig::new(
            Key128::from_bytes(GEN_APP_KEY),
            image.version.to_ts006(),
            HARDWARE,
        );
        config.max_uplink_payload = 242;
        config.trusted_keys.push(trusted(&signing_key(1))).unwrap();
        config.verify_signature = self.node_verifies_signatures;
        let running = RunningImage {
            on_trial: trial,
            last_update: report.state.last_update.map(LastUpdate::from),
        };
        let parts = NodeParts::<Board>::new(
            config,
            Area::new(&self.chip, LAYOUT.download_image()),
            Area::new(&self.chip, LAYOUT.fec_log),
            store.clone(),
            Rng::new(0x9E37_79B9_7F4A_7C15 ^ self.boots),
            Eu868,
            BootHandOver {
                chip: self.chip.clone(),
                marked: self.marked.clone(),
            },
        )
        .with_running_image(running);
        FuotaNode::start(parts, workspace, now).0
    }

    fn app_state_bytes(&self) -> Vec<u8> {
        let region = LAYOUT.app_state;
        self.chip.borrow().contents()[region.start as usize..region.end() as usize].to_vec()
    }

    fn region_bytes(&self, region: Region) -> Vec<u8> {
        self.chip.borrow().contents()[region.start as usize..region.end() as usize].to_vec()
    }
}

// ----- the agent side -----

fn encode<'a, C: Command<'a>>(commands: &[C]) -> Vec<u8> {
    let mut out = [0u8; 256];
    let length = encode_all(commands, &mut out).expect("encodable command");
    out[..length].to_vec()
}

/// The multicast group as the agent runs it.
struct McGroup {
    nwk_s_key: [u8; 16],
    app_s_key: [u8; 16],
    fcnt: u32,
}

impl McGroup {
    fn new() -> Self {
        let key = Key128::from_bytes(MC_KEY);
        McGroup {
            nwk_s_key: *mc_nwk_s_key(&key, MC_ADDR).as_bytes(),
            app_s_key: *mc_app_s_key(&key, MC_ADDR).as_bytes(),
            fcnt: 0,
        }
    }

    /// McGroupSetupReq with McKey encrypted under the device's McKEKey.
    fn setup_request(&self) -> Vec<u8> {
        let kek = mc_ke_key(&mc_root_key(
            LorawanVersion::V1_0,
            &Key128::from_bytes(GEN_APP_KEY),
        ));
        encode(&[Ts005::McGroupSetupReq {
            mc_group_id: 0,
            mc_addr: MC_ADDR,
            mc_key_encrypted: encrypt_mc_key_for_wire(&kek, &Key128::from_bytes(MC_KEY)),
            min_mc_fcnt: 0,
            max_mc_fcnt: u32::MAX,
        }])
    }

    /// The next multicast PHYPayload on `fport`.
    fn frame(&mut self, fport: u8, payload: &[u8]) -> Vec<u8> {
        let mut creator = DataPayloadCreator::new();
        creator
            .set_confirmed(false)
            .set_uplink(false)
            .set_dev_addr(&MC_ADDR.to_le_bytes())
            .set_fctrl(&FCtrl::new(0x00, false))
            .set_fcnt(self.fcnt)
            .set_f_port(fport);
        self.fcnt += 1;
        creator
            .build(
                payload,
                &[],
                &NewSKey::from(self.nwk_s_key),
                &AppSKey::from(self.app_s_key),
            )
            .expect("buildable frame")
            .to_vec()
    }
}

/// A data block and the session that carries it.
struct Campaign {
    block: Vec<u8>,
    session_cnt: u16,
    /// MIC sent in the setup (normally the block's).
    mic: [u8; 4],
}

impl Campaign {
    fn new(block: Vec<u8>, session_cnt: u16) -> Self {
        let mic = data_block_mic(
            &data_block_int_key(&Key128::from_bytes(GEN_APP_KEY)),
            session_cnt,
            0,
            DESCRIPTOR,
            &block,
        );
        Campaign {
            block,
            session_cnt,
            mic,
        }
    }

    fn encoder(&self) -> FragmentEncoder<'_> {
        FragmentEncoder::new(&self.block, FRAG_SIZE, PackageVersion::V2).expect("encoder")
    }

    fn setup_request(&self) -> Vec<u8> {
        let encoder = self.encoder();
        encode(&[Ts004::FragSessionSetupReq(FragSessionSetup {
            frag_index: 0,
            mc_group_bit_mask: 0b0001,
            nb_frag: encoder.nb_frag(),
            frag_size: FRAG_SIZE as u8,
            frag_algo: 0,
            block_ack_delay: 0,
            padding: encoder.padding() as u8,
            descriptor: DESCRIPTOR,
            v2: Some(SessionSetupV2 {
                ack_reception: false,
                session_cnt: self.session_cnt,
                mic: self.mic,
            }),
        })])
    }

    /// Fragment numbers the agent sends (all uncoded ones and a quarter more coded
    /// ones, shuffled) that reach the device (10 % lost).
    fn received_fragments(&self, rng: &mut Rng) -> Vec<u16> {
        let nb_frag = self.encoder().nb_frag();
        let mut numbers: Vec<u16> = (1..=nb_frag + nb_frag / 4).collect();
        for i in (1..numbers.len()).rev() {
            numbers.swap(i, below(rng, i + 1));
        }
        numbers.retain(|_| below(rng, 100) >= 10);
        numbers
    }

    fn data_fragment(&self, n: u16) -> Vec<u8> {
        let mut data = vec![0u8; FRAG_SIZE];
        self.encoder()
            .fragment(u32::from(n), &mut data)
            .expect("fragment");
        encode(&[Ts004::DataFragment {
            frag_index: 0,
            fragment_number: n,
            data: &data,
        }])
    }
}

const DESCRIPTOR: [u8; 4] = [0x13, 0x00, 0x00, 0x07];

/// Every uplink due at `now`, decoded per port.
fn answers(node: &mut Node<'_>, now: Instant) -> (Vec<Ts004Answer>, Vec<Ts006Answer>) {
    let mut ts004 = Vec::new();
    let mut ts006 = Vec::new();
    while let Some(uplink) = node.poll_uplink(now) {
        match uplink.fport {
            201 => ts004.extend(
                decode_all::<Ts004Answer>(&uplink.payload, PackageVersion::V2)
                    .map(|c| c.expect("valid TS004 answer")),
            ),
            203 => ts006.extend(
                decode_all::<Ts006Answer>(&uplink.payload, PackageVersion::V1)
                    .map(|c| c.expect("valid TS006 answer")),
            ),
            _ => {}
        }
    }
    (ts004, ts006)
}

/// Sends a TS006 request and returns the answer.
fn ts006(node: &mut Node<'_>, now: Instant, request: Ts006) -> Ts006Answer {
    node.handle_downlink(now, 203, &encode(&[request]));
    let (_, mut ts006) = answers(node, now);
    assert_eq!(ts006.len(), 1, "{ts006:?}");
    ts006.remove(0)
}

fn upgrade_image_status(node: &mut Node<'_>, now: Instant) -> UpgradeImageStatus {
    match ts006(node, now, Ts006::DevUpgradeImageReq) {
        Ts006Answer::DevUpgradeImageAns(status) => status,
        other => panic!("unexpected {other:?}"),
    }
}

fn running_version(node: &mut Node<'_>, now: Instant) -> u32 {
    match ts006(node, now, Ts006::DevVersionReq) {
        Ts006Answer::DevVersionAns {
            firmware_version,
            hardware_version,
        } => {
            assert_eq!(hardware_version, HARDWARE);
            firmware_version
        }
        other => panic!("unexpected {other:?}"),
    }
}

/// The agent runs a campaign: group setup and fragmentation session by unicast, the
/// fragments by multicast (shuffled, 10 % lost). Returns the setup answer.
fn transfer(node: &mut Node<'_>, now: Instant, campaign: &Campaign, seed: u64) -> Ts004Answer {
    let mut group = McGroup::new();
    node.handle_downlink(now, 200, &group.setup_request());
    node.handle_downlink(now, 201, &campaign.setup_request());
    let (mut ts004, _) = answers(node, now);
    assert_eq!(ts004.len(), 1, "{ts004:?}");
    let setup_answer = ts004.remove(0);
    let mut rng = Rng::new(seed);
    for n in campaign.received_fragments(&mut rng) {
        let frame = group.frame(201, &campaign.data_fragment(n));
        // Fragments after completion are still authentic frames; the package ignores them.
        node.handle_multicast_frame(now, &frame)
            .expect("authentic multicast frame");
    }
    setup_answer
}

/// FragSessionStatusReq by unicast: the v2 answer.
fn session_status(node: &mut Node<'_>, now: Instant) -> Ts004Answer {
    node.handle_downlink(
        now,
        201,
        &encode(&[Ts004::FragSessionStatusReq {
            frag_index: 0,
            participants_all: true,
        }]),
    );
    let later = now.plus_secs(600);
    let (mut ts004, _) = answers(node, later);
    assert_eq!(ts004.len(), 1, "{ts004:?}");
    ts004.remove(0)
}

/// DevRebootCountdownReq(ASAP): the node's reboot action.
fn reboot_now(node: &mut Node<'_>, now: Instant) -> bool {
    node.handle_downlink(
        now,
        203,
        &encode(&[Ts006::DevRebootCountdownReq {
            countdown: REBOOT_COUNTDOWN_ASAP,
        }]),
    );
    loop {
        match node.poll_action(now) {
            Some(Action::Reboot { install_update }) => return install_update,
            Some(_) => continue,
            None => panic!("no reboot action"),
        }
    }
}

fn image(major: u8, minor: u8, body_len: usize, key_seed: u8) -> Vec<u8> {
    ImageSpec::new(
        major,
        minor,
        body_len,
        u32::from(major) * 31 + u32::from(minor),
    )
    .with_header_size(0x200)
    .for_hardware(HARDWARE)
    .sign(&signing_key(key_seed))
}

fn ts006_of(major: u8, minor: u8) -> u32 {
    ImageVersion::new(major, minor, 0, 0).to_ts006()
}

const T0: Instant = Instant::from_secs(1_000);

/// A device running factory image 1.0 with the node up; the LoRaWAN record the firmware
/// keeps is saved (DevNonce 17, FCntUp 1234).
fn factory_device() -> (Device, Store) {
    let factory = image(1, 0, 40_000, 1);
    let device = Device::new(&factory);
    let store = Store::open(&device.chip);
    store
        .0
        .borrow_mut()
        .save_record(RECORD_LORAWAN, &lorawan_record(17, 1234))
        .expect("save LoRaWAN record");
    (device, store)
}

/// The firmware's MAC record (`fuota_node::MacRecord`, as the STM32WL application keeps
/// it): the next DevNonce and a session whose FCntUp reservation ends at `fcnt_up`.
fn lorawan_record(dev_nonce: u16, fcnt_up: u32) -> Vec<u8> {
    let record = MacRecord {
        next_dev_nonce: dev_nonce,
        session: Some(MacSession {
            dev_addr: 0x2601_0017,
            nwk_s_key: [0x11; 16],
            app_s_key: [0x22; 16],
            fcnt_up_limit: fcnt_up,
            fcnt_down: 9,
            data_rate: 5,
        }),
    };
    let (bytes, len) = record.encode();
    bytes[..len].to_vec()
}

fn saved_lorawan_record(store: &Store) -> Vec<u8> {
    let mut buffer = [0u8; 64];
    let len = store
        .0
        .borrow_mut()
        .load_record(RECORD_LORAWAN, &mut buffer)
        .expect("readable")
        .expect("present");
    buffer[..len].to_vec()
}

#[test]
fn a_signed_image_received_with_loss_installs_runs_and_confirms_after_a_downlink() {
    let (mut device, store) = factory_device();
    let mut workspace = vec![0u8; WORKSPACE];
    let report = device.reset();
    let mut node = device.start_node(&report, &store, &mut workspace, T0);
    assert_eq!(running_version(&mut node, T0), ts006_of(1, 0));

    // ~95 KB image (the largest the layout takes is 96 256 bytes), 48-byte fragments.
    let new = image(1, 1, 95_000, 1);
    let campaign = Campaign::new(new.clone(), 3);
    let nb_frag = campaign.encoder().nb_frag();
    assert!(nb_frag > 1900, "{nb_frag} fragments");
    assert!(matches!(
        transfer(&mut node, T0, &campaign, 0xF00D),
        Ts004Answer::FragSessionSetupAns {
            not_enough_memory: false,
            session_cnt_replay: false,
            ..
        }
    ));
    let fragmentation = node.stats().fragmentation;
    assert!(
        node.fragmentation_progress().expect("session").complete,
        "{fragmentation:?}"
    );
    let status = session_status(&mut node, T0);
    assert!(
        matches!(
            status,
            Ts004Answer::FragSessionStatusAnsV2 {
                mic_error: false,
                memory_error: false,
                session_does_not_exist: false,
                reception: Some(r),
            } if r.missing_frag == 0
        ),
        "{status:?}"
    );
    // The block is in the download image area, byte for byte.
    let area = LAYOUT.download_image();
    assert_eq!(
        device.region_bytes(Region::new(area.start, new.len() as u32)),
        new
    );
    assert_eq!(
        upgrade_image_status(&mut node, T0),
        UpgradeImageStatus::Valid {
            next_firmware_version: ts006_of(1, 1)
        }
    );
    assert!(reboot_now(&mut node, T0), "update handed to the bootloader");
    assert_eq!(device.marked.borrow().len(), 1);
    drop(node);

    // Reset: the bootloader verifies, swaps, starts the new image on trial. The state
    // that survives a swap is untouched by it.
    let app_state_before = device.app_state_bytes();
    let report = device.reset();
    assert_eq!(device.app_state_bytes(), app_state_before);
    assert!(matches!(
        report.decision,
        BootDecision::Jump { trial: true, image } if image.version.to_ts006() == ts006_of(1, 1)
    ));
    let t1 = T0.plus_secs(60);
    let mut workspace = vec![0u8; WORKSPACE];
    let mut node = device.start_node(&report, &store, &mut workspace, t1);
    assert!(node.image_on_trial());
    // Nothing heard yet: still on trial.
    while node.poll_action(t1).is_some() {}
    let _ = node.poll_uplink(t1);
    assert!(matches!(
        read_boot_state(&mut *device.chip.borrow_mut(), &LAYOUT).phase,
        Phase::Trial(_)
    ));
    // A downlink (the device joined and heard the network): the image confirms itself,
    // and DevVersionAns reports the new version.
    assert_eq!(running_version(&mut node, t1), ts006_of(1, 1));
    assert!(!node.image_on_trial());
    let state = read_boot_state(&mut *device.chip.borrow_mut(), &LAYOUT);
    assert_eq!(state.phase, Phase::Idle);
    assert_eq!(state.security_counter, ts006_of(1, 1));
    // The slot no longer holds the image (the swap moved it): no image to report.
    assert_eq!(
        upgrade_image_status(&mut node, t1),
        UpgradeImageStatus::NoImage
    );
    drop(node);

    // Next reset: the confirmed image runs, not on trial.
    let report = device.reset();
    assert!(matches!(
        report.decision,
        BootDecision::Jump { trial: false, .. }
    ));
    assert_eq!(
        report.state.last_update,
        Some(UpdateResult::Installed {
            version: ts006_of(1, 1)
        })
    );
    let mut workspace = vec![0u8; WORKSPACE];
    let mut node = device.start_node(&report, &store, &mut workspace, t1.plus_secs(60));
    assert_eq!(running_version(&mut node, t1), ts006_of(1, 1));
    assert!(!node.image_on_trial());
}

#[test]
fn device_state_defined_to_survive_a_swap_survives_install_and_revert() {
    let (mut device, store) = factory_device();
    let mut workspace = vec![0u8; WORKSPACE];
    let report = device.reset();
    let mut node = device.start_node(&report, &store, &mut workspace, T0);
    let campaign = Campaign::new(image(1, 1, 30_000, 1), 9);
    transfer(&mut node, T0, &campaign, 7);
    assert!(reboot_now(&mut node, T0));
    drop(node);
    let surviving: Vec<_> = DEVICE_STATE
        .iter()
        .filter(|row| row.survives_swap)
        .map(|row| LAYOUT.home_region(row.home))
        .collect();
    let security_counter =
        read_boot_state(&mut *device.chip.borrow_mut(), &LAYOUT).security_counter;
    let before: Vec<_> = surviving.iter().map(|r| device.region_bytes(*r)).collect();

    // Install, then the trial image never hears a downlink (it cannot join): revert.
    let report = device.reset();
    assert!(matches!(
        report.decision,
        BootDecision::Jump { trial: true, .. }
    ));
    for (row, (region, bytes)) in DEVICE_STATE
        .iter()
        .filter(|row| row.survives_swap && row.home != fuota_boot::Home::BootState)
        .zip(surviving.iter().zip(&before))
    {
        assert_eq!(
            &device.region_bytes(*region),
            bytes,
            "{:?} after install",
            row.state
        );
    }
    let report = device.reset();
    assert!(
        matches!(report.decision, BootDecision::Jump { trial: false, image } if image.version.to_ts006() == ts006_of(1, 0))
    );
    for (row, (region, bytes)) in DEVICE_STATE
        .iter()
        .filter(|row| row.survives_swap && row.home != fuota_boot::Home::BootState)
        .zip(surviving.iter().zip(&before))
    {
        assert_eq!(
            &device.region_bytes(*region),
            bytes,
            "{:?} after revert",
            row.state
        );
    }
    // The boot state pages are rewritten, but the security counter they carry is kept.
    assert_eq!(report.state.security_counter, security_counter);

    // The values the firmware and the node read back: the LoRaWAN record, and the TS004
    // SessionCnt replay guard (a setup with the same SessionCnt is a replay).
    assert_eq!(saved_lorawan_record(&store), lorawan_record(17, 1234));
    let mac = MacRecord::decode(&saved_lorawan_record(&store)).expect("the firmware reads it");
    assert_eq!(
        mac.next_dev_nonce, 17,
        "no DevNonce is used twice after a revert"
    );
    assert_eq!(mac.session.map(|s| s.fcnt_up_limit), Some(1234));
    let mut workspace = vec![0u8; WORKSPACE];
    let mut node = device.start_node(&report, &store, &mut workspace, T0.plus_secs(100));
    node.handle_downlink(T0, 201, &campaign.setup_request());
    let (ts004, _) = answers(&mut node, T0.plus_secs(100));
    assert!(
        matches!(
            ts004.as_slice(),
            [Ts004Answer::FragSessionSetupAns {
                session_cnt_replay: true,
                ..
            }]
        ),
        "{ts004:?}"
    );
}

/// A campaign whose image the node must refuse: the old image keeps running and the
/// failure is reported through TS006 (and nothing is handed to the bootloader).
fn refused_campaign(campaign: Campaign, expected: UpgradeImageStatus) {
    let (mut device, store) = factory_device();
    let mut workspace = vec![0u8; WORKSPACE];
    let report = device.reset();
    let mut node = device.start_node(&report, &store, &mut workspace, T0);
    transfer(&mut node, T0, &campaign, 11);
    assert!(node.fragmentation_progress().expect("session").complete);
    assert_eq!(upgrade_image_status(&mut node, T0), expected);
    assert!(!reboot_now(&mut node, T0), "nothing handed over");
    assert!(device.marked.borrow().is_empty());
    drop(node);
    let report = device.reset();
    assert!(
        matches!(report.decision, BootDecision::Jump { trial: false, image } if image.version.to_ts006() == ts006_of(1, 0))
    );
    let mut workspace = vec![0u8; WORKSPACE];
    let mut node = device.start_node(&report, &store, &mut workspace, T0.plus_secs(30));
    assert_eq!(running_version(&mut node, T0), ts006_of(1, 0));
    assert_eq!(upgrade_image_status(&mut node, T0), expected);
}

#[test]
fn a_badly_signed_image_is_refused_and_reported() {
    refused_campaign(
        Campaign::new(image(1, 1, 20_000, 2), 1),
        UpgradeImageStatus::CorruptOrBadSignature,
    );
}

/// The STM32WL application's node does not verify signatures (its slot cannot hold
/// ECDSA twice): a badly signed image passes its checks and is handed over, the
/// bootloader refuses it at the reset, the old image runs and reports the failure,
/// and the same image is not handed over again.
#[test]
fn a_badly_signed_image_the_node_leaves_to_the_bootloader_is_refused_and_reported() {
    let badly_signed = image(1, 1, 20_000, 2);
    hand_over_then(badly_signed, false, |device, _| {
        let report = device.reset();
        assert!(
            matches!(
                report.update,
                Some(UpdateResult::Rejected {
                    reason: RejectReason::KeyNotTrusted | RejectReason::BadSignature,
                    version: Some(v),
                }) if v == ts006_of(1, 1)
            ),
            "{:?}",
            report.update
        );
        report
    });
}

#[test]
fn a_downgrade_is_refused_and_reported() {
    refused_campaign(
        Campaign::new(image(0, 9, 20_000, 1), 1),
        UpgradeImageStatus::CorruptOrBadSignature,
    );
}

#[test]
fn a_truncated_image_is_refused_and_reported() {
    let mut truncated = image(1, 1, 20_000, 1);
    truncated.truncate(truncated.len() - 700);
    refused_campaign(
        Campaign::new(truncated, 1),
        UpgradeImageStatus::CorruptOrBadSignature,
    );
}

#[test]
fn a_block_that_fails_its_mic_is_reported_through_frag_session_status() {
    let (mut device, store) = factory_device();
    let mut workspace = vec![0u8; WORKSPACE];
    let report = device.reset();
    let mut node = device.start_node(&report, &store, &mut workspace, T0);
    let mut campaign = Campaign::new(image(1, 1, 20_000, 1), 1);
    // Before any fragment: the status says what is missing.
    node.handle_downlink(T0, 200, &McGroup::new().setup_request());
    node.handle_downlink(T0, 201, &campaign.setup_request());
    answers(&mut node, T0);
    let nb_frag = campaign.encoder().nb_frag();
    match session_status(&mut node, T0) {
        Ts004Answer::FragSessionStatusAnsV2 {
            mic_error: false,
            reception: Some(r),
            ..
        } => assert_eq!(u16::from(r.missing_frag), nb_frag.min(255)),
        other => panic!("{other:?}"),
    }
    // The agent's MIC does not match the block (a corrupted transfer).
    campaign.mic[0] ^= 0xFF;
    campaign.session_cnt = 2;
    transfer(&mut node, T0.plus_secs(700), &campaign, 5);
    assert!(matches!(
        session_status(&mut node, T0.plus_secs(700)),
        Ts004Answer::FragSessionStatusAnsV2 {
            mic_error: true,
            reception: Some(r),
            ..
        } if r.missing_frag == 0
    ));
    let later = T0.plus_secs(2_000);
    assert_eq!(
        upgrade_image_status(&mut node, later),
        UpgradeImageStatus::CorruptOrBadSignature
    );
    assert!(!reboot_now(&mut node, later));
    drop(node);
    let report = device.reset();
    assert!(
        matches!(report.decision, BootDecision::Jump { trial: false, image } if image.version.to_ts006() == ts006_of(1, 0))
    );
}

/// The node hands a valid image over; `after_hand_over` then acts on the flash and on
/// the next boots, and returns the report of the boot that runs the old image again.
fn handed_over_then(after_hand_over: impl FnOnce(&mut Device, &Store) -> BootReport) {
    hand_over_then(image(1, 1, 20_000, 1), true, after_hand_over)
}

/// The node (verifying signatures itself or not) finds `new` (version 1.1) valid and
/// hands it over; `after_hand_over` acts as in [`handed_over_then`]. The old image then
/// runs, reports the failed update, and does not hand the same image over again.
fn hand_over_then(
    new: Vec<u8>,
    node_verifies_signatures: bool,
    after_hand_over: impl FnOnce(&mut Device, &Store) -> BootReport,
) {
    let (mut device, store) = factory_device();
    device.node_verifies_signatures = node_verifies_signatures;
    let mut workspace = vec![0u8; WORKSPACE];
    let report = device.reset();
    let mut node = device.start_node(&report, &store, &mut workspace, T0);
    transfer(&mut node, T0, &Campaign::new(new, 4), 3);
    assert_eq!(
        upgrade_image_status(&mut node, T0),
        UpgradeImageStatus::Valid {
            next_firmware_version: ts006_of(1, 1)
        }
    );
    assert!(reboot_now(&mut node, T0));
    drop(node);
    let report = after_hand_over(&mut device, &store);
    assert!(
        matches!(report.decision, BootDecision::Jump { trial: false, image } if image.version.to_ts006() == ts006_of(1, 0))
    );
    // The old image runs and reports the failed update; a new reboot request does not
    // hand the same image over again.
    let t = T0.plus_secs(500);
    let mut workspace = vec![0u8; WORKSPACE];
    let mut node = device.start_node(&report, &store, &mut workspace, t);
    assert_eq!(running_version(&mut node, t), ts006_of(1, 0));
    assert_eq!(
        upgrade_image_status(&mut node, t),
        UpgradeImageStatus::CorruptOrBadSignature
    );
    assert!(!reboot_now(&mut node, t));
    assert_eq!(device.marked.borrow().len(), 1);
    drop(node);
    let report = device.reset();
    assert!(matches!(
        report.decision,
        BootDecision::Jump { trial: false, .. }
    ));
}

#[test]
fn an_image_damaged_after_the_hand_over_is_rejected_by_the_bootloader_and_reported() {
    handed_over_then(|device, _| {
        // A bit flips in the download slot between verification and reset.
        let offset = LAYOUT.download_image().start + 0x400;
        let mut damaged = device.region_bytes(Region::new(offset, 8));
        damaged[3] ^= 0x01;
        device.chip.borrow_mut().load(offset, &damaged);
        let report = device.reset();
        assert!(matches!(
            report.update,
            Some(UpdateResult::Rejected { version: Some(v), .. }) if v == ts006_of(1, 1)
        ));
        report
    });
}

#[test]
fn a_trial_image_that_hangs_is_reverted_and_reported() {
    handed_over_then(|device, _| {
        let report = device.reset();
        assert!(matches!(
            report.decision,
            BootDecision::Jump { trial: true, .. }
        ));
        // The new image hangs before it runs the node: the watchdog resets it.
        device.reset()
    });
}

#[test]
fn a_trial_image_that_cannot_join_is_reverted_and_reported() {
    handed_over_then(|device, store| {
        let report = device.reset();
        assert!(matches!(
            report.decision,
            BootDecision::Jump { trial: true, .. }
        ));
        // The new image runs the node for an hour but never joins, so it never hears a
        // downlink and never confirms; then it gives up and resets.
        let mut workspace = vec![0u8; WORKSPACE];
        let mut node = device.start_node(&report, store, &mut workspace, T0);
        for minute in 0..60 {
            let now = T0.plus_secs(60 * minute);
            while node.poll_action(now).is_some() {}
            while node.poll_uplink(now).is_some() {}
        }
        assert!(node.image_on_trial());
        drop(node);
        device.reset()
    });
}

#[test]
fn the_largest_session_the_layout_allows_resumes_from_a_journal_that_fits_its_4_kb() {
    // The block fills the download image area: 96 256 bytes = 2 005 fragments of 48.
    let (mut device, store) = factory_device();
    let body_len = LAYOUT.max_image_len() as usize - 0x200 - 200;
    let mut new = image(1, 1, body_len, 1);
    assert!(new.len() <= LAYOUT.max_image_len() as usize);
    let campaign = {
        // Pad the block to the last byte of the area (the image verifies with padding).
        new.resize(LAYOUT.max_image_len() as usize - 16, 0xFF);
        Campaign::new(new.clone(), 21)
    };
    let nb_frag = campaign.encoder().nb_frag();
    assert_eq!(nb_frag, 2005);
    let journal_capacity = store.0.borrow().journal_capacity();
    assert_eq!(journal_capacity * FRAGMENT_RECORD_LEN, 4096);

    // In order (as the agent sends), 10 % lost; power fails at 70 % of the uncoded ones.
    let mut rng = Rng::new(77);
    let arriving: Vec<u16> = (1..=nb_frag)
        .filter(|_| below(&mut rng, 100) >= 10)
        .collect();
    let cut = arriving.iter().position(|&n| n > nb_frag * 7 / 10).unwrap();
    let mut group = McGroup::new();
    let mut workspace = vec![0u8; WORKSPACE];
    let report = device.reset();
    {
        let mut node = device.start_node(&report, &store, &mut workspace, T0);
        node.handle_downlink(T0, 200, &group.setup_request());
        node.handle_downlink(T0, 201, &campaign.setup_request());
        answers(&mut node, T0);
        for &n in &arriving[..cut] {
            let frame = group.frame(201, &campaign.data_fragment(n));
            node.handle_multicast_frame(T0, &frame).expect("accepted");
        }
        assert_eq!(node.stats().fragmentation.journal_failures, 0);
        // Power cut: no flush.
    }
    let records = store.0.borrow().journal_len();
    assert!(
        records * FRAGMENT_RECORD_LEN <= 4096 && records <= usize::from(nb_frag) / 40 + 2,
        "{records} journal records"
    );
    let report = device.reset();
    assert!(matches!(
        report.decision,
        BootDecision::Jump { trial: false, .. }
    ));
    let t1 = T0.plus_secs(30);
    let mut workspace = vec![0u8; WORKSPACE];
    let mut node = device.start_node(&report, &store, &mut workspace, t1);
    let kept = node.fragmentation_progress().expect("resumed").received as usize;
    assert!(kept <= cut && kept + 39 >= cut, "kept {kept} of {cut}");
    // The rest, then coded fragments, until complete.
    for &n in &arriving[cut..] {
        let frame = group.frame(201, &campaign.data_fragment(n));
        node.handle_multicast_frame(t1, &frame).expect("accepted");
    }
    let mut coded = nb_frag + 1;
    while !node.fragmentation_progress().unwrap().complete {
        assert!(coded < 2 * nb_frag, "block not complete");
        if below(&mut rng, 100) >= 10 {
            let frame = group.frame(201, &campaign.data_fragment(coded));
            node.handle_multicast_frame(t1, &frame).expect("accepted");
        }
        coded += 1;
    }
    assert_eq!(node.stats().fragmentation.journal_failures, 0);
    assert!(store.0.borrow().journal_len() * FRAGMENT_RECORD_LEN <= 4096);
    assert_eq!(
        upgrade_image_status(&mut node, t1),
        UpgradeImageStatus::Valid {
            next_firmware_version: ts006_of(1, 1)
        }
    );
    assert!(reboot_now(&mut node, t1));
    drop(node);
    let report = device.reset();
    assert!(
        matches!(report.decision, BootDecision::Jump { trial: true, image } if image.version.to_ts006() == ts006_of(1, 1))
    );
}

/// Saves of the store script: (kind, payload).
fn store_script() -> Vec<(u8, Vec<u8>)> {
    (0..14u8)
        .map(|i| {
            let kind = if i % 3 == 2 {
                RECORD_LORAWAN
            } else {
                fuota_node::RECORD_NODE_STATE
            };
            let len = [40usize, 300, 7, 220, 1, 311][usize::from(i) % 6];
            (kind, vec![i.wrapping_mul(37) ^ 0x5A; len])
        })
        .collect()
}

fn load(store: &mut FlashSessionStore<Area>, kind: u8) -> Option<Vec<u8>> {
    let mut buffer = [0u8; 400];
    store
        .load_record(kind, &mut buffer)
        .expect("readable")
        .map(|len| buffer[..len].to_vec())
}

fn open_store(chip: &Chip) -> FlashSessionStore<Area> {
    let areas = LAYOUT.app_state_areas();
    FlashSessionStore::new(
        [
            Area::new(chip, areas.settings[0]),
            Area::new(chip, areas.settings[1]),
        ],
        Area::new(chip, areas.journal),
    )
    .expect("geometry")
}

#[test]
fn the_session_store_keeps_the_old_or_the_new_record_at_every_power_cut() {
    let script = store_script();
    // Operations the whole script takes without a cut.
    let chip: Chip = Rc::new(RefCell::new(SimFlash::for_layout(&LAYOUT)));
    let start = chip.borrow().operations();
    let mut store = open_store(&chip);
    for (kind, payload) in &script {
        store.save_record(*kind, payload).expect("save");
    }
    let total = chip.borrow().operations() - start;
    assert!(total > 100, "{total} operations");
    let mut scenarios = 0;
    for torn_reads in [
        fuota_boot::sim::TornReads::EccFault,
        fuota_boot::sim::TornReads::Garbage,
    ] {
        for cut in 0..total {
            for timing in fuota_boot::sim::CutTiming::ALL {
                scenarios += 1;
                let mut flash = SimFlash::for_layout(&LAYOUT).with_seed(cut * 3 + 1);
                flash.set_torn_reads(torn_reads);
                let chip: Chip = Rc::new(RefCell::new(flash));
                let mut store = open_store(&chip);
                chip.borrow_mut().cut_power_in(cut, timing);
                let mut done: [Option<Vec<u8>>; 2] = [None, None];
                let mut cut_during = None;
                for (kind, payload) in &script {
                    if store.save_record(*kind, payload).is_err() {
                        cut_during = Some((*kind, payload.clone()));
                        break;
                    }
                    done[usize::from(*kind - 1)] = Some(payload.clone());
                }
                assert!(!chip.borrow().is_powered(), "cut {cut} {timing:?} struck");
                chip.borrow_mut().power_cycle();
                let mut store = open_store(&chip);
                for kind in [fuota_node::RECORD_NODE_STATE, RECORD_LORAWAN] {
                    let found = load(&mut store, kind);
                    let old = &done[usize::from(kind - 1)];
                    let ok = found == *old
                        || matches!(&cut_during, Some((k, new)) if *k == kind && found.as_ref() == Some(new));
                    assert!(
                        ok,
                        "cut {cut} {timing:?} {torn_reads:?}: kind {kind} reads {:?}",
                        found.map(|f| f.len())
                    );
                }
                // The store goes on working after the cut, programming nothing twice.
                store
                    .save_record(RECORD_LORAWAN, b"after")
                    .expect("save after the cut");
                assert_eq!(
                    load(&mut store, RECORD_LORAWAN).as_deref(),
                    Some(&b"after"[..])
                );
                assert!(
                    chip.borrow().violations().is_empty(),
                    "cut {cut} {timing:?}"
                );
            }
        }
    }
    assert!(scenarios > 600);
}
