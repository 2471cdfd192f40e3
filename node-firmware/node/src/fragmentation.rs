//! TS004 fragmented data block transport, device side (FPort 201, v1 and v2): session
//! setup, status, deletion, fragments and what happens when a block is complete. The
//! slot, the decoder and resume live in [`crate::fragment_store`].
//!
//! - FragSessionSetupReq sets every error bit that applies: FragAlgo ≠ 0 (algorithm
//!   unsupported), FragIndex beyond the configured count (index unsupported), a block
//!   the slot cannot hold, a decoder whose RAM or log need exceeds what the device has
//!   at the configured minimum FEC capacity, invalid block parameters, or the slot busy
//!   with a receiving session of another index (not enough memory), and in v2 a
//!   SessionCnt not above the last accepted one (SessionCnt replay; the last accepted
//!   value is persisted, one counter per device). An accepted setup replaces the
//!   session of its index.
//! - DataFragment is taken by unicast, or by multicast on a group of the session's
//!   McGroupBitMask; anything else is ignored.
//! - FragSessionStatusReq is answered with the v1 or v2 layout (NbFragReceived
//!   saturating at 16383, MissingFrag at 255), only by devices still missing fragments
//!   when Participants = 0. Answers to a multicast request are delayed by a uniformly
//!   random time in [0, 2^(BlockAckDelay+4)] s, so a group does not answer at once;
//!   a unicast request (one device asked) is answered at the next uplink. The answer is
//!   built when it is sent, so it reports the progress at that time. A v2 device with
//!   no session answers SessionDoesNotExist; v1 has no way to say so and stays silent.
//! - On completion: v2 checks the MIC over the unpadded block read back from the slot
//!   (incremental `DataBlockMic`), records the result, and with AckReception sends
//!   FragDataBlockReceivedReq after the random delay, repeating it until
//!   FragDataBlockReceivedAns (up to the configured number of attempts). The Class C
//!   session of the session's groups ends.

use lorawan_fuota::codec::fragmentation::{
    Downlink, FragSessionSetup, ReceptionStatus, Uplink, MAX_FRAGMENT_NUMBER,
};
use lorawan_fuota::codec::{decode_all, Package, PackageVersion, PackageVersionAns};
use lorawan_fuota::crypto::data_block_mic::{data_block_int_key, DataBlockMic};
use lorawan_fuota::crypto::Key128;
use lorawan_fuota::fec::decoder::DecoderConfig;
use lorawan_fuota::fec::{DecoderError, FragmentOutcome};

use crate::fragment_store::regions::RegionError;
use crate::fragment_store::{Begin, FragmentStore, ResumeSummary, SlotContent};
use crate::outbox::{append_command, Outbox, UplinkPayload};
use crate::platform::{random_up_to, Platform, RandomSource, SessionStore};
use crate::report::PackageReport;
use crate::time::Instant;

/// Shortest spacing of FragDataBlockReceivedReq repetitions.
const MIN_ACK_RETRY_SECS: u64 = 16;

/// Outcome of the v2 data-block MIC check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MicCheck {
    /// TS004 v1: there is no MIC.
    NotApplicable,
    /// The block's MIC matches the setup's.
    Passed,
    /// It does not: the block must not be used.
    Failed,
}

/// Where a session stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SessionPhase {
    Receiving,
    Complete(MicCheck),
}

/// The persisted part of a fragmentation session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SessionRecord {
    /// TS004 version the setup was decoded with.
    pub version: PackageVersion,
    /// The setup as received.
    pub setup: FragSessionSetup,
    /// Decoder capacity chosen at setup (L_max).
    pub max_lost: u16,
    /// Journal epoch (generation mod 4).
    pub epoch: u8,
    /// Slot and log were erased for this session.
    pub slot_prepared: bool,
    /// Progress.
    pub phase: SessionPhase,
    /// FragDataBlockReceivedReq still to be acknowledged.
    pub block_received_pending: bool,
}

impl SessionRecord {
    fn decoder_config(&self) -> DecoderConfig {
        DecoderConfig {
            nb_frag: self.setup.nb_frag,
            frag_size: u16::from(self.setup.frag_size),
            max_lost: self.max_lost,
            version: self.version,
        }
    }

