//! Wire codecs of the four FUOTA application-layer packages.
//!
//! Each package owns one FPort and a CID space of its own. An FRMPayload is a
//! concatenation `CID, payload, CID, payload, ...`; the payload length follows from the
//! CID (and, for a few answers, from a status bit). Each package module has two enums,
//! `Downlink` (server → device) and `Uplink` (device → server), implementing [`Command`].
//!
//! - Encoding is decided by the value alone (version-specific layouts are distinct
//!   variants or fields), so an encoder needs no version.
//! - Decoding takes the negotiated [`PackageVersion`], because v1 and v2 layouts differ.
//!   [`decode_all`] walks a whole FRMPayload and stops at the first error (after an
//!   unknown CID the rest of the frame cannot be framed).
//! - Decoders never panic: short, over-long or malformed input is a [`DecodeError`]
//!   naming the package, the command and what was wrong. RFU bits are ignored on
//!   receive and written as zero on send.
//!
//! This module owns the shared machinery: the byte [`Reader`] and [`Writer`], the error
//! types, the package identities and the generic command iterator.

use core::fmt;

pub mod clock_sync;
pub mod firmware_management;
pub mod fragmentation;
pub mod multicast_setup;

/// The four application-layer packages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Package {
    /// TS003 application layer clock synchronization.
    ClockSync,
    /// TS005 remote multicast setup.
    MulticastSetup,
    /// TS004 fragmented data block transport.
    Fragmentation,
    /// TS006 firmware management protocol.
    FirmwareManagement,
}

impl Package {
    /// The PackageIdentifier carried in PackageVersionAns.
    pub const fn identifier(self) -> u8 {
        match self {
            Package::ClockSync => 1,
            Package::MulticastSetup => 2,
            Package::Fragmentation => 3,
            Package::FirmwareManagement => 4,
        }
    }

    /// The package's default FPort.
    pub const fn default_fport(self) -> u8 {
        match self {
            Package::ClockSync => 202,
            Package::MulticastSetup => 200,
            Package::Fragmentation => 201,
            Package::FirmwareManagement => 203,
        }
    }

    /// The package with this PackageIdentifier, if any.
    pub const fn from_identifier(identifier: u8) -> Option<Package> {
        match identifier {
            1 => Some(Package::ClockSync),
            2 => Some(Package::MulticastSetup),
            3 => Some(Package::Fragmentation),
            4 => Some(Package::FirmwareManagement),
            _ => None,
        }
    }

    /// Short human name, e.g. `"TS004 fragmentation"`.
    pub const fn name(self) -> &'static str {
        match self {
            Package::ClockSync => "TS003 clock sync",
            Package::MulticastSetup => "TS005 multicast setup",
            Package::Fragmentation => "TS004 fragmentation",
            Package::FirmwareManagement => "TS006 firmware management",
        }
    }
}

impl fmt::Display for Package {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Negotiated version of a package (PackageVersion in PackageVersionAns).
///
/// The 2.0.0 specifications are not wire-compatible with 1.0.0 (TS004's parity rows and
/// status answer, TS005's session answers), so every decoder takes one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum PackageVersion {
    /// Version 1 (x.1.0.0 specifications).
    V1,
    /// Version 2 (x-2.0.0 specifications).
    V2,
}

impl PackageVersion {
    /// The PackageVersion byte.
    pub const fn number(self) -> u8 {
        match self {
            PackageVersion::V1 => 1,
            PackageVersion::V2 => 2,
        }
    }

    /// The version for a PackageVersion byte, if it is one this crate speaks.
    pub const fn from_number(number: u8) -> Option<PackageVersion> {
        match number {
            1 => Some(PackageVersion::V1),
            2 => Some(PackageVersion::V2),
            _ => None,
        }
    }
}

/// PackageVersionAns (CID 0x00, uplink, identical in every package).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PackageVersionAns {
    /// PackageIdentifier (1 = TS003, 2 = TS005, 3 = TS004, 4 = TS006).
    pub package_identifier: u8,
    /// PackageVersion.
    pub package_version: u8,
}

impl PackageVersionAns {
    /// The answer a device implementing `package` at `version` sends.
    pub const fn for_package(package: Package, version: PackageVersion) -> Self {
        PackageVersionAns {
            package_identifier: package.identifier(),
            package_version: version.number(),
        }
    }

