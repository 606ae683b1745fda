//! What the load generator puts on the wire and how it reads back what arrives: the payload of
//! each test message, the server lines it cares about, and the few RESP frames used against Redis.
//!
//! Pure functions over bytes, unit-tested without sockets. Three dialects are read: pollchat's
//! line protocol, IRC (as pollchat's IRC listener, or any IRC server, sends it) and RESP.
//!
//! A test message's text is `pb TRIAL SLOT SEQ INTENDED_NS` padded with `x` to the payload size:
//! `TRIAL` tells a measured trial from earlier ones, `SLOT` is the sender's index in its room,
//! `SEQ` counts its messages from 1 (duplicates and gaps show per sender), and `INTENDED_NS` is
//! when the open-loop schedule meant to send it, in nanoseconds since the generator started, so
//! latency is measured from that time even when the sender fell behind (coordinated omission).

/// The first token of every test message.
const MAGIC: &[u8] = b"pb ";

/// The numbers a test message carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Payload {
    pub trial: u32,
    pub slot: u32,
    pub seq: u32,
    pub intended_ns: u64,
}

/// A server line, as far as the generator cares.
#[derive(Debug, PartialEq, Eq)]
pub enum Line<'a> {
    /// A test message delivered to this client.
    Msg(Payload),
    /// `WELCOME nick ...`: the client's own nick.
    Welcome(&'a str),
    /// `JOIN #room nick`, or Redis's `subscribe` confirmation (room and nick empty).
    Join { room: &'a str, nick: &'a str },
    /// `QUIT nick reason`: someone sharing a room left, and why.
    Quit { nick: &'a str, reason: &'a str },
    /// `BYE reason` (IRC: `ERROR :reason`): the server is closing this connection.
    Bye(&'a str),
    /// `ERROR ...` from pollchat, an IRC error numeric or `-ERR ...` from Redis.
    Error(&'a str),
    /// IRC's `PING token`: answer `PONG :token` or be disconnected.
    Ping(&'a str),
    /// Anything else (NAMES, PART, RESP framing, ...).
    Other,
}

/// Appends the text of one test message (no line ending), padded with `x` to `size` bytes when
/// the numbers take less.
pub fn write_payload(buf: &mut Vec<u8>, p: Payload, size: usize) {
    use std::io::Write;
    let start = buf.len();
    buf.extend_from_slice(MAGIC);
    let _ = write!(buf, "{} {} {} {}", p.trial, p.slot, p.seq, p.intended_ns);
    let len = buf.len() - start;
    if len < size {
        buf.push(b' ');
        buf.resize(start + size, b'x');
    }
}

/// Reads the numbers back from a message text (what follows `MSG #room <nick> `).
pub fn parse_payload(text: &[u8]) -> Option<Payload> {
    let rest = text.strip_prefix(MAGIC)?;
    let mut fields = rest.split(|&b| b == b' ');
    let mut next = || -> Option<u64> {
        let f = fields.next()?;
        if f.is_empty() || f.len() > 20 {
            return None;
        }
        f.iter().try_fold(0u64, |n, &b| {
            b.is_ascii_digit()
                .then(|| n.checked_mul(10)?.checked_add(u64::from(b - b'0')))
                .flatten()
        })
    };
    Some(Payload {
        trial: u32::try_from(next()?).ok()?,
        slot: u32::try_from(next()?).ok()?,
        seq: u32::try_from(next()?).ok()?,
        intended_ns: next()?,
    })
}

/// Classifies one line from a pollchat server (without its `\r\n`).
pub fn parse_chat_line(line: &[u8]) -> Line<'_> {
    if let Some(rest) = line.strip_prefix(b"MSG ") {
        // MSG #room <nick> text; nicks and rooms hold no spaces.
        let mut parts = rest.splitn(3, |&b| b == b' ');
        let (_room, _nick) = (parts.next(), parts.next());
        return parts
            .next()
            .and_then(parse_payload)
            .map_or(Line::Other, Line::Msg);
    }
    let Ok(text) = std::str::from_utf8(line) else {
        return Line::Other;
    };
    let mut words = text.splitn(3, ' ');
    match (words.next(), words.next(), words.next()) {
        (Some("WELCOME"), Some(nick), _) => Line::Welcome(nick),
        (Some("JOIN"), Some(room), Some(nick)) => Line::Join { room, nick },
        (Some("QUIT"), Some(nick), reason) => Line::Quit {
            nick,
            reason: reason.unwrap_or(""),
        },
        (Some("BYE"), ..) => Line::Bye(text.get(4..).unwrap_or("")),
        (Some("ERROR"), ..) => Line::Error(text),
        _ => Line::Other,
    }
}

/// The longest IRC line without its CRLF (RFC 1459's 512 bytes with it).
pub const IRC_MAX_LINE: usize = 510;

/// The IRC command that sends `size` bytes of payload to `#r{room}`, and its length: what has
/// to fit in [`IRC_MAX_LINE`].
pub fn irc_privmsg_len(room: usize, size: usize) -> usize {
    "PRIVMSG #r :".len() + room.to_string().len() + size
}

/// Classifies one line from an IRC server (without its `\r\n`):
/// `[@tags ]:[nick!user@host ]COMMAND params [:trailing]`.
///
/// A delivery is `PRIVMSG <target> :<payload>` from anyone; the tags (such as server-time's
/// `@time=`) and the source are skipped without being decoded, since this runs once per
/// delivery. Numerics are `Other`, except error replies (400 to 599, but not 422, "MOTD File is
/// missing", which greets every client of a server without one) and 001, whose first parameter
/// is the nick the server registered.
pub fn parse_irc_line(line: &[u8]) -> Line<'_> {
    let mut rest = line;
    if rest.first() == Some(&b'@') {
        rest = next_word(rest).1;
    }
    let mut source: &[u8] = b"";
    if rest.first() == Some(&b':') {
        (source, rest) = next_word(&rest[1..]);
    }
    let (command, params) = next_word(rest);
    if command == b"PRIVMSG" {
        let (_target, text) = next_word(params);
        let text = text.strip_prefix(b":").unwrap_or(text);
        return parse_payload(text).map_or(Line::Other, Line::Msg);
    }
    let (Ok(source), Ok(params)) = (std::str::from_utf8(source), std::str::from_utf8(params))
    else {
        return Line::Other;
    };
    let nick = source.split('!').next().unwrap_or("");
    // The trailing parameter (after " :"), or else the first one.
    let first = params.split(' ').next().unwrap_or("");
    let trailing = match params.find(" :") {
        Some(i) => &params[i + 2..],
        None => params.strip_prefix(':').unwrap_or(first),
    };
    match command {
        b"PING" => Line::Ping(trailing),
        b"JOIN" => Line::Join {
            room: first.strip_prefix(':').unwrap_or(first),
            nick,
        },
        b"QUIT" => Line::Quit {
            nick,
            reason: trailing,
        },
        b"ERROR" => Line::Bye(trailing),
        b"001" => Line::Welcome(first),
        [b'4' | b'5', b'0'..=b'9', b'0'..=b'9'] if command != b"422" => {
            Line::Error(std::str::from_utf8(line).unwrap_or("IRC error numeric"))
        }
        _ => Line::Other,
    }
}

/// The first space-separated word of `s` and what follows it (extra spaces skipped).
fn next_word(s: &[u8]) -> (&[u8], &[u8]) {
    match s.iter().position(|&b| b == b' ') {
        Some(i) => {
            let rest = &s[i + 1..];
            let skip = rest.iter().take_while(|&&b| b == b' ').count();
            (&s[..i], &rest[skip..])
        }
        None => (s, b""),
    }
}

/// Classifies one line of a Redis reply stream. RESP frames are themselves `\r\n`-separated and a
/// test payload never holds `\r\n`, so a pushed `message` is found by its payload line alone.
pub fn parse_redis_line(line: &[u8]) -> Line<'_> {
    if line.starts_with(MAGIC) {
        return parse_payload(line).map_or(Line::Other, Line::Msg);
    }
    match line {
        b"subscribe" => Line::Join { room: "", nick: "" },
        _ if line.starts_with(b"-") => Line::Error(std::str::from_utf8(line).unwrap_or("-ERR")),
        _ => Line::Other,
    }
}

