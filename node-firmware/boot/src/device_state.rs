//! Which device state survives a swap, and where it lives: the one definition the
//! bootloader, the application and the tests share ([`DEVICE_STATE`]).
//!
//! The swap, the revert and their recovery erase and program only the two slots and the
//! boot state. Everything that must outlive an update therefore lives in the
//! application state pages (which the bootloader never writes) or, for the security
//! counter, in the boot state, whose every rewrite carries it over. The application
//! state pages are split into two settings pages (typed records, used alternately:
//! `fuota_node::FlashSessionStore`) and the fragment journal ([`AppStateAreas`]).
//!
//! | state                                   | lives in                   | across a swap |
//! |-----------------------------------------|----------------------------|---------------|
//! | LoRaWAN DevNonce counter                | settings pages (LoRaWAN)   | kept          |
//! | LoRaWAN session, frame counters         | settings pages (LoRaWAN)   | kept          |
//! | TS004 last SessionCnt (replay guard)    | settings pages (node)      | kept          |
//! | multicast groups, fragmentation session | settings pages (node)      | kept          |
//! | fragment journal                        | journal pages              | kept (stale once the session ended) |
//! | security counter (anti-rollback)        | boot state                 | kept, raised on confirm |
//! | FEC log                                 | FEC log area               | not kept: scratch of one download |
//! | the downloaded image                    | download slot              | moved: it becomes the running image |

use crate::layout::{Layout, Region};

/// A piece of device state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DeviceState {
    /// The LoRaWAN DevNonce counter (a join must never reuse a DevNonce).
    DevNonceCounter,
    /// The LoRaWAN session and its frame counters.
    LorawanSession,
    /// The node's TS004 SessionCnt replay guard, multicast groups and session.
    NodeSession,
    /// The node's fragment journal.
    FragmentJournal,
    /// The anti-rollback security counter.
    SecurityCounter,
    /// The FEC decoder's log.
    FecLog,
}

/// Where a piece of state lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Home {
    /// The two settings pages of the application state.
    SettingsPages,
    /// The journal pages of the application state.
    JournalPages,
    /// The boot state pages.
    BootState,
    /// The FEC log area.
    FecLogArea,
}

/// One row of the definition.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct StateHome {
    /// The state.
    pub state: DeviceState,
    /// Where it lives.
    pub home: Home,
    /// True if its value is the same after a swap or revert as before.
    pub survives_swap: bool,
}

/// The definition: every piece of device state, where it lives, whether it survives.
pub const DEVICE_STATE: [StateHome; 6] = [
    StateHome {
        state: DeviceState::DevNonceCounter,
        home: Home::SettingsPages,
        survives_swap: true,
    },
    StateHome {
        state: DeviceState::LorawanSession,
        home: Home::SettingsPages,
        survives_swap: true,
    },
    StateHome {
        state: DeviceState::NodeSession,
        home: Home::SettingsPages,
        survives_swap: true,
    },
    StateHome {
        state: DeviceState::FragmentJournal,
        home: Home::JournalPages,
        survives_swap: true,
    },
    StateHome {
        state: DeviceState::SecurityCounter,
        home: Home::BootState,
        survives_swap: true,
    },
    StateHome {
        state: DeviceState::FecLog,
        home: Home::FecLogArea,
        survives_swap: false,
    },
];

/// Pages of the application state used as settings pages (the rest is the journal).
pub const SETTINGS_PAGES: u32 = 2;

/// How the application state pages are split.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AppStateAreas {
    /// The two settings pages, used alternately.
    pub settings: [Region; 2],
    /// The fragment journal: the remaining pages.
    pub journal: Region,
}

impl Layout {
    /// The application state split into settings pages and journal (at least three
    /// pages of application state are needed; fewer give an empty journal).
    pub const fn app_state_areas(&self) -> AppStateAreas {
        let page = self.page_size;
        let start = self.app_state.start;
        AppStateAreas {
            settings: [
                Region::new(start, page),
                Region::new(start.saturating_add(page), page),
            ],
            journal: Region::new(
                start.saturating_add(SETTINGS_PAGES.saturating_mul(page)),
                self.app_state
                    .len
                    .saturating_sub(SETTINGS_PAGES.saturating_mul(page)),
            ),
        }
    }

    /// The flash region of a home.
    pub const fn home_region(&self, home: Home) -> Region {
        match home {
            Home::SettingsPages => Region::new(
                self.app_state.start,
                SETTINGS_PAGES.saturating_mul(self.page_size),
            ),
            Home::JournalPages => self.app_state_areas().journal,
            Home::BootState => self.boot_state,
            Home::FecLogArea => self.fec_log,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::STM32WL55JC;

    #[test]
    fn the_stm32wl_app_state_holds_two_settings_pages_and_a_4_kb_journal() {
        let areas = STM32WL55JC.app_state_areas();
        assert_eq!(STM32WL55JC.address(areas.settings[0].start), 0x0803_E000);
        assert_eq!(STM32WL55JC.address(areas.settings[1].start), 0x0803_E800);
        assert_eq!(STM32WL55JC.address(areas.journal.start), 0x0803_F000);
        assert_eq!(areas.journal.len, 4096);
        assert_eq!(areas.journal.end(), STM32WL55JC.app_state.end());
    }

    #[test]
    fn what_survives_lives_outside_the_slots() {
        let l = STM32WL55JC;
        for row in DEVICE_STATE {
            let region = l.home_region(row.home);
            assert!(!region.overlaps(&l.primary) && !region.overlaps(&l.download));
            assert!(region.len > 0, "{:?}", row.state);
        }
    }
}
