//! Time on air against the Semtech formula: published values, values worked out by hand
//! below, and an independent floating-point transcription of the formula checked over
//! every SF, bandwidth, coding rate, CRC setting and a spread of payload lengths.

use fuota_agent::lorawan::airtime::{
    lorawan_downlink_airtime, AirtimeError, CodingRate, FskFrame, LoraFrame,
    LowDataRateOptimization,
};
use fuota_agent::lorawan::region::Modulation;

fn uplink(sf: u8, bw: u32, len: usize) -> LoraFrame {
    LoraFrame::lorawan_uplink(sf, bw, len)
}

/// Inputs of the Semtech formula, as plain numbers.
struct FormulaInputs {
    sf: u32,
    bw_hz: f64,
    cr: u32,
    preamble: u32,
    explicit_header: bool,
    crc: bool,
    low_data_rate: bool,
    payload_len: u32,
}

/// AN1200.13 / SX1276 datasheet §4.1.1.7, written out independently in floating point,
/// for SF7..SF12; SX1261/2 datasheet §6.1.4 for SF5/SF6. Returns milliseconds.
fn semtech_formula_ms(inputs: &FormulaInputs) -> f64 {
    let FormulaInputs {
        sf,
        bw_hz,
        cr,
        preamble,
        explicit_header,
        crc,
        low_data_rate,
        payload_len,
    } = *inputs;
    let t_sym = f64::from(1u32 << sf) / bw_hz * 1000.0;
    let ih = if explicit_header { 0.0 } else { 1.0 };
    let crc = if crc { 1.0 } else { 0.0 };
    let de = if low_data_rate { 1.0 } else { 0.0 };
    let sf_f = f64::from(sf);
    let pl = f64::from(payload_len);
    let (preamble_extra, numerator) = if sf >= 7 {
        (4.25, 8.0 * pl - 4.0 * sf_f + 28.0 + 16.0 * crc - 20.0 * ih)
    } else {
        // SX126x: no 8-bit extra term below SF7, 6.25 extra preamble symbols.
        (6.25, 8.0 * pl - 4.0 * sf_f + 20.0 + 16.0 * crc - 20.0 * ih)
    };
    let t_preamble = (f64::from(preamble) + preamble_extra) * t_sym;
    let blocks = (numerator / (4.0 * (sf_f - 2.0 * de))).ceil().max(0.0);
    let payload_symbols = 8.0 + blocks * f64::from(cr + 4);
    t_preamble + payload_symbols * t_sym
}

#[test]
fn published_sf7_125khz_13_bytes_is_46_336_ms() {
    // Semtech LoRa calculator / AN1200.13 example: 46.3 ms.
    assert_eq!(uplink(7, 125_000, 13).time_on_air_us(), Ok(46_336));
}

#[test]
fn published_sf12_125khz_51_bytes_is_2465_792_ms() {
    // The usual EU868 DR0 maximum: 2465.8 ms (LDRO on).
    assert_eq!(uplink(12, 125_000, 51).time_on_air_us(), Ok(2_465_792));
}

