//! NUCLEO-WL55JC1 specifics: the RF front-end switch and the radio's board configuration.
//!
//! RF switch, from ST's BSP (`stm32wlxx_nucleo_radio.c`, `BSP_RADIO_ConfigRFSwitch`) and the
//! board manual (UM2592). Note the pin order: FE_CTRL1 is PC4, FE_CTRL2 is PC5, FE_CTRL3 is PC3.
//!
//! | path                  | FE_CTRL1 (PC4) | FE_CTRL2 (PC5) | FE_CTRL3 (PC3) |
//! |-----------------------|:--------------:|:--------------:|:--------------:|
//! | off                   | 0              | 0              | 0              |
//! | receive               | 1              | 0              | 1              |
//! | transmit, low power   | 1              | 1              | 1              |
//! | transmit, high power  | 0              | 1              | 1              |
//!
//! The radio is clocked by a 32 MHz TCXO powered from the radio's VDDTCXO pin at 1.7 V
//! (`TCXO_CTRL_1_7V` in ST's BSP), and the board fits the SMPS inductor, so the radio runs on
//! its DC-DC regulator.
use embassy_stm32::gpio::{Level, Output, Speed};
use embassy_stm32::peripherals::{PC3, PC4, PC5};
use embassy_stm32::Peri;
use lora_phy::sx126x::{self, Stm32wl, TcxoCtrlVoltage};

use crate::radio::{RfPath, RfSwitch};

/// The STM32WL's two power amplifiers; the board's RF switch routes one of them to the antenna.
#[allow(
    dead_code,
    reason = "one variant is chosen in TX_AMPLIFIER; the other stays selectable"
)]
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum PowerAmplifier {
    /// RFO_LP: up to +15 dBm, the efficient choice at EU868's +14 dBm.
    LowPower,
    /// RFO_HP: up to +22 dBm.
    HighPower,
}

/// The amplifier used for every transmission. lora-phy's STM32WL variant uses one amplifier
/// for all powers (ST's own stack picks LP up to +15 dBm and HP above).
pub const TX_AMPLIFIER: PowerAmplifier = PowerAmplifier::HighPower;

/// Highest conducted power (dBm) the chosen amplifier can give; lorawan-device caps the
/// region's power at this.
pub const MAX_TX_POWER_DBM: u8 = match TX_AMPLIFIER {
    PowerAmplifier::LowPower => 15,
    PowerAmplifier::HighPower => 22,
};

/// Antenna gain minus board losses (dBi), subtracted from the region's EIRP limit. The
/// NUCLEO's stub antenna is taken as 0 dBi; set the real figure for another antenna.
pub const ANTENNA_GAIN_DBI: i8 = 0;

/// lora-phy's SX126x configuration for this board.
pub fn radio_config() -> sx126x::Config<Stm32wl> {
    sx126x::Config {
        chip: Stm32wl {
            use_high_power_pa: TX_AMPLIFIER == PowerAmplifier::HighPower,
        },
        tcxo_ctrl: Some(TcxoCtrlVoltage::Ctrl1V7),
        use_dcdc: true,
        // Boosted LNA gain: better sensitivity for a little more receive current.
        rx_boost: true,
    }
}

/// The NUCLEO-WL55JC1's RF switch on PC3/PC4/PC5 (table in the module doc).
pub struct NucleoRfSwitch {
    fe_ctrl1: Output<'static>,
    fe_ctrl2: Output<'static>,
    fe_ctrl3: Output<'static>,
}

impl NucleoRfSwitch {
    pub fn new(pc4: Peri<'static, PC4>, pc5: Peri<'static, PC5>, pc3: Peri<'static, PC3>) -> Self {
        Self {
            fe_ctrl1: Output::new(pc4, Level::Low, Speed::VeryHigh),
            fe_ctrl2: Output::new(pc5, Level::Low, Speed::VeryHigh),
            fe_ctrl3: Output::new(pc3, Level::Low, Speed::VeryHigh),
        }
    }
}

impl RfSwitch for NucleoRfSwitch {
    fn select(&mut self, path: RfPath) {
        let (ctrl1, ctrl2, ctrl3) = match (path, TX_AMPLIFIER) {
            (RfPath::Off, _) => (false, false, false),
            (RfPath::Receive, _) => (true, false, true),
            (RfPath::Transmit, PowerAmplifier::LowPower) => (true, true, true),
            (RfPath::Transmit, PowerAmplifier::HighPower) => (false, true, true),
        };
        self.fe_ctrl1.set_level(Level::from(ctrl1));
        self.fe_ctrl2.set_level(Level::from(ctrl2));
        self.fe_ctrl3.set_level(Level::from(ctrl3));
    }
}
