//! Logging: through defmt with the `defmt` feature on a bare-metal target (the STM32WL
//! application), nowhere otherwise. On a host the feature changes nothing, so that
//! `cargo test --workspace --all-features` links without a defmt logger. Format strings use only what defmt and `core::fmt` share
//! (`{}`, `{:?}`, `{:08x}`); a value logged with `{:?}` is [`Loggable`].

/// What a logged value must be: `defmt::Format` on the device, `Debug` elsewhere.
#[cfg(all(feature = "defmt", target_os = "none"))]
pub trait Loggable: defmt::Format {}
#[cfg(all(feature = "defmt", target_os = "none"))]
impl<T: defmt::Format> Loggable for T {}

/// What a logged value must be: `defmt::Format` on the device, `Debug` elsewhere.
#[cfg(not(all(feature = "defmt", target_os = "none")))]
pub trait Loggable: core::fmt::Debug {}
#[cfg(not(all(feature = "defmt", target_os = "none")))]
impl<T: core::fmt::Debug> Loggable for T {}

macro_rules! log_at {
    ($level:ident, $($arg:tt)*) => {{
        #[cfg(all(feature = "defmt", target_os = "none"))]
        defmt::$level!($($arg)*);
        #[cfg(not(all(feature = "defmt", target_os = "none")))]
        if false {
            let _ = core::format_args!($($arg)*);
        }
    }};
}

macro_rules! debug {
    ($($arg:tt)*) => { log_at!(debug, $($arg)*) };
}
macro_rules! info {
    ($($arg:tt)*) => { log_at!(info, $($arg)*) };
}
macro_rules! warn {
    ($($arg:tt)*) => { log_at!(warn, $($arg)*) };
}
macro_rules! error {
    ($($arg:tt)*) => { log_at!(error, $($arg)*) };
}