/// Appends a Redis command as a RESP array of bulk strings.
pub fn write_resp(buf: &mut Vec<u8>, args: &[&[u8]]) {
    use std::io::Write;
    let _ = write!(buf, "*{}\r\n", args.len());
    for arg in args {
        let _ = write!(buf, "${}\r\n", arg.len());
        buf.extend_from_slice(arg);
        buf.extend_from_slice(b"\r\n");
    }
}

/// Calls `f` with each complete line of `partial` + `input` (without `\n` and one trailing
/// `\r`), then keeps the unfinished tail in `partial`.
pub fn for_each_line(partial: &mut Vec<u8>, mut input: &[u8], mut f: impl FnMut(&[u8])) {
    if !partial.is_empty() {
        match memchr(input) {
            Some(i) => {
                partial.extend_from_slice(&input[..i]);
                f(trim_cr(partial));
                partial.clear();
                input = &input[i + 1..];
            }
            None => {
                partial.extend_from_slice(input);
                return;
            }
        }
    }
    while let Some(i) = memchr(input) {
        f(trim_cr(&input[..i]));
        input = &input[i + 1..];
    }
    if !input.is_empty() {
        partial.extend_from_slice(input);
    } else if partial.capacity() > 4096 {
        // Give a burst's memory back: thousands of idle clients should cost little.
        *partial = Vec::new();
    }
}

