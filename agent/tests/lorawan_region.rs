//! Regional parameters against the figures of the LoRa Alliance Regional Parameters
//! (RP002-1.0.4 unless stated), typed here independently of lrwn's tables.

use fuota_agent::lorawan::airtime::CodingRate;
use fuota_agent::lorawan::region::{
    Channel, LrFhssCodingRate, Modulation, Region, RegionError, RegionName, RegionOptions,
    RegionalParametersRevision, RxWindow, CF_LIST_LEN,
};

fn eu868() -> Region {
    Region::new(RegionName::Eu868, RegionOptions::default())
}

fn us915() -> Region {
    Region::new(RegionName::Us915, RegionOptions::default())
}

fn lora(spreading_factor: u8, bandwidth_hz: u32) -> Modulation {
    Modulation::Lora {
        spreading_factor,
        bandwidth_hz,
        coding_rate: CodingRate::Cr4_5,
    }
}

#[test]
fn region_names_parse_and_print() {
    for name in RegionName::ALL {
        assert_eq!(name.as_str().parse::<RegionName>(), Ok(name));
    }
    assert_eq!("eu868".parse::<RegionName>(), Ok(RegionName::Eu868));
    assert_eq!("AS923_2".parse::<RegionName>(), Ok(RegionName::As923_2));
    assert_eq!("AS923-1".parse::<RegionName>(), Ok(RegionName::As923));
    assert!(matches!(
        "EU433".parse::<RegionName>(),
        Err(RegionError::UnknownRegion(_))
    ));
}

#[test]
fn eu868_data_rates() {
    let region = eu868();
    let expected = [
        (0, 12, 125_000),
        (1, 11, 125_000),
        (2, 10, 125_000),
        (3, 9, 125_000),
        (4, 8, 125_000),
        (5, 7, 125_000),
        (6, 7, 250_000),
    ];
    for (dr, sf, bw) in expected {
        let data_rate = region.data_rate(dr).expect("defined");
        assert_eq!(data_rate.modulation, lora(sf, bw), "DR{dr}");
        assert!(data_rate.uplink && data_rate.downlink, "DR{dr}");
    }
    let dr7 = region.data_rate(7).expect("defined");
    assert_eq!(
        dr7.modulation,
        Modulation::Fsk {
            bitrate_bps: 50_000
        }
    );
    assert!(dr7.uplink && dr7.downlink);
    for dr in 8..=11 {
        let data_rate = region.data_rate(dr).expect("defined");
        assert!(
            matches!(data_rate.modulation, Modulation::LrFhss { .. }),
            "DR{dr}"
        );
        assert!(
            data_rate.uplink && !data_rate.downlink,
            "LR-FHSS DR{dr} is uplink only"
        );
    }
    assert_eq!(
        region.data_rate(8).expect("defined").modulation,
        Modulation::LrFhss {
            coding_rate: LrFhssCodingRate::OneThird,
            occupied_channel_width_hz: 137_000
        }
    );
    assert!(matches!(
        region.data_rate(12),
        Err(RegionError::UnknownDataRate { dr: 12, .. })
    ));
    assert_eq!(region.uplink_data_rate_index(&lora(7, 125_000)), Ok(5));
    assert_eq!(region.uplink_data_rate_index(&lora(7, 250_000)), Ok(6));
    assert_eq!(region.downlink_data_rate_index(&lora(12, 125_000)), Ok(0));
    assert!(region.uplink_data_rate_index(&lora(7, 500_000)).is_err());
}

#[test]
fn eu868_max_payload_not_repeater_compatible() {
    // RP002-1.0.4 Table "EU863-870 maximum payload size (not repeater compatible)".
    let region = eu868();
    let expected_m = [59, 59, 59, 123, 250, 250, 250, 250];
    for (dr, &m) in expected_m.iter().enumerate() {
        let dr = dr as u8;
        assert_eq!(region.max_mac_payload(dr), Ok(m), "DR{dr}");
        assert_eq!(region.max_frm_payload(dr), Ok(m - 8), "DR{dr}");
        assert_eq!(region.max_phy_payload(dr), Ok(m + 5), "DR{dr}");
    }
    // lrwn 4.13 lists N = 222 for DR4 here; the document says 242 (= M − 8).
    assert_eq!(region.max_frm_payload(4), Ok(242));
    // TS004 DataFragment: N − 3.
    assert_eq!(region.max_data_fragment(0), Ok(48));
    assert_eq!(region.max_data_fragment(3), Ok(112));
    assert_eq!(region.max_data_fragment(5), Ok(239));
}

