//! The HTTP/1.1 wire format both sides share (RFC 9112): the chunked transfer coding and
//! `Content-Length` values. The listener decodes request bodies with it, the upstream client
//! response bodies; one decoder means one set of rules for where a message ends, which is
//! where request smuggling lives.

use bytes::{Buf, Bytes, BytesMut};

use crate::forward::headers::is_field_value;

/// Longest chunk-size line (with extensions) or trailer field accepted.
pub(crate) const MAX_LINE: usize = 4096;
/// Most trailer fields accepted after the last chunk: they are dropped, and without a bound a
/// client could keep a connection busy with them for as long as the body timeout allows.
pub(crate) const MAX_TRAILERS: u16 = 64;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Chunk {
    /// Expecting a chunk-size line.
    Size,
    /// Inside a chunk's data, with this many bytes left.
    Data(u64),
    /// Expecting the CRLF after a chunk's data.
    DataEnd,
    /// After the last chunk: trailer fields until an empty line; this many read so far.
    Trailers(u16),
}

/// One step of the chunked decoder.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Step {
    /// Body bytes to pass on; the decoder is now at this point.
    Data(Bytes, Chunk),
    /// Nothing to pass on yet; the decoder is now at this point.
    Next(Chunk),
    /// The buffer holds no complete next element.
    NeedMore,
    /// The last chunk and the trailer section have been read.
    End,
    /// The coding is malformed.
    Fail(&'static str),
}

/// Decodes the next element of a chunked body from the start of `buf` (RFC 9112 §7.1),
/// consuming what it used. Chunk extensions and trailer fields are read and dropped: the
/// client's response head is long gone when trailers arrive.
pub(crate) fn step_chunked(buf: &mut BytesMut, at: Chunk) -> Step {
    match at {
        Chunk::Size => {
            let Some(end) = line_end(buf) else {
                return if buf.len() > MAX_LINE {
                    Step::Fail("chunk-size line too long")
                } else {
                    Step::NeedMore
                };
            };
            let size = match parse_chunk_size(&buf[..end]) {
                Ok(n) => n,
                Err(e) => return Step::Fail(e),
            };
            buf.advance(end + 1);
            Step::Next(if size == 0 {
                Chunk::Trailers(0)
            } else {
                Chunk::Data(size)
            })
        }
        Chunk::Data(left) => {
            if buf.is_empty() {
                return Step::NeedMore;
            }
            let n = usize::try_from(left).unwrap_or(usize::MAX).min(buf.len());
            let data = buf.split_to(n).freeze();
            let left = left - n as u64;
            let next = if left == 0 {
                Chunk::DataEnd
            } else {
                Chunk::Data(left)
            };
            Step::Data(data, next)
        }
        Chunk::DataEnd => {
            if buf.len() < 2 {
                return Step::NeedMore;
            }
            if &buf[..2] != b"\r\n" {
                return Step::Fail("chunk data not followed by CRLF");
            }
            buf.advance(2);
            Step::Next(Chunk::Size)
        }
        Chunk::Trailers(read) => {
            let Some(end) = line_end(buf) else {
                return if buf.len() > MAX_LINE {
                    Step::Fail("trailer field too long")
                } else {
                    Step::NeedMore
                };
            };
            // Every line ends in CRLF, the empty one that ends the message too: a peer that
            // takes a bare LF for the end would see the message end elsewhere.
            let Some(line) = buf[..end].strip_suffix(b"\r") else {
                return Step::Fail("trailer line without CRLF");
            };
            if line.is_empty() {
                buf.advance(end + 1);
                return Step::End;
            }
            if !is_field_line(line) {
                return Step::Fail("malformed trailer field");
            }
            if read >= MAX_TRAILERS {
                return Step::Fail("too many trailer fields");
            }
            buf.advance(end + 1);
            Step::Next(Chunk::Trailers(read + 1))
        }
    }
}

