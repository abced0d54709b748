//! A certificate's validity period, read from its DER: enough of X.509
//! (RFC 5280) to know when a certificate falls due, and no more, so the
//! proxy needs no X.509 parser for one pair of dates.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// A certificate's validity period (RFC 5280 §4.1.2.5), read from its DER:
/// `notBefore` and `notAfter`. Enough of X.509 for that, and no more.
pub(super) fn validity(der: &[u8]) -> Option<(SystemTime, SystemTime)> {
    let (0x30, cert, _) = tlv(der)? else {
        return None;
    };
    let (0x30, tbs, _) = tlv(cert)? else {
        return None;
    };
    let mut rest = tbs;
    // [0] version, if there; then serialNumber, signature, issuer.
    if rest.first() == Some(&0xa0) {
        rest = tlv(rest)?.2;
    }
    for _ in 0..3 {
        rest = tlv(rest)?.2;
    }
    let (0x30, validity, _) = tlv(rest)? else {
        return None;
    };
    let (tag, not_before, rest) = tlv(validity)?;
    let not_before = time(tag, not_before)?;
    let (tag, not_after, _) = tlv(rest)?;
    Some((not_before, time(tag, not_after)?))
}

/// One DER element: its tag, its contents, and what follows it.
fn tlv(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    let (&first, mut rest) = rest.split_first()?;
    let len = if first < 0x80 {
        usize::from(first)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        let (len, after) = rest.split_at(n);
        rest = after;
        len.iter().fold(0usize, |l, b| l << 8 | usize::from(*b))
    };
    (rest.len() >= len).then(|| (tag, &rest[..len], &rest[len..]))
}

/// An X.509 time: UTCTime (`YYMMDDHHMMSSZ`, years 1950-2049) or
/// GeneralizedTime (`YYYYMMDDHHMMSSZ`), RFC 5280 §4.1.2.5.1-2.
fn time(tag: u8, text: &[u8]) -> Option<SystemTime> {
    let text = std::str::from_utf8(text).ok()?.strip_suffix('Z')?;
    let (year, rest) = match (tag, text.len()) {
        (0x17, 12) => {
            let yy: i64 = text[..2].parse().ok()?;
            (if yy >= 50 { 1900 + yy } else { 2000 + yy }, &text[2..])
        }
        (0x18, 14) => (text[..4].parse().ok()?, &text[4..]),
        _ => return None,
    };
    let field = |i: usize| rest.get(i..i + 2)?.parse::<i64>().ok();
    let (month, day) = (field(0)?, field(2)?);
    let (hour, minute, second) = (field(4)?, field(6)?, field(8)?);
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) {
        return None;
    }
    // Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's
    // days_from_civil).
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * ((month + 9) % 12) + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let secs = days * 86_400 + hour * 3600 + minute * 60 + second;
    Some(UNIX_EPOCH + Duration::from_secs(u64::try_from(secs).ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::acme::tests::{at, cert};

    #[test]
    fn validity_reads_utc_and_generalized_times() {
        // 2024-03-01 is a UTCTime, 2051-01-02 a GeneralizedTime (RFC 5280).
        let c = cert(&["a.test"], (2024, 3, 1), (2051, 1, 2));
        assert_eq!(
            validity(&c.cert[0]),
            Some((at(1_709_251_200), at(2_556_230_400)))
        );
        assert_eq!(validity(b"\x30\x03\x30\x01"), None, "truncated");
        assert_eq!(validity(b""), None);
    }
}