#[test]
fn eu868_max_payload_repeater_compatible() {
    let region = Region::new(
        RegionName::Eu868,
        RegionOptions {
            repeater_compatible: true,
            ..RegionOptions::default()
        },
    );
    let expected_m = [59, 59, 59, 123, 230, 230, 230, 230];
    for (dr, &m) in expected_m.iter().enumerate() {
        assert_eq!(region.max_mac_payload(dr as u8), Ok(m), "DR{dr}");
    }
    assert_eq!(region.max_data_fragment(5), Ok(219));
}

#[test]
fn eu868_rx1_and_rx2() {
    let region = eu868();
    // RX1 DR = uplink DR − offset, floored at DR0 (RP002 EU868 RX1 table).
    for (offset, expected) in [(0, 5), (1, 4), (2, 3), (3, 2), (4, 1), (5, 0)] {
        assert_eq!(
            region.rx1(868_100_000, 5, offset),
            Ok(RxWindow {
                frequency_hz: 868_100_000,
                data_rate: expected
            })
        );
    }
    assert_eq!(region.rx1(868_500_000, 1, 3).map(|w| w.data_rate), Ok(0));
    assert!(matches!(
        region.rx1(868_100_000, 5, 6),
        Err(RegionError::InvalidRx1DrOffset { offset: 6, .. })
    ));
    assert!(matches!(
        region.rx1(915_000_000, 5, 0),
        Err(RegionError::UnknownFrequency { .. })
    ));
    assert!(region.rx1(868_100_000, 12, 0).is_err());
    let rx2 = RxWindow {
        frequency_hz: 869_525_000,
        data_rate: 0,
    };
    assert_eq!(region.rx2(), rx2);
    assert_eq!(region.class_c_default(), rx2);
    let delays = region.receive_delays();
    assert_eq!(delays.rx1_delay_us, 1_000_000);
    assert_eq!(delays.rx2_delay_us, 2_000_000);
    assert_eq!(delays.join_accept_delay1_us, 5_000_000);
    assert_eq!(delays.join_accept_delay2_us, 6_000_000);
    assert_eq!(
        region.default_uplink_channels(),
        vec![
            Channel {
                frequency_hz: 868_100_000,
                min_dr: 0,
                max_dr: 5
            },
            Channel {
                frequency_hz: 868_300_000,
                min_dr: 0,
                max_dr: 5
            },
            Channel {
                frequency_hz: 868_500_000,
                min_dr: 0,
                max_dr: 5
            },
        ]
    );
    assert_eq!(region.max_downlink_eirp_dbm(869_525_000), 29);
    assert_eq!(region.max_downlink_eirp_dbm(868_100_000), 16);
    assert_eq!(region.downlink_dwell_time_limit_us(), None);
}

#[test]
fn eu868_cf_list_of_extra_channels() {
    let region = eu868();
    let frequencies = [
        867_100_000,
        867_300_000,
        867_500_000,
        867_700_000,
        867_900_000,
    ];
    let cf_list = region.cf_list_extra_channels(&frequencies).expect("valid");
    let mut expected = [0u8; CF_LIST_LEN];
    for (i, frequency) in frequencies.iter().enumerate() {
        // 24-bit little-endian frequency / 100.
        expected[i * 3..i * 3 + 3].copy_from_slice(&(frequency / 100).to_le_bytes()[..3]);
    }
    expected[15] = 0; // CFListType 0
    assert_eq!(cf_list, expected);
    assert_eq!(&cf_list[..3], &[0x18, 0x4F, 0x84]); // 8 671 000 = 0x844F18

    let two = region
        .cf_list_extra_channels(&[867_100_000, 867_300_000])
        .expect("valid");
    assert_eq!(&two[6..], &[0u8; 10]);

    assert!(matches!(
        region.cf_list_extra_channels(&[867_100_000; 6]),
        Err(RegionError::TooManyCfListChannels { count: 6, max: 5 })
    ));
    assert!(matches!(
        region.cf_list_extra_channels(&[902_300_000]),
        Err(RegionError::UnknownFrequency { .. })
    ));
    assert_eq!(
        region.cf_list_extra_channels(&[867_100_050]),
        Err(RegionError::CfListFrequencyNotEncodable(867_100_050))
    );
    assert!(matches!(
        region.cf_list_extra_channels(&[]),
        Err(RegionError::EmptyCfList(_))
    ));
    assert!(matches!(
        region.cf_list_channel_mask(&[1]),
        Err(RegionError::NotSupportedInRegion { .. })
    ));
}