    /// The package and version this answer announces, if both are known.
    pub const fn package(&self) -> Option<(Package, PackageVersion)> {
        match (
            Package::from_identifier(self.package_identifier),
            PackageVersion::from_number(self.package_version),
        ) {
            (Some(p), Some(v)) => Some((p, v)),
            _ => None,
        }
    }

    pub(crate) fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(PackageVersionAns {
            package_identifier: r.u8()?,
            package_version: r.u8()?,
        })
    }

    pub(crate) fn encode(&self, w: &mut Writer<'_>) -> Result<(), EncodeError> {
        w.u8(self.package_identifier)?;
        w.u8(self.package_version)
    }
}

/// Why a payload could not be decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DecodeError {
    /// The payload was empty where a command was expected.
    Empty {
        /// Package being decoded.
        package: Package,
    },
    /// A CID this package does not define in this direction and version; the rest of
    /// the frame cannot be framed.
    UnknownCid {
        /// Package being decoded.
        package: Package,
        /// The offending command identifier.
        cid: u8,
    },
    /// The command's payload is shorter than its layout.
    Truncated {
        /// Package being decoded.
        package: Package,
        /// Command identifier.
        cid: u8,
        /// Bytes the command needs after its CID.
        needed: usize,
        /// Bytes that were left.
        available: usize,
    },
    /// A field holds a value the specification forbids.
    InvalidField {
        /// Package being decoded.
        package: Package,
        /// Command identifier.
        cid: u8,
        /// Field name as in the specification.
        field: &'static str,
        /// What is wrong with it.
        reason: &'static str,
    },
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            DecodeError::Empty { package } => {
                write!(f, "{package}: empty payload, expected a command")
            }
            DecodeError::UnknownCid { package, cid } => write!(
                f,
                "{package}: unknown command 0x{cid:02x} for this direction and version; \
                 the rest of the frame was not decoded (check the negotiated package version)"
            ),
            DecodeError::Truncated {
                package,
                cid,
                needed,
                available,
            } => write!(
                f,
                "{package}: command 0x{cid:02x} needs {needed} payload byte(s), only {available} left"
            ),
            DecodeError::InvalidField {
                package,
                cid,
                field,
                reason,
            } => write!(f, "{package}: command 0x{cid:02x} field {field}: {reason}"),
        }
    }
}

impl core::error::Error for DecodeError {}

/// Why a command could not be encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EncodeError {
    /// The output buffer is too small.
    BufferTooSmall {
        /// Bytes the encoding needs in total.
        needed: usize,
        /// Size of the buffer.
        available: usize,
    },
    /// A field's value does not fit its wire width or range.
    InvalidField {
        /// Field name as in the specification.
        field: &'static str,
        /// What is wrong with it.
        reason: &'static str,
    },
}

impl fmt::Display for EncodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            EncodeError::BufferTooSmall { needed, available } => write!(
                f,
                "output buffer too small: {needed} byte(s) needed, {available} available"
            ),
            EncodeError::InvalidField { field, reason } => {
                write!(f, "cannot encode field {field}: {reason}")
            }
        }
    }
}

impl core::error::Error for EncodeError {}

/// Little-endian cursor over a received payload, producing [`DecodeError::Truncated`]
/// with the current command's context instead of panicking.
#[derive(Debug, Clone)]
pub struct Reader<'a> {
    bytes: &'a [u8],
    position: usize,
    package: Package,
    cid: u8,
    command_start: usize,
}

impl<'a> Reader<'a> {
    /// A reader over `bytes` for commands of `package`.
    pub fn new(bytes: &'a [u8], package: Package) -> Self {
        Reader {
            bytes,
            position: 0,
            package,
            cid: 0,
            command_start: 0,
        }
    }

    /// Bytes not read yet.
    pub fn remaining(&self) -> usize {
        self.bytes.len() - self.position
    }

    /// True when every byte was read.
    pub fn is_empty(&self) -> bool {
        self.remaining() == 0
    }

    /// Reads the next CID and remembers it for error context.
    pub fn begin_command(&mut self) -> Result<u8, DecodeError> {
        let Some(&cid) = self.bytes.get(self.position) else {
            return Err(DecodeError::Empty {
                package: self.package,
            });
        };
        self.position += 1;
        self.cid = cid;
        self.command_start = self.position;
        Ok(cid)
    }

