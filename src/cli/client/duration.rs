//! Human durations for `--duration`: `900` (seconds), `15m`, `2h`, `1h30m`, `1h30m15s`.

/// Parses a duration into whole seconds. Units `h`, `m`, `s`, each at most once and in
/// that order; a bare number is seconds. Zero and values beyond `i32` are refused; the
/// server checks the allowed range of each call.
pub fn parse_duration(text: &str) -> Result<i32, String> {
    let text = text.trim();
    let bad =
        || format!("invalid duration '{text}': use seconds (900) or units like 15m, 2h, 1h30m");
    if text.is_empty() {
        return Err(bad());
    }
    let total: u64 = if text.bytes().all(|b| b.is_ascii_digit()) {
        text.parse().map_err(|_| bad())?
    } else {
        let mut total = 0u64;
        let mut digits = String::new();
        let mut last_rank = 0u8;
        for c in text.chars() {
            if c.is_ascii_digit() {
                digits.push(c);
                continue;
            }
            let (rank, factor) = match c.to_ascii_lowercase() {
                'h' => (1, 3600),
                'm' => (2, 60),
                's' => (3, 1),
                _ => return Err(bad()),
            };
            if digits.is_empty() || rank <= last_rank {
                return Err(bad());
            }
            let n: u64 = digits.parse().map_err(|_| bad())?;
            total = n
                .checked_mul(factor)
                .and_then(|v| total.checked_add(v))
                .ok_or_else(bad)?;
            digits.clear();
            last_rank = rank;
        }
        if !digits.is_empty() {
            return Err(bad());
        }
        total
    };
    if total == 0 {
        return Err(format!("invalid duration '{text}': must be more than zero"));
    }
    i32::try_from(total).map_err(|_| format!("invalid duration '{text}': too long"))
}

/// `2h05m`, `14m`, `42s`: a short rendering of a remaining time.
pub fn format_remaining(seconds: i64) -> String {
    if seconds <= 0 {
        return "expired".into();
    }
    let (h, m, s) = (seconds / 3600, seconds % 3600 / 60, seconds % 60);
    match (h, m) {
        (0, 0) => format!("{s}s"),
        (0, _) => format!("{m}m{s:02}s"),
        _ => format!("{h}h{m:02}m"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn duration_table() {
        let good = [
            ("900", 900),
            ("15m", 900),
            ("2h", 7200),
            ("1h30m", 5400),
            ("1h30m15s", 5415),
            ("90s", 90),
            ("36H", 129_600),
            (" 7200 ", 7200),
        ];
        for (text, want) in good {
            assert_eq!(parse_duration(text), Ok(want), "{text}");
        }
        let bad = [
            "",
            "0",
            "0m",
            "h",
            "2x",
            "15 m",
            "30m1h",
            "1h1h",
            "-5",
            "1.5h",
            "2h30",
            "m15",
            "99999999999",
            "600000h",
        ];
        for text in bad {
            assert!(parse_duration(text).is_err(), "{text} should be refused");
        }
    }

    #[test]
    fn remaining() {
        assert_eq!(format_remaining(-1), "expired");
        assert_eq!(format_remaining(42), "42s");
        assert_eq!(format_remaining(14 * 60 + 3), "14m03s");
        assert_eq!(format_remaining(2 * 3600 + 5 * 60), "2h05m");
    }
}
