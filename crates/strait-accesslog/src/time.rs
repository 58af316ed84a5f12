//! `%START_TIME%` formatting: Envoy's default ISO-8601 form and `%START_TIME(fmt)%` with
//! strftime-like specifiers, always in UTC (Envoy's `START_TIME`; `START_TIME_LOCAL` is the
//! local-time variant, not implemented here).
//!
//! Envoy formats with its own `%s` / `%f` / `%[1-9]f` handling and hands the rest to
//! `absl::FormatTime` (which in turn uses the C library's `strftime` in the "C" locale for
//! specifiers it does not know itself). This module reimplements that behaviour: the format is
//! compiled once into pieces, rendering does no parsing and no allocation.

use std::time::SystemTime;

use crate::error::FormatError;

/// Broken-down UTC time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Tm {
    pub epoch_secs: i64,
    pub nanos: u32,
    pub year: i64,
    /// 1..=12
    pub month: u32,
    /// 1..=31
    pub day: u32,
    pub hour: u32,
    pub minute: u32,
    pub second: u32,
    /// 0 = Sunday
    pub wday: u32,
    /// 0-based day of the year
    pub yday: u32,
}

impl Tm {
    pub(crate) fn from_system_time(t: SystemTime) -> Tm {
        let (secs, nanos) = match t.duration_since(SystemTime::UNIX_EPOCH) {
            Ok(d) => (d.as_secs() as i64, d.subsec_nanos()),
            Err(e) => {
                let d = e.duration();
                let mut secs = -(d.as_secs() as i64);
                let mut nanos = d.subsec_nanos();
                if nanos > 0 {
                    secs -= 1;
                    nanos = 1_000_000_000 - nanos;
                }
                (secs, nanos)
            }
        };
        Tm::from_epoch(secs, nanos)
    }

    pub(crate) fn from_epoch(epoch_secs: i64, nanos: u32) -> Tm {
        let days = epoch_secs.div_euclid(86_400);
        let sod = epoch_secs.rem_euclid(86_400) as u32;
        let (year, month, day) = civil_from_days(days);
        let yday = (days - days_from_civil(year, 1, 1)) as u32;
        // 1970-01-01 was a Thursday.
        let wday = (days + 4).rem_euclid(7) as u32;
        Tm {
            epoch_secs,
            nanos,
            year,
            month,
            day,
            hour: sod / 3600,
            minute: (sod / 60) % 60,
            second: sod % 60,
            wday,
            yday,
        }
    }

    /// ISO 8601 week-based year and week number (`%G`, `%V`).
    fn iso_week(&self) -> (i64, u32) {
        let wday_mon = (self.wday + 6) % 7; // Monday = 0
        let week = (self.yday as i64 - wday_mon as i64 + 10) / 7;
        if week < 1 {
            (self.year - 1, iso_weeks_in_year(self.year - 1))
        } else if week > iso_weeks_in_year(self.year) as i64 {
            (self.year + 1, 1)
        } else {
            (self.year, week as u32)
        }
    }
}

fn iso_weeks_in_year(y: i64) -> u32 {
    let p = |y: i64| (y + y.div_euclid(4) - y.div_euclid(100) + y.div_euclid(400)).rem_euclid(7);
    if p(y) == 4 || p(y - 1) == 3 { 53 } else { 52 }
}

/// Days since 1970-01-01 → (year, month, day), proleptic Gregorian.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let m = m as i64;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + d as i64 - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

const WEEKDAYS: [&str; 7] = [
    "Sunday",
    "Monday",
    "Tuesday",
    "Wednesday",
    "Thursday",
    "Friday",
    "Saturday",
];
const MONTHS: [&str; 12] = [
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
];

