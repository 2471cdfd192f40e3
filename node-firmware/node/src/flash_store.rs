//! [`FlashSessionStore`]: the [`SessionStore`] the firmware keeps in the application
//! state pages of the flash (`fuota_boot::STM32WL55JC.app_state`, never touched by a
//! swap), power-fail-safe on NOR flash that programs each 8-byte double-word once.
//!
//! # Where things go
//!
//! - **Two settings pages**, used alternately: a log of typed records (the node's state
//!   record, kind [`RECORD_NODE_STATE`]; the LoRaWAN session and DevNonce counter the
//!   firmware keeps, kind [`RECORD_LORAWAN`]; others the firmware defines). A later
//!   record of a kind replaces the earlier one.
//! - **A journal region** (one page or more): the node's received-fragment records,
//!   appended one per write, emptied by an erase at each new session.
//!
//! # Settings page format
//!
//! ```text
//! 0..8     page header: "FSP1", sequence number (u32 LE)   — programmed LAST
//! 8..      records: kind u8, 0x5A, length u16 LE, CRC-32 u32 LE of kind..payload,
//!          payload, 0xFF padding to 8 bytes
//! ```
//!
//! The current page is the one with a valid header and the higher sequence number; the
//! latest record of each kind in it is the value. Appending programs one record into
//! erased flash after the last one. A record cut by a power loss fails its CRC (or
//! raises an ECC fault): it is ignored, and so is everything after it, and the next
//! write *rotates*: it erases the other page, programs the latest record of every kind
//! there, and programs that page's header last. Until the header is complete the old
//! page stays current, so any cut leaves either the old value or the new one.
//!
//! A record that would not fit the current page rotates too.

use core::fmt;

use crate::persistence::crc32;
use crate::platform::{ErasableRegion, SessionStore, FRAGMENT_RECORD_LEN, STATE_RECORD_MAX_LEN};

/// Record kind of the node's state record.
pub const RECORD_NODE_STATE: u8 = 1;
/// Record kind of the LoRaWAN session and DevNonce counter (written by the firmware).
pub const RECORD_LORAWAN: u8 = 2;
/// Record kinds a store keeps (`1..=MAX_RECORD_KINDS`).
pub const MAX_RECORD_KINDS: u8 = 4;
/// Largest record payload.
pub const MAX_RECORD_LEN: usize = STATE_RECORD_MAX_LEN;

const PAGE_MAGIC: [u8; 4] = *b"FSP1";
const PAGE_HEADER_LEN: usize = 8;
const RECORD_HEADER_LEN: usize = 8;
const RECORD_MARK: u8 = 0x5A;
/// Programming unit of the flash (STM32WL double-word); the regions' granule must
/// divide it.
const UNIT: usize = 8;

/// Why a [`FlashSessionStore`] operation failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlashStoreError<E> {
    /// The flash failed.
    Flash(E),
    /// A record kind outside `1..=MAX_RECORD_KINDS`.
    BadKind(u8),
    /// A record longer than [`MAX_RECORD_LEN`], or than the caller's buffer.
    TooLong {
        /// Its length.
        len: usize,
    },
    /// The latest records of every kind do not fit one page.
    PageFull,
    /// The fragment journal region is full.
    JournalFull,
    /// A region's granule does not divide 8 bytes or its size is not a multiple of 8.
    Geometry,
}

impl<E: fmt::Debug> fmt::Display for FlashStoreError<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FlashStoreError::Flash(error) => write!(f, "flash error: {error:?}"),
            FlashStoreError::BadKind(kind) => write!(f, "record kind {kind} is not 1..=4"),
            FlashStoreError::TooLong { len } => write!(f, "record of {len} bytes is too long"),
            FlashStoreError::PageFull => write!(f, "the settings records do not fit a page"),
            FlashStoreError::JournalFull => write!(f, "the fragment journal is full"),
            FlashStoreError::Geometry => write!(f, "flash region geometry unsupported"),
        }
    }
}

/// Where the latest record of a kind lies in the current page.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct RecordAt {
    offset: usize,
    len: usize,
}

/// The scanned state of the settings pages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Current {
    /// 0 or 1, `None` before the first record.
    page: Option<usize>,
    sequence: u32,
    /// Offset of the next record in the current page.
    next: usize,
    /// The page holds damage or programmed bytes past `next`: rotate before appending.
    must_rotate: bool,
    latest: [Option<RecordAt>; MAX_RECORD_KINDS as usize],
}

