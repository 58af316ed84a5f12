//! Number formatting that reproduces what Envoy's admin code prints.
//!
//! * [`fmt_shortest`]: `fmt::format("{}", double)` — shortest round-trip digits, fixed
//!   notation unless the decimal exponent is `< -4` or `>= 16`; `nan`, `inf`.
//! * [`fmt_g`]: printf/`fmt` `%.{P}g`.
//! * [`fmt_json_double`]: `std::to_chars(double)` (what Envoy's JSON streamer uses with
//!   libc++): the shorter of fixed and scientific, fixed on a tie.

/// Splits Rust's `{:e}` output (`"1.5e-7"`) into mantissa and exponent.
fn split_exp(s: &str) -> (&str, i32) {
    match s.split_once('e') {
        Some((m, e)) => (m, e.parse::<i32>().unwrap_or(0)),
        None => (s, 0),
    }
}

fn sci(mantissa: &str, exp: i32) -> String {
    let sign = if exp < 0 { '-' } else { '+' };
    format!("{mantissa}e{sign}{:02}", exp.unsigned_abs())
}

fn non_finite(x: f64) -> Option<String> {
    if x.is_nan() {
        Some("nan".to_string())
    } else if x.is_infinite() {
        Some(if x > 0.0 { "inf" } else { "-inf" }.to_string())
    } else {
        None
    }
}

/// `fmt::format("{}", x)` for a double.
pub fn fmt_shortest(x: f64) -> String {
    if let Some(s) = non_finite(x) {
        return s;
    }
    if x == 0.0 {
        return if x.is_sign_negative() { "-0" } else { "0" }.to_string();
    }
    let e = format!("{x:e}");
    let (mant, exp) = split_exp(&e);
    if (-4..16).contains(&exp) {
        format!("{x}")
    } else {
        sci(mant, exp)
    }
}

/// `std::to_chars(buf, buf_end, x)` (plain overload) for a finite double.
pub fn fmt_json_double(x: f64) -> String {
    if let Some(s) = non_finite(x) {
        return s;
    }
    if x == 0.0 {
        return if x.is_sign_negative() { "-0" } else { "0" }.to_string();
    }
    let e = format!("{x:e}");
    let (mant, exp) = split_exp(&e);
    let fixed = format!("{x}");
    let scientific = sci(mant, exp);
    if scientific.len() < fixed.len() {
        scientific
    } else {
        fixed
    }
}

fn strip_trailing_zeros(s: &str) -> &str {
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.')
    } else {
        s
    }
}

/// printf `%.{precision}g`.
pub fn fmt_g(x: f64, precision: usize) -> String {
    if let Some(s) = non_finite(x) {
        return s;
    }
    let p = precision.max(1);
    if x == 0.0 {
        return if x.is_sign_negative() { "-0" } else { "0" }.to_string();
    }
    let e = format!("{:.*e}", p - 1, x);
    let (mant, exp) = split_exp(&e);
    if exp >= -4 && (exp as i64) < p as i64 {
        let decimals = (p as i64 - 1 - exp as i64).max(0) as usize;
        let f = format!("{x:.decimals$}");
        strip_trailing_zeros(&f).to_string()
    } else {
        sci(strip_trailing_zeros(mant), exp)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shortest() {
        assert_eq!(fmt_shortest(1.0), "1");
        assert_eq!(fmt_shortest(1.025), "1.025");
        assert_eq!(fmt_shortest(f64::NAN), "nan");
        assert_eq!(fmt_shortest(1e16), "1e+16");
        assert_eq!(fmt_shortest(1e15), "1000000000000000");
        assert_eq!(fmt_shortest(0.0001), "0.0001");
        assert_eq!(fmt_shortest(0.00001), "1e-05");
        assert_eq!(fmt_shortest(1.5e-7), "1.5e-07");
        assert_eq!(fmt_shortest(303.3333333333333), "303.3333333333333");
    }

    #[test]
    fn g_format() {
        assert_eq!(fmt_g(0.5, 32), "0.5");
        assert_eq!(fmt_g(3600000.0, 32), "3600000");
        assert_eq!(fmt_g(0.0, 32), "0");
        assert_eq!(fmt_g(99.5, 6), "99.5");
        assert_eq!(fmt_g(1800000.0, 6), "1.8e+06");
        assert_eq!(fmt_g(100.0, 6), "100");
        assert_eq!(fmt_g(1e-5, 6), "1e-05");
        assert_eq!(fmt_g(123456789.0, 32), "123456789");
    }

    #[test]
    #[allow(clippy::approx_constant)] // Envoy's buffer_util_test value
    fn json_double() {
        assert_eq!(fmt_json_double(0.0), "0");
        assert_eq!(fmt_json_double(0.5), "0.5");
        assert_eq!(fmt_json_double(3.141592654), "3.141592654");
        assert_eq!(fmt_json_double(-989282.1087), "-989282.1087");
        assert_eq!(
            fmt_json_double(1.23456789012345e+67),
            "1.23456789012345e+67"
        );
        assert_eq!(fmt_json_double(99.9), "99.9");
        assert_eq!(fmt_json_double(10000.0), "10000");
        assert_eq!(fmt_json_double(100000.0), "1e+05");
    }
}