#[test]
fn us915_data_rates_and_directions() {
    let region = us915();
    for (dr, sf, bw) in [
        (0, 10, 125_000),
        (1, 9, 125_000),
        (2, 8, 125_000),
        (3, 7, 125_000),
        (4, 8, 500_000),
    ] {
        let data_rate = region.data_rate(dr).expect("defined");
        assert_eq!(data_rate.modulation, lora(sf, bw), "DR{dr}");
        assert!(
            data_rate.uplink && !data_rate.downlink,
            "DR{dr} is uplink only"
        );
    }
    for (dr, sf) in [(8, 12), (9, 11), (10, 10), (11, 9), (12, 8), (13, 7)] {
        let data_rate = region.data_rate(dr).expect("defined");
        assert_eq!(data_rate.modulation, lora(sf, 500_000), "DR{dr}");
        assert!(
            !data_rate.uplink && data_rate.downlink,
            "DR{dr} is downlink only"
        );
    }
    assert!(region.data_rate(7).is_err());
    // SF8/500 kHz is DR4 up and DR12 down.
    assert_eq!(region.uplink_data_rate_index(&lora(8, 500_000)), Ok(4));
    assert_eq!(region.downlink_data_rate_index(&lora(8, 500_000)), Ok(12));
}

#[test]
fn us915_max_payload_by_revision() {
    let region = us915();
    for (dr, m) in [
        (0, 19),
        (1, 61),
        (2, 133),
        (3, 250),
        (4, 250),
        (8, 61),
        (9, 137),
        (10, 250),
        (13, 250),
    ] {
        assert_eq!(region.max_mac_payload(dr), Ok(m), "DR{dr}");
    }
    assert_eq!(region.max_data_fragment(8), Ok(50));
    assert_eq!(region.max_data_fragment(13), Ok(239));
    let repeater = |revision| {
        Region::new(
            RegionName::Us915,
            RegionOptions {
                repeater_compatible: true,
                revision,
                ..RegionOptions::default()
            },
        )
    };
    // DR8 grew from 41 to 61 bytes in RP002; 1.0.3rA devices still expect 41.
    assert_eq!(
        repeater(RegionalParametersRevision::Rp1_0_3RevA).max_mac_payload(8),
        Ok(41)
    );
    assert_eq!(
        repeater(RegionalParametersRevision::Rp002_1_0_4).max_mac_payload(8),
        Ok(61)
    );
    assert_eq!(
        repeater(RegionalParametersRevision::Rp002_1_0_4).max_mac_payload(13),
        Ok(230)
    );
}