/// The node's (and the firmware's) persistent settings and the fragment journal on
/// flash; see the module documentation.
pub struct FlashSessionStore<R: ErasableRegion> {
    pages: [R; 2],
    journal: R,
    current: Current,
    journal_next: usize,
}

fn padded(len: usize) -> usize {
    len.next_multiple_of(UNIT)
}

impl<R: ErasableRegion> FlashSessionStore<R> {
    /// A store over two one-page settings regions and a journal region; reads what
    /// they hold. Damaged flash reads as absent records, never as an error.
    pub fn new(pages: [R; 2], journal: R) -> Result<Self, FlashStoreError<R::Error>> {
        let fits = |region: &R| {
            let granule = region.write_granule();
            granule != 0
                && UNIT.is_multiple_of(granule)
                && region.capacity().is_multiple_of(UNIT)
                && region.capacity() > PAGE_HEADER_LEN + RECORD_HEADER_LEN
        };
        if !pages.iter().all(fits) || !fits(&journal) {
            return Err(FlashStoreError::Geometry);
        }
        let mut store = FlashSessionStore {
            pages,
            journal,
            current: Current {
                page: None,
                sequence: 0,
                next: PAGE_HEADER_LEN,
                must_rotate: false,
                latest: [None; MAX_RECORD_KINDS as usize],
            },
            journal_next: 0,
        };
        store.scan_settings();
        store.journal_next = store.scan_journal();
        Ok(store)
    }

    /// Gives the regions back: `(settings pages, journal)`.
    pub fn into_regions(self) -> ([R; 2], R) {
        (self.pages, self.journal)
    }

    fn page_sequence(&mut self, page: usize) -> Option<u32> {
        let mut header = [0u8; PAGE_HEADER_LEN];
        self.pages.get_mut(page)?.read(0, &mut header).ok()?;
        (header[..4] == PAGE_MAGIC)
            .then(|| u32::from_le_bytes([header[4], header[5], header[6], header[7]]))
    }

    fn scan_settings(&mut self) {
        let sequences = [self.page_sequence(0), self.page_sequence(1)];
        let page = match sequences {
            [Some(a), Some(b)] => Some(if (b.wrapping_sub(a) as i32) > 0 { 1 } else { 0 }),
            [Some(_), None] => Some(0),
            [None, Some(_)] => Some(1),
            [None, None] => None,
        };
        let Some(page) = page else {
            return;
        };
        self.current.page = Some(page);
        self.current.sequence = sequences[page].unwrap_or(0);
        let capacity = self.pages[page].capacity();
        let mut offset = PAGE_HEADER_LEN;
        loop {
            match self.read_record_header(page, offset) {
                RecordScan::Valid { kind, len } => {
                    if let Some(slot) = self.current.latest.get_mut(usize::from(kind) - 1) {
                        *slot = Some(RecordAt {
                            offset: offset + RECORD_HEADER_LEN,
                            len,
                        });
                    }
                    offset += RECORD_HEADER_LEN + padded(len);
                }
                RecordScan::Erased => {
                    self.current.next = offset;
                    // Something programmed after the end (a record whose header was
                    // cut before its first bit): never program over it.
                    self.current.must_rotate = !self.erased_from(page, offset, capacity);
                    return;
                }
                RecordScan::Damaged => {
                    self.current.next = capacity;
                    self.current.must_rotate = true;
                    return;
                }
            }
        }
    }

    fn erased_from(&mut self, page: usize, mut offset: usize, capacity: usize) -> bool {
        let mut chunk = [0u8; 64];
        while offset < capacity {
            let len = (capacity - offset).min(chunk.len());
            let Some(buffer) = chunk.get_mut(..len) else {
                return false;
            };
            if self.pages[page].read(offset, buffer).is_err() || buffer.iter().any(|&b| b != 0xFF) {
                return false;
            }
            offset += len;
        }
        true
    }

