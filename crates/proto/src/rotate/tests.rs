use super::*;
use crate::Proto;

fn secret(s: &str) -> Secret {
    Secret::new(s.as_bytes().to_vec()).unwrap()
}

fn md5(s: &str, bottom: u16, top: u16, count: usize) -> Rotation {
    Rotation::new(Algorithm::Md5Hourly, secret(s), PortRange::new(bottom, top).unwrap(), count).unwrap()
}

fn hmac(s: &str, bottom: u16, top: u16, count: usize, step_secs: u64, protocols: Protocols) -> Rotation {
    let alg = Algorithm::HmacSha256 { step_secs, protocols };
    Rotation::new(alg, secret(s), PortRange::new(bottom, top).unwrap(), count).unwrap()
}

/// 2008-08-19T17:59:12Z.
const AT_2008: u64 = 1_219_168_752;

#[test]
fn md5_hourly_matches_the_write_up() {
    let r = md5("f00b4r", 10000, 10999, 5);
    assert_eq!(format_knocks(&r.sequence_at(AT_2008)), "10978 10024 10722 10688 10711");
    // The whole hour 17:00:00-17:59:59 shares it; 18:00:00 does not.
    assert_eq!(r.sequence_at(1_219_165_200), r.sequence_at(AT_2008));
    assert_eq!(r.sequence_at(1_219_168_799), r.sequence_at(AT_2008));
    assert_ne!(r.sequence_at(1_219_168_800), r.sequence_at(AT_2008));
}

#[test]
fn md5_hourly_hashes_the_date_text_with_its_newline() {
    let hour = 1_219_168_752 / 3600;
    assert_eq!(md5_hourly::text(&secret("f00b4r"), hour), b"2008-08-19-17-f00b4r\n");
    // A leap day and the turn of a century, both checked with `date`.
    assert_eq!(md5_hourly::text(&secret("x"), 1_709_249_400 / 3600), b"2024-02-29-23-x\n");
    assert_eq!(md5_hourly::text(&secret("x"), 951_868_800 / 3600), b"2000-03-01-00-x\n");
    assert_eq!(md5_hourly::text(&secret("x"), 0), b"1970-01-01-00-x\n");
}

/// Cross-checked with the shell recipe:
/// `H=$(TZ=UTC date -d "2024-02-29 23:30:00 UTC" "+%Y-%m-%d-%H-correct horse" | md5sum)`
/// (0be87784e83ea9a5693dd278b14d136e), then for i in 0..4
/// `echo "16i $H Ai 10000 $i ^ / 10000 % 20000 + p" | dc` (upper-cased hex), and python3.
#[test]
fn md5_hourly_own_vectors_agree_with_date_md5sum_and_dc() {
    let r = md5("correct horse", 20000, 29999, 5);
    assert_eq!(format_knocks(&r.sequence_at(1_709_249_400)), "22286 23976 27306 23953 25403");
    // c73687cf9b91044178ab7ebe92f423b5 = md5("2000-03-01-00-s3cr3t\n"), n = 64512.
    let r = md5("s3cr3t", 1024, 65535, 4);
    assert_eq!(format_knocks(&r.sequence_at(951_868_800)), "24501 56974 4669 43769");
}

#[test]
fn md5_hourly_refuses_what_the_recipe_cannot_express() {
    let range = PortRange::new(10000, 10999).unwrap();
    for bad in ["a%Hb", "line\nbreak", "tab\there"] {
        let e = Rotation::new(Algorithm::Md5Hourly, secret(bad), range, 5).unwrap_err();
        assert_eq!(e, RotateError::Md5SecretChars, "{bad:?}");
    }
    // 1000^12 < 2^128 < 1000^13: 13 knocks fit, 14 do not.
    assert!(Rotation::new(Algorithm::Md5Hourly, secret("s"), range, 13).is_ok());
    assert_eq!(
        Rotation::new(Algorithm::Md5Hourly, secret("s"), range, 14).unwrap_err(),
        RotateError::CountTooLargeForDigest
    );
}

#[test]
fn hmac_block_is_plain_hmac_sha256_over_label_step_block() {
    // python3: hmac.new(b"f00b4r", b"portcullis rotating v1\0" + struct.pack(">QI", 0, 0),
    //                   hashlib.sha256).hexdigest()
    let b = hmac_sha256::block(&secret("f00b4r"), 0, 0);
    let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
    assert_eq!(hex, "8822f0877bcc58613e677cdfae1020c48ec28e577738d01e71d6307d7d32031f");
}

/// Vectors from an independent python3 implementation of docs/rotating.md.
#[test]
fn hmac_sha256_vectors() {
    let r = hmac("f00b4r", 10000, 10999, 5, 30, Protocols::Tcp);
    assert_eq!(r.step_at(AT_2008), 40_638_958);
    assert_eq!(format_knocks(&r.sequence_at(AT_2008)), "10088 10979 10708 10718 10193");
    assert_eq!(format_knocks(&r.sequence(40_638_959)), "10876 10816 10949 10557 10012");
    // A range exactly as large as the count: a permutation, protocols mixed.
    let r = hmac("portcullis", 40000, 40009, 10, 30, Protocols::Mixed);
    assert_eq!(
        format_knocks(&r.sequence(12345)),
        "40003:udp 40001 40004:udp 40009 40008:udp 40002 40000 40005:udp 40007 40006"
    );
    let r = hmac("portcullis", 1, 65535, 32, 30, Protocols::Udp);
    let s = r.sequence(u64::MAX);
    assert_eq!(s.len(), 32);
    assert!(s.iter().all(|k| k.proto == Proto::Udp));
    assert_eq!(format_knocks(&s[..4]), "11811:udp 24442:udp 19587:udp 33540:udp");
    assert_eq!(s[31], Service::udp(11447));
}