/// `name: value` as RFC 9110 allows a field line: a token, a colon, then no control
/// characters but tab (so no bare CR, NUL or obs-fold, which starts with whitespace).
fn is_field_line(line: &[u8]) -> bool {
    let Some(colon) = line.iter().position(|&b| b == b':') else {
        return false;
    };
    let (name, value) = (&line[..colon], &line[colon + 1..]);
    !name.is_empty() && name.iter().all(|&b| is_tchar(b)) && is_field_value(value)
}

/// A token character (RFC 9110 §5.6.2).
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// The position of the first `\n` in `buf`.
pub(crate) fn line_end(buf: &[u8]) -> Option<usize> {
    buf.iter().take(MAX_LINE + 1).position(|&b| b == b'\n')
}

/// A chunk-size line (without its `\n`): hex digits, then optional extensions after `;`.
fn parse_chunk_size(line: &[u8]) -> Result<u64, &'static str> {
    let line = line
        .strip_suffix(b"\r")
        .ok_or("chunk-size line without CRLF")?;
    let digits_end = line
        .iter()
        .position(|b| !b.is_ascii_hexdigit())
        .unwrap_or(line.len());
    let (digits, rest) = line.split_at(digits_end);
    if digits.is_empty() || digits.len() > 15 {
        return Err("invalid chunk size");
    }
    // Extensions (read and dropped) follow optional whitespace and a `;`; nothing else may
    // follow the digits (whitespace alone neither), and no control character but tab may
    // appear in them: a bare CR is a line end to some peers.
    if !is_field_value(rest) {
        return Err("control character in chunk-size line");
    }
    if !rest.is_empty() && rest.trim_ascii_start().first() != Some(&b';') {
        return Err("invalid chunk size");
    }
    let mut n: u64 = 0;
    for &d in digits {
        let v = match d {
            b'0'..=b'9' => d - b'0',
            b'a'..=b'f' => d - b'a' + 10,
            _ => d - b'A' + 10,
        };
        n = (n << 4) | u64::from(v);
    }
    Ok(n)
}

