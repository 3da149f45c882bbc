//! Sizes (`32KiB`) and durations (`10m`) as written in the config file.
//!
//! Errors are complete sentences meant for the `check` output: they say what was found and
//! what is accepted, so the user can fix the value without opening the docs.

use std::time::Duration;

/// Parses a size: a whole number followed by `B`, `KiB`, `MiB` or `GiB` (`KB`/`MB` are accepted
/// as the same binary units, since that is what people usually mean for body limits).
pub fn parse_size(input: &str) -> Result<u64, String> {
    let s = input.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (digits, unit) = s.split_at(split);
    let unit = unit.trim();
    if digits.is_empty() {
        return Err(format!("\"{input}\" is not a size"));
    }
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("\"{input}\" is too large a size"))?;
    let factor: u64 = match unit {
        "" | "B" | "b" => 1,
        "KiB" | "KB" | "kB" | "K" | "k" => 1 << 10,
        "MiB" | "MB" | "M" => 1 << 20,
        "GiB" | "GB" | "G" => 1 << 30,
        other => {
            return Err(format!("\"{input}\" has an unknown size unit \"{other}\""));
        }
    };
    n.checked_mul(factor)
        .ok_or_else(|| format!("\"{input}\" is too large a size"))
}

/// Parses a duration: one or more `<number><unit>` parts with units `ms`, `s`, `m`, `h`, `d`
/// (e.g. `"500ms"`, `"30s"`, `"1h30m"`, `"90d"`).
pub fn parse_duration(input: &str) -> Result<Duration, String> {
    let s = input.trim();
    let bad = || format!("\"{input}\" is not a duration");
    if s.is_empty() {
        return Err(bad());
    }
    let mut total = Duration::ZERO;
    let mut rest = s;
    // Units largest first, each once (`1h30m`): `1h1h` or `30m1h` is a typo, not a sum.
    let mut last_rank = usize::MAX;
    while !rest.is_empty() {
        let digits_end = rest.find(|c: char| !c.is_ascii_digit()).ok_or_else(bad)?;
        if digits_end == 0 {
            return Err(bad());
        }
        let n: u64 = rest[..digits_end].parse().map_err(|_| bad())?;
        rest = &rest[digits_end..];
        let unit_end = rest
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(rest.len());
        let unit = &rest[..unit_end];
        rest = &rest[unit_end..];
        let part = match unit {
            "ms" => Duration::from_millis(n),
            "s" => Duration::from_secs(n),
            "m" => n.checked_mul(60).map(Duration::from_secs).ok_or_else(bad)?,
            "h" => n
                .checked_mul(3600)
                .map(Duration::from_secs)
                .ok_or_else(bad)?,
            "d" => n
                .checked_mul(86_400)
                .map(Duration::from_secs)
                .ok_or_else(bad)?,
            _ => return Err(bad()),
        };
        let rank = ["ms", "s", "m", "h", "d"]
            .iter()
            .position(|u| *u == unit)
            .unwrap_or(0);
        if rank >= last_rank {
            return Err(format!(
                "\"{input}\" repeats a unit or puts a smaller one first"
            ));
        }
        last_rank = rank;
        total = total.checked_add(part).ok_or_else(bad)?;
    }
    // Far beyond any timeout, window or retention anyone means, and far enough from the
    // clocks' limits that adding one to "now" or scaling it cannot overflow.
    if total > MAX_DURATION {
        return Err(format!(
            "\"{input}\" is longer than {} (the longest duration accepted)",
            format_duration(MAX_DURATION)
        ));
    }
    Ok(total)
}

/// The longest duration a config may give: 100 years.
pub const MAX_DURATION: Duration = Duration::from_secs(100 * 365 * 86_400);

/// Formats a duration the way the config writes it (`90s` → `"1m30s"`), for messages.
pub fn format_duration(d: Duration) -> String {
    let ms = d.as_millis();
    if ms == 0 {
        return "0s".into();
    }
    if !ms.is_multiple_of(1000) {
        return format!("{ms}ms");
    }
    let mut secs = d.as_secs();
    let mut out = String::new();
    for (unit, size) in [("d", 86_400), ("h", 3600), ("m", 60), ("s", 1)] {
        if secs >= size {
            out.push_str(&format!("{}{unit}", secs / size));
            secs %= size;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_in_every_unit() {
        assert_eq!(parse_size("512B"), Ok(512));
        assert_eq!(parse_size("512"), Ok(512));
        assert_eq!(parse_size("32KiB"), Ok(32 * 1024));
        assert_eq!(parse_size("1MiB"), Ok(1024 * 1024));
        assert_eq!(parse_size(" 2 MiB "), Ok(2 * 1024 * 1024));
        assert_eq!(parse_size("1GiB"), Ok(1 << 30));
    }

    #[test]
    fn bad_sizes_say_what_is_accepted() {
        let e = parse_size("1 megabyte").unwrap_err();
        assert_eq!(e, "\"1 megabyte\" has an unknown size unit \"megabyte\"");
        let e = parse_size("MiB").unwrap_err();
        assert!(e.contains("not a size"), "{e}");
        assert!(parse_size("-1KiB").is_err());
        assert!(parse_size("99999999999999999999GiB").is_err());
    }

    #[test]
    fn durations_single_and_compound() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("10m"), Ok(Duration::from_secs(600)));
        assert_eq!(parse_duration("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_duration("90d"), Ok(Duration::from_secs(90 * 86_400)));
    }

    #[test]
    fn bad_durations_say_what_is_accepted() {
        for bad in ["", "10", "m", "5 minutes", "1.5h", "10x", "-5s"] {
            let e = parse_duration(bad).unwrap_err();
            assert!(e.contains("not a duration"), "{bad}: {e}");
        }
        for typo in ["1h1h", "30m1h", "1s500ms1s"] {
            let e = parse_duration(typo).unwrap_err();
            assert!(
                e.contains("repeats a unit or puts a smaller one first"),
                "{typo}: {e}"
            );
        }
        assert_eq!(
            parse_duration("1d2h3m4s5ms").map(|d| d.as_millis()),
            Ok(93_784_005)
        );
    }

    /// Durations that would overflow a deadline (`now + timeout`) or a retry time are refused
    /// at load, not met as a panic on the first request.
    #[test]
    fn durations_beyond_a_century_are_refused() {
        for huge in ["18446744073709551615s", "200000000000d", "36501d"] {
            let e = parse_duration(huge).unwrap_err();
            assert!(e.contains("longer than 36500d"), "{huge}: {e}");
        }
        assert_eq!(parse_duration("36500d"), Ok(MAX_DURATION));
    }

    #[test]
    fn format_round_trips() {
        for s in ["500ms", "30s", "1m30s", "1h", "90d", "0s"] {
            assert_eq!(format_duration(parse_duration(s).unwrap()), s);
        }
    }
}
