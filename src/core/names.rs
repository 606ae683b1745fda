//! What makes a valid nick, room name or message text, and how names compare.
//!
//! Names are unique case-insensitively with ASCII folding (IRC's `CASEMAPPING=ascii`), so
//! `Alice` and `alice` are one nick whichever protocol a user came in by. Text that could split or
//! forge a line in any protocol (CR, LF, NUL) is refused here, in the core, so no front door can
//! forget it. So are names that would read as something they are not: services' and the
//! server's own names are refused as nicks ([`SERVICE_NICKS`], `Core::reserve_nick`), room names
//! may not hold invisible or direction-changing characters ([`is_invisible`]), and labels lose
//! them.

use super::event::Error;

/// Longest nick, in bytes (all nick characters are ASCII).
pub const NICK_MAX: usize = 32;
/// Longest room name in bytes, `#` included.
pub const ROOM_MAX: usize = 50;
/// Longest topic, away message or quit reason kept, in bytes; longer ones are cut at a
/// character boundary (they are shown in one line next to other data).
pub const LABEL_MAX: usize = 300;

/// Nicks nobody may take, whatever the configuration: the services of the big IRC networks.
/// pollchat has none of them, so a user holding one of these names could pose as one (and ask
/// for a password). `Core` reserves them, the server's own name and `--reserved-nick` names.
pub const SERVICE_NICKS: [&str; 7] = [
    "NickServ", "ChanServ", "OperServ", "MemoServ", "HostServ", "BotServ", "Global",
];

/// Unicode general category Cf (format characters), from the Unicode 16.0 Character Database
/// (`extracted/DerivedGeneralCategory.txt`; the same ranges as regex-syntax 0.8's `FORMAT`
/// table, which a test checks against). They are invisible, and some (U+202A..U+202E,
/// U+2066..U+2069) reverse or reorder the text after them, so a name holding one need not read
/// as what it is.
const FORMAT: [(char, char); 21] = [
    ('\u{ad}', '\u{ad}'),       // soft hyphen
    ('\u{600}', '\u{605}'),     // Arabic number signs
    ('\u{61c}', '\u{61c}'),     // Arabic letter mark
    ('\u{6dd}', '\u{6dd}'),     // Arabic end of ayah
    ('\u{70f}', '\u{70f}'),     // Syriac abbreviation mark
    ('\u{890}', '\u{891}'),     // Arabic pound and piastre marks
    ('\u{8e2}', '\u{8e2}'),     // Arabic disputed end of ayah
    ('\u{180e}', '\u{180e}'),   // Mongolian vowel separator
    ('\u{200b}', '\u{200f}'),   // zero-width space, (non-)joiner, LRM, RLM
    ('\u{202a}', '\u{202e}'),   // bidi embeddings and overrides
    ('\u{2060}', '\u{2064}'),   // word joiner, invisible operators
    ('\u{2066}', '\u{206f}'),   // bidi isolates, deprecated format characters
    ('\u{feff}', '\u{feff}'),   // zero-width no-break space (BOM)
    ('\u{fff9}', '\u{fffb}'),   // interlinear annotation
    ('\u{110bd}', '\u{110bd}'), // Kaithi number sign
    ('\u{110cd}', '\u{110cd}'), // Kaithi number sign above
    ('\u{13430}', '\u{1343f}'), // Egyptian hieroglyph format controls
    ('\u{1bca0}', '\u{1bca3}'), // shorthand format controls
    ('\u{1d173}', '\u{1d17a}'), // musical symbol beams and phrases
    ('\u{e0001}', '\u{e0001}'), // language tag
    ('\u{e0020}', '\u{e007f}'), // tag characters
];

/// A character that shows nothing or changes how the text around it is shown: a format
/// character (category Cf, see [`FORMAT`]) or the line and paragraph separators U+2028 and
/// U+2029, which some clients render as line breaks.
pub fn is_invisible(c: char) -> bool {
    matches!(c, '\u{2028}' | '\u{2029}') || FORMAT.iter().any(|&(lo, hi)| (lo..=hi).contains(&c))
}

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

