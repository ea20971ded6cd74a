//! HL7 v2 timestamps (`YYYY[MM[DD[HH[MM[SS[.S…]]]]]][+/-ZZZZ]`) as FHIR dates and instants.
//! A time without an offset is taken as UTC: senders that omit it are assumed to send UTC.

use time::{Date, Month, OffsetDateTime, PrimitiveDateTime, Time, UtcOffset};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Timestamp {
    /// As precise as sent: `YYYY`, `YYYY-MM`, `YYYY-MM-DD`, or a full date-time with an offset.
    pub fhir: String,
    /// The instant (start of the period for coarser precision), microseconds since the epoch.
    pub micros: i64,
}

/// `None` when empty or not a valid timestamp.
pub fn parse(raw: &str) -> Option<Timestamp> {
    let raw = raw.trim();
    let (body, offset) = match raw.find(['+', '-']) {
        Some(i) => (&raw[..i], Some(&raw[i..])),
        None => (raw, None),
    };
    let (digits, fraction) = match body.split_once('.') {
        Some((d, f)) => (d, Some(f)),
        None => (body, None),
    };
    if digits.len() < 4 || digits.len() % 2 != 0 || digits.len() > 14 {
        return None;
    }
    if !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let num = |from: usize, to: usize| -> Option<u32> { digits.get(from..to)?.parse().ok() };
    let year = num(0, 4)? as i32;
    let month = num(4, 6);
    let day = num(6, 8);
    let hour = num(8, 10);
    let minute = num(10, 12).unwrap_or(0);
    let second = num(12, 14).unwrap_or(0);
    let micro = match fraction {
        Some(f) if !f.is_empty() && f.len() <= 6 && f.bytes().all(|b| b.is_ascii_digit()) => {
            format!("{f:0<6}").parse::<u32>().ok()?
        }
        Some(_) => return None,
        None => 0,
    };
    let offset = match offset {
        Some(o) if o.len() == 5 => {
            let sign = if o.starts_with('-') { -1 } else { 1 };
            // `get`, not indexing: five bytes may end inside a multi-byte character (fuzzing).
            let h: i8 = o.get(1..3)?.parse().ok()?;
            let m: i8 = o.get(3..5)?.parse().ok()?;
            UtcOffset::from_hms(sign * h, sign * m, 0).ok()?
        }
        Some(_) => return None,
        None => UtcOffset::UTC,
    };
    let date = Date::from_calendar_date(
        year,
        Month::try_from(month.unwrap_or(1) as u8).ok()?,
        day.unwrap_or(1) as u8,
    )
    .ok()?;
    let time =
        Time::from_hms_micro(hour.unwrap_or(0) as u8, minute as u8, second as u8, micro).ok()?;
    let at = PrimitiveDateTime::new(date, time).assume_offset(offset);
    let micros = (at.unix_timestamp_nanos() / 1000) as i64;
    let fhir = match (month, day, hour) {
        (None, _, _) => format!("{year:04}"),
        (Some(m), None, _) => format!("{year:04}-{m:02}"),
        (Some(m), Some(d), None) => format!("{year:04}-{m:02}-{d:02}"),
        (Some(_), Some(_), Some(_)) => instant(at),
    };
    Some(Timestamp { fhir, micros })
}

fn instant(at: OffsetDateTime) -> String {
    let (h, m, _) = at.offset().as_hms();
    let offset = if h == 0 && m == 0 {
        "Z".to_string()
    } else {
        format!(
            "{}{:02}:{:02}",
            if h < 0 || m < 0 { '-' } else { '+' },
            h.abs(),
            m.abs()
        )
    };
    let frac = if at.microsecond() == 0 {
        String::new()
    } else {
        format!(".{:06}", at.microsecond())
    };
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}{frac}{offset}",
        at.year(),
        at.month() as u8,
        at.day(),
        at.hour(),
        at.minute(),
        at.second()
    )
}

/// A FHIR `date` (the first 8 digits), for birth dates.
pub fn date(raw: &str) -> Option<String> {
    let ts = parse(raw.get(..raw.len().min(8))?)?;
    Some(ts.fhir)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn precisions_and_offsets() {
        assert_eq!(parse("2024").unwrap().fhir, "2024");
        assert_eq!(parse("202403").unwrap().fhir, "2024-03");
        assert_eq!(parse("20240301").unwrap().fhir, "2024-03-01");
        let t = parse("20240301101500").unwrap();
        assert_eq!(t.fhir, "2024-03-01T10:15:00Z");
        assert_eq!(t.micros, 1_709_288_100_000_000);
        let t = parse("202403011015-0500").unwrap();
        assert_eq!(t.fhir, "2024-03-01T10:15:00-05:00");
        assert_eq!(t.micros, 1_709_306_100_000_000);
        assert_eq!(
            parse("20240301101500.25").unwrap().micros,
            1_709_288_100_250_000
        );
        assert_eq!(date("19800203").unwrap(), "1980-02-03");
        assert_eq!(date("198002031200").unwrap(), "1980-02-03");
    }

    #[test]
    fn invalid() {
        for bad in [
            "",
            "2024x",
            "20241301",
            "2024030",
            "20240301101500+05",
            "20240230",
            // Found by fuzzing: an offset of five bytes that ends inside a character.
            "20240310143000+0\u{82}0",
        ] {
            assert!(parse(bad).is_none(), "{bad}");
        }
    }
}
