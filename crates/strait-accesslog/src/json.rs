//! JSON output helpers: string escaping and Envoy's number formatting.

/// Appends `s` JSON-escaped (without quotes). Invalid UTF-8 becomes U+FFFD so the line is
/// always valid JSON; other non-ASCII is written raw (as Envoy does).
pub(crate) fn escape_into(out: &mut Vec<u8>, s: &[u8]) {
    for chunk in s.utf8_chunks() {
        escape_str(out, chunk.valid());
        if !chunk.invalid().is_empty() {
            out.extend_from_slice("\u{fffd}".as_bytes());
        }
    }
}

fn escape_str(out: &mut Vec<u8>, s: &str) {
    let b = s.as_bytes();
    let mut start = 0;
    for (i, &c) in b.iter().enumerate() {
        let esc: &[u8] = match c {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            b'\t' => b"\\t",
            0x08 => b"\\b",
            0x0c => b"\\f",
            c if c < 0x20 => {
                out.extend_from_slice(&b[start..i]);
                const HEX: &[u8; 16] = b"0123456789abcdef";
                out.extend_from_slice(b"\\u00");
                out.push(HEX[(c >> 4) as usize]);
                out.push(HEX[(c & 0xf) as usize]);
                start = i + 1;
                continue;
            }
            _ => continue,
        };
        out.extend_from_slice(&b[start..i]);
        out.extend_from_slice(esc);
        start = i + 1;
    }
    out.extend_from_slice(&b[start..]);
}

/// JSON-escapes, in place, the raw bytes written at `out[start..]`. Free (no copy) in the
/// common case where nothing needs escaping.
pub(crate) fn escape_tail(out: &mut Vec<u8>, start: usize) {
    let tail = &out[start..];
    let needs = tail.iter().any(|&c| c < 0x20 || c == b'"' || c == b'\\');
    let ascii = tail.is_ascii();
    if !needs && (ascii || std::str::from_utf8(tail).is_ok()) {
        return;
    }
    let raw = out.split_off(start);
    escape_into(out, &raw);
}

/// Formats a JSON number the way Envoy 1.40's JSON serializer does (C++ `std::to_chars`
/// shortest round-trip: fixed or scientific notation, whichever is shorter, fixed on a tie;
/// exponent with sign and at least two digits). Observed from Envoy: `42`, `1e+06`, `1200000`,
/// `0.1`, `1.5e-07`, `0.00012`, `1e-04`, `123456789012345683968`, `-0`.
pub(crate) fn format_number(v: f64) -> String {
    if !v.is_finite() {
        return "null".to_owned();
    }
    if v == 0.0 {
        return if v.is_sign_negative() {
            "-0".to_owned()
        } else {
            "0".to_owned()
        };
    }
    // Rust's `{:e}` gives the shortest round-trip digits: "-1.2345e20", "1e-7".
    let sci_rust = format!("{v:e}");
    let (mantissa, exp) = match sci_rust.split_once('e') {
        Some((m, e)) => (m, e.parse::<i32>().unwrap_or(0)),
        None => (sci_rust.as_str(), 0),
    };
    let neg = mantissa.starts_with('-');
    let digits: String = mantissa.chars().filter(|c| c.is_ascii_digit()).collect();
    let k = digits.len() as i32;

    let mut sci = String::with_capacity(k as usize + 8);
    if neg {
        sci.push('-');
    }
    sci.push_str(&digits[..1]);
    if k > 1 {
        sci.push('.');
        sci.push_str(&digits[1..]);
    }
    sci.push('e');
    sci.push(if exp < 0 { '-' } else { '+' });
    let e = exp.unsigned_abs();
    if e < 10 {
        sci.push('0');
    }
    sci.push_str(&e.to_string());

    // Length of the fixed form, without building it unless it wins.
    let sign = usize::from(neg);
    let fixed_len = if exp >= k - 1 {
        sign + (exp + 1) as usize
    } else if exp >= 0 {
        sign + k as usize + 1
    } else {
        sign + 2 + (-exp - 1) as usize + k as usize
    };
    if fixed_len > sci.len() {
        return sci;
    }
    if exp >= k - 1 {
        // Integral: exact decimal value of the double (as to_chars prints it).
        format!("{v:.0}")
    } else if exp >= 0 {
        let split = (exp + 1) as usize;
        let mut s = String::with_capacity(fixed_len);
        if neg {
            s.push('-');
        }
        s.push_str(&digits[..split]);
        s.push('.');
        s.push_str(&digits[split..]);
        s
    } else {
        let mut s = String::with_capacity(fixed_len);
        if neg {
            s.push('-');
        }
        s.push_str("0.");
        for _ in 0..(-exp - 1) {
            s.push('0');
        }
        s.push_str(&digits);
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_like_envoy() {
        // Pairs observed from Envoy 1.40 json_format (config given as JSON).
        let cases: &[(f64, &str)] = &[
            (42.0, "42"),
            (-3.0, "-3"),
            (3.0, "3"),
            (0.1, "0.1"),
            (-0.5, "-0.5"),
            (1.5, "1.5"),
            (1e21, "1e+21"),
            (1e300, "1e+300"),
            (1.5e-7, "1.5e-07"),
            (0.30000000000000004, "0.30000000000000004"),
            (-0.0, "-0"),
            (1e15, "1e+15"),
            (1.2345678901234568e20, "123456789012345683968"),
            (9007199254740993.0, "9007199254740992"),
            (12345678901234567890.0, "12345678901234567168"),
            (1e16, "1e+16"),
            (1e20, "1e+20"),
            (100000.5, "100000.5"),
            (1e-5, "1e-05"),
            (0.001, "0.001"),
            (1000000.0, "1e+06"),
            (100000.0, "1e+05"),
            (1200000.0, "1200000"),
            (0.0001, "1e-04"),
            (0.00012, "0.00012"),
            (12000.0, "12000"),
            (123.456, "123.456"),
            (0.000123, "0.000123"),
            (10.0, "10"),
            (-1000000.0, "-1e+06"),
        ];
        for (v, want) in cases {
            assert_eq!(format_number(*v), *want, "{v}");
        }
    }

    #[test]
    fn escaping() {
        let mut out = Vec::new();
        escape_into(&mut out, b"a\"b\\c\t\x01\xc3\xa9\xff/");
        assert_eq!(
            String::from_utf8_lossy(&out),
            "a\\\"b\\\\c\\t\\u0001é\u{fffd}/"
        );

        let mut out = b"xx".to_vec();
        out.extend_from_slice(b"plain");
        escape_tail(&mut out, 2);
        assert_eq!(out, b"xxplain");
        out.extend_from_slice(b"q\"");
        escape_tail(&mut out, 7);
        assert_eq!(out, b"xxplainq\\\"");
    }
}