/// `#` and 1 to 49 more characters, none of them a space, a comma, a control character or an
/// invisible one ([`is_invisible`]: `#lobby` with a right-to-left override in it could show as
/// another room's name).
pub fn check_room(room: &str) -> Result<(), Error> {
    let rest = room.strip_prefix('#').unwrap_or("");
    let ok = !rest.is_empty()
        && room.len() <= ROOM_MAX
        && !rest
            .chars()
            .any(|c| c == ' ' || c == ',' || c.is_control() || is_invisible(c));
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

/// A free-form label (topic, away message, part or quit reason, real name): line breaks, tabs,
/// NUL and the line and paragraph separators become spaces; every other control character (IRC
/// formatting codes, escape sequences) and every format character ([`is_invisible`]) is
/// removed, so a label shows what it holds and nothing after it is reordered; it is cut to
/// [`LABEL_MAX`] bytes.
pub fn label(text: &str) -> String {
    let cleaned: String = text
        .chars()
        .filter_map(|c| match c {
            '\r' | '\n' | '\t' | '\0' | '\u{2028}' | '\u{2029}' => Some(' '),
            c if c.is_control() || is_invisible(c) => None,
            c => Some(c),
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
            // Nicks are ASCII, so nothing invisible fits in one.
            "ali\u{200b}ce",
            "bob\u{202e}",
            "\u{feff}carol",
        ] {
            assert!(check_nick(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn invisible_characters() {
        for c in [
            '\u{ad}',
            '\u{200b}',
            '\u{200f}',
            '\u{202a}',
            '\u{202e}',
            '\u{2060}',
            '\u{2064}',
            '\u{2066}',
            '\u{2069}',
            '\u{feff}',
            '\u{2028}',
            '\u{2029}',
            '\u{e0041}',
        ] {
            assert!(is_invisible(c), "{c:?}");
        }
        for c in [
            'a', ' ', 'é', '\u{2010}', '\u{2027}', '\u{202f}', '\u{fffd}', '😀',
        ] {
            assert!(!is_invisible(c), "{c:?}");
        }
        assert_eq!(label("\u{202e}evil\u{202c} \u{200b}x\u{feff}"), "evil x");
        assert_eq!(label("\u{200b}\u{200b}"), "");
    }

    /// Any character, weighted towards the ones a label or room name must not show.
    fn any_char() -> impl proptest::strategy::Strategy<Value = char> {
        use proptest::prelude::*;
        prop_oneof![
            any::<char>(),
            proptest::char::range('\0', '\u{9f}'),
            // regex-syntax's own Unicode tables, independent of `FORMAT`.
            proptest::string::string_regex("[\\p{Cc}\\p{Cf}\\p{Zl}\\p{Zp}]")
                .unwrap()
                .prop_map(|s| s.chars().next().unwrap()),
            Just('é'),
            Just('a'),
        ]
    }

    proptest::proptest! {
        /// `FORMAT` holds every Cf character regex-syntax knows.
        #[test]
        fn every_format_character_is_invisible(
            s in proptest::string::string_regex("\\p{Cf}").unwrap()
        ) {
            let c = s.chars().next().unwrap();
            proptest::prop_assert!(is_invisible(c), "{:?}", c);
        }

        #[test]
        fn labels_hold_no_control_or_invisible_character(
            chars in proptest::collection::vec(any_char(), 0..400)
        ) {
            let text: String = chars.into_iter().collect();
            let l = label(&text);
            proptest::prop_assert!(l.len() <= LABEL_MAX);
            proptest::prop_assert!(
                !l.chars().any(|c| c.is_control() || is_invisible(c)),
                "{:?} -> {:?}", text, l
            );
        }

        #[test]
        fn a_room_name_with_a_control_or_invisible_character_is_refused(
            before in "[a-zé]{0,10}",
            bad in proptest::string::string_regex("[\\p{Cc}\\p{Cf}\\p{Zl}\\p{Zp}]").unwrap(),
            after in "[a-zé]{0,10}",
        ) {
            let room = format!("#{before}{bad}{after}");
            proptest::prop_assert!(check_room(&room).is_err(), "{:?}", room);
        }

        #[test]
        fn room_names_hold_no_control_or_invisible_character(
            chars in proptest::collection::vec(any_char(), 1..20)
        ) {
            let room: String = std::iter::once('#').chain(chars).collect();
            if check_room(&room).is_ok() {
                proptest::prop_assert!(
                    !room.chars().any(|c| c.is_control() || is_invisible(c)),
                    "{:?}", room
                );
            }
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
            "#a\u{202e}b",
            "#\u{200b}",
            "#lob\u{ad}by",
            "#a\u{2028}b",
            "#a\u{2066}b",
            "#a\u{feff}",
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
        assert_eq!(label("a\tb\u{2028}c\u{2029}d"), "a b c d");
        assert_eq!(label("\x02bold\x02 \x1b[31mred"), "bold [31mred");
        assert_eq!(label(&"é".repeat(200)).len(), 300);
        assert_eq!(fold("AbC[]"), "abc[]");
    }
}