#[test]
fn us915_channels_rx1_and_rx2() {
    let region = us915();
    let uplink = region.default_uplink_channels();
    assert_eq!(uplink.len(), 72);
    assert_eq!(uplink[0].frequency_hz, 902_300_000);
    assert_eq!(uplink[63].frequency_hz, 914_900_000);
    assert_eq!(uplink[64].frequency_hz, 903_000_000);
    assert_eq!(uplink[71].frequency_hz, 914_200_000);
    assert_eq!((uplink[64].min_dr, uplink[64].max_dr), (4, 4 + 2));
    let downlink = region.downlink_channels();
    assert_eq!(downlink.len(), 8);
    for (i, channel) in downlink.iter().enumerate() {
        assert_eq!(channel.frequency_hz, 923_300_000 + 600_000 * i as u32);
    }
    // RX1 downlink channel = uplink channel mod 8.
    assert_eq!(
        region.rx1(902_300_000, 0, 0).map(|w| w.frequency_hz),
        Ok(923_300_000)
    );
    assert_eq!(
        region.rx1(904_100_000, 0, 0).map(|w| w.frequency_hz),
        Ok(923_900_000)
    ); // ch 9
    assert_eq!(
        region.rx1(903_000_000, 4, 0).map(|w| w.frequency_hz),
        Ok(923_300_000)
    ); // ch 64
    assert_eq!(
        region.rx1(904_600_000, 4, 0).map(|w| w.frequency_hz),
        Ok(923_900_000)
    ); // ch 65
    assert!(matches!(
        region.rx1(902_400_000, 0, 0),
        Err(RegionError::UnknownFrequency { .. })
    ));
    // RX1 DR table (RP002 US915).
    assert_eq!(region.rx1(902_300_000, 0, 0).map(|w| w.data_rate), Ok(10));
    assert_eq!(region.rx1(902_300_000, 3, 0).map(|w| w.data_rate), Ok(13));
    assert_eq!(region.rx1(902_300_000, 3, 3).map(|w| w.data_rate), Ok(10));
    assert_eq!(region.rx1(903_000_000, 4, 0).map(|w| w.data_rate), Ok(13));
    assert_eq!(region.rx1(902_300_000, 0, 3).map(|w| w.data_rate), Ok(8));
    assert!(region.rx1(902_300_000, 0, 4).is_err());
    assert_eq!(
        region.rx2(),
        RxWindow {
            frequency_hz: 923_300_000,
            data_rate: 8
        }
    );
    assert_eq!(region.downlink_dwell_time_limit_us(), None);
}

#[test]
fn us915_sub_bands() {
    let region = us915();
    assert_eq!(region.sub_band(902_300_000), Some(1));
    assert_eq!(region.sub_band(903_700_000), Some(1)); // ch 7
    assert_eq!(region.sub_band(903_900_000), Some(2)); // ch 8
    assert_eq!(region.sub_band(903_000_000), Some(1)); // ch 64
    assert_eq!(region.sub_band(904_600_000), Some(2)); // ch 65
    assert_eq!(region.sub_band(914_900_000), Some(8)); // ch 63
    assert_eq!(region.sub_band(914_200_000), Some(8)); // ch 71
    assert_eq!(region.sub_band(902_400_000), None);
    assert_eq!(eu868().sub_band(868_100_000), None);

    let sub_band_2 = region.sub_band_channels(2).expect("exists");
    assert_eq!(sub_band_2.len(), 9);
    for (i, channel) in sub_band_2.iter().take(8).enumerate() {
        assert_eq!(channel.frequency_hz, 903_900_000 + 200_000 * i as u32);
        assert_eq!((channel.min_dr, channel.max_dr), (0, 3));
    }
    assert_eq!(sub_band_2[8].frequency_hz, 904_600_000);
    assert_eq!(
        region.sub_band_channels(0),
        Err(RegionError::InvalidSubBand(0))
    );
    assert_eq!(
        region.sub_band_channels(9),
        Err(RegionError::InvalidSubBand(9))
    );
    assert!(eu868().sub_band_channels(1).is_err());
}

#[test]
fn us915_cf_list_channel_mask() {
    let region = us915();
    let cf_list = region.cf_list_channel_mask(&[2]).expect("valid");
    let mut expected = [0u8; CF_LIST_LEN];
    // ChMask0 = channels 0–15: bits 8..15 set (little-endian 0xFF00).
    expected[0] = 0x00;
    expected[1] = 0xFF;
    // ChMask4 = channels 64–79: bit 1 (channel 65).
    expected[8] = 0x02;
    expected[15] = 0x01; // CFListType 1
    assert_eq!(cf_list, expected);

    let both = region.cf_list_channel_mask(&[1, 8]).expect("valid");
    assert_eq!(&both[0..2], &[0xFF, 0x00]); // channels 0–7
    assert_eq!(&both[6..8], &[0x00, 0xFF]); // channels 56–63
    assert_eq!(&both[8..10], &[0x81, 0x00]); // channels 64 and 71
    assert_eq!(both[15], 0x01);

    assert_eq!(
        region.cf_list_channel_mask(&[9]),
        Err(RegionError::InvalidSubBand(9))
    );
    assert!(matches!(
        region.cf_list_channel_mask(&[]),
        Err(RegionError::EmptyCfList(_))
    ));
    assert!(matches!(
        region.cf_list_extra_channels(&[903_000_000]),
        Err(RegionError::NotSupportedInRegion { .. })
    ));
}