/// Padding requested with a glibc flag.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Pad {
    Default,
    None,
    Space,
    Zero,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Field {
    WeekdayShort,
    WeekdayLong,
    MonthShort,
    MonthLong,
    Century,
    Day,
    DaySpace,
    Hour24,
    Hour24Space,
    Hour12,
    Hour12Space,
    DayOfYear,
    Month,
    Minute,
    AmPm,
    AmPmLower,
    Second,
    EpochSeconds,
    WeekdayMon1,
    WeekdaySun0,
    WeekSun,
    WeekMon,
    IsoWeek,
    IsoYear,
    IsoYear2,
    Year,
    Year2,
    Year4,
    OffsetHhmm,
    OffsetHhColonMm,
    OffsetHhColonMmColonSs,
    ZoneName,
    /// `%E#S` / `%E*S`: seconds with `digits` fractional digits (`None` = all, zeros trimmed).
    SecondsFrac(Option<u8>),
    /// `%E#f` / `%E*f` (absl): fractional digits only.
    AbslFrac(Option<u8>),
    /// Envoy's `%f` / `%[1-9]f`: exactly `n` leading digits of the nanoseconds.
    EnvoyFrac(u8),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Piece {
    Lit(Box<str>),
    Field {
        field: Field,
        pad: Pad,
        width: Option<u8>,
        upper: bool,
    },
}

/// A compiled `START_TIME` format.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum TimeFormat {
    /// `%Y-%m-%dT%H:%M:%E3SZ`, Envoy's default (`2026-11-22T00:45:01.123Z`).
    Default,
    Custom(Box<[Piece]>),
}

impl TimeFormat {
    /// Compiles a `START_TIME(...)` argument. An empty argument is the default format.
    pub(crate) fn parse(fmt: &str) -> Result<TimeFormat, FormatError> {
        if fmt.is_empty() {
            return Ok(TimeFormat::Default);
        }
        if contains_newline_specifier(fmt) {
            return Err(FormatError::Newline);
        }
        let b = fmt.as_bytes();
        let mut pieces: Vec<Piece> = Vec::new();
        let mut lit = String::new();
        let mut i = 0;
        while i < b.len() {
            if b[i] != b'%' {
                // Copy a whole UTF-8 run of non-'%' bytes.
                let start = i;
                while i < b.len() && b[i] != b'%' {
                    i += 1;
                }
                lit.push_str(&fmt[start..i]);
                continue;
            }
            // b[i] == '%'
            let spec_start = i;
            i += 1;
            if i >= b.len() {
                lit.push('%');
                break;
            }
            // Envoy's own: %f and %[1-9]f
            if b[i] == b'f' {
                flush(&mut lit, &mut pieces);
                pieces.push(field(Field::EnvoyFrac(9)));
                i += 1;
                continue;
            }
            if (b'1'..=b'9').contains(&b[i]) && i + 1 < b.len() && b[i + 1] == b'f' {
                flush(&mut lit, &mut pieces);
                pieces.push(field(Field::EnvoyFrac(b[i] - b'0')));
                i += 2;
                continue;
            }
            // glibc flags and width.
            let mut pad = Pad::Default;
            let mut upper = false;
            while i < b.len() && matches!(b[i], b'-' | b'_' | b'0' | b'^' | b'#') {
                match b[i] {
                    b'-' => pad = Pad::None,
                    b'_' => pad = Pad::Space,
                    b'0' => pad = Pad::Zero,
                    b'^' => upper = true,
                    _ => {}
                }
                i += 1;
            }
            let mut width: Option<u8> = None;
            while i < b.len() && b[i].is_ascii_digit() {
                let w = width.unwrap_or(0) as u32 * 10 + (b[i] - b'0') as u32;
                width = Some(w.min(64) as u8);
                i += 1;
            }
            if i >= b.len() {
                lit.push_str(&fmt[spec_start..]);
                break;
            }
            let f = match b[i] {
                b'E' => {
                    // absl extensions (%Ez, %E*z, %E#S, %E*S, %E#f, %E*f, %E4Y) and the glibc
                    // alternative-era modifier (same as plain in the C locale).
                    let rest = &b[i + 1..];
                    let (fld, used) = match rest {
                        [b'z', ..] => (Some(Single(Field::OffsetHhColonMm)), 1),
                        [b'*', b'z', ..] => (Some(Single(Field::OffsetHhColonMmColonSs)), 2),
                        [b'*', b'S', ..] => (Some(Single(Field::SecondsFrac(None))), 2),
                        [b'*', b'f', ..] => (Some(Single(Field::AbslFrac(None))), 2),
                        [b'4', b'Y', ..] => (Some(Single(Field::Year4)), 2),
                        [d, b'S', ..] if d.is_ascii_digit() => {
                            (Some(Single(Field::SecondsFrac(Some(d - b'0')))), 2)
                        }
                        [d, b'f', ..] if d.is_ascii_digit() => {
                            (Some(Single(Field::AbslFrac(Some(d - b'0')))), 2)
                        }
                        [c, ..] => (plain_field(*c), 1),
                        [] => (None, 0),
                    };
                    if fld.is_some() {
                        i += 1 + used;
                    }
                    fld
                }
                b'O' => {
                    let f = b.get(i + 1).and_then(|c| plain_field(*c));
                    if f.is_some() {
                        i += 2;
                    }
                    f
                }
                c => {
                    let f = plain_field(c);
                    if f.is_some() {
                        i += 1;
                    }
                    f
                }
            };
            match f {
                Some(Expand(s)) => {
                    // Composite specifiers expand to their C-locale definitions.
                    if let TimeFormat::Custom(sub) = TimeFormat::parse(s)? {
                        for p in sub.iter() {
                            match p {
                                Piece::Lit(l) => lit.push_str(l),
                                other => {
                                    flush(&mut lit, &mut pieces);
                                    pieces.push(other.clone());
                                }
                            }
                        }
                    }
                }
                Some(Single(fl)) => {
                    flush(&mut lit, &mut pieces);
                    pieces.push(Piece::Field {
                        field: fl,
                        pad,
                        width,
                        upper,
                    });
                }
                Some(Literal(s)) => lit.push_str(s),
                None => {
                    // Unknown conversion: strftime leaves it verbatim.
                    let end = (i + 1).min(b.len());
                    let end = next_char_boundary(fmt, end);
                    lit.push_str(&fmt[spec_start..end]);
                    i = end;
                }
            }
        }
        flush(&mut lit, &mut pieces);
        Ok(TimeFormat::Custom(pieces.into_boxed_slice()))
    }

