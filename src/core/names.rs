//! What makes a valid nick, room name or message text, and how names compare.
//!
//! Names are unique case-insensitively with ASCII folding (IRC's `CASEMAPPING=ascii`), so
//! `Alice` and `alice` are one nick whichever protocol a user came in by. Text that could split or
//! forge a line in any protocol (CR, LF, NUL) is refused here, in the core, so no front door can
//! forget it.

use super::event::Error;

/// Longest nick, in bytes (all nick characters are ASCII).
pub const NICK_MAX: usize = 32;
/// Longest room name in bytes, `#` included.
pub const ROOM_MAX: usize = 50;
/// Longest topic, away message or quit reason kept, in bytes; longer ones are cut at a
/// character boundary (they are shown in one line next to other data).
pub const LABEL_MAX: usize = 300;

/// The key two names are compared by.
pub fn fold(name: &str) -> String {
    name.to_ascii_lowercase()
}

/// Letters, digits and `_-[]\^{}|`, 1 to 32 of them, not starting with a digit or `-`.
pub fn check_nick(nick: &str) -> Result<(), Error> {
    let ok_char = |c: char| c.is_ascii_alphanumeric() || "_-[]\\^{}|".contains(c);
    let first_ok = nick
        .chars()
        .next()
        .is_some_and(|c| !c.is_ascii_digit() && c != '-');
    if first_ok && nick.len() <= NICK_MAX && nick.chars().all(ok_char) {
        Ok(())
    } else {
        Err(Error::InvalidNick(clip(nick, NICK_MAX + 8)))
    }
}

/// `#` and 1 to 49 more characters, none of them a space, a comma or a control character.
pub fn check_room(room: &str) -> Result<(), Error> {
    let rest = room.strip_prefix('#').unwrap_or("");
    let ok = !rest.is_empty()
        && room.len() <= ROOM_MAX
        && !rest.chars().any(|c| c == ' ' || c == ',' || c.is_control());
    if ok {
        Ok(())
    } else {
        Err(Error::InvalidRoom(clip(room, ROOM_MAX + 8)))
    }
}

/// Message text: not empty, and free of the bytes that end or cut a line.
pub fn check_text(text: &str) -> Result<(), Error> {
    if text.is_empty() {
        Err(Error::NoText)
    } else if text.contains(['\r', '\n', '\0']) {
        Err(Error::BadText)
    } else {
        Ok(())
    }
}

/// A free-form label (topic, away message, reason): line breaks and NUL become spaces, and it is
/// cut to [`LABEL_MAX`] bytes.
pub fn label(text: &str) -> String {
    let cleaned: String = text
        .chars()
        .map(|c| {
            if matches!(c, '\r' | '\n' | '\0') {
                ' '
            } else {
                c
            }
        })
        .collect();
    clip(&cleaned, LABEL_MAX)
}

/// `s` cut to at most `max` bytes without splitting a character.
pub fn clip(s: &str, max: usize) -> String {
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nicks() {
        for good in [
            "a",
            "alice",
            "Bob_2",
            "[x]",
            "a-b",
            "^{}|\\",
            &"n".repeat(32),
        ] {
            assert_eq!(check_nick(good), Ok(()), "{good}");
        }
        for bad in [
            "",
            "1abc",
            "-x",
            "a b",
            "é",
            "a:b",
            "a,b",
            "#x",
            &"n".repeat(33),
        ] {
            assert!(check_nick(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn rooms() {
        for good in [
            "#a",
            "#lobby",
            "#café",
            "#a.b-c",
            &format!("#{}", "r".repeat(49)),
        ] {
            assert_eq!(check_room(good), Ok(()), "{good}");
        }
        for bad in [
            "#",
            "lobby",
            "#a b",
            "#a,b",
            "#a\x07",
            &format!("#{}", "r".repeat(50)),
        ] {
            assert!(check_room(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn text_and_labels() {
        assert_eq!(check_text("hi\tthere"), Ok(()));
        assert_eq!(check_text(""), Err(Error::NoText));
        assert_eq!(check_text("a\rb"), Err(Error::BadText));
        assert_eq!(check_text("a\0b"), Err(Error::BadText));
        assert_eq!(label("a\r\nb"), "a  b");
        assert_eq!(label(&"é".repeat(200)).len(), 300);
        assert_eq!(fold("AbC[]"), "abc[]");
    }
}
