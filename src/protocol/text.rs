//! The checks every protocol makes on a framed client line before parsing it: no NUL byte,
//! valid UTF-8, within a length. Each protocol renders a refusal its own way (the line protocol
//! an `ERROR` line, IRC a `FAIL` reply or 417); the rule is written once, here.

/// Why a line was refused before parsing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TextError {
    /// A NUL byte: C clients and other servers would cut the line there.
    Nul,
    /// Longer than the given limit (the limit).
    TooLong(usize),
    /// Not UTF-8: every text pollchat relays is UTF-8.
    BadUtf8,
}

/// The line as text, if it has no NUL, is at most `max` bytes and is UTF-8 (checked in that
/// order, so a line with several faults is refused for the first).
pub fn check(line: &[u8], max: usize) -> Result<&str, TextError> {
    if line.contains(&0) {
        return Err(TextError::Nul);
    }
    if line.len() > max {
        return Err(TextError::TooLong(max));
    }
    std::str::from_utf8(line).map_err(|_| TextError::BadUtf8)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nul_then_length_then_utf8() {
        assert_eq!(check(b"hi", 2), Ok("hi"));
        assert_eq!(check(b"hi!", 2), Err(TextError::TooLong(2)));
        assert_eq!(check(b"\xff\0", 1), Err(TextError::Nul));
        assert_eq!(check(b"\xffxx", 2), Err(TextError::TooLong(2)));
        assert_eq!(check(b"caf\xe9", 10), Err(TextError::BadUtf8));
        assert_eq!(check("café".as_bytes(), 5), Ok("café"));
    }
}
