//! TS005 remote multicast setup, device side (FPort 200, v1 and v2): the multicast
//! groups and the Class C session.
//!
//! - McGroupSetupReq: McKey = AES-encrypt(McKEKey, McKey_encrypted), McKEKey derived
//!   once from the root key (GenAppKey on LoRaWAN 1.0.x); McAppSKey and McNwkSKey from
//!   McKey and McAddr; the FCnt window [minMcFCnt, maxMcFCnt]. An ID beyond the
//!   configured number of groups is answered with IDerror. Re-sending the same setup
//!   keeps the group's last accepted FCnt; a changed one starts afresh.
//! - McGroupStatusReq / McGroupDeleteReq as specified (delete also ends the group's
//!   Class C session).
//! - McClassCSessionReq: McGroupUndefined / FreqError / DRError (the firmware's
//!   [`RegionCheck`]), TimeToStart from the device clock (saturated at 0xFFFFFF when the
//!   clock is far off), StartMissed (v2) when SessionTime is past — v1 has no such bit,
//!   so a v1 session already started is joined for what is left of it. One Class C
//!   session at a time (one radio): a new request replaces the previous one.
//! - McClassBSessionReq: Class B is not supported; answered with FreqError and DRError
//!   (McGroupUndefined if the group does not exist), which a server reads as "cannot".
//!
//! The Class C window itself (start at SessionTime on DLFreq/DR, back to Class A after
//! 2^TimeOut s or when the fragmentation session completes) is driven from
//! `FuotaNode::poll_action` through `Multicast::poll_class_c`. Multicast frame
//! reception is in [`reception`].

pub mod reception;

use lorawan_fuota::codec::multicast_setup::{
    Downlink, McGroupStatus, SessionAns, Uplink, MAX_GROUPS,
};
use lorawan_fuota::codec::{decode_all, Package, PackageVersion, PackageVersionAns};
use lorawan_fuota::crypto::multicast::{
    decrypt_mc_key_from_wire, mc_app_s_key, mc_ke_key, mc_nwk_s_key, mc_root_key, LorawanVersion,
};
use lorawan_fuota::crypto::Key128;

use crate::clock_sync::ClockSyncClient;
use crate::outbox::{Action, Outbox};
use crate::platform::RegionCheck;
use crate::report::PackageReport;
use crate::time::{DeviceClock, Instant};

/// Largest TimeToStart (24 bits); v2 sends it when the true value is larger.
const MAX_TIME_TO_START: u32 = 0x00FF_FFFF;

/// One multicast group's security context (persisted).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct McGroup {
    /// McAddr, the group's DevAddr.
    pub mc_addr: u32,
    /// McAppSKey: FRMPayload encryption.
    pub app_s_key: Key128,
    /// McNwkSKey: MIC.
    pub nwk_s_key: Key128,
    /// minMcFCnt.
    pub min_fcnt: u32,
    /// maxMcFCnt.
    pub max_fcnt: u32,
    /// Last FCnt accepted on this group.
    pub last_fcnt: Option<u32>,
}

/// The Class C session (persisted, except `started`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ClassCSession {
    /// McGroupID.
    pub mc_group_id: u8,
    /// SessionTime, GPS seconds mod 2^32, as received.
    pub session_time: u32,
    /// TimeOut: the session lasts at most 2^TimeOut s.
    pub time_out: u8,
    /// DLFreq, Hz.
    pub frequency_hz: u32,
    /// DR index.
    pub data_rate: u8,
    /// The firmware was told to start it.
    pub started: bool,
}

impl ClassCSession {
    /// GPS milliseconds of the start and end of the window, as the clock sees them now.
    fn window(&self, clock: &DeviceClock, now: Instant) -> (i64, i64) {
        let start = clock.nearest_gps_millis(now, self.session_time);
        let length_ms = (1i64 << self.time_out.min(15)) * 1000;
        (start, start.saturating_add(length_ms))
    }
}

/// A view of one group for the firmware.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GroupInfo {
    /// McGroupID.
    pub mc_group_id: u8,
    /// McAddr.
    pub mc_addr: u32,
    /// minMcFCnt.
    pub min_fcnt: u32,
    /// maxMcFCnt.
    pub max_fcnt: u32,
    /// Last accepted multicast FCnt.
    pub last_fcnt: Option<u32>,
}

/// TS005 state; see the module documentation.
#[derive(Debug, Clone)]
pub(crate) struct Multicast {
    version: PackageVersion,
    supported_groups: u8,
    mc_ke_key: Key128,
    pub groups: [Option<McGroup>; MAX_GROUPS],
    pub class_c: Option<ClassCSession>,
    /// A started session was cancelled: the firmware still has to be told.
    stop_pending: bool,
}