#[test]
fn as923_groups_and_dwell_time() {
    let as923 = Region::new(RegionName::As923, RegionOptions::default());
    assert_eq!(
        as923.rx2(),
        RxWindow {
            frequency_hz: 923_200_000,
            data_rate: 2
        }
    );
    assert_eq!(as923.default_uplink_channels().len(), 2);
    assert_eq!(
        Region::new(RegionName::As923_2, RegionOptions::default())
            .rx2()
            .frequency_hz,
        921_400_000
    );
    assert_eq!(
        Region::new(RegionName::As923_3, RegionOptions::default())
            .rx2()
            .frequency_hz,
        916_600_000
    );
    assert_eq!(
        Region::new(RegionName::As923_4, RegionOptions::default())
            .rx2()
            .frequency_hz,
        917_300_000
    );
    assert_eq!(as923.max_mac_payload(0), Ok(59));
    assert_eq!(as923.downlink_dwell_time_limit_us(), None);
    assert_eq!(as923.rx1(923_200_000, 2, 2).map(|w| w.data_rate), Ok(0));
    // AS923 offsets 6 and 7 raise the DR (effective −1, −2), capped at DR5.
    assert_eq!(as923.rx1(923_200_000, 3, 6).map(|w| w.data_rate), Ok(4));
    assert_eq!(as923.rx1(923_200_000, 5, 7).map(|w| w.data_rate), Ok(5));

    let dwell = Region::new(
        RegionName::As923,
        RegionOptions {
            downlink_dwell_time_400ms: true,
            ..RegionOptions::default()
        },
    );
    assert_eq!(dwell.downlink_dwell_time_limit_us(), Some(400_000));
    assert!(matches!(
        dwell.max_mac_payload(0),
        Err(RegionError::DataRateNotAllowed { dr: 0, .. })
    ));
    assert_eq!(dwell.max_mac_payload(2), Ok(19));
    // With the dwell-time limit RX1 never goes below DR2.
    assert_eq!(dwell.rx1(923_200_000, 2, 2).map(|w| w.data_rate), Ok(2));
    assert!(matches!(
        dwell.cf_list_channel_mask(&[1]),
        Err(RegionError::NotSupportedInRegion { .. })
    ));
    assert!(dwell
        .cf_list_extra_channels(&[923_600_000, 923_800_000])
        .is_ok());
}

#[test]
fn every_lora_and_fsk_data_rate_has_a_max_payload_in_every_table() {
    let revisions = [
        RegionalParametersRevision::Rp1_0_2RevB,
        RegionalParametersRevision::Rp1_0_3RevA,
        RegionalParametersRevision::Rp002_1_0_4,
    ];
    for name in RegionName::ALL {
        for revision in revisions {
            for repeater_compatible in [false, true] {
                for downlink_dwell_time_400ms in [false, true] {
                    let options = RegionOptions {
                        repeater_compatible,
                        downlink_dwell_time_400ms,
                        revision,
                    };
                    let region = Region::new(name, options);
                    for data_rate in region.data_rates() {
                        let dr = data_rate.index;
                        let result = region.max_mac_payload(dr);
                        match (&data_rate.modulation, &result) {
                            (_, Ok(m)) => {
                                assert!(*m >= 19 && *m <= 250, "{name} {options:?} DR{dr}: {m}");
                                if repeater_compatible {
                                    assert!(*m <= 230, "{name} {options:?} DR{dr}: {m}");
                                }
                            }
                            // AS923 with the dwell-time limit forbids DR0/DR1.
                            (_, Err(RegionError::DataRateNotAllowed { .. }))
                                if name.is_as923() && downlink_dwell_time_400ms && dr <= 1 => {}
                            // LR-FHSS rows only exist in the RP002 tables.
                            (Modulation::LrFhss { .. }, Err(RegionError::Table(_)))
                                if revision != RegionalParametersRevision::Rp002_1_0_4 => {}
                            (_, Err(error)) => panic!("{name} {options:?} DR{dr}: {error}"),
                        }
                    }
                }
            }
        }
    }
}