    /// Appends the formatted time.
    pub(crate) fn write(&self, t: SystemTime, out: &mut Vec<u8>) {
        let tm = Tm::from_system_time(t);
        match self {
            TimeFormat::Default => write_default(&tm, out),
            TimeFormat::Custom(pieces) => {
                for p in pieces.iter() {
                    match p {
                        Piece::Lit(s) => out.extend_from_slice(s.as_bytes()),
                        Piece::Field {
                            field,
                            pad,
                            width,
                            upper,
                        } => write_field(&tm, *field, *pad, *width, *upper, out),
                    }
                }
            }
        }
    }
}

use Spec::{Expand, Literal, Single};

enum Spec {
    Single(Field),
    Expand(&'static str),
    Literal(&'static str),
}

fn field(f: Field) -> Piece {
    Piece::Field {
        field: f,
        pad: Pad::Default,
        width: None,
        upper: false,
    }
}

fn flush(lit: &mut String, pieces: &mut Vec<Piece>) {
    if !lit.is_empty() {
        pieces.push(Piece::Lit(std::mem::take(lit).into_boxed_str()));
    }
}

fn next_char_boundary(s: &str, mut i: usize) -> usize {
    while i < s.len() && !s.is_char_boundary(i) {
        i += 1;
    }
    i
}

fn plain_field(c: u8) -> Option<Spec> {
    Some(match c {
        b'a' => Single(Field::WeekdayShort),
        b'A' => Single(Field::WeekdayLong),
        b'b' | b'h' => Single(Field::MonthShort),
        b'B' => Single(Field::MonthLong),
        b'c' => Expand("%a %b %e %H:%M:%S %Y"),
        b'C' => Single(Field::Century),
        b'd' => Single(Field::Day),
        b'D' => Expand("%m/%d/%y"),
        b'e' => Single(Field::DaySpace),
        b'F' => Expand("%Y-%m-%d"),
        b'g' => Single(Field::IsoYear2),
        b'G' => Single(Field::IsoYear),
        b'H' => Single(Field::Hour24),
        b'I' => Single(Field::Hour12),
        b'j' => Single(Field::DayOfYear),
        b'k' => Single(Field::Hour24Space),
        b'l' => Single(Field::Hour12Space),
        b'm' => Single(Field::Month),
        b'M' => Single(Field::Minute),
        b'p' => Single(Field::AmPm),
        b'P' => Single(Field::AmPmLower),
        b'r' => Expand("%I:%M:%S %p"),
        b'R' => Expand("%H:%M"),
        b's' => Single(Field::EpochSeconds),
        b'S' => Single(Field::Second),
        b't' => Literal("\t"),
        b'T' => Expand("%H:%M:%S"),
        b'u' => Single(Field::WeekdayMon1),
        b'U' => Single(Field::WeekSun),
        b'V' => Single(Field::IsoWeek),
        b'w' => Single(Field::WeekdaySun0),
        b'W' => Single(Field::WeekMon),
        b'x' => Expand("%m/%d/%y"),
        b'X' => Expand("%H:%M:%S"),
        b'y' => Single(Field::Year2),
        b'Y' => Single(Field::Year),
        b'z' => Single(Field::OffsetHhmm),
        b'Z' => Single(Field::ZoneName),
        b'%' => Literal("%"),
        _ => return None,
    })
}

/// Envoy rejects START_TIME formats that could produce a newline: `%[-_0^#]*[1-9]*(E|O)?n`.
fn contains_newline_specifier(fmt: &str) -> bool {
    let b = fmt.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let mut j = i + 1;
            while j < b.len() && matches!(b[j], b'-' | b'_' | b'0' | b'^' | b'#') {
                j += 1;
            }
            while j < b.len() && (b'1'..=b'9').contains(&b[j]) {
                j += 1;
            }
            if j < b.len() && (b[j] == b'E' || b[j] == b'O') {
                j += 1;
            }
            if j < b.len() && b[j] == b'n' {
                return true;
            }
        }
        i += 1;
    }
    false
}