    fn block_bytes(&self) -> usize {
        usize::from(self.setup.nb_frag) * usize::from(self.setup.frag_size)
    }
}

/// Progress of the fragmentation session, for the firmware.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FragmentationProgress {
    /// FragIndex.
    pub frag_index: u8,
    /// NbFrag.
    pub nb_frag: u16,
    /// Fragments received for the session (any kind, duplicates included).
    pub received: u32,
    /// Uncoded fragments neither received nor rebuilt.
    pub missing: u16,
    /// The block is complete.
    pub complete: bool,
    /// The v2 MIC result once complete.
    pub mic: Option<MicCheck>,
    /// The decoder ran out of log space or flash failed: the block may not complete.
    pub memory_error: bool,
    /// The decoder's capacity (L_max) chosen for this session.
    pub max_lost: u16,
}

/// Counters of the fragmentation package.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct FragmentationStats {
    /// DataFragments fed to the decoder.
    pub fragments_received: u32,
    /// DataFragments ignored (no session, other index, group not allowed, bad length).
    pub fragments_ignored: u32,
    /// Journal appends that failed (those fragments would be lost on a reboot).
    pub journal_failures: u32,
    /// Flash failures while storing fragments.
    pub flash_errors: u32,
}

/// Where a command came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Source {
    Unicast,
    Multicast { mc_group_id: u8 },
}

/// What the node must do after the fragmentation package handled something.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct FragmentationEvents {
    /// Persisted state changed.
    pub changed: bool,
    /// The slot content changed (image verification must be redone).
    pub slot_changed: bool,
    /// A block completed; the Class C sessions of these groups end.
    pub completed_groups: Option<u8>,
}

