//! The flash layout: where the bootloader, both image slots, the FEC log, the boot state
//! and the application's state live. This module is the one place it is written down;
//! the bootloader binary, the application binary, the node crate and the tests all take
//! their addresses from [`STM32WL55JC`] (or from a [`Layout`] built the same way for a
//! small test geometry).
//!
//! # STM32WL55JC (256 KB at 0x0800_0000, 2 KB pages, 8-byte double-word programming)
//!
//! ```text
//! pages     address                 size     region
//! 0..16     0x0800_0000-0x0800_7FFF  32 KB   bootloader
//! 16..63    0x0800_8000-0x0801_F7FF  94 KB   primary slot (47 pages): the running image
//! 63..111   0x0801_F800-0x0803_77FF  96 KB   download slot (48 pages):
//!             0x0801_F800               2 KB     its first page: the swap's spare page
//!             0x0802_0000-0x0803_77FF  94 KB     the download image area (47 pages): the
//!                                                node writes the FEC block here
//! 111..122  0x0803_7800-0x0803_CFFF  22 KB   FEC log (11 pages, 22528 bytes)
//! 122..124  0x0803_D000-0x0803_DFFF   4 KB   boot state: swap progress, trial, last
//!                                            update result, security counter (2 pages)
//! 124..128  0x0803_E000-0x0803_FFFF   8 KB   application state: LoRaWAN (DevNonce,
//!                                            frame counters, session) and node state
//!                                            (SessionCnt, multicast, fragment session)
//! ```
//!
//! **Largest image: 96 256 bytes** (47 pages, [`Layout::max_image_len`]), MCUboot header,
//! body and TLVs included. With imgtool's usual 0x200-byte header and about 160 bytes of
//! TLVs (SHA256, KEYHASH, ECDSA signature, hardware version), the firmware itself can be
//! up to about 95 580 bytes. A TS004 block of M = 2000 fragments of 48 bytes (96 000
//! bytes) fits the download image area, and its FEC log (L_max = 400:
//! 400 × (8 + 48) = 22 400 bytes, see `lorawan_fuota::fec::Decoder::sizing`) fits the
//! 22 528-byte log area.
//!
//! The application is linked at `PRIMARY + header size` (0x0800_8200 with a 0x200-byte
//! header; the Cortex-M4 vector table needs 512-byte alignment on the WL55, which 0x200
//! gives).
//!
//! # Why these sizes
//!
//! A swap that can be reverted needs room for two images; the swap used here
//! ("swap with offset", see `swap`) needs the download slot to be one page larger than
//! the primary slot and no scratch area. 256 KB − 32 KB bootloader leaves 112 pages:
//! 2 × 47 + 1 for the slots, 11 for the FEC log, 2 for the boot state and 4 for the
//! application. The boot state holds the security counter too, so that raising it and
//! confirming an image are one atomic record (see `status`).
//!
//! # What survives a swap
//!
//! The swap only erases and programs pages of the primary slot, the download slot and
//! the boot state. Everything the device must keep across an update therefore lives
//! outside the slots: the security counter (in the boot state), the LoRaWAN DevNonce
//! counter, frame counters and session, and the node's TS004 SessionCnt and session
//! state (in the application state pages, which the bootloader never writes). The FEC
//! log is not kept: it only means something while a download is running.

/// Address of the STM32WL55JC's flash.
pub const STM32WL_FLASH_BASE: u32 = 0x0800_0000;
/// Size of the STM32WL55JC's flash.
pub const STM32WL_FLASH_SIZE: u32 = 256 * 1024;
/// STM32WL erase unit.
pub const STM32WL_PAGE_SIZE: u32 = 2048;
/// STM32WL programming unit: a 64-bit double-word (with 8 ECC bits), programmable once
/// after an erase (except to all zeros).
pub const STM32WL_WRITE_SIZE: u32 = 8;

/// Pages of each region of the STM32WL55JC layout.
pub const STM32WL_PLAN: LayoutPlan = LayoutPlan {
    bootloader_pages: 16,
    primary_pages: 47,
    fec_log_pages: 11,
    app_state_pages: 4,
};

/// The STM32WL55JC layout (see the module documentation).
pub const STM32WL55JC: Layout = Layout::stacked(
    STM32WL_FLASH_BASE,
    STM32WL_FLASH_SIZE,
    STM32WL_PAGE_SIZE,
    STM32WL_WRITE_SIZE,
    STM32WL_PLAN,
);

// The layout is checked when this crate compiles.
const _: () = assert!(STM32WL55JC.check().is_ok());
const _: () = assert!(STM32WL55JC.bootloader.len <= 32 * 1024);
const _: () = assert!(STM32WL55JC.end_of_regions() == STM32WL_FLASH_SIZE);

/// Pages of the boot state (two alternating pages, see `status`).
pub const BOOT_STATE_PAGES: u32 = 2;

/// A range of flash, as byte offsets from the start of the flash.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Region {
    /// Offset of the first byte.
    pub start: u32,
    /// Length in bytes.
    pub len: u32,
}