fn memchr(bytes: &[u8]) -> Option<usize> {
    bytes.iter().position(|&b| b == b'\n')
}

fn trim_cr(line: &[u8]) -> &[u8] {
    line.strip_suffix(b"\r").unwrap_or(line)
}

#[cfg(test)]
mod tests {
    use super::*;

    const P: Payload = Payload {
        trial: 3,
        slot: 17,
        seq: 42,
        intended_ns: 1_234_567_890,
    };

    #[test]
    fn payload_round_trips_and_pads_to_size() {
        let mut buf = b"MSG #r0 <guest1> ".to_vec();
        write_payload(&mut buf, P, 64);
        assert_eq!(buf.len(), 17 + 64);
        assert_eq!(parse_chat_line(&buf), Line::Msg(P));
        let mut short = Vec::new();
        write_payload(&mut short, P, 4);
        assert_eq!(short, b"pb 3 17 42 1234567890");
        assert_eq!(parse_payload(&short), Some(P));
    }

    #[test]
    fn rejects_text_that_is_not_a_test_message() {
        assert_eq!(parse_payload(b"hello there"), None);
        assert_eq!(parse_payload(b"pb 1 2 3"), None);
        assert_eq!(parse_payload(b"pb 1 2 x 4"), None);
        assert_eq!(parse_payload(b"pb 1 2 99999999999 4"), None);
        assert_eq!(parse_chat_line(b"MSG #r0 <a> hi"), Line::Other);
        assert_eq!(parse_chat_line(b"MSG #r0 * a pb 1 2 3 4"), Line::Other);
    }

    #[test]
    fn classifies_the_lines_the_generator_needs() {
        assert_eq!(
            parse_chat_line(b"WELCOME guest7 #lobby welcome to pollchat"),
            Line::Welcome("guest7")
        );
        assert_eq!(
            parse_chat_line(b"JOIN #r3 guest7"),
            Line::Join {
                room: "#r3",
                nick: "guest7"
            }
        );
        assert_eq!(
            parse_chat_line(b"QUIT guest9 send queue exceeded"),
            Line::Quit {
                nick: "guest9",
                reason: "send queue exceeded"
            }
        );
        assert_eq!(
            parse_chat_line(b"BYE server full"),
            Line::Bye("server full")
        );
        assert_eq!(parse_chat_line(b"NAMES #r3 a b"), Line::Other);
        assert!(matches!(parse_chat_line(b"ERROR usage x"), Line::Error(_)));
    }

    #[test]
    fn reads_irc_deliveries_with_or_without_tags_and_source() {
        let mut payload = Vec::new();
        write_payload(&mut payload, P, 64);
        let text = String::from_utf8(payload).unwrap();
        for line in [
            format!(":pb1-3!pb@127.0.0.1 PRIVMSG #r0 :{text}"),
            format!("@time=2026-11-29T12:00:00.123Z :pb1-3!pb@127.0.0.1 PRIVMSG #r0 :{text}"),
            format!("@time=2026-11-29T12:00:00.123Z;+x=y :n PRIVMSG #r12 :{text}"),
            format!("PRIVMSG #r0 :{text}"),
            format!(":n  PRIVMSG   #r0  :{text}"),
        ] {
            assert_eq!(parse_irc_line(line.as_bytes()), Line::Msg(P), "{line}");
        }
        // The trailing parameter is the whole payload, spaces and all.
        assert_eq!(
            parse_irc_line(b":n!u@h PRIVMSG #r0 :pb 3 17 42 1234567890"),
            Line::Msg(P)
        );
        assert_eq!(
            parse_irc_line(b":n!u@h PRIVMSG #r0 pb"),
            Line::Other,
            "not a test message"
        );
        assert_eq!(parse_irc_line(b":n!u@h PRIVMSG #r0 :hello"), Line::Other);
        assert_eq!(
            parse_irc_line(b":n!u@h NOTICE #r0 :pb 3 17 42 1"),
            Line::Other
        );
        assert_eq!(parse_irc_line(b"@time=x"), Line::Other);
        assert_eq!(parse_irc_line(b""), Line::Other);
    }