#[test]
fn hmac_sequences_never_repeat_a_port() {
    for step in 0..300 {
        let s = hmac("k", 5000, 5009, 8, 30, Protocols::Mixed).sequence(step);
        let mut ports: Vec<u16> = s.iter().map(|k| k.port).collect();
        assert!(ports.iter().all(|p| (5000..=5009).contains(p)));
        ports.sort_unstable();
        ports.dedup();
        assert_eq!(ports.len(), 8, "step {step}: {s:?}");
    }
}

#[test]
fn step_boundaries() {
    let r = hmac("k", 10000, 60000, 5, 30, Protocols::Tcp);
    assert_eq!(r.step_at(0), 0);
    assert_eq!(r.step_at(29), 0);
    assert_eq!(r.step_at(30), 1);
    assert_eq!(r.step_start(r.step_at(AT_2008)), AT_2008 - AT_2008 % 30);
    assert_eq!(r.sequence_at(59), r.sequence_at(30));
    assert_ne!(r.sequence_at(29), r.sequence_at(30));
    let r = hmac("k", 10000, 60000, 5, 7, Protocols::Tcp);
    assert_eq!(r.step_at(13), 1);
    assert_eq!(r.step_at(14), 2);
    let r = md5("k", 10000, 60000, 5);
    assert_eq!(r.step_secs(), 3600);
    assert_eq!(r.step_at(3599), 0);
    assert_eq!(r.step_at(3600), 1);
    // Different secrets, different sequences.
    assert_ne!(
        hmac("a", 10000, 60000, 5, 30, Protocols::Tcp).sequence(7),
        hmac("b", 10000, 60000, 5, 30, Protocols::Tcp).sequence(7)
    );
}

#[test]
fn bad_definitions_are_refused() {
    let tcp = Algorithm::HmacSha256 { step_secs: 30, protocols: Protocols::Tcp };
    let small = PortRange::new(10000, 10003).unwrap();
    for alg in [Algorithm::Md5Hourly, tcp] {
        assert_eq!(
            Rotation::new(alg, secret("s"), small, 5).unwrap_err(),
            RotateError::RangeTooSmall { ports: 4, count: 5 }
        );
        assert!(Rotation::new(alg, secret("s"), small, 4).is_ok());
        assert_eq!(Rotation::new(alg, secret("s"), small, 0).unwrap_err(), RotateError::BadCount);
        let big = PortRange::new(1, 65535).unwrap();
        assert_eq!(Rotation::new(alg, secret("s"), big, 33).unwrap_err(), RotateError::BadCount);
    }
    for step_secs in [0, MAX_STEP_SECS + 1] {
        let alg = Algorithm::HmacSha256 { step_secs, protocols: Protocols::Tcp };
        assert_eq!(Rotation::new(alg, secret("s"), small, 3).unwrap_err(), RotateError::BadStep);
    }
    assert_eq!(Secret::new(Vec::new()).unwrap_err(), RotateError::EmptySecret);
    assert_eq!(Secret::from_file_contents(b"\r\n\n".to_vec()).unwrap_err(), RotateError::EmptySecret);
    for bad in ["", "10000", "10000-", "-10999", "10999-10000", "0-5", "1-65536", " 1-2", "1-2 ", "a-b"] {
        assert_eq!(bad.parse::<PortRange>(), Err(RotateError::BadRange), "{bad:?}");
    }
    assert_eq!("10000-10999".parse::<PortRange>().unwrap().len(), 1000);
    assert_eq!("7-7".parse::<PortRange>().unwrap().len(), 1);
    assert!("md5".parse::<AlgorithmName>().is_err());
    assert!("tcp+udp".parse::<Protocols>().is_err());
}

#[test]
fn secrets_from_files_lose_only_trailing_newlines_and_never_print() {
    let s = Secret::from_file_contents(b" f00b4r \r\n".to_vec()).unwrap();
    assert_eq!(s.bytes(), b" f00b4r ");
    assert_eq!(format!("{s:?}"), "Secret(<redacted>)");
    let r = md5("f00b4r", 10000, 10999, 5);
    assert!(!format!("{r:?}").contains("f00b4r"));
}

#[test]
fn civil_dates_match_known_days() {
    assert_eq!(UtcHour::from_epoch_hours(0).to_string(), "1970-01-01-00");
    // 2100 is not a leap year; 2000 was.
    assert_eq!(UtcHour::from_epoch_hours(4_107_542_400 / 3600).to_string(), "2100-03-01-00");
    assert_eq!(UtcHour::from_epoch_hours(951_782_400 / 3600).to_string(), "2000-02-29-00");
    assert_eq!(UtcHour::from_epoch_hours(253_402_300_799 / 3600).to_string(), "9999-12-31-23");
}