impl Multicast {
    /// No group; McKEKey derived from the root key.
    pub fn new(
        version: PackageVersion,
        supported_groups: u8,
        lorawan_version: LorawanVersion,
        root_key: &Key128,
    ) -> Self {
        Multicast {
            version,
            supported_groups: supported_groups.clamp(1, MAX_GROUPS as u8),
            mc_ke_key: mc_ke_key(&mc_root_key(lorawan_version, root_key)),
            groups: [None, None, None, None],
            class_c: None,
            stop_pending: false,
        }
    }

    /// The groups, for the firmware's diagnostics.
    pub fn group_info(&self, mc_group_id: u8) -> Option<GroupInfo> {
        let group = self.groups.get(usize::from(mc_group_id))?.as_ref()?;
        Some(GroupInfo {
            mc_group_id,
            mc_addr: group.mc_addr,
            min_fcnt: group.min_fcnt,
            max_fcnt: group.max_fcnt,
            last_fcnt: group.last_fcnt,
        })
    }

    /// Handles one FRMPayload received on the TS005 port. Returns the report and
    /// whether persisted state changed.
    pub fn handle(
        &mut self,
        now: Instant,
        payload: &[u8],
        fport: u8,
        outbox: &mut Outbox,
        clock: &mut ClockSyncClient,
        region: &impl RegionCheck,
    ) -> (PackageReport, bool) {
        let mut report = PackageReport::new(Package::MulticastSetup);
        let mut changed = false;
        for command in decode_all::<Downlink>(payload, self.version) {
            let command = match command {
                Ok(command) => command,
                Err(error) => {
                    report.decode_error = Some(error);
                    break;
                }
            };
            let answer = match command {
                Downlink::PackageVersionReq => Uplink::PackageVersionAns(
                    PackageVersionAns::for_package(Package::MulticastSetup, self.version),
                ),
                Downlink::McGroupStatusReq { req_group_mask } => {
                    Uplink::McGroupStatusAns(self.status(req_group_mask, outbox.limit()))
                }
                Downlink::McGroupSetupReq {
                    mc_group_id,
                    mc_addr,
                    mc_key_encrypted,
                    min_mc_fcnt,
                    max_mc_fcnt,
                } => {
                    let id_error = mc_group_id >= self.supported_groups;
                    if !id_error {
                        changed |= self.setup_group(
                            mc_group_id,
                            mc_addr,
                            &mc_key_encrypted,
                            min_mc_fcnt,
                            max_mc_fcnt,
                        );
                    }
                    Uplink::McGroupSetupAns {
                        mc_group_id,
                        id_error,
                    }
                }
                Downlink::McGroupDeleteReq { mc_group_id } => {
                    let existed = self.delete_group(mc_group_id);
                    changed |= existed;
                    Uplink::McGroupDeleteAns {
                        mc_group_id,
                        mc_group_undefined: !existed,
                    }
                }
                Downlink::McClassCSessionReq {
                    mc_group_id,
                    session_time,
                    time_out,
                    dl_frequency_hz,
                    data_rate,
                } => {
                    let request = ClassCSession {
                        mc_group_id,
                        session_time,
                        time_out,
                        frequency_hz: dl_frequency_hz,
                        data_rate,
                        started: false,
                    };
                    let (answer, accepted) = self.class_c_request(now, request, clock, region);
                    changed |= accepted;
                    Uplink::McClassCSessionAns(answer)
                }
                Downlink::McClassBSessionReq { mc_group_id, .. } => {
                    let defined = self.is_defined(mc_group_id);
                    Uplink::McClassBSessionAns(SessionAns {
                        mc_group_id,
                        dr_error: defined,
                        freq_error: defined,
                        mc_group_undefined: !defined,
                        start_missed: false,
                        reserved_errors: 0,
                        time_to_start: None,
                    })
                }
            };
            outbox.push(now, fport, &answer);
            report.handled();
        }
        (report, changed)
    }

    fn is_defined(&self, mc_group_id: u8) -> bool {
        self.groups
            .get(usize::from(mc_group_id))
            .is_some_and(Option::is_some)
    }

    fn status(&self, req_group_mask: u8, uplink_limit: usize) -> McGroupStatus {
        let nb_total_groups = self.groups.iter().flatten().count() as u8;
        let mut status = McGroupStatus {
            nb_total_groups,
            mc_addr: [None; MAX_GROUPS],
        };
        // CID + status byte, then 5 bytes per group; drop the highest IDs that do not fit.
        let mut room = uplink_limit.saturating_sub(2) / 5;
        for (id, (slot, group)) in status.mc_addr.iter_mut().zip(&self.groups).enumerate() {
            if req_group_mask & (1 << id) == 0 || room == 0 {
                continue;
            }
            if let Some(group) = group {
                *slot = Some(group.mc_addr);
                room -= 1;
            }
        }
        status
    }