    /// The package being decoded.
    pub fn package(&self) -> Package {
        self.package
    }

    /// The CID of the command being decoded.
    pub fn cid(&self) -> u8 {
        self.cid
    }

    /// Error for "this command needs `payload_len` bytes after its CID".
    pub fn truncated(&self, payload_len: usize) -> DecodeError {
        DecodeError::Truncated {
            package: self.package,
            cid: self.cid,
            needed: payload_len,
            available: self.bytes.len() - self.command_start,
        }
    }

    /// Error for an unknown CID.
    pub fn unknown_cid(&self) -> DecodeError {
        DecodeError::UnknownCid {
            package: self.package,
            cid: self.cid,
        }
    }

    /// Error for a field value the specification forbids.
    pub fn invalid(&self, field: &'static str, reason: &'static str) -> DecodeError {
        DecodeError::InvalidField {
            package: self.package,
            cid: self.cid,
            field,
            reason,
        }
    }

    /// Fails unless `payload_len` bytes of the current command (counted from just after
    /// its CID) are available.
    pub fn require(&self, payload_len: usize) -> Result<(), DecodeError> {
        let have = self.bytes.len() - self.command_start;
        if have < payload_len {
            Err(self.truncated(payload_len))
        } else {
            Ok(())
        }
    }

    /// Next `N` bytes.
    pub fn array<const N: usize>(&mut self) -> Result<[u8; N], DecodeError> {
        let end = self.position + N;
        match self.bytes.get(self.position..end) {
            Some(slice) => {
                let mut out = [0u8; N];
                out.copy_from_slice(slice);
                self.position = end;
                Ok(out)
            }
            None => Err(self.truncated(end - self.command_start)),
        }
    }

    /// Next byte.
    pub fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.array::<1>()?[0])
    }

    /// Next little-endian u16.
    pub fn u16_le(&mut self) -> Result<u16, DecodeError> {
        Ok(u16::from_le_bytes(self.array()?))
    }

    /// Next little-endian 24-bit value.
    pub fn u24_le(&mut self) -> Result<u32, DecodeError> {
        let [a, b, c] = self.array()?;
        Ok(u32::from_le_bytes([a, b, c, 0]))
    }

    /// Next little-endian u32.
    pub fn u32_le(&mut self) -> Result<u32, DecodeError> {
        Ok(u32::from_le_bytes(self.array()?))
    }

    /// Everything not read yet (consumes it).
    pub fn rest(&mut self) -> &'a [u8] {
        let rest = &self.bytes[self.position..];
        self.position = self.bytes.len();
        rest
    }

    /// The next `n` bytes without consuming them, if that many are left.
    pub fn peek(&self, n: usize) -> Option<&'a [u8]> {
        self.bytes.get(self.position..self.position + n)
    }

    /// True when the frame ends with exactly 3 more bytes that are not this package's
    /// PackageVersionAns (`00 <id> <version>`): the optional 3-byte tail that some
    /// implementations append to 1-byte answers (reference §7 items 1, 2, 4).
    pub fn optional_tail_of_3_remains(&self) -> bool {
        match self.peek(3) {
            Some([0x00, id, _]) if self.remaining() == 3 => *id != self.package.identifier(),
            Some(_) => self.remaining() == 3,
            None => false,
        }
    }
}

/// Little-endian writer into a caller-provided buffer.
#[derive(Debug)]
pub struct Writer<'a> {
    buffer: &'a mut [u8],
    length: usize,
}

impl<'a> Writer<'a> {
    /// A writer that fills `buffer` from its start.
    pub fn new(buffer: &'a mut [u8]) -> Self {
        Writer { buffer, length: 0 }
    }

    /// Bytes written so far.
    pub fn len(&self) -> usize {
        self.length
    }

    /// True when nothing was written.
    pub fn is_empty(&self) -> bool {
        self.length == 0
    }

    /// Appends `bytes`.
    pub fn bytes(&mut self, bytes: &[u8]) -> Result<(), EncodeError> {
        let end = self.length + bytes.len();
        match self.buffer.get_mut(self.length..end) {
            Some(slot) => {
                slot.copy_from_slice(bytes);
                self.length = end;
                Ok(())
            }
            None => Err(EncodeError::BufferTooSmall {
                needed: end,
                available: self.buffer.len(),
            }),
        }
    }

