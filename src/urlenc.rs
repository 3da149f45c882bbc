//! Percent-decoding and `application/x-www-form-urlencoded` pairs, for paths, query strings
//! and form bodies.

use std::borrow::Cow;

/// Decodes `%XX` escapes. Returns `None` for a `%` not followed by two hex digits. When `plus`
/// is true, `+` decodes to a space (query strings and form bodies).
pub fn percent_decode(input: &str, plus: bool) -> Option<Cow<'_, [u8]>> {
    let bytes = input.as_bytes();
    if !(bytes.contains(&b'%') || plus && bytes.contains(&b'+')) {
        return Some(Cow::Borrowed(bytes));
    }
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let hi = hex_val(*bytes.get(i + 1)?)?;
                let lo = hex_val(*bytes.get(i + 2)?)?;
                out.push(hi << 4 | lo);
                i += 3;
            }
            b'+' if plus => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    Some(Cow::Owned(out))
}

fn hex_val(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Splits a query string or form body into decoded `(name, value)` pairs. Pairs that do not
/// decode as UTF-8 are kept with replacement characters; malformed escapes are kept raw.
pub fn form_pairs(input: &str) -> Vec<(String, String)> {
    input
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (decode_lossy(k), decode_lossy(v))
        })
        .collect()
}

fn decode_lossy(s: &str) -> String {
    match percent_decode(s, true) {
        Some(b) => String::from_utf8_lossy(&b).into_owned(),
        None => s.to_owned(),
    }
}

/// The first value of query parameter `name`, decoded.
pub fn query_param(query: &str, name: &str) -> Option<String> {
    query.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        (decode_lossy(k) == name).then(|| decode_lossy(v))
    })
}

/// The query string without any `name=…` pair; `None` when nothing is left.
pub fn remove_query_param(query: &str, name: &str) -> Option<String> {
    retain_params(query, |k| k != name)
}

/// `query` without the parameters that an upstream framework may read as one of those named in
/// `other` (see [`param_readings`]); `None` when nothing is left. A pair is also dropped when
/// a `;` inside it starts such a parameter (Rack 2 splits query strings on `;` too).
pub fn without_params_of(query: &str, other: &str) -> Option<String> {
    let configured: Vec<String> = other
        .split('&')
        .filter(|p| !p.is_empty())
        .filter_map(|p| param_readings(p.split_once('=').map_or(p, |(k, _)| k)).next())
        .collect();
    let kept: Vec<&str> = query
        .split('&')
        .filter(|pair| {
            !pair.is_empty()
                && !pair.split(';').any(|part| {
                    let name = part.split_once('=').map_or(part, |(k, _)| k);
                    param_readings(name).any(|r| configured.contains(&r))
                })
        })
        .collect();
    (!kept.is_empty()).then(|| kept.join("&"))
}

/// The names a raw (still escaped) parameter name may be read as by the frameworks upstreams
/// are written in, the most common first: decoded leniently (a malformed `%` stays, as PHP
/// keeps it), cut at a NUL byte (PHP ends names there), without leading brackets (qs and
/// Rack read `[fixed]` as `fixed`), up to the first bracket (PHP, Rails and qs read `fixed[]`
/// and `fixed[a]` as `fixed`, an array that replaces a plain value) and with an unclosed `[`
/// read as `_` (PHP), with `.` and spaces read as `_` (PHP), in upper case
/// (ASP.NET binds names without regard to case, `ı` and `ſ` included). So a client's
/// `FIXED=5` or `fixed[]=5` must go where `fixed` is configured.
fn param_readings(raw: &str) -> impl Iterator<Item = String> {
    let decoded = decode_leniently(raw);
    let name = decoded.split('\0').next().unwrap_or("");
    let name = name.trim_start_matches(' ').trim_start_matches(['[', ']']);
    let fold = |n: &str| -> String {
        n.chars()
            .map(|c| if c == '.' || c == ' ' { '_' } else { c })
            .collect::<String>()
            .to_uppercase()
    };
    // Up to the first bracket, and, for an unclosed `[`, that `[` read as `_`.
    let mut readings = Vec::with_capacity(2);
    let cut = name.find(['[', ']']).unwrap_or(name.len());
    readings.push(fold(&name[..cut]));
    if let Some(i) = name.find('[')
        && !name[i..].contains(']')
    {
        readings.push(fold(&name.replacen('[', "_", 1)));
    }
    readings.into_iter()
}