    #[test]
    fn classifies_the_irc_lines_the_generator_needs() {
        assert_eq!(
            parse_irc_line(
                b":pollchat 001 pb7-0 :Welcome to the pollchat IRC network, pb7-0!pb@127.0.0.1"
            ),
            Line::Welcome("pb7-0")
        );
        assert_eq!(parse_irc_line(b"PING :pollchat"), Line::Ping("pollchat"));
        assert_eq!(parse_irc_line(b":srv PING tok"), Line::Ping("tok"));
        for join in [
            &b":pb7-0!pb@127.0.0.1 JOIN #r3"[..],
            b":pb7-0!pb@h JOIN :#r3",
        ] {
            assert_eq!(
                parse_irc_line(join),
                Line::Join {
                    room: "#r3",
                    nick: "pb7-0"
                }
            );
        }
        assert_eq!(
            parse_irc_line(b"@time=x :pb7-9!pb@h QUIT :send queue exceeded"),
            Line::Quit {
                nick: "pb7-9",
                reason: "send queue exceeded"
            }
        );
        assert_eq!(
            parse_irc_line(b"ERROR :Closing link: (server full)"),
            Line::Bye("Closing link: (server full)")
        );
        // Numerics are ignored, but errors are reported; 422 greets every client.
        assert_eq!(
            parse_irc_line(b":pollchat 353 pb7-0 = #r3 :a b"),
            Line::Other
        );
        assert_eq!(
            parse_irc_line(b":pollchat 422 pb7-0 :MOTD File is missing"),
            Line::Other
        );
        assert!(matches!(
            parse_irc_line(b":pollchat 433 * pb7-0 :Nickname is already in use"),
            Line::Error(_)
        ));
        assert_eq!(parse_irc_line(b":a!b@c PART #r3"), Line::Other);
    }

    #[test]
    fn irc_lines_must_fit_510_bytes() {
        let mut line = b"PRIVMSG #r99 :".to_vec();
        write_payload(&mut line, P, 400);
        assert_eq!(irc_privmsg_len(99, 400), line.len());
        assert!(irc_privmsg_len(0, 497) <= IRC_MAX_LINE);
        assert!(irc_privmsg_len(10, 497) > IRC_MAX_LINE);
    }

    #[test]
    fn reads_redis_pushes() {
        let mut push = Vec::new();
        let mut payload = Vec::new();
        write_payload(&mut payload, P, 32);
        write_resp(&mut push, &[b"message", b"r0", &payload]);
        let mut partial = Vec::new();
        let mut seen = Vec::new();
        for_each_line(&mut partial, &push, |l| {
            if let Line::Msg(p) = parse_redis_line(l) {
                seen.push(p)
            }
        });
        assert_eq!(seen, [P]);
        assert_eq!(
            parse_redis_line(b"subscribe"),
            Line::Join { room: "", nick: "" }
        );
        assert!(matches!(parse_redis_line(b"-ERR no"), Line::Error(_)));
        let mut cmd = Vec::new();
        write_resp(&mut cmd, &[b"PUBLISH", b"r0", b"a b"]);
        assert_eq!(cmd, b"*3\r\n$7\r\nPUBLISH\r\n$2\r\nr0\r\n$3\r\na b\r\n");
    }

    #[test]
    fn splits_lines_across_reads() {
        let mut partial = Vec::new();
        let mut lines: Vec<Vec<u8>> = Vec::new();
        for chunk in [&b"ab"[..], b"c\r\nde", b"f\n", b"\r\ng"] {
            for_each_line(&mut partial, chunk, |l| lines.push(l.to_vec()));
        }
        assert_eq!(lines, [b"abc".to_vec(), b"def".to_vec(), b"".to_vec()]);
        assert_eq!(partial, b"g");
    }
}