    /// Appends one byte.
    pub fn u8(&mut self, value: u8) -> Result<(), EncodeError> {
        self.bytes(&[value])
    }

    /// Appends a little-endian u16.
    pub fn u16_le(&mut self, value: u16) -> Result<(), EncodeError> {
        self.bytes(&value.to_le_bytes())
    }

    /// Appends a little-endian 24-bit value; fails if it does not fit 24 bits.
    pub fn u24_le(&mut self, value: u32, field: &'static str) -> Result<(), EncodeError> {
        if value > 0x00FF_FFFF {
            return Err(EncodeError::InvalidField {
                field,
                reason: "value does not fit 24 bits",
            });
        }
        self.bytes(&value.to_le_bytes()[..3])
    }

    /// Appends a little-endian u32.
    pub fn u32_le(&mut self, value: u32) -> Result<(), EncodeError> {
        self.bytes(&value.to_le_bytes())
    }
}

/// Checks that `value` fits in `bits` bits, for bit-field encoders.
pub fn check_bits(value: u32, bits: u32, field: &'static str) -> Result<(), EncodeError> {
    if bits < 32 && value >> bits != 0 {
        Err(EncodeError::InvalidField {
            field,
            reason: "value does not fit its bit field",
        })
    } else {
        Ok(())
    }
}

/// One command of a package, in one direction.
///
/// `'a` is the lifetime of the payload being decoded: a command may borrow from it
/// (TS004 DataFragment keeps its fragment bytes as a slice of the frame, no copy).
/// Commands that own all their fields implement it for every lifetime
/// (`impl Command<'_> for ...`).
pub trait Command<'a>: Sized {
    /// The package this command belongs to.
    const PACKAGE: Package;

    /// Decodes one command (CID included) from `reader`, for the negotiated `version`.
    fn decode(reader: &mut Reader<'a>, version: PackageVersion) -> Result<Self, DecodeError>;

    /// Appends this command (CID included) to `writer`.
    fn encode(&self, writer: &mut Writer<'_>) -> Result<(), EncodeError>;

    /// Encodes this command alone into `out`, returning the length.
    fn encode_to(&self, out: &mut [u8]) -> Result<usize, EncodeError> {
        let mut writer = Writer::new(out);
        self.encode(&mut writer)?;
        Ok(writer.len())
    }

    /// Decodes a payload that must hold exactly this one command.
    fn decode_single(payload: &'a [u8], version: PackageVersion) -> Result<Self, DecodeError> {
        let mut reader = Reader::new(payload, Self::PACKAGE);
        let command = Self::decode(&mut reader, version)?;
        if reader.is_empty() {
            Ok(command)
        } else {
            Err(reader.invalid("payload", "trailing bytes after the command"))
        }
    }
}

/// Iterator over the commands of one FRMPayload; see [`decode_all`].
#[derive(Debug, Clone)]
pub struct Commands<'a, C> {
    reader: Reader<'a>,
    version: PackageVersion,
    failed: bool,
    _command: core::marker::PhantomData<C>,
}

impl<'a, C: Command<'a>> Iterator for Commands<'a, C> {
    type Item = Result<C, DecodeError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed || self.reader.is_empty() {
            return None;
        }
        let item = C::decode(&mut self.reader, self.version);
        self.failed = item.is_err();
        Some(item)
    }
}

/// Decodes every command of an FRMPayload in order; the iterator yields one error and
/// stops at the first command that cannot be decoded.
pub fn decode_all<'a, C: Command<'a>>(
    payload: &'a [u8],
    version: PackageVersion,
) -> Commands<'a, C> {
    Commands {
        reader: Reader::new(payload, C::PACKAGE),
        version,
        failed: false,
        _command: core::marker::PhantomData,
    }
}

/// Encodes `commands` one after the other into `out`, returning the total length.
pub fn encode_all<'a, C: Command<'a>>(
    commands: &[C],
    out: &mut [u8],
) -> Result<usize, EncodeError> {
    let mut writer = Writer::new(out);
    for command in commands {
        command.encode(&mut writer)?;
    }
    Ok(writer.len())
}
