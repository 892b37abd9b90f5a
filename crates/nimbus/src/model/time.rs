//! Wall-clock formatting in the exact shapes Lambda uses, without a calendar crate.

use std::time::{SystemTime, UNIX_EPOCH};

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// (year, month, day) of a day count since 1970-01-01 (Howard Hinnant's civil_from_days).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

struct Parts {
    y: i64,
    mo: u32,
    d: u32,
    h: u64,
    mi: u64,
    s: u64,
    ms: u64,
}

fn parts(ms_since_epoch: u64) -> Parts {
    let secs = ms_since_epoch / 1000;
    let (y, mo, d) = civil_from_days((secs / 86_400) as i64);
    let sod = secs % 86_400;
    Parts {
        y,
        mo,
        d,
        h: sod / 3600,
        mi: sod % 3600 / 60,
        s: sod % 60,
        ms: ms_since_epoch % 1000,
    }
}

/// The `Timestamp` string shape of the control plane: `2019-10-01T16:47:28.490+0000`.
pub fn lambda_timestamp(ms_since_epoch: u64) -> String {
    let p = parts(ms_since_epoch);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}+0000",
        p.y, p.mo, p.d, p.h, p.mi, p.s, p.ms
    )
}

/// RFC 3339 with milliseconds and `Z`, as Lambda's runtimes print in log lines.
pub fn iso8601_z(ms_since_epoch: u64) -> String {
    let p = parts(ms_since_epoch);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
        p.y, p.mo, p.d, p.h, p.mi, p.s, p.ms
    )
}

/// `2026/11/25`, the date prefix of a log stream name.
pub fn log_stream_date(ms_since_epoch: u64) -> String {
    let p = parts(ms_since_epoch);
    format!("{:04}/{:02}/{:02}", p.y, p.mo, p.d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_known_instants_like_lambda() {
        // 2019-10-01T16:47:28.490Z
        let ms = 1_569_948_448_490;
        assert_eq!(lambda_timestamp(ms), "2019-10-01T16:47:28.490+0000");
        assert_eq!(iso8601_z(ms), "2019-10-01T16:47:28.490Z");
        assert_eq!(log_stream_date(ms), "2019/10/01");
    }

    #[test]
    fn handles_leap_days_and_epoch() {
        assert_eq!(lambda_timestamp(0), "1970-01-01T00:00:00.000+0000");
        // 2024-02-29T23:59:59.999Z
        assert_eq!(iso8601_z(1_709_251_199_999), "2024-02-29T23:59:59.999Z");
    }
}