    /// Installs a group; true if persisted state changed.
    fn setup_group(
        &mut self,
        mc_group_id: u8,
        mc_addr: u32,
        mc_key_encrypted: &[u8; 16],
        min_fcnt: u32,
        max_fcnt: u32,
    ) -> bool {
        let mc_key = decrypt_mc_key_from_wire(&self.mc_ke_key, mc_key_encrypted);
        let mut group = McGroup {
            mc_addr,
            app_s_key: mc_app_s_key(&mc_key, mc_addr),
            nwk_s_key: mc_nwk_s_key(&mc_key, mc_addr),
            min_fcnt,
            max_fcnt,
            last_fcnt: None,
        };
        let Some(slot) = self.groups.get_mut(usize::from(mc_group_id)) else {
            return false;
        };
        if let Some(existing) = slot {
            let same = McGroup {
                last_fcnt: existing.last_fcnt,
                ..group.clone()
            } == *existing;
            if same {
                // A repeated setup (lost answer): keep the replay protection.
                group.last_fcnt = existing.last_fcnt;
            } else {
                self.end_session_of(mc_group_id);
            }
        }
        if let Some(slot) = self.groups.get_mut(usize::from(mc_group_id)) {
            *slot = Some(group);
        }
        true
    }

    /// Deletes a group; false if it did not exist.
    fn delete_group(&mut self, mc_group_id: u8) -> bool {
        let existed = self
            .groups
            .get_mut(usize::from(mc_group_id))
            .and_then(Option::take)
            .is_some();
        if existed {
            self.end_session_of(mc_group_id);
        }
        existed
    }

    /// Ends the Class C session if it belongs to `mc_group_id`.
    fn end_session_of(&mut self, mc_group_id: u8) {
        if self.class_c.is_some_and(|s| s.mc_group_id == mc_group_id) {
            self.end_class_c();
        }
    }

    /// Ends the Class C session (telling the firmware if it had started).
    pub fn end_class_c(&mut self) {
        if let Some(session) = self.class_c.take() {
            self.stop_pending |= session.started;
        }
    }

    /// Ends the Class C session if its group is in `group_mask` (block complete).
    pub fn end_class_c_for_groups(&mut self, group_mask: u8) -> bool {
        match self.class_c {
            Some(session) if group_mask & (1 << session.mc_group_id) != 0 => {
                self.end_class_c();
                true
            }
            _ => false,
        }
    }

    fn class_c_request(
        &mut self,
        now: Instant,
        request: ClassCSession,
        clock: &mut ClockSyncClient,
        region: &impl RegionCheck,
    ) -> (SessionAns, bool) {
        let mut answer = SessionAns {
            mc_group_id: request.mc_group_id,
            dr_error: !region.is_valid_downlink_data_rate(request.data_rate),
            freq_error: !region.is_valid_downlink_frequency(request.frequency_hz),
            mc_group_undefined: !self.is_defined(request.mc_group_id),
            start_missed: false,
            reserved_errors: 0,
            time_to_start: None,
        };
        if !clock.clock().is_synchronised() {
            // The answer will show the server our clock is off; fix it meanwhile.
            clock.request_now(now);
        }
        if answer.has_error() {
            return (answer, false);
        }
        let seconds = clock.clock().seconds_until(now, request.session_time);
        match (u32::try_from(seconds), self.version) {
            (Ok(ahead), _) => answer.time_to_start = Some(ahead.min(MAX_TIME_TO_START)),
            (Err(_), PackageVersion::V2) => {
                answer.start_missed = true;
                return (answer, false);
            }
            // v1 cannot say "missed": join what is left of the window.
            (Err(_), PackageVersion::V1) => answer.time_to_start = Some(0),
        }
        self.end_class_c();
        self.class_c = Some(request);
        (answer, true)
    }

    /// The Class C action due at `now`, if any; `changed` is set when the persisted
    /// session ended.
    pub fn poll_class_c(
        &mut self,
        now: Instant,
        clock: &DeviceClock,
        changed: &mut bool,
    ) -> Option<Action> {
        if self.stop_pending {
            self.stop_pending = false;
            return Some(Action::ReturnToClassA);
        }
        let session = self.class_c?;
        let gps_now = clock.gps_millis(now);
        let (start, end) = session.window(clock, now);
        if gps_now >= end {
            self.class_c = None;
            *changed = true;
            return session.started.then_some(Action::ReturnToClassA);
        }
        if !session.started && gps_now >= start {
            self.class_c = Some(ClassCSession {
                started: true,
                ..session
            });
            return Some(Action::StartClassC {
                mc_group_id: session.mc_group_id,
                frequency_hz: session.frequency_hz,
                data_rate: session.data_rate,
            });
        }
        None
    }

    /// When the next Class C action is due.
    pub fn next_class_c_at(&self, now: Instant, clock: &DeviceClock) -> Option<Instant> {
        if self.stop_pending {
            return Some(now);
        }
        let session = self.class_c?;
        let (start, end) = session.window(clock, now);
        Some(clock.local_instant(if session.started { end } else { start }))
    }
}