#[test]
fn hand_computed_values() {
    // SF9/125, CR4/5, 8 preamble, 20 bytes, CRC on, explicit:
    //   Tsym = 512/125 kHz = 4.096 ms; preamble 12.25 × 4.096 = 50.176 ms
    //   ceil((160 − 36 + 28 + 16) / 36) = ceil(4.67) = 5 → 8 + 5×5 = 33 symbols = 135.168 ms
    assert_eq!(uplink(9, 125_000, 20).time_on_air_us(), Ok(185_344));

    // EU868 RX2 join accept with CFList: SF12/125, 33 bytes, no CRC (downlink), LDRO on:
    //   Tsym = 32.768 ms; ceil((264 − 48 + 28) / 40) = ceil(6.1) = 7 → 8 + 35 = 43 symbols
    //   (8 + 4.25 + 43) × 32.768 = 55.25 × 32.768 = 1810.432 ms
    assert_eq!(
        LoraFrame::lorawan_downlink(12, 125_000, 33).time_on_air_us(),
        Ok(1_810_432)
    );

    // US915 DR13 downlink, SF7/500, 20 bytes, no CRC: Tsym = 0.256 ms;
    //   ceil((160 − 28 + 28) / 28) = ceil(5.71) = 6 → 8 + 30 = 38; (12.25 + 38) × 0.256 = 12.864 ms
    assert_eq!(
        LoraFrame::lorawan_downlink(7, 500_000, 20).time_on_air_us(),
        Ok(12_864)
    );

    // SF8/125, CR4/8, 16 preamble, implicit header, no CRC, 10 bytes:
    //   Tsym = 2.048 ms; ceil((80 − 32 + 28 − 20) / 32) = ceil(1.75) = 2 → 8 + 2×8 = 24
    //   (16 + 4.25 + 24) × 2.048 = 90.624 ms
    let frame = LoraFrame {
        spreading_factor: 8,
        bandwidth_hz: 125_000,
        coding_rate: CodingRate::Cr4_8,
        preamble_symbols: 16,
        explicit_header: false,
        crc: false,
        low_data_rate_optimization: LowDataRateOptimization::Auto,
        payload_len: 10,
    };
    assert_eq!(frame.time_on_air_us(), Ok(90_624));

    // SF5/125 (SX126x), 10 bytes, CRC on, explicit: Tsym = 0.256 ms
    //   ceil((80 + 16 − 20 + 20) / 20) = ceil(4.8) = 5 → 8 + 25 = 33
    //   (8 + 6.25 + 33) × 0.256 = 12.096 ms
    assert_eq!(uplink(5, 125_000, 10).time_on_air_us(), Ok(12_096));

    // Empty payload, SF12/125 with CRC off: numerator 0 − 48 + 28 = −20 → 0 blocks
    //   (8 + 4.25 + 8) × 32.768 = 663.552 ms
    assert_eq!(
        LoraFrame::lorawan_downlink(12, 125_000, 0).time_on_air_us(),
        Ok(663_552)
    );
}

#[test]
fn matches_independent_formula_everywhere() {
    let coding_rates = [
        (CodingRate::Cr4_5, 1),
        (CodingRate::Cr4_6, 2),
        (CodingRate::Cr4_7, 3),
        (CodingRate::Cr4_8, 4),
    ];
    let mut checked = 0;
    for sf in 5u8..=12 {
        for bw in [125_000u32, 250_000, 500_000] {
            for (coding_rate, cr) in coding_rates {
                for crc in [false, true] {
                    for explicit_header in [true, false] {
                        for preamble in [6u16, 8, 12] {
                            for payload_len in (0usize..=255).step_by(7).chain([255]) {
                                let frame = LoraFrame {
                                    spreading_factor: sf,
                                    bandwidth_hz: bw,
                                    coding_rate,
                                    preamble_symbols: preamble,
                                    explicit_header,
                                    crc,
                                    low_data_rate_optimization: LowDataRateOptimization::Auto,
                                    payload_len,
                                };
                                // Auto: symbol ≥ 16 ms (SF11/12 at 125 kHz, SF12 at 250 kHz).
                                let ldro =
                                    (bw == 125_000 && sf >= 11) || (bw == 250_000 && sf == 12);
                                assert_eq!(frame.uses_low_data_rate_optimization(), ldro);
                                let expected_ms = semtech_formula_ms(&FormulaInputs {
                                    sf: u32::from(sf),
                                    bw_hz: f64::from(bw),
                                    cr,
                                    preamble: u32::from(preamble),
                                    explicit_header,
                                    crc,
                                    low_data_rate: ldro,
                                    payload_len: payload_len as u32,
                                });
                                let ours = frame.time_on_air_us().expect("valid frame");
                                let difference = (ours as f64 - expected_ms * 1000.0).abs();
                                assert!(
                                    difference < 1.0,
                                    "SF{sf} BW{bw} {coding_rate} crc={crc} explicit={explicit_header} \
                                     preamble={preamble} len={payload_len}: ours {ours} µs, formula {expected_ms} ms"
                                );
                                checked += 1;
                            }
                        }
                    }
                }
            }
        }
    }
    assert_eq!(checked, 8 * 3 * 4 * 2 * 2 * 3 * 38);
}

#[test]
fn low_data_rate_optimization_can_be_forced() {
    let mut frame = uplink(12, 125_000, 51);
    frame.low_data_rate_optimization = LowDataRateOptimization::Off;
    // ceil(404 / 48) = 9 → 8 + 45 = 53 symbols: (12.25 + 53) × 32.768 = 2138.112 ms
    assert_eq!(frame.time_on_air_us(), Ok(2_138_112));
    let mut frame = uplink(7, 125_000, 13);
    frame.low_data_rate_optimization = LowDataRateOptimization::On;
    assert!(frame.uses_low_data_rate_optimization());
    assert!(!uplink(11, 250_000, 1).uses_low_data_rate_optimization());
    assert!(uplink(12, 250_000, 1).uses_low_data_rate_optimization());
    assert!(!uplink(12, 500_000, 1).uses_low_data_rate_optimization());
}