    fn read_record_header(&mut self, page: usize, offset: usize) -> RecordScan {
        let capacity = self.pages[page].capacity();
        if offset + RECORD_HEADER_LEN > capacity {
            return RecordScan::Erased;
        }
        let mut header = [0u8; RECORD_HEADER_LEN];
        if self.pages[page].read(offset, &mut header).is_err() {
            return RecordScan::Damaged;
        }
        if header == [0xFF; RECORD_HEADER_LEN] {
            return RecordScan::Erased;
        }
        let kind = header[0];
        let len = usize::from(u16::from_le_bytes([header[2], header[3]]));
        let crc = u32::from_le_bytes([header[4], header[5], header[6], header[7]]);
        if header[1] != RECORD_MARK
            || kind == 0
            || kind > MAX_RECORD_KINDS
            || len > MAX_RECORD_LEN
            || offset + RECORD_HEADER_LEN + padded(len) > capacity
        {
            return RecordScan::Damaged;
        }
        let mut payload = [0u8; MAX_RECORD_LEN];
        let Some(payload) = payload.get_mut(..len) else {
            return RecordScan::Damaged;
        };
        if self.pages[page]
            .read(offset + RECORD_HEADER_LEN, payload)
            .is_err()
            || record_crc(kind, payload) != crc
        {
            return RecordScan::Damaged;
        }
        RecordScan::Valid { kind, len }
    }

    /// Copies the latest record of `kind` into `buffer`; its length, or `None` if none.
    pub fn load_record(
        &mut self,
        kind: u8,
        buffer: &mut [u8],
    ) -> Result<Option<usize>, FlashStoreError<R::Error>> {
        let index = kind_index(kind)?;
        let (Some(page), Some(at)) = (self.current.page, self.current.latest[index]) else {
            return Ok(None);
        };
        let target = buffer
            .get_mut(..at.len)
            .ok_or(FlashStoreError::TooLong { len: at.len })?;
        self.pages[page]
            .read(at.offset, target)
            .map_err(FlashStoreError::Flash)?;
        Ok(Some(at.len))
    }

    /// Makes `payload` the record of `kind`, power-fail-safely.
    pub fn save_record(
        &mut self,
        kind: u8,
        payload: &[u8],
    ) -> Result<(), FlashStoreError<R::Error>> {
        let index = kind_index(kind)?;
        if payload.len() > MAX_RECORD_LEN {
            return Err(FlashStoreError::TooLong { len: payload.len() });
        }
        if let Some(page) = self.current.page {
            let fits = self.current.next + RECORD_HEADER_LEN + padded(payload.len())
                <= self.pages[page].capacity();
            if fits && !self.current.must_rotate {
                let offset = self.current.next;
                let written = self.program_record(page, offset, kind, payload);
                // Whatever happened, those double-words are used now.
                self.current.next = offset + RECORD_HEADER_LEN + padded(payload.len());
                if written.is_ok() {
                    self.current.latest[index] = Some(RecordAt {
                        offset: offset + RECORD_HEADER_LEN,
                        len: payload.len(),
                    });
                    return Ok(());
                }
                self.current.must_rotate = true;
            }
        }
        self.rotate(kind, payload)
    }

    fn program_record(
        &mut self,
        page: usize,
        offset: usize,
        kind: u8,
        payload: &[u8],
    ) -> Result<(), FlashStoreError<R::Error>> {
        let mut bytes = [0xFFu8; RECORD_HEADER_LEN + MAX_RECORD_LEN.next_multiple_of(UNIT)];
        let total = RECORD_HEADER_LEN + padded(payload.len());
        let len = u16::try_from(payload.len())
            .map_err(|_| FlashStoreError::TooLong { len: payload.len() })?;
        bytes[0] = kind;
        bytes[1] = RECORD_MARK;
        bytes[2..4].copy_from_slice(&len.to_le_bytes());
        bytes[4..8].copy_from_slice(&record_crc(kind, payload).to_le_bytes());
        bytes[RECORD_HEADER_LEN..RECORD_HEADER_LEN + payload.len()].copy_from_slice(payload);
        self.pages[page]
            .write(offset, &bytes[..total])
            .map_err(FlashStoreError::Flash)
    }

