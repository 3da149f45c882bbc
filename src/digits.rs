//! Numbers as text on the request path, without the formatting machinery (whose dispatch
//! costs more than the digits themselves on every request).

/// `n` in decimal, written into the end of `buf`.
pub fn decimal(n: u64, buf: &mut [u8; 20]) -> &str {
    // Only ASCII digits were written.
    std::str::from_utf8(decimal_bytes(n, buf)).unwrap_or_default()
}

/// `n` in decimal as ASCII bytes, written into the end of `buf`: for byte buffers, which need
/// no UTF-8 check of them.
pub fn decimal_bytes(mut n: u64, buf: &mut [u8; 20]) -> &[u8] {
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    &buf[i..]
}

/// Appends `n` in decimal to `out`.
pub fn push_decimal(out: &mut String, n: u64) {
    let mut buf = [0; 20];
    out.extend(decimal_bytes(n, &mut buf).iter().map(|&b| char::from(b)));
}

#[cfg(test)]
mod tests {
    use super::{decimal, decimal_bytes, push_decimal};

    #[test]
    fn matches_the_formatter() {
        for n in [0, 1, 9, 10, 99, 100, 65_535, 1_000_000_007, u64::MAX] {
            assert_eq!(decimal(n, &mut [0; 20]), n.to_string());
            assert_eq!(decimal_bytes(n, &mut [0; 20]), n.to_string().as_bytes());
            let mut out = String::from("x=");
            push_decimal(&mut out, n);
            assert_eq!(out, format!("x={n}"));
        }
    }
}