#[test]
fn symbol_and_payload_symbol_counts() {
    let frame = uplink(7, 125_000, 13);
    assert_eq!(frame.symbol_duration_us(), Ok(1_024));
    assert_eq!(frame.payload_symbols(), Ok(33));
    assert_eq!(uplink(12, 500_000, 0).symbol_duration_us(), Ok(8_192));
}

#[test]
fn fsk_time_on_air() {
    // EU868 DR7, 50 kbit/s: (5 preamble + 3 sync + 1 length + 10 + 2 CRC) × 8 bits × 20 µs
    assert_eq!(FskFrame::lorawan(50_000, 10).time_on_air_us(), Ok(3_360));
    assert_eq!(
        FskFrame::lorawan(0, 10).time_on_air_us(),
        Err(AirtimeError::InvalidBitrate(0))
    );
}

#[test]
fn invalid_parameters_are_errors_not_panics() {
    assert_eq!(
        uplink(4, 125_000, 10).time_on_air_us(),
        Err(AirtimeError::InvalidSpreadingFactor(4))
    );
    assert_eq!(
        uplink(13, 125_000, 10).time_on_air_us(),
        Err(AirtimeError::InvalidSpreadingFactor(13))
    );
    assert_eq!(
        uplink(7, 0, 10).time_on_air_us(),
        Err(AirtimeError::InvalidBandwidth(0))
    );
    assert_eq!(
        uplink(7, 125_000, 256).time_on_air_us(),
        Err(AirtimeError::PayloadTooLong { len: 256, max: 255 })
    );
    assert!("4/9".parse::<CodingRate>().is_err());
    assert_eq!("4/7".parse::<CodingRate>(), Ok(CodingRate::Cr4_7));
    assert_eq!(
        lorawan_downlink_airtime(
            &Modulation::LrFhss {
                coding_rate: fuota_agent::lorawan::region::LrFhssCodingRate::OneThird,
                occupied_channel_width_hz: 137_000,
            },
            10
        ),
        Err(AirtimeError::UnsupportedModulation)
    );
}

#[test]
fn packet_forwarder_occupancy_covers_its_own_estimate() {
    // lgw_time_on_air sets DE for SF ≥ 11 whatever the bandwidth: at SF12/500 kHz, 50
    // bytes, no CRC, it counts ceil((400 − 48 + 28) / 40) = 10 blocks instead of
    // ceil(380 / 48) = 8: 10 more symbols of 8.192 ms.
    let frame = LoraFrame::lorawan_downlink(12, 500_000, 50);
    let real = frame.time_on_air_us().expect("valid");
    let occupancy = frame.packet_forwarder_occupancy_us().expect("valid");
    assert_eq!(real, (8 * 4 + 17 + 4 * 48) * 8_192 / 4); // 12.25 + 48 symbols
    assert_eq!(occupancy, 575_000); // (12.25 + 58) × 8.192 = 575.488 ms → 575 ms
    assert!(occupancy > real);
    // Where the HAL agrees with us, the occupancy is the time on air rounded to a ms.
    // SF7/125, 13 bytes with CRC: 46.336 ms, the HAL's 46 ms is shorter: ours is kept.
    assert_eq!(
        uplink(7, 125_000, 13).packet_forwarder_occupancy_us(),
        Ok(46_336)
    );
    // SF7/125, 13 bytes without CRC: 41.216 ms (28 payload symbols).
    assert_eq!(
        LoraFrame::lorawan_downlink(7, 125_000, 13).packet_forwarder_occupancy_us(),
        Ok(41_216)
    );
    let airtime = lorawan_downlink_airtime(
        &Modulation::Lora {
            spreading_factor: 12,
            bandwidth_hz: 500_000,
            coding_rate: CodingRate::Cr4_5,
        },
        50,
    )
    .expect("valid");
    assert_eq!(airtime.time_on_air_us, real);
    assert_eq!(airtime.concentrator_occupancy_us, occupancy);
}