impl Region {
    /// A region of `len` bytes from `start`.
    pub const fn new(start: u32, len: u32) -> Self {
        Self { start, len }
    }

    /// Offset just past the region (saturating, so a bad region cannot overflow).
    pub const fn end(&self) -> u32 {
        self.start.saturating_add(self.len)
    }

    /// True if the two regions share a byte.
    pub const fn overlaps(&self, other: &Region) -> bool {
        self.len != 0 && other.len != 0 && self.start < other.end() && other.start < self.end()
    }

    /// True if `[offset, offset + len)` lies inside the region.
    pub const fn contains_range(&self, offset: u32, len: u32) -> bool {
        match offset.checked_add(len) {
            Some(end) => offset >= self.start && end <= self.end(),
            None => false,
        }
    }

    /// Offset of page `index` of the region.
    pub const fn page_offset(&self, index: u32, page_size: u32) -> u32 {
        self.start.saturating_add(index.saturating_mul(page_size))
    }
}

/// How many pages each region gets; [`Layout::stacked`] turns it into a [`Layout`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LayoutPlan {
    /// Pages of the bootloader.
    pub bootloader_pages: u32,
    /// Pages of the primary slot (the download slot gets one more).
    pub primary_pages: u32,
    /// Pages of the FEC log.
    pub fec_log_pages: u32,
    /// Pages of the application's state.
    pub app_state_pages: u32,
}

/// A flash geometry and where each region lies in it.
///
/// Regions are byte offsets from the start of the flash; [`Layout::address`] turns an
/// offset into a CPU address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Layout {
    /// CPU address of flash offset 0.
    pub flash_base: u32,
    /// Size of the flash.
    pub flash_size: u32,
    /// Erase unit.
    pub page_size: u32,
    /// Programming unit.
    pub write_size: u32,
    /// The bootloader's own code.
    pub bootloader: Region,
    /// The primary slot: the image that runs.
    pub primary: Region,
    /// The download slot: one spare page, then the download image area
    /// ([`Layout::download_image`]).
    pub download: Region,
    /// The FEC decoder's log.
    pub fec_log: Region,
    /// The boot state (two pages).
    pub boot_state: Region,
    /// The application's state (LoRaWAN and node), never written by the bootloader.
    pub app_state: Region,
}

/// Why a [`Layout`] is unusable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LayoutError {
    /// The page size is not a multiple of the write size, or either is zero.
    BadGeometry,
    /// The write size is not the 8-byte double-word the boot state records use.
    UnsupportedWriteSize,
    /// A page cannot hold the boot state header and a few records.
    PageTooSmall,
    /// A region does not start or end on a page boundary.
    NotPageAligned,
    /// A region ends past the end of the flash.
    OutsideFlash,
    /// Two regions overlap.
    Overlap,
    /// The primary slot is empty.
    EmptyPrimary,
    /// The download slot is not exactly one page larger than the primary slot.
    DownloadSlotSize,
    /// The boot state is not exactly two pages.
    BootStateSize,
    /// The slots are larger than the swap's 16-bit page counters allow.
    SlotTooLarge,
}

/// Smallest page the boot state accepts: its header plus a few records.
pub const MIN_PAGE_SIZE: u32 = 128;

impl Layout {
    /// Regions stacked from offset 0 in this order: bootloader, primary slot, download
    /// slot (primary + 1 page), FEC log, boot state (2 pages), application state.
    pub const fn stacked(
        flash_base: u32,
        flash_size: u32,
        page_size: u32,
        write_size: u32,
        plan: LayoutPlan,
    ) -> Self {
        let bootloader = Region::new(0, plan.bootloader_pages.saturating_mul(page_size));
        let primary = Region::new(
            bootloader.end(),
            plan.primary_pages.saturating_mul(page_size),
        );
        let download = Region::new(
            primary.end(),
            plan.primary_pages
                .saturating_add(1)
                .saturating_mul(page_size),
        );
        let fec_log = Region::new(download.end(), plan.fec_log_pages.saturating_mul(page_size));
        let boot_state = Region::new(fec_log.end(), BOOT_STATE_PAGES.saturating_mul(page_size));
        let app_state = Region::new(
            boot_state.end(),
            plan.app_state_pages.saturating_mul(page_size),
        );
        Self {
            flash_base,
            flash_size,
            page_size,
            write_size,
            bootloader,
            primary,
            download,
            fec_log,
            boot_state,
            app_state,
        }
    }

    /// A small geometry for tests: `page_size`-byte pages, a one-page "bootloader",
    /// `primary_pages` slots, one FEC log page, two application pages. The flash is
    /// exactly as large as the regions.
    pub const fn small(page_size: u32, primary_pages: u32) -> Self {
        let plan = LayoutPlan {
            bootloader_pages: 1,
            primary_pages,
            fec_log_pages: 1,
            app_state_pages: 2,
        };
        let unsized_layout = Self::stacked(0, u32::MAX, page_size, STM32WL_WRITE_SIZE, plan);
        let mut layout = unsized_layout;
        layout.flash_size = unsized_layout.end_of_regions();
        layout
    }