fn push_num(out: &mut Vec<u8>, v: i64, width: usize, pad: u8) {
    let mut buf = itoa::Buffer::new();
    let s = buf.format(v.unsigned_abs());
    if v < 0 {
        out.push(b'-');
    }
    for _ in s.len()..width {
        out.push(pad);
    }
    out.extend_from_slice(s.as_bytes());
}

fn push2(out: &mut Vec<u8>, v: u32) {
    out.push(b'0' + (v / 10 % 10) as u8);
    out.push(b'0' + (v % 10) as u8);
}

fn write_default(tm: &Tm, out: &mut Vec<u8>) {
    push_num(out, tm.year, 4, b'0');
    out.push(b'-');
    push2(out, tm.month);
    out.push(b'-');
    push2(out, tm.day);
    out.push(b'T');
    push2(out, tm.hour);
    out.push(b':');
    push2(out, tm.minute);
    out.push(b':');
    push2(out, tm.second);
    out.push(b'.');
    let ms = tm.nanos / 1_000_000;
    out.push(b'0' + (ms / 100) as u8);
    push2(out, ms % 100);
    out.push(b'Z');
}

fn write_frac(out: &mut Vec<u8>, nanos: u32, digits: usize) {
    let mut buf = [b'0'; 9];
    let mut n = nanos;
    for slot in buf.iter_mut().rev() {
        *slot = b'0' + (n % 10) as u8;
        n /= 10;
    }
    out.extend_from_slice(&buf[..digits.min(9)]);
    for _ in 9..digits {
        out.push(b'0');
    }
}