/// Decodes `%XX` escapes and `+`, keeping a `%` that does not start one as it is.
fn decode_leniently(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => match (
                bytes.get(i + 1).copied().and_then(hex_val),
                bytes.get(i + 2).copied().and_then(hex_val),
            ) {
                (Some(hi), Some(lo)) => {
                    out.push(hi << 4 | lo);
                    i += 3;
                }
                _ => {
                    out.push(b'%');
                    i += 1;
                }
            },
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The non-empty pairs of `query` whose decoded name `keep` accepts, as they were written;
/// `None` when nothing is left.
fn retain_params(query: &str, keep: impl Fn(&str) -> bool) -> Option<String> {
    let kept: Vec<&str> = query
        .split('&')
        .filter(|pair| {
            let k = pair.split_once('=').map_or(*pair, |(k, _)| k);
            !pair.is_empty() && keep(&decode_lossy(k))
        })
        .collect();
    (!kept.is_empty()).then(|| kept.join("&"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_escapes_and_rejects_broken_ones() {
        assert_eq!(&*percent_decode("a%2Fb", false).unwrap(), b"a/b");
        assert_eq!(&*percent_decode("a+b", false).unwrap(), b"a+b");
        assert_eq!(&*percent_decode("a+b", true).unwrap(), b"a b");
        assert!(percent_decode("%zz", false).is_none());
        assert!(percent_decode("%4", false).is_none());
        assert!(percent_decode("abc%", false).is_none());
    }

    #[test]
    fn client_params_read_as_a_configured_one_are_dropped() {
        let configured = "fixed=1&api_key=k";
        for client in [
            "fixed=5",
            "FIXED=5",
            "Fixed=5",
            "fixed[]=5",
            "fixed%5B%5D=5",
            "fixed[a]=5",
            "api.key=x",
            "api%20key=x",
            "api+key=x",
            "%20api_key=x",
            "[fixed]=5",
            "%5Bfixed%5D=5",
            "]fixed=5",
            "fixed%00=5",
            "fixed%00x=5",
            "api[key=x",
            "api%5Bkey=x",
            "fixed%5B%5D%=5",
            "a=1;fixed=5",
            "a=1; fixed=5",
            "ap%C4%B1_key=x",
            "%C5%BFomething_else=1;fixed=2",
        ] {
            assert_eq!(
                without_params_of(&format!("{client}&other=2"), configured).as_deref(),
                Some("other=2"),
                "{client}"
            );
        }
        for kept in ["fixedx=5", "fix=5", "xfixed=5", "api-key=x", "apikey=x"] {
            assert_eq!(
                without_params_of(kept, configured).as_deref(),
                Some(kept),
                "{kept}"
            );
        }
        assert_eq!(without_params_of("fixed[]=5", configured), None);
    }

    #[test]
    fn query_params_are_found_and_removed() {
        let q = "secret-key=abc%2B1&iv=00ff&x=1";
        assert_eq!(query_param(q, "secret-key").as_deref(), Some("abc+1"));
        assert_eq!(query_param(q, "iv").as_deref(), Some("00ff"));
        assert_eq!(query_param(q, "nope"), None);
        assert_eq!(
            remove_query_param(q, "secret-key").as_deref(),
            Some("iv=00ff&x=1")
        );
        assert_eq!(remove_query_param("a=1", "a"), None);
        // A flag without '=' is a parameter too.
        assert_eq!(remove_query_param("a&b=2", "a").as_deref(), Some("b=2"));
    }

    #[test]
    fn client_parameters_cannot_repeat_configured_ones() {
        assert_eq!(
            without_params_of("a=1&token=forged&%74oken=x&b=2", "token=real&x=y").as_deref(),
            Some("a=1&b=2")
        );
        assert_eq!(without_params_of("token=forged", "token=real"), None);
    }

    #[test]
    fn form_pairs_decode_plus_and_escapes() {
        assert_eq!(
            form_pairs("To=%2B1555&Body=hello+world&Empty="),
            vec![
                ("To".into(), "+1555".into()),
                ("Body".into(), "hello world".into()),
                ("Empty".into(), String::new())
            ]
        );
    }
}
