//! Identifiers shared by configuration, storage and the packet-forwarder link: the
//! EUI-64s of gateways, devices and join servers, the 32-bit DevAddr, and AES-128 keys.
//!
//! EUIs are written as 16 hexadecimal digits, most significant byte first, the way they
//! are printed on labels and in network servers (`0016c001ff10a235`); parsing also
//! accepts `:` or `-` between the bytes and upper case. Keys never print: their `Debug`
//! is redacted and they have no `Display`, so they cannot leak into logs or events.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Why a text is not a valid identifier or key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdentifierError {
    /// Wrong number of hexadecimal digits.
    #[error("expected {expected} hexadecimal digits, found {found}")]
    WrongLength {
        /// Digits required.
        expected: usize,
        /// Digits found (separators excluded).
        found: usize,
    },
    /// A character that is neither a hexadecimal digit nor an allowed separator.
    #[error(
        "invalid character {0:?} (expected hexadecimal digits, optionally separated by ':' or '-')"
    )]
    InvalidCharacter(char),
}

/// Parses `N` bytes from hexadecimal text, most significant byte first, allowing `:` or
/// `-` between bytes.
fn parse_hex_bytes<const N: usize>(text: &str) -> Result<[u8; N], IdentifierError> {
    let mut digits = Vec::with_capacity(N * 2);
    for character in text.trim().chars() {
        match character {
            ':' | '-' => continue,
            c if c.is_ascii_hexdigit() => digits.push(c),
            other => return Err(IdentifierError::InvalidCharacter(other)),
        }
    }
    if digits.len() != N * 2 {
        return Err(IdentifierError::WrongLength {
            expected: N * 2,
            found: digits.len(),
        });
    }
    let mut bytes = [0u8; N];
    for (byte, pair) in bytes.iter_mut().zip(digits.chunks_exact(2)) {
        let high = pair[0].to_digit(16).unwrap_or(0) as u8;
        let low = pair[1].to_digit(16).unwrap_or(0) as u8;
        *byte = (high << 4) | low;
    }
    Ok(bytes)
}

fn write_hex(f: &mut fmt::Formatter<'_>, bytes: &[u8]) -> fmt::Result {
    for byte in bytes {
        write!(f, "{byte:02x}")?;
    }
    Ok(())
}

macro_rules! eui64 {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name([u8; 8]);

        impl $name {
            /// The EUI from its 8 bytes, most significant first (as written).
            pub const fn from_bytes(bytes: [u8; 8]) -> Self {
                $name(bytes)
            }

            /// The 8 bytes, most significant first (as written).
            pub const fn to_bytes(self) -> [u8; 8] {
                self.0
            }

            /// The EUI as a big-endian integer.
            pub const fn to_u64(self) -> u64 {
                u64::from_be_bytes(self.0)
            }
        }

        impl From<u64> for $name {
            fn from(value: u64) -> Self {
                $name(value.to_be_bytes())
            }
        }

        impl FromStr for $name {
            type Err = IdentifierError;
            fn from_str(text: &str) -> Result<Self, Self::Err> {
                parse_hex_bytes::<8>(text).map($name)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write_hex(f, &self.0)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({self})", stringify!($name))
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.collect_str(self)
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                let text = String::deserialize(deserializer)?;
                text.parse().map_err(|error| {
                    serde::de::Error::custom(format!(
                        "invalid {} {text:?}: {error}",
                        stringify!($name)
                    ))
                })
            }
        }
    };
}

eui64!(
    /// A gateway's EUI-64 (the "gateway MAC" of the Semtech UDP protocol).
    GatewayEui
);
eui64!(
    /// A device's DevEUI.
    DevEui
);
eui64!(
    /// A device's JoinEUI (AppEUI in LoRaWAN 1.0.x).
    JoinEui
);

impl From<semtech_udp::MacAddress> for GatewayEui {
    fn from(mac: semtech_udp::MacAddress) -> Self {
        GatewayEui(mac.into_array())
    }
}

impl From<GatewayEui> for semtech_udp::MacAddress {
    fn from(eui: GatewayEui) -> Self {
        semtech_udp::MacAddress::from(eui.0)
    }
}

/// A 32-bit device address, written as 8 hexadecimal digits, most significant byte first
/// (the frame carries it little-endian).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DevAddr([u8; 4]);

impl DevAddr {
    /// The address from its 4 bytes, most significant first.
    pub const fn from_bytes(bytes: [u8; 4]) -> Self {
        DevAddr(bytes)
    }

    /// The 4 bytes, most significant first.
    pub const fn to_bytes(self) -> [u8; 4] {
        self.0
    }

    /// The address as an integer.
    pub const fn to_u32(self) -> u32 {
        u32::from_be_bytes(self.0)
    }
}

impl From<u32> for DevAddr {
    fn from(value: u32) -> Self {
        DevAddr(value.to_be_bytes())
    }
}

impl FromStr for DevAddr {
    type Err = IdentifierError;
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        parse_hex_bytes::<4>(text).map(DevAddr)
    }
}

impl fmt::Display for DevAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_hex(f, &self.0)
    }
}

impl fmt::Debug for DevAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DevAddr({self})")
    }
}

impl Serialize for DevAddr {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

/// An AES-128 key (AppKey, NwkKey, GenAppKey, session keys): the protocol crate's
/// [`Key128`](lorawan_fuota::crypto::Key128), whose `Debug` is redacted and which has no
/// `Display` or `Serialize`, so keys never reach logs, events or API output.
pub type AesKey = lorawan_fuota::crypto::Key128;

/// A key from 32 hexadecimal digits (for imports and tests; never printed back).
pub fn parse_aes_key(text: &str) -> Result<AesKey, IdentifierError> {
    parse_hex_bytes::<16>(text).map(AesKey::from_bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn eui_parses_plain_and_separated_hex() {
        let plain: GatewayEui = "0016c001ff10a235".parse().unwrap();
        let separated: GatewayEui = "00:16:C0:01:FF:10:A2:35".parse().unwrap();
        let dashed: GatewayEui = "00-16-c0-01-ff-10-a2-35".parse().unwrap();
        assert_eq!(plain, separated);
        assert_eq!(plain, dashed);
        assert_eq!(plain.to_string(), "0016c001ff10a235");
        assert_eq!(plain.to_u64(), 0x0016_c001_ff10_a235);
    }

    #[test]
    fn eui_rejects_wrong_length_and_characters() {
        assert_eq!(
            "0016c001ff10a2".parse::<DevEui>(),
            Err(IdentifierError::WrongLength {
                expected: 16,
                found: 14
            })
        );
        assert_eq!(
            "0016c001ff10a2zz".parse::<DevEui>(),
            Err(IdentifierError::InvalidCharacter('z'))
        );
    }

    #[test]
    fn gateway_eui_round_trips_through_semtech_mac() {
        let eui = GatewayEui::from(0x0102_0304_0506_0708);
        let mac: semtech_udp::MacAddress = eui.into();
        assert_eq!(GatewayEui::from(mac), eui);
    }

    #[test]
    fn keys_never_print() {
        let key = parse_aes_key("2b7e151628aed2a6abf7158809cf4f3c").unwrap();
        let printed = format!("{key:?}");
        assert!(printed.contains("redacted"), "{printed}");
        assert!(!printed.to_lowercase().contains("2b7e"), "{printed}");
    }

    #[test]
    fn dev_addr_is_written_most_significant_first() {
        let addr: DevAddr = "26011bda".parse().unwrap();
        assert_eq!(addr.to_u32(), 0x2601_1bda);
        assert_eq!(addr.to_string(), "26011bda");
    }
}