/// A Content-Length value: decimal digits only.
pub(crate) fn parse_length(v: &[u8]) -> Option<u64> {
    let v = v.trim_ascii();
    if v.is_empty() || v.len() > 19 || !v.iter().all(u8::is_ascii_digit) {
        return None;
    }
    v.iter().try_fold(0u64, |n, &d| {
        n.checked_mul(10)?.checked_add(u64::from(d - b'0'))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Decodes `input` fed `step` bytes at a time: the body, or the decoder's complaint.
    fn decode(input: &[u8], step: usize) -> Result<(Vec<u8>, usize), &'static str> {
        let mut buf = BytesMut::new();
        let mut fed = 0;
        let mut at = Chunk::Size;
        let mut out = Vec::new();
        loop {
            match step_chunked(&mut buf, at) {
                Step::Data(d, next) => {
                    out.extend_from_slice(&d);
                    at = next;
                }
                Step::Next(next) => at = next,
                Step::End => return Ok((out, buf.len())),
                Step::Fail(why) => return Err(why),
                Step::NeedMore => {
                    if fed == input.len() {
                        return Err("ran out of input");
                    }
                    let n = step.min(input.len() - fed);
                    buf.extend_from_slice(&input[fed..fed + n]);
                    fed += n;
                }
            }
        }
    }

    #[test]
    fn chunked_bodies_decode_whole_or_byte_by_byte() {
        let body = b"5;name=value\r\nhello\r\n6\r\n world\r\n0\r\nx-one: 1\r\nx-two: 2\r\n\r\n";
        for step in [1, 2, 3, 7, body.len()] {
            assert_eq!(
                decode(body, step),
                Ok((b"hello world".to_vec(), 0)),
                "step {step}"
            );
        }
        // What follows the body stays in the buffer (the connection is then not reused).
        let mut with_extra = body.to_vec();
        with_extra.extend_from_slice(b"HTTP/1.1 200 OK\r\n");
        assert_eq!(decode(&with_extra, with_extra.len()).map(|r| r.1), Ok(17));
        assert_eq!(decode(b"0\r\n\r\n", 1), Ok((Vec::new(), 0)));
    }

    #[test]
    fn malformed_chunked_bodies_are_refused() {
        for bad in [
            &b"5\r\nhelloXY0\r\n\r\n"[..],
            b"z\r\n",
            b"5\nhello\r\n0\r\n\r\n",
            b"10000000000000000\r\n",
        ] {
            assert!(
                decode(bad, 1).is_err_and(|e| e != "ran out of input"),
                "{bad:?}"
            );
        }
        let long = vec![b'1'; MAX_LINE + 10];
        assert_eq!(decode(&long, long.len()), Err("chunk-size line too long"));
    }

    #[test]
    fn chunk_sizes() {
        assert_eq!(parse_chunk_size(b"1a\r"), Ok(26));
        assert_eq!(parse_chunk_size(b"0\r"), Ok(0));
        assert_eq!(parse_chunk_size(b"A;name=value\r"), Ok(10));
        assert_eq!(parse_chunk_size(b"10 ;ext\r"), Ok(16));
        assert!(parse_chunk_size(b"\r").is_err());
        assert!(parse_chunk_size(b"1a").is_err());
        assert!(parse_chunk_size(b"-1\r").is_err());
        assert!(parse_chunk_size(b"1x\r").is_err());
        assert!(parse_chunk_size(b"1000000000000000\r").is_err());
        // A tab is whitespace, as in field values.
        assert_eq!(parse_chunk_size(b"2\t;a=b\r"), Ok(2));
    }

    /// Lines some peer would end or split elsewhere: a bare CR, a NUL, whitespace with no
    /// extension after it (RFC 9112 allows it only before a `;`).
    #[test]
    fn chunk_size_lines_with_stray_bytes_are_refused() {
        for bad in [
            &b"2\r\r"[..],
            b"2;a\rb\r",
            b"2;\x00\r",
            b"2 \r",
            b"2\t\r",
            b"0\r\r",
            b"2;a=\x7f\r",
        ] {
            assert!(parse_chunk_size(bad).is_err(), "{bad:?}");
        }
    }

    /// The trailer section ends with CRLF CRLF and holds field lines only: a bare LF, a line
    /// without a colon, a NUL or obs-fold ends the body with an error, not with a second
    /// message.
    #[test]
    fn trailer_sections_are_checked() {
        for bad in [
            &b"2\r\n{}\r\n0\r\n\nGET /hook HTTP/1.1\r\nHost: x\r\n\r\n"[..],
            b"0\r\nGET /smuggled HTTP/1.1\r\nX: y\r\n\r\n",
            b"0\r\nno colon \x00 here\r\n\r\n",
            b"0\r\nx-a: 1\r\n folded\r\n\r\n",
            b"0\r\nx-a: 1\x00\r\n\r\n",
            b"0\r\nx-a: 1\n\r\n",
            b"0\r\n: empty name\r\n\r\n",
        ] {
            for step in [1, bad.len()] {
                assert!(
                    decode(bad, step).is_err_and(|e| e != "ran out of input"),
                    "{bad:?} fed {step} at a time"
                );
            }
        }
        let mut many = b"0\r\n".to_vec();
        for i in 0..=MAX_TRAILERS {
            many.extend_from_slice(format!("x-{i}: v\r\n").as_bytes());
        }
        many.extend_from_slice(b"\r\n");
        assert_eq!(decode(&many, many.len()), Err("too many trailer fields"));
        let mut enough = b"0\r\n".to_vec();
        for i in 0..MAX_TRAILERS {
            enough.extend_from_slice(format!("x-{i}: v\t1\r\n").as_bytes());
        }
        enough.extend_from_slice(b"\r\n");
        assert_eq!(decode(&enough, 5), Ok((Vec::new(), 0)));
    }
}