    /// Writes the latest record of every kind, with `payload` as the one of `kind`, to
    /// the other page, then that page's header.
    fn rotate(&mut self, kind: u8, payload: &[u8]) -> Result<(), FlashStoreError<R::Error>> {
        let index = kind_index(kind)?;
        let target = match self.current.page {
            Some(page) => 1 - page,
            None => 0,
        };
        let sequence = self.current.sequence.wrapping_add(1);
        self.pages[target]
            .erase_prefix(usize::MAX)
            .map_err(FlashStoreError::Flash)?;
        let mut latest = [None; MAX_RECORD_KINDS as usize];
        let mut offset = PAGE_HEADER_LEN;
        let capacity = self.pages[target].capacity();
        for other in 1..=MAX_RECORD_KINDS {
            let slot = usize::from(other) - 1;
            let mut copy = [0u8; MAX_RECORD_LEN];
            let bytes: &[u8] = if slot == index {
                payload
            } else {
                match self.load_record(other, &mut copy) {
                    Ok(Some(len)) => copy.get(..len).unwrap_or(&[]),
                    // An unreadable old record is lost rather than the new one.
                    Ok(None) | Err(_) => continue,
                }
            };
            if offset + RECORD_HEADER_LEN + padded(bytes.len()) > capacity {
                return Err(FlashStoreError::PageFull);
            }
            self.program_record(target, offset, other, bytes)?;
            latest[slot] = Some(RecordAt {
                offset: offset + RECORD_HEADER_LEN,
                len: bytes.len(),
            });
            offset += RECORD_HEADER_LEN + padded(bytes.len());
        }
        let mut header = [0u8; PAGE_HEADER_LEN];
        header[..4].copy_from_slice(&PAGE_MAGIC);
        header[4..].copy_from_slice(&sequence.to_le_bytes());
        self.pages[target]
            .write(0, &header)
            .map_err(FlashStoreError::Flash)?;
        self.current = Current {
            page: Some(target),
            sequence,
            next: offset,
            must_rotate: false,
            latest,
        };
        Ok(())
    }

    /// Index of the first journal record slot that is erased and followed only by
    /// erased slots.
    fn scan_journal(&mut self) -> usize {
        let slots = self.journal.capacity() / FRAGMENT_RECORD_LEN;
        let mut next = 0;
        for index in 0..slots {
            let mut record = [0u8; FRAGMENT_RECORD_LEN];
            let erased = self
                .journal
                .read(index * FRAGMENT_RECORD_LEN, &mut record)
                .is_ok()
                && record == [0xFF; FRAGMENT_RECORD_LEN];
            if !erased {
                next = index + 1;
            }
        }
        next
    }

    /// Fragment journal records in use (for reports and tests).
    pub fn journal_len(&self) -> usize {
        self.journal_next
    }

    /// Fragment journal records the region holds.
    pub fn journal_capacity(&self) -> usize {
        self.journal.capacity() / FRAGMENT_RECORD_LEN
    }
}

enum RecordScan {
    Valid { kind: u8, len: usize },
    Erased,
    Damaged,
}

fn kind_index<E>(kind: u8) -> Result<usize, FlashStoreError<E>> {
    if kind == 0 || kind > MAX_RECORD_KINDS {
        return Err(FlashStoreError::BadKind(kind));
    }
    Ok(usize::from(kind) - 1)
}

fn record_crc(kind: u8, payload: &[u8]) -> u32 {
    let mut bytes = [0u8; 1 + MAX_RECORD_LEN];
    let len = payload.len().min(MAX_RECORD_LEN);
    bytes[0] = kind;
    bytes[1..1 + len].copy_from_slice(&payload[..len]);
    crc32(&bytes[..1 + len])
}

impl<R: ErasableRegion> SessionStore for FlashSessionStore<R> {
    type Error = FlashStoreError<R::Error>;

    fn load_state(&mut self, buffer: &mut [u8]) -> Result<Option<usize>, Self::Error> {
        self.load_record(RECORD_NODE_STATE, buffer)
    }

    fn save_state(&mut self, record: &[u8]) -> Result<(), Self::Error> {
        self.save_record(RECORD_NODE_STATE, record)
    }

    fn append_fragment(&mut self, record: &[u8; FRAGMENT_RECORD_LEN]) -> Result<(), Self::Error> {
        // A failed program (a torn double-word read back as erased) uses its slot up:
        // try the next one once.
        for _ in 0..2 {
            if self.journal_next >= self.journal_capacity() {
                return Err(FlashStoreError::JournalFull);
            }
            let offset = self.journal_next * FRAGMENT_RECORD_LEN;
            self.journal_next += 1;
            if self.journal.write(offset, record).is_ok() {
                return Ok(());
            }
        }
        Err(FlashStoreError::JournalFull)
    }

    fn read_fragment(
        &mut self,
        index: usize,
    ) -> Result<Option<[u8; FRAGMENT_RECORD_LEN]>, Self::Error> {
        if index >= self.journal_next {
            return Ok(None);
        }
        let mut record = [0u8; FRAGMENT_RECORD_LEN];
        self.journal
            .read(index * FRAGMENT_RECORD_LEN, &mut record)
            .map_err(FlashStoreError::Flash)?;
        Ok(Some(record))
    }

    fn clear_fragments(&mut self) -> Result<(), Self::Error> {
        self.journal_next = 0;
        self.journal
            .erase_prefix(usize::MAX)
            .map_err(FlashStoreError::Flash)
    }
}
