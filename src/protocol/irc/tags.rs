//! IRCv3 message tags (<https://ircv3.net/specs/extensions/message-tags>): reading the client-only
//! tags of a client's line, and the value escaping both ways.
//!
//! A line's tags are `@key=value;key2;+client=value ` before its source and command. Only
//! client-only tags (keys starting with `+`) are relayed to other clients; every other tag a
//! client sends (`fizz=buzz`, or `msgid`, which only the server may set) is dropped. What is
//! relayed is rebuilt here, not copied: each value unescaped then escaped again (so the escaping
//! is canonical and no raw CR can reach another client), a key that occurs twice kept once with
//! its last value (as the spec asks), keys outside the spec's characters dropped (a key is relayed
//! verbatim, so it must not carry anything that changes a line's shape). The result is never
//! longer than the tags it was made from, so the spec's bound of 4094 bytes of client tag data
//! (enforced by the session with 417 before this runs) holds for what is relayed too.

use std::collections::HashSet;

/// The client-only tags of a line's tag section `raw` (the part between `@` and the first
/// space), rebuilt for relaying: `+a=b;+c`, values escaped. `None` if there is none.
pub fn client_tags(raw: &str) -> Option<String> {
    // Last occurrence wins: walk backwards, keep the first of each key seen, then restore the
    // order. A set rather than a scan of what is kept: a 4094-byte section holds up to 2,000
    // tags, and a scan per tag would be quadratic.
    let mut seen = HashSet::new();
    let mut kept: Vec<(&str, &str)> = Vec::new();
    for tag in raw.split(';').rev() {
        let (key, value) = tag.split_once('=').unwrap_or((tag, ""));
        // A raw CR is not a value (the spec's values exclude it; `\r` is how one is sent).
        if !is_client_key(key) || value.contains('\r') || !seen.insert(key) {
            continue;
        }
        kept.push((key, value));
    }
    if kept.is_empty() {
        return None;
    }
    let mut out = String::with_capacity(raw.len());
    for (i, (key, value)) in kept.iter().rev().enumerate() {
        if i > 0 {
            out.push(';');
        }
        out.push_str(key);
        // `+a=` and `+a` mean the same (the spec): relayed as `+a`.
        let value = unescape(value);
        if !value.is_empty() {
            out.push('=');
            escape_into(&value, &mut out);
        }
    }
    Some(out)
}

/// A client-only key with a name: `+` then an optional vendor (`example.com/`) and a name of
/// letters, digits and hyphens. Others are dropped, not refused: the spec forbids rejecting a
/// message for its key names, and an odd key is simply not relayed.
fn is_client_key(key: &str) -> bool {
    let Some(name) = key.strip_prefix('+') else {
        return false;
    };
    let (vendor, name) = name.rsplit_once('/').unwrap_or(("-", name));
    !name.is_empty()
        && !vendor.is_empty()
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        && vendor
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
}

/// A tag value as sent, unescaped: `\:` is `;`, `\s` a space, `\\` a backslash, `\r` CR, `\n`
/// LF; a backslash before any other character is dropped, and so is one at the very end.
pub fn unescape(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    let mut chars = value.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some(':') => out.push(';'),
            Some('s') => out.push(' '),
            Some('\\') => out.push('\\'),
            Some('r') => out.push('\r'),
            Some('n') => out.push('\n'),
            Some(other) => out.push(other),
            None => {}
        }
    }
    out
}

/// `value` escaped for a tag: the inverse of [`unescape`].
pub fn escape(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    escape_into(value, &mut out);
    out
}

fn escape_into(value: &str, out: &mut String) {
    for c in value.chars() {
        match c {
            ';' => out.push_str("\\:"),
            ' ' => out.push_str("\\s"),
            '\\' => out.push_str("\\\\"),
            '\r' => out.push_str("\\r"),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_client_tags_are_kept() {
        assert_eq!(
            client_tags("+baz=bat;fizz=buzz").as_deref(),
            Some("+baz=bat")
        );
        assert_eq!(
            client_tags("+bat=baz;+fizz=buzz").as_deref(),
            Some("+bat=baz;+fizz=buzz")
        );
        assert_eq!(client_tags("msgid=forged;time=x;a"), None);
        assert_eq!(client_tags(""), None);
        assert_eq!(
            client_tags("+draft/reply=abc;+example.com/x-y=1").as_deref(),
            Some("+draft/reply=abc;+example.com/x-y=1")
        );
    }

    #[test]
    fn values_are_escaped_canonically() {
        assert_eq!(
            client_tags(r"+buzz=fizz\:buzz;cat=dog;+steel=wootz").as_deref(),
            Some(r"+buzz=fizz\:buzz;+steel=wootz")
        );
        // A needless backslash is dropped, an escaped CR stays escaped (a raw one drops its
        // tag), an empty value is no value.
        assert_eq!(client_tags(r"+a=\b\").as_deref(), Some("+a=b"));
        assert_eq!(client_tags(r"+a=x\ry").as_deref(), Some(r"+a=x\ry"));
        assert_eq!(client_tags("+a=x\ry;+b").as_deref(), Some("+b"));
        assert_eq!(client_tags("+a=;+b").as_deref(), Some("+a;+b"));
    }

    #[test]
    fn the_last_of_a_repeated_key_wins() {
        assert_eq!(client_tags("+a=1;+b=2;+a=3").as_deref(), Some("+b=2;+a=3"));
    }

    #[test]
    fn odd_keys_are_dropped_not_relayed() {
        assert_eq!(
            client_tags("+;+=x;+a\rb=1;+a b;+ok").as_deref(),
            Some("+ok")
        );
        assert_eq!(client_tags("+a/=1;+/b=2;+a/b/c"), None);
        assert_eq!(client_tags("+x@y/z=1"), None);
    }

    #[test]
    fn unescaping_follows_the_spec() {
        assert_eq!(unescape(r"a\:b\sc\\d\re\nf"), "a;b c\\d\re\nf");
        assert_eq!(unescape(r"\b"), "b");
        assert_eq!(unescape(r"test\"), "test");
        assert_eq!(escape("a;b c\\d\re\nf"), r"a\:b\sc\\d\re\nf");
    }

    proptest::proptest! {
        #[test]
        fn unescape_undoes_escape(value in ".*") {
            proptest::prop_assert_eq!(unescape(&escape(&value)), value);
        }

        /// Any tag section: no panic, and what is relayed is no longer than what came, holds
        /// only client tags, and has nothing that could break or forge a line.
        #[test]
        fn any_tags_relay_safely(raw in "([+a-z/=;\\\\ \r.:-]|.){0,64}") {
            if let Some(out) = client_tags(&raw) {
                proptest::prop_assert!(out.len() <= raw.len(), "{:?} -> {:?}", raw, out);
                proptest::prop_assert!(!out.contains([' ', '\r', '\n', '\0']), "{:?}", out);
                for tag in out.split(';') {
                    proptest::prop_assert!(tag.starts_with('+'), "{:?}", out);
                }
            }
        }
    }
}