fn write_field(tm: &Tm, f: Field, pad: Pad, width: Option<u8>, upper: bool, out: &mut Vec<u8>) {
    // (value, default width, default pad char)
    let num = |v: i64, w: usize, p: u8, out: &mut Vec<u8>| {
        let (w, p) = match pad {
            Pad::Default => (width.map_or(w, usize::from), p),
            Pad::None => (0, p),
            Pad::Space => (width.map_or(w, usize::from), b' '),
            Pad::Zero => (width.map_or(w, usize::from), b'0'),
        };
        push_num(out, v, w, p);
    };
    let text = |s: &str, out: &mut Vec<u8>| {
        if let Some(w) = width {
            for _ in s.len()..usize::from(w) {
                out.push(b' ');
            }
        }
        if upper {
            out.extend(s.bytes().map(|c| c.to_ascii_uppercase()));
        } else {
            out.extend_from_slice(s.as_bytes());
        }
    };
    let hour12 = if tm.hour.is_multiple_of(12) {
        12
    } else {
        tm.hour % 12
    };
    match f {
        Field::WeekdayShort => text(&WEEKDAYS[tm.wday as usize][..3], out),
        Field::WeekdayLong => text(WEEKDAYS[tm.wday as usize], out),
        Field::MonthShort => text(&MONTHS[(tm.month - 1) as usize][..3], out),
        Field::MonthLong => text(MONTHS[(tm.month - 1) as usize], out),
        Field::Century => num(tm.year.div_euclid(100), 2, b'0', out),
        Field::Day => num(tm.day.into(), 2, b'0', out),
        Field::DaySpace => num(tm.day.into(), 2, b' ', out),
        Field::Hour24 => num(tm.hour.into(), 2, b'0', out),
        Field::Hour24Space => num(tm.hour.into(), 2, b' ', out),
        Field::Hour12 => num(hour12.into(), 2, b'0', out),
        Field::Hour12Space => num(hour12.into(), 2, b' ', out),
        Field::DayOfYear => num((tm.yday + 1).into(), 3, b'0', out),
        Field::Month => num(tm.month.into(), 2, b'0', out),
        Field::Minute => num(tm.minute.into(), 2, b'0', out),
        Field::AmPm => text(if tm.hour < 12 { "AM" } else { "PM" }, out),
        Field::AmPmLower => text(if tm.hour < 12 { "am" } else { "pm" }, out),
        Field::Second => num(tm.second.into(), 2, b'0', out),
        Field::EpochSeconds => num(tm.epoch_secs, 1, b'0', out),
        Field::WeekdayMon1 => num(if tm.wday == 0 { 7 } else { tm.wday.into() }, 1, b'0', out),
        Field::WeekdaySun0 => num(tm.wday.into(), 1, b'0', out),
        Field::WeekSun => num(((tm.yday + 7 - tm.wday) / 7).into(), 2, b'0', out),
        Field::WeekMon => num(((tm.yday + 7 - (tm.wday + 6) % 7) / 7).into(), 2, b'0', out),
        Field::IsoWeek => num(tm.iso_week().1.into(), 2, b'0', out),
        Field::IsoYear => num(tm.iso_week().0, 1, b'0', out),
        Field::IsoYear2 => num(tm.iso_week().0.rem_euclid(100), 2, b'0', out),
        Field::Year => num(tm.year, 1, b'0', out),
        Field::Year2 => num(tm.year.rem_euclid(100), 2, b'0', out),
        Field::Year4 => num(tm.year, 4, b'0', out),
        Field::OffsetHhmm => out.extend_from_slice(b"+0000"),
        Field::OffsetHhColonMm => out.extend_from_slice(b"+00:00"),
        Field::OffsetHhColonMmColonSs => out.extend_from_slice(b"+00:00:00"),
        Field::ZoneName => text("UTC", out),
        Field::SecondsFrac(digits) => {
            push2(out, tm.second);
            match digits {
                Some(0) => {}
                Some(d) => {
                    out.push(b'.');
                    write_frac(out, tm.nanos, d.into());
                }
                None => {
                    if tm.nanos != 0 {
                        out.push(b'.');
                        let mut digits = 9;
                        let mut n = tm.nanos;
                        while n.is_multiple_of(10) {
                            n /= 10;
                            digits -= 1;
                        }
                        write_frac(out, tm.nanos, digits);
                    }
                }
            }
        }
        Field::AbslFrac(digits) => match digits {
            Some(d) => write_frac(out, tm.nanos, d.into()),
            None => {
                let mut digits = 9;
                let mut n = tm.nanos;
                if n == 0 {
                    return;
                }
                while n.is_multiple_of(10) {
                    n /= 10;
                    digits -= 1;
                }
                write_frac(out, tm.nanos, digits);
            }
        },
        Field::EnvoyFrac(d) => write_frac(out, tm.nanos, d.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn fmt(f: &str, secs: u64, nanos: u32) -> String {
        let t = SystemTime::UNIX_EPOCH + Duration::new(secs, nanos);
        let tf = TimeFormat::parse(f).unwrap_or(TimeFormat::Default);
        let mut out = Vec::new();
        tf.write(t, &mut out);
        String::from_utf8(out).unwrap_or_default()
    }

    // 2026-11-22T00:47:41.884924Z, a Sunday (as observed from Envoy 1.40).
    const T: u64 = 1_795_308_461;
    const N: u32 = 884_924_000;

    #[test]
    fn civil_roundtrip() {
        for days in [
            -1_000_000i64,
            -719_468,
            -1,
            0,
            1,
            59,
            365,
            10_957,
            20_000,
            2_932_896,
        ] {
            let (y, m, d) = civil_from_days(days);
            assert_eq!(days_from_civil(y, m, d), days, "{y}-{m}-{d}");
        }
        let tm = Tm::from_epoch(0, 0);
        assert_eq!(
            (tm.year, tm.month, tm.day, tm.wday, tm.yday),
            (1970, 1, 1, 4, 0)
        );
        let tm = Tm::from_epoch(951_782_400, 0); // 2000-02-29
        assert_eq!((tm.year, tm.month, tm.day, tm.wday), (2000, 2, 29, 2));
    }

    #[test]
    fn default_format() {
        assert_eq!(fmt("", T, N), "2026-11-22T00:47:41.884Z");
        assert_eq!(fmt("", 0, 0), "1970-01-01T00:00:00.000Z");
        assert_eq!(fmt("", T, 5_000_000), "2026-11-22T00:47:41.005Z");
    }

    #[test]
    fn envoy_observed_specifiers() {
        // Each expectation below was printed by Envoy 1.40 for the same instant.
        assert_eq!(
            fmt(
                "%s.%3f %Y-%m-%dT%H:%M:%S%z %f %6f %1f %Ez %Z %a %b %j %e %%",
                T,
                N
            ),
            "1795308461.884 2026-11-22T00:47:41+0000 884924000 884924 8 +00:00 UTC Sun Nov 326 22 %"
        );
        assert_eq!(
            fmt(
                "%Y%m%d %H%M%S %I %p %y %C %u %w %U %V %G %D %F %T %R %c %x %X %E3S %E*S %E6S %Ey %E4Y %k %l %t %A %B %h %M",
                T,
                N
            ),
            "20261122 004741 12 AM 26 20 7 0 47 47 2026 11/22/26 2026-11-22 00:47:41 00:47 \
             Sun Nov 22 00:47:41 2026 11/22/26 00:47:41 41.884 41.884924 41.884924 26 2026  0 12 \t \
             Sunday November Nov 47"
        );
        assert_eq!(
            fmt("%5f|%s|%9f|%0f|%ff", T, N),
            "88492|1795308461|884924000|%0f|884924000f"
        );
    }

    #[test]
    fn flags_and_unknown() {
        assert_eq!(
            fmt("%-d/%-m %_H %^a %Q", T + 9 * 86_400, 0),
            "1/12  0 TUE %Q"
        );
        assert_eq!(fmt("100%", T, 0), "100%");
        assert_eq!(fmt("é%Y", T, 0), "é2026");
    }

    #[test]
    fn newline_rejected() {
        assert!(TimeFormat::parse("%n").is_err());
        assert!(TimeFormat::parse("%-En").is_err());
        assert!(TimeFormat::parse("%Y\n").is_ok()); // a literal newline is Envoy-accepted
    }

    #[test]
    fn iso_weeks() {
        // 2021-01-01 is in ISO week 53 of 2020; 2024-12-30 is in week 1 of 2025.
        assert_eq!(fmt("%G-W%V-%u", 1_609_459_200, 0), "2020-W53-5");
        assert_eq!(fmt("%G-W%V-%u %g", 1_735_516_800, 0), "2025-W01-1 25");
    }
}