    /// The regions, in flash order.
    pub const fn regions(&self) -> [Region; 6] {
        [
            self.bootloader,
            self.primary,
            self.download,
            self.fec_log,
            self.boot_state,
            self.app_state,
        ]
    }

    /// Offset just past the last region.
    pub const fn end_of_regions(&self) -> u32 {
        let regions = self.regions();
        let mut end = 0;
        let mut i = 0;
        while i < regions.len() {
            if regions[i].end() > end {
                end = regions[i].end();
            }
            i += 1;
        }
        end
    }

    /// Checks the geometry and that the regions are page-aligned, inside the flash,
    /// disjoint, and sized as the swap and the boot state need.
    pub const fn check(&self) -> Result<(), LayoutError> {
        if self.page_size == 0
            || self.write_size == 0
            || !self.page_size.is_multiple_of(self.write_size)
        {
            return Err(LayoutError::BadGeometry);
        }
        if self.write_size != STM32WL_WRITE_SIZE {
            return Err(LayoutError::UnsupportedWriteSize);
        }
        if self.page_size < MIN_PAGE_SIZE {
            return Err(LayoutError::PageTooSmall);
        }
        let regions = self.regions();
        let mut i = 0;
        while i < regions.len() {
            let region = regions[i];
            if !region.start.is_multiple_of(self.page_size)
                || !region.len.is_multiple_of(self.page_size)
            {
                return Err(LayoutError::NotPageAligned);
            }
            match region.start.checked_add(region.len) {
                Some(end) if end <= self.flash_size => {}
                _ => return Err(LayoutError::OutsideFlash),
            }
            let mut j = i + 1;
            while j < regions.len() {
                if region.overlaps(&regions[j]) {
                    return Err(LayoutError::Overlap);
                }
                j += 1;
            }
            i += 1;
        }
        if self.primary.len == 0 {
            return Err(LayoutError::EmptyPrimary);
        }
        if self.download.len != self.primary.len.saturating_add(self.page_size) {
            return Err(LayoutError::DownloadSlotSize);
        }
        if self.boot_state.len != BOOT_STATE_PAGES.saturating_mul(self.page_size) {
            return Err(LayoutError::BootStateSize);
        }
        if self.primary_pages() >= u16::MAX as u32 {
            return Err(LayoutError::SlotTooLarge);
        }
        Ok(())
    }

    /// Pages of the primary slot.
    pub const fn primary_pages(&self) -> u32 {
        match self.primary.len.checked_div(self.page_size) {
            Some(pages) => pages,
            None => 0,
        }
    }

    /// The largest image (MCUboot header, body and TLVs) the layout can install: the
    /// primary slot's size.
    pub const fn max_image_len(&self) -> u32 {
        self.primary.len
    }

    /// Where the application writes a new image (the TS004 data block): the download
    /// slot after its first page. As large as the primary slot.
    pub const fn download_image(&self) -> Region {
        Region::new(
            self.download.start.saturating_add(self.page_size),
            self.download.len.saturating_sub(self.page_size),
        )
    }

    /// The CPU address of a flash offset.
    pub const fn address(&self, offset: u32) -> u32 {
        self.flash_base.wrapping_add(offset)
    }

    /// Offset of boot state page `index` (0 or 1).
    pub const fn boot_state_page(&self, index: u32) -> u32 {
        self.boot_state.page_offset(index, self.page_size)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stm32wl_regions_are_where_the_documentation_says() {
        let l = STM32WL55JC;
        assert_eq!(l.address(l.bootloader.start), 0x0800_0000);
        assert_eq!(l.address(l.primary.start), 0x0800_8000);
        assert_eq!(l.address(l.download.start), 0x0801_F800);
        assert_eq!(l.address(l.download_image().start), 0x0802_0000);
        assert_eq!(l.address(l.fec_log.start), 0x0803_7800);
        assert_eq!(l.address(l.boot_state.start), 0x0803_D000);
        assert_eq!(l.address(l.app_state.start), 0x0803_E000);
        assert_eq!(l.address(l.app_state.end()), 0x0804_0000);
        assert_eq!(l.max_image_len(), 96_256);
        assert_eq!(l.fec_log.len, 22_528);
    }

    #[test]
    fn bad_layouts_are_refused() {
        let mut l = Layout::small(256, 4);
        assert_eq!(l.check(), Ok(()));
        l.download.len -= 256;
        assert_eq!(l.check(), Err(LayoutError::DownloadSlotSize));
        let mut l = Layout::small(256, 4);
        l.fec_log.start += 8;
        assert_eq!(l.check(), Err(LayoutError::NotPageAligned));
        let mut l = Layout::small(256, 4);
        l.flash_size -= 256;
        assert_eq!(l.check(), Err(LayoutError::OutsideFlash));
        let mut l = Layout::small(256, 4);
        l.app_state = l.primary;
        assert_eq!(l.check(), Err(LayoutError::Overlap));
        assert_eq!(Layout::small(64, 4).check(), Err(LayoutError::PageTooSmall));
        let mut l = Layout::small(256, 4);
        l.write_size = 4;
        assert_eq!(l.check(), Err(LayoutError::UnsupportedWriteSize));
    }
}
