//! Path sanity: the request paths refused before any route lookup.
//!
//! Routing is by exact path, so a traversal cannot reach another route; these checks exist so
//! that odd paths are refused with 400 and recorded, not silently 404'd, and so that nothing
//! ambiguous (an upstream or log viewer might decode it differently) ever gets further.

use crate::urlenc::percent_decode;

/// Why a path was refused (for the audit log's detail).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PathProblem {
    /// A `%` not followed by two hex digits.
    BadPercentEncoding,
    /// `%2F` or `%5C`: an encoded path separator.
    EncodedSlash,
    /// A `.` or `..` segment, raw or encoded.
    DotSegment,
    /// A backslash, NUL or other control byte.
    ForbiddenByte,
}

impl PathProblem {
    /// Audit-log detail.
    pub fn as_str(self) -> &'static str {
        match self {
            PathProblem::BadPercentEncoding => "invalid percent-encoding in path",
            PathProblem::EncodedSlash => "encoded slash in path",
            PathProblem::DotSegment => "dot segment in path",
            PathProblem::ForbiddenByte => "forbidden byte in path",
        }
    }
}

/// Checks a request path (without the query).
pub fn check_path(path: &str) -> Result<(), PathProblem> {
    // Fast path: the common case is a plain ASCII path without escapes or dots.
    if !path
        .bytes()
        .any(|b| matches!(b, b'%' | b'.' | b'\\') || b < 0x20 || b == 0x7f)
    {
        return Ok(());
    }
    if path.bytes().any(|b| b == b'\\' || b < 0x20 || b == 0x7f) {
        return Err(PathProblem::ForbiddenByte);
    }
    for raw in path.split('/') {
        let seg = percent_decode(raw, false).ok_or(PathProblem::BadPercentEncoding)?;
        if seg.contains(&b'/') || seg.contains(&b'\\') {
            return Err(PathProblem::EncodedSlash);
        }
        if seg.iter().any(|b| *b < 0x20 || *b == 0x7f) {
            return Err(PathProblem::ForbiddenByte);
        }
        if &*seg == b"." || &*seg == b".." {
            return Err(PathProblem::DotSegment);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_paths_pass() {
        for p in [
            "/",
            "/chat",
            "/hooks/stripe",
            "/a-b_c~d",
            "/v1.2/file.json",
            "/%41bc",
        ] {
            assert_eq!(check_path(p), Ok(()), "{p}");
        }
    }

    #[test]
    fn traversal_in_every_spelling_is_refused() {
        for p in [
            "/chat/..",
            "/../chat",
            "/a/./b",
            "/%2e%2e/chat",
            "/%2E%2E/chat",
            "/.%2e/chat",
            "/chat/%2e",
        ] {
            assert_eq!(check_path(p), Err(PathProblem::DotSegment), "{p}");
        }
    }

    #[test]
    fn encoded_separators_are_refused() {
        for p in [
            "/chat%2Fadmin",
            "/chat%2fadmin",
            "/chat%5Cadmin",
            "/chat%5c..",
        ] {
            assert_eq!(check_path(p), Err(PathProblem::EncodedSlash), "{p}");
        }
    }

    #[test]
    fn broken_escapes_and_control_bytes_are_refused() {
        assert_eq!(check_path("/chat%"), Err(PathProblem::BadPercentEncoding));
        assert_eq!(check_path("/chat%zz"), Err(PathProblem::BadPercentEncoding));
        assert_eq!(check_path("/chat%4"), Err(PathProblem::BadPercentEncoding));
        assert_eq!(check_path("/chat%00"), Err(PathProblem::ForbiddenByte));
        assert_eq!(check_path("/a\\b"), Err(PathProblem::ForbiddenByte));
    }
}