impl FragmentationEvents {
    fn merge(&mut self, other: FragmentationEvents) {
        self.changed |= other.changed;
        self.slot_changed |= other.slot_changed;
        if other.completed_groups.is_some() {
            self.completed_groups = other.completed_groups;
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct StatusAnswer {
    due: Instant,
    frag_index: u8,
    participants_all: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct BlockReceivedRetry {
    due: Instant,
    attempts: u8,
}

/// Sizing limits of a fragmentation session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct FragmentationLimits {
    pub supported_indexes: u8,
    pub fec_capacity_percent: u8,
    pub fec_minimum_percent: u8,
    pub block_received_attempts: u8,
}

/// TS004 state; see the module documentation.
#[derive(Debug, Clone)]
pub(crate) struct Fragmentation {
    version: PackageVersion,
    limits: FragmentationLimits,
    data_block_int_key: Key128,
    pub session: Option<SessionRecord>,
    pub last_session_cnt: Option<u16>,
    pub generation: u8,
    received: u32,
    /// Coded fragments received since the session started (or resumed).
    coded_received: u32,
    memory_error: bool,
    status_answer: Option<StatusAnswer>,
    block_received: Option<BlockReceivedRetry>,
    /// A new session waits for the decoder workspace (Action::RecycleWorkspace).
    pub recycle_requested: bool,
    stats: FragmentationStats,
}

impl Fragmentation {
    /// No session.
    pub fn new(version: PackageVersion, limits: FragmentationLimits, root_key: &Key128) -> Self {
        Fragmentation {
            version,
            limits,
            data_block_int_key: data_block_int_key(root_key),
            session: None,
            last_session_cnt: None,
            generation: 0,
            received: 0,
            coded_received: 0,
            memory_error: false,
            status_answer: None,
            block_received: None,
            recycle_requested: false,
            stats: FragmentationStats::default(),
        }
    }

    /// Counters.
    pub fn stats(&self) -> FragmentationStats {
        self.stats
    }

    /// Progress of the session, if one exists.
    pub fn progress<P: Platform>(
        &self,
        store: &FragmentStore<'_, P>,
    ) -> Option<FragmentationProgress> {
        let session = self.session?;
        let (complete, mic) = match session.phase {
            SessionPhase::Receiving => (false, None),
            SessionPhase::Complete(mic) => (true, Some(mic)),
        };
        let missing = match (complete, store.status()) {
            (true, _) => 0,
            (false, Some(status)) => status.missing,
            (false, None) => session.setup.nb_frag,
        };
        // Coded fragments flowing while more uncoded ones are missing than the decoder
        // can rebuild: the server is past the uncoded fragments and this block will not
        // complete unless they are sent again (LoRaMac-node's rule, order-independent).
        let beyond_capacity = !complete && self.coded_received > 0 && missing > session.max_lost;
        Some(FragmentationProgress {
            frag_index: session.setup.frag_index,
            nb_frag: session.setup.nb_frag,
            received: self.received,
            missing,
            complete,
            mic,
            // Coded fragments dropped for want of log space while the block still
            // completed were not an error of the session.
            memory_error: !complete && (self.memory_error || beyond_capacity),
            max_lost: session.max_lost,
        })
    }

    /// Continues the persisted session after a start (reboot or recycle).
    pub fn resume<P: Platform>(
        &mut self,
        now: Instant,
        store: &mut FragmentStore<'_, P>,
        journal: &mut P::Store,
        rng: &mut P::Rng,
    ) -> (Option<ResumeSummary>, FragmentationEvents) {
        let mut events = FragmentationEvents::default();
        self.recycle_requested = false;
        let Some(mut session) = self.session else {
            return (None, events);
        };
        if let SessionPhase::Complete(_) = session.phase {
            if session.block_received_pending {
                self.schedule_block_received(now, &session, rng, 0);
            }
            return (None, events);
        }
        if !session.slot_prepared {
            if store.erase_slot(session.block_bytes()).is_err() {
                self.memory_error = true;
                return (None, events);
            }
            session.slot_prepared = true;
            self.session = Some(session);
            events.changed = true;
        }
        match store.resume(session.decoder_config(), session.epoch, journal) {
            Ok(summary) => {
                self.received = summary.replayed;
                self.coded_received = 0;
                if summary.completed {
                    events.merge(self.complete(now, store, rng));
                }
                (Some(summary), events)
            }
            Err(_) => {
                self.memory_error = true;
                (None, events)
            }
        }
    }

    /// Handles one FRMPayload received on the TS004 port, by unicast or multicast.
    #[allow(clippy::too_many_arguments)]
    pub fn handle<P: Platform>(
        &mut self,
        now: Instant,
        payload: &[u8],
        fport: u8,
        source: Source,
        outbox: &mut Outbox,
        store: &mut FragmentStore<'_, P>,
        journal: &mut P::Store,
        rng: &mut P::Rng,
    ) -> (PackageReport, FragmentationEvents) {
        let mut report = PackageReport::new(Package::Fragmentation);
        let mut events = FragmentationEvents::default();
        for command in decode_all::<Downlink<'_>>(payload, self.version) {
            let command = match command {
                Ok(command) => command,
                Err(error) => {
                    report.decode_error = Some(error);
                    break;
                }
            };
            let multicast_allowed = matches!(
                command,
                Downlink::FragSessionStatusReq { .. } | Downlink::DataFragment { .. }
            );
            if matches!(source, Source::Multicast { .. }) && !multicast_allowed {
                report.ignored();
                continue;
            }
            match command {
                Downlink::PackageVersionReq => {
                    let answer =
                        PackageVersionAns::for_package(Package::Fragmentation, self.version);
                    outbox.push(now, fport, &Uplink::PackageVersionAns(answer));
                    report.handled();
                }
                Downlink::FragSessionStatusReq {
                    frag_index,
                    participants_all,
                } => {
                    self.status_request(now, frag_index, participants_all, source, rng);
                    report.handled();
                }
                Downlink::FragSessionSetupReq(setup) => {
                    let (answer, setup_events) = self.setup(setup, store, journal);
                    events.merge(setup_events);
                    outbox.push(now, fport, &answer);
                    report.handled();
                }
                Downlink::FragSessionDeleteReq { frag_index } => {
                    let exists = self
                        .session
                        .is_some_and(|s| s.setup.frag_index == frag_index);
                    if exists {
                        self.session = None;
                        self.status_answer = None;
                        self.block_received = None;
                        store.release_decoder();
                        events.changed = true;
                    }
                    outbox.push(
                        now,
                        fport,
                        &Uplink::FragSessionDeleteAns {
                            frag_index,
                            session_does_not_exist: !exists,
                        },
                    );
                    report.handled();
                }
                Downlink::FragDataBlockReceivedAns { frag_index } => match &mut self.session {
                    Some(session)
                        if session.setup.frag_index == frag_index
                            && session.block_received_pending =>
                    {
                        session.block_received_pending = false;
                        self.block_received = None;
                        events.changed = true;
                        report.handled();
                    }
                    _ => report.ignored(),
                },
                Downlink::DataFragment {
                    frag_index,
                    fragment_number,
                    data,
                } => {
                    match self.fragment(
                        now,
                        frag_index,
                        fragment_number,
                        data,
                        source,
                        store,
                        journal,
                        rng,
                    ) {
                        Some(fragment_events) => {
                            events.merge(fragment_events);
                            report.handled();
                        }
                        None => {
                            self.count_late_fragment(frag_index, source);
                            self.stats.fragments_ignored =
                                self.stats.fragments_ignored.saturating_add(1);
                            report.ignored();
                        }
                    }
                }
            }
        }
        (report, events)
    }

    fn status_request(
        &mut self,
        now: Instant,
        frag_index: u8,
        participants_all: bool,
        source: Source,
        rng: &mut impl RandomSource,
    ) {
        let due = match source {
            Source::Unicast => now,
            Source::Multicast { .. } => {
                let block_ack_delay = self.session.map_or(0, |s| s.setup.block_ack_delay);
                now.plus_millis(random_up_to(rng, max_answer_delay_ms(block_ack_delay)))
            }
        };
        self.status_answer = Some(StatusAnswer {
            due,
            frag_index,
            participants_all,
        });
    }

    fn setup<P: Platform>(
        &mut self,
        setup: FragSessionSetup,
        store: &mut FragmentStore<'_, P>,
        journal: &mut P::Store,
    ) -> (Uplink, FragmentationEvents) {
        let mut events = FragmentationEvents::default();
        let frag_algo_unsupported = setup.frag_algo != 0;
        let frag_index_unsupported = setup.frag_index >= self.limits.supported_indexes;
        let session_cnt_replay = match (setup.v2, self.last_session_cnt) {
            (Some(v2), Some(last)) => v2.session_cnt <= last,
            _ => false,
        };
        let slot_busy = self.session.is_some_and(|s| {
            s.setup.frag_index != setup.frag_index && s.phase == SessionPhase::Receiving
        });
        let plan = match setup.block_size() {
            Ok(_) if !slot_busy => store
                .plan(
                    setup.nb_frag,
                    setup.frag_size,
                    self.version,
                    self.limits.fec_capacity_percent,
                    self.limits.fec_minimum_percent,
                )
                .ok(),
            _ => None,
        };
        let mut answer = Uplink::FragSessionSetupAns {
            frag_index: setup.frag_index,
            frag_algo_unsupported,
            not_enough_memory: plan.is_none(),
            frag_index_unsupported,
            wrong_descriptor: false,
            session_cnt_replay,
        };
        let Some(config) = plan else {
            return (answer, events);
        };
        if frag_algo_unsupported || frag_index_unsupported || session_cnt_replay {
            return (answer, events);
        }
        let mut record = SessionRecord {
            version: self.version,
            setup,
            max_lost: config.max_lost,
            epoch: 0,
            slot_prepared: false,
            phase: SessionPhase::Receiving,
            block_received_pending: false,
        };
        // The journal is cleared first: a record of the old session must never be read
        // as one of the new (the epoch guards against a failed clear).
        let _ = journal.clear_fragments();
        self.generation = self.generation.wrapping_add(1);
        record.epoch = self.generation & 0x03;
        match store.begin(config, record.block_bytes()) {
            Ok(Begin::Started | Begin::Reused) => record.slot_prepared = true,
            // Prepared on resume, once the firmware gave the workspace back; the old
            // decoder must not see a fragment of the new session meanwhile.
            Ok(Begin::NeedsWorkspace) => {
                store.release_decoder();
                self.recycle_requested = true;
            }
            Err(_) => {
                store.content = SlotContent::Partial;
                events.slot_changed = true;
                if let Uplink::FragSessionSetupAns {
                    not_enough_memory, ..
                } = &mut answer
                {
                    *not_enough_memory = true;
                }
                return (answer, events);
            }
        }
        if let Some(v2) = setup.v2 {
            self.last_session_cnt = Some(v2.session_cnt);
        }
        self.session = Some(record);
        self.received = 0;
        self.coded_received = 0;
        self.memory_error = false;
        self.status_answer = None;
        self.block_received = None;
        store.content = SlotContent::Partial;
        events.changed = true;
        events.slot_changed = true;
        (answer, events)
    }

    /// A fragment of a session whose block is already complete is not used, but it is
    /// counted in NbFragReceived: the server measures each device's loss from that
    /// count and the frames it sent, and a count that stopped at completion would make
    /// a device that lost less than expected look as if it lost more.
    fn count_late_fragment(&mut self, frag_index: u8, source: Source) {
        let Some(session) = self.session else {
            return;
        };
        let for_this_session = session.setup.frag_index == frag_index
            && matches!(session.phase, SessionPhase::Complete(_))
            && match source {
                Source::Multicast { mc_group_id } => {
                    session.setup.mc_group_bit_mask & (1 << mc_group_id) != 0
                }
                Source::Unicast => true,
            };
        if for_this_session {
            self.received = self.received.saturating_add(1);
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn fragment<P: Platform>(
        &mut self,
        now: Instant,
        frag_index: u8,
        number: u16,
        data: &[u8],
        source: Source,
        store: &mut FragmentStore<'_, P>,
        journal: &mut P::Store,
        rng: &mut P::Rng,
    ) -> Option<FragmentationEvents> {
        let session = self.session?;
        if session.setup.frag_index != frag_index
            || session.phase != SessionPhase::Receiving
            || !session.slot_prepared
        {
            return None;
        }
        if let Source::Multicast { mc_group_id } = source {
            if session.setup.mc_group_bit_mask & (1 << mc_group_id) == 0 {
                return None;
            }
        }
        match store.push(number, data, session.epoch, journal) {
            Ok((outcome, journal_failed)) => {
                self.received = self.received.saturating_add(1);
                if number > session.setup.nb_frag {
                    self.coded_received = self.coded_received.saturating_add(1);
                }
                self.stats.fragments_received = self.stats.fragments_received.saturating_add(1);
                if journal_failed {
                    self.stats.journal_failures = self.stats.journal_failures.saturating_add(1);
                }
                match outcome {
                    FragmentOutcome::DroppedNoSpace => self.memory_error = true,
                    FragmentOutcome::Completed => return Some(self.complete(now, store, rng)),
                    _ => {}
                }
                Some(FragmentationEvents::default())
            }
            Err(Some(DecoderError::LogFull)) => {
                self.memory_error = true;
                Some(FragmentationEvents::default())
            }
            Err(Some(DecoderError::Flash(error))) => {
                self.stats.flash_errors = self.stats.flash_errors.saturating_add(1);
                if let RegionError::Conflict { .. } = error {
                    self.memory_error = true;
                }
                Some(FragmentationEvents::default())
            }
            // Wrong length or counter, or no decoder yet (waiting for the workspace).
            Err(_) => None,
        }
    }

    /// The block is complete: MIC check, persistence, acknowledgement.
    fn complete<P: Platform>(
        &mut self,
        now: Instant,
        store: &mut FragmentStore<'_, P>,
        rng: &mut P::Rng,
    ) -> FragmentationEvents {
        let mut events = FragmentationEvents::default();
        let Some(mut session) = self.session else {
            return events;
        };
        let block_len = session.setup.block_size().unwrap_or(0);
        let mic = match session.setup.v2 {
            None => MicCheck::NotApplicable,
            Some(v2) => {
                let mut check = DataBlockMic::new(
                    &self.data_block_int_key,
                    v2.session_cnt,
                    session.setup.frag_index,
                    session.setup.descriptor,
                    block_len,
                );
                let mut chunk = [0u8; 256];
                let mut offset = 0usize;
                let total = block_len as usize;
                let mut read_failed = false;
                while offset < total {
                    let n = (total - offset).min(chunk.len());
                    if store.read(offset, &mut chunk[..n]).is_err() {
                        read_failed = true;
                        break;
                    }
                    check.update(&chunk[..n]);
                    offset += n;
                }
                if !read_failed && check.verify(&v2.mic) {
                    MicCheck::Passed
                } else {
                    MicCheck::Failed
                }
            }
        };
        store.release_decoder();
        store.content = SlotContent::Complete {
            block_len,
            mic_failed: mic == MicCheck::Failed,
        };
        session.phase = SessionPhase::Complete(mic);
        if session.setup.v2.is_some_and(|v2| v2.ack_reception) {
            session.block_received_pending = true;
            self.schedule_block_received(now, &session, rng, 0);
        }
        self.session = Some(session);
        events.changed = true;
        events.slot_changed = true;
        events.completed_groups = Some(session.setup.mc_group_bit_mask);
        events
    }

    fn schedule_block_received(
        &mut self,
        now: Instant,
        session: &SessionRecord,
        rng: &mut impl RandomSource,
        attempts: u8,
    ) {
        let delay = random_up_to(rng, max_answer_delay_ms(session.setup.block_ack_delay));
        let delay = if attempts == 0 {
            delay
        } else {
            delay.max(MIN_ACK_RETRY_SECS * 1000)
        };
        self.block_received = Some(BlockReceivedRetry {
            due: now.plus_millis(delay),
            attempts,
        });
    }

    /// When something is due on the TS004 port.
    pub fn next_due(&self) -> Option<Instant> {
        [
            self.status_answer.map(|a| a.due),
            self.block_received.map(|r| r.due),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// Appends the delayed answers due at `now`; returns whether persisted state
    /// changed (FragDataBlockReceivedReq given up).
    pub fn append_due<P: Platform>(
        &mut self,
        now: Instant,
        out: &mut UplinkPayload,
        limit: usize,
        store: &FragmentStore<'_, P>,
        rng: &mut P::Rng,
    ) -> bool {
        let mut changed = false;
        if let Some(request) = self.status_answer.filter(|a| a.due <= now) {
            match self.status_answer_for(&request, store) {
                Some(answer) => {
                    if append_command(out, limit, &answer) {
                        self.status_answer = None;
                    }
                }
                None => self.status_answer = None,
            }
        }
        if let (Some(retry), Some(session)) = (self.block_received, self.session) {
            if retry.due <= now && session.block_received_pending {
                let request = Uplink::FragDataBlockReceivedReq {
                    frag_index: session.setup.frag_index,
                    mic_error: session.phase == SessionPhase::Complete(MicCheck::Failed),
                };
                if append_command(out, limit, &request) {
                    let attempts = retry.attempts.saturating_add(1);
                    if attempts >= self.limits.block_received_attempts {
                        self.block_received = None;
                        if let Some(session) = &mut self.session {
                            session.block_received_pending = false;
                        }
                        changed = true;
                    } else {
                        self.schedule_block_received(now, &session, rng, attempts);
                    }
                }
            }
        }
        changed
    }

    fn status_answer_for<P: Platform>(
        &self,
        request: &StatusAnswer,
        store: &FragmentStore<'_, P>,
    ) -> Option<Uplink> {
        let session = self
            .session
            .filter(|s| s.setup.frag_index == request.frag_index);
        let Some(progress) = session.and_then(|_| self.progress(store)) else {
            return match self.version {
                PackageVersion::V1 => None,
                PackageVersion::V2 => Some(Uplink::FragSessionStatusAnsV2 {
                    memory_error: false,
                    mic_error: false,
                    session_does_not_exist: true,
                    reception: None,
                }),
            };
        };
        if !request.participants_all && progress.missing == 0 {
            return None;
        }
        let reception = ReceptionStatus {
            frag_index: request.frag_index,
            nb_frag_received: u16::try_from(progress.received)
                .unwrap_or(MAX_FRAGMENT_NUMBER)
                .min(MAX_FRAGMENT_NUMBER),
            missing_frag: u8::try_from(progress.missing).unwrap_or(u8::MAX),
        };
        Some(match self.version {
            PackageVersion::V1 => Uplink::FragSessionStatusAnsV1 {
                reception,
                not_enough_matrix_memory: progress.memory_error,
            },
            PackageVersion::V2 => Uplink::FragSessionStatusAnsV2 {
                memory_error: progress.memory_error,
                mic_error: progress.mic == Some(MicCheck::Failed),
                session_does_not_exist: false,
                reception: Some(reception),
            },
        })
    }
}

/// Upper bound of the random answer delay, ms: 2^(BlockAckDelay + 4) s.
fn max_answer_delay_ms(block_ack_delay: u8) -> u64 {
    (1u64 << (u32::from(block_ack_delay.min(7)) + 4)) * 1000
}
