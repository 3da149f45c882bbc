//! The HTTP/1.1 wire format both sides share (RFC 9112): the chunked transfer coding and
//! `Content-Length` values. The listener decodes request bodies with it, the upstream client
//! response bodies; one decoder means one set of rules for where a message ends, which is
//! where request smuggling lives.

use bytes::{Buf, Bytes, BytesMut};

/// Longest chunk-size line (with extensions) or trailer field accepted.
pub(crate) const MAX_LINE: usize = 4096;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Chunk {
    /// Expecting a chunk-size line.
    Size,
    /// Inside a chunk's data, with this many bytes left.
    Data(u64),
    /// Expecting the CRLF after a chunk's data.
    DataEnd,
    /// After the last chunk: trailer fields until an empty line.
    Trailers,
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
                Chunk::Trailers
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
        Chunk::Trailers => {
            let Some(end) = line_end(buf) else {
                return if buf.len() > MAX_LINE {
                    Step::Fail("trailer field too long")
                } else {
                    Step::NeedMore
                };
            };
            let empty = end == 0 || (end == 1 && buf[0] == b'\r');
            buf.advance(end + 1);
            if empty {
                Step::End
            } else {
                Step::Next(Chunk::Trailers)
            }
        }
    }
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
    let rest = rest.trim_ascii_start();
    if !rest.is_empty() && rest[0] != b';' {
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
    }
}
