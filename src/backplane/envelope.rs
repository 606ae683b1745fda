//! What one node tells the others, as bytes: the names of Redis channels, and the envelope of
//! what crosses nodes ([`Shared`]). Pure functions, tested without Redis.
//!
//! An envelope is itself a RESP2 array of bulk strings (the codec we already use for Redis), so
//! it is binary-safe and needs no parser of our own:
//!
//! ```text
//! [ "pollchat/1", origin node, id, "msg",  room, kind, nick, user, host, realname, tags, text, msgid ]
//! [ "pollchat/1", origin node, id, "tagmsg", room, nick, user, host, realname, tags, msgid ]
//! [ "pollchat/1", origin node, id, "join", room, nick, user, host, realname ]
//! [ "pollchat/1", origin node, id, "part", room, nick, user, host, realname, reason ]
//! [ "pollchat/1", origin node, id, "quit", nick, user, host, realname, reason, room, room… ]
//! [ "pollchat/1", origin node, id, "nick", nick, user, host, realname, new nick, room, room… ]
//! [ "pollchat/1", origin node, id, "priv", to nick, kind, nick, user, host, realname, tags, text, msgid ]
//! [ "pollchat/1", origin node, id, "topic", room, nick, user, host, realname, at, text ]
//! [ "pollchat/1", origin node, id, "modes", room, nick, user, host, realname, change, change… ]
//! [ "pollchat/1", origin node, id, "kick", room, nick, user, host, realname, kicked nick, reason ]
//! [ "pollchat/1", origin node, id, "kill", nick, by nick, user, host, realname, reason ]
//! [ "pollchat/1", origin node, id, "invite", room, by nick, user, host, realname, nick, keeps ]
//! ```
//!
//! A topic's `at` is milliseconds since the epoch, an empty text clears it. A mode change is
//! one field, its sign, its letter and its argument if any: `+o alice`, `-m`, `+k key`.
//!
//! `id` numbers what a node publishes (decimal); a quit or a nick change is published on the
//! channel of each of its rooms with the same id, and a node that receives it several times
//! hands it to its core once. `kind` is `normal`, `action` or `notice`; empty `tags` or `reason` mean none. The
//! first element names the format, so a node ignores what a newer format (or anything else
//! published on our channels) says instead of misreading it. What comes from Redis is checked
//! as a client line would be: a field with CR, LF or NUL, or a nick or room that is not one, is
//! dropped, so nothing another Redis client publishes can split an IRC line or pass for
//! something else.

use std::sync::Arc;

use redis_protocol::resp2::encode::encode_borrowed;
use redis_protocol::resp2::types::BorrowedFrame;

use crate::core::cluster::{PrivateMessage, RoomMessage, Shared};
use crate::core::modes::parse_applied;
use crate::core::names::{check_nick, check_room, fold, label};
use crate::core::{Applied, MsgKind, Source};

/// The first element of every envelope: the format's name and version.
pub const FORMAT: &str = "pollchat/1";

/// The Redis channel of a room: `{prefix}room:{folded name}`. `folded` must be folded already
/// (every node folds the same way, so all meet on one channel).
pub fn room_channel(prefix: &str, folded: &str) -> Vec<u8> {
    format!("{prefix}room:{folded}").into_bytes()
}

/// The channel of the user holding a nick: `{prefix}user:{folded nick}` (subscribed to by its
/// node only). `folded` must be folded already.
pub fn user_channel(prefix: &str, folded: &str) -> Vec<u8> {
    format!("{prefix}user:{folded}").into_bytes()
}

/// The channels `shared` is published on: its room's, each of a quitter's rooms', or a private
/// message's target's.
pub fn channels(prefix: &str, shared: &Shared) -> Vec<Vec<u8>> {
    let one = |room: &str| vec![room_channel(prefix, &fold(room))];
    match shared {
        Shared::Message(msg) => one(&msg.room),
        Shared::TagMsg { room, .. }
        | Shared::Joined { room, .. }
        | Shared::Parted { room, .. }
        | Shared::Topic { room, .. }
        | Shared::Modes { room, .. }
        | Shared::Kicked { room, .. } => one(room),
        Shared::Kill { nick, .. } | Shared::Invite { nick, .. } => {
            vec![user_channel(prefix, &fold(nick))]
        }
        Shared::Quit { rooms, .. } | Shared::NickChanged { rooms, .. } => rooms
            .iter()
            .map(|r| room_channel(prefix, &fold(r)))
            .collect(),
        Shared::Private(msg) => vec![user_channel(prefix, &fold(&msg.to))],
    }
}

/// Appends `parts` as one RESP2 array of bulk strings (a Redis command, or an envelope) to
/// `out`.
pub fn encode_array(out: &mut Vec<u8>, parts: &[&[u8]]) {
    let frames: Vec<BorrowedFrame> = parts.iter().map(|p| BorrowedFrame::BulkString(p)).collect();
    let frame = BorrowedFrame::Array(&frames);
    let start = out.len();
    out.resize(start + frame.encode_len(false), 0);
    let n = encode_borrowed(&mut out[start..], &frame, false)
        .expect("the buffer was sized by encode_len");
    out.truncate(start + n);
}

fn kind_name(kind: MsgKind) -> &'static str {
    match kind {
        MsgKind::Normal => "normal",
        MsgKind::Action => "action",
        MsgKind::Notice => "notice",
    }
}

/// A mode change as an envelope field: `+o alice`, `-m`.
pub fn applied_field(a: &Applied) -> String {
    let sign = if a.set { '+' } else { '-' };
    match &a.arg {
        Some(arg) => format!("{sign}{} {arg}", a.letter),
        None => format!("{sign}{}", a.letter),
    }
}

/// The envelope of `shared`, the `id`th thing node `origin` published.
pub fn encode(origin: &str, id: u64, shared: &Shared) -> Vec<u8> {
    let id = id.to_string();
    let msgid = match shared {
        Shared::Message(RoomMessage { msgid, .. })
        | Shared::Private(PrivateMessage { msgid, .. })
        | Shared::TagMsg { msgid, .. } => msgid.to_string(),
        _ => String::new(),
    };
    let (at, changes);
    let mut parts: Vec<&[u8]> = vec![FORMAT.as_bytes(), origin.as_bytes(), id.as_bytes()];
    fn source<'a>(parts: &mut Vec<&'a [u8]>, who: &'a Source) {
        parts.extend([&*who.nick, &*who.user, &*who.host, &*who.realname].map(str::as_bytes));
    }
    match shared {
        Shared::Message(msg) => {
            parts.extend([b"msg".as_slice(), msg.room.as_bytes()]);
            parts.push(kind_name(msg.kind).as_bytes());
            source(&mut parts, &msg.from);
            parts.push(msg.tags.as_deref().unwrap_or("").as_bytes());
            parts.push(msg.text.as_bytes());
            parts.push(msgid.as_bytes());
        }
        Shared::TagMsg {
            room, from, tags, ..
        } => {
            parts.extend([b"tagmsg".as_slice(), room.as_bytes()]);
            source(&mut parts, from);
            parts.push(tags.as_deref().unwrap_or("").as_bytes());
            parts.push(msgid.as_bytes());
        }
        Shared::Joined { room, who } => {
            parts.extend([b"join".as_slice(), room.as_bytes()]);
            source(&mut parts, who);
        }
        Shared::Parted { room, who, reason } => {
            parts.extend([b"part".as_slice(), room.as_bytes()]);
            source(&mut parts, who);
            parts.push(reason.as_deref().unwrap_or("").as_bytes());
        }
        Shared::Quit { rooms, who, reason } => {
            parts.push(b"quit");
            source(&mut parts, who);
            parts.push(reason.as_bytes());
            parts.extend(rooms.iter().map(|r| r.as_bytes()));
        }
        Shared::NickChanged { rooms, old, new } => {
            parts.push(b"nick");
            source(&mut parts, old);
            parts.push(new.as_bytes());
            parts.extend(rooms.iter().map(|r| r.as_bytes()));
        }
        Shared::Private(msg) => {
            parts.extend([b"priv".as_slice(), msg.to.as_bytes()]);
            parts.push(kind_name(msg.kind).as_bytes());
            source(&mut parts, &msg.from);
            parts.push(msg.tags.as_deref().unwrap_or("").as_bytes());
            parts.push(msg.text.as_bytes());
            parts.push(msgid.as_bytes());
        }
        Shared::Topic {
            room,
            by,
            topic,
            at: when,
        } => {
            parts.extend([b"topic".as_slice(), room.as_bytes()]);
            source(&mut parts, by);
            at = when.to_string();
            parts.push(at.as_bytes());
            parts.push(topic.as_deref().unwrap_or("").as_bytes());
        }
        Shared::Modes {
            room,
            by,
            changes: applied,
        } => {
            parts.extend([b"modes".as_slice(), room.as_bytes()]);
            source(&mut parts, by);
            changes = applied.iter().map(applied_field).collect::<Vec<_>>();
            parts.extend(changes.iter().map(|c| c.as_bytes()));
        }
        Shared::Kicked {
            room,
            by,
            nick,
            reason,
        } => {
            parts.extend([b"kick".as_slice(), room.as_bytes()]);
            source(&mut parts, by);
            parts.extend([nick.as_bytes(), reason.as_bytes()]);
        }
        Shared::Kill { nick, by, reason } => {
            parts.extend([b"kill".as_slice(), nick.as_bytes()]);
            source(&mut parts, by);
            parts.push(reason.as_bytes());
        }
        Shared::Invite {
            room,
            by,
            nick,
            keeps,
        } => {
            parts.extend([b"invite".as_slice(), room.as_bytes()]);
            source(&mut parts, by);
            parts.extend([nick.as_bytes(), if *keeps { b"1" } else { b"0" }]);
        }
    }
    let mut out = Vec::with_capacity(parts.iter().map(|p| p.len() + 16).sum());
    encode_array(&mut out, &parts);
    out
}

/// An envelope read back: which node published it, its number there, and what it says.
#[derive(Debug, PartialEq, Eq)]
pub struct Received {
    pub origin: String,
    pub id: u64,
    pub shared: Shared,
}

/// The bulk strings of `bytes` if it is exactly one flat RESP2 array of bulk strings (what
/// [`encode_array`] writes), read without recursion: a generic RESP decoder recurses into
/// nested arrays, and an envelope of a million nested `*1` (a few MB anyone with access to
/// Redis may PUBLISH) would overflow the loop's stack.
fn flat_array(bytes: &[u8]) -> Option<Vec<&[u8]>> {
    fn header(bytes: &[u8], at: &mut usize, kind: u8) -> Option<usize> {
        let rest = bytes.get(*at..)?;
        let end = rest.windows(2).position(|w| w == b"\r\n")?;
        let (&first, digits) = rest[..end].split_first()?;
        if first != kind || digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
            return None;
        }
        *at += end + 2;
        std::str::from_utf8(digits).ok()?.parse().ok()
    }
    let mut at = 0;
    let count = header(bytes, &mut at, b'*')?;
    // Each element takes at least 6 bytes (`$0\r\n\r\n`): a count past that is a lie.
    if count > bytes.len() / 6 {
        return None;
    }
    let mut parts = Vec::with_capacity(count);
    for _ in 0..count {
        let len = header(bytes, &mut at, b'$')?;
        let end = at.checked_add(len)?;
        if bytes.get(end..end.checked_add(2)?)? != b"\r\n" {
            return None;
        }
        parts.push(&bytes[at..end]);
        at = end + 2;
    }
    (at == bytes.len()).then_some(parts)
}

/// Whether `tags` are client tags as a node relays them: what
/// [`client_tags`](crate::protocol::irc::tags::client_tags) makes of a client's line (client-only
/// keys, canonical escaping) and within a line's tag budget. Anything else (a server tag such as
/// `msgid` or `account`, a 20 KB section) would reach this node's clients as if the server said
/// it.
fn client_tags_ok(tags: &str) -> bool {
    tags.len() <= crate::protocol::irc::MAX_TAGS - 2
        && crate::protocol::irc::tags::client_tags(tags).as_deref() == Some(tags)
}

/// Reads an envelope; `None` for anything that is not a well-formed envelope of our format
/// (see the module doc).
pub fn decode_envelope(bytes: &[u8]) -> Option<Received> {
    let mut fields = Vec::new();
    for b in flat_array(bytes)? {
        let s = String::from_utf8(b.to_vec()).ok()?;
        if s.contains(['\r', '\n', '\0']) {
            return None;
        }
        fields.push(s);
    }
    let mut fields = fields.into_iter();
    let mut next = || fields.next();
    if next()? != FORMAT {
        return None;
    }
    let origin = next()?;
    let id: u64 = next()?.parse().ok()?;
    if origin.is_empty() {
        return None;
    }
    let room = |s: String| check_room(&s).ok().map(|()| Arc::<str>::from(s));
    // The sender's msgid: absent in the envelopes of nodes that did not send it yet (0).
    let msgid = |s: Option<String>| match s {
        Some(n) => n.parse::<u64>().ok(),
        None => Some(0),
    };
    let word = crate::core::remote::source_word;
    let source = |next: &mut dyn FnMut() -> Option<String>| {
        let (nick, user, host, realname) = (next()?, next()?, next()?, next()?);
        check_nick(&nick).ok()?;
        (word(&user) && word(&host)).then(|| Source::new(&nick, &user, &host, &label(&realname)))
    };
    let shared = match next()?.as_str() {
        what @ ("msg" | "priv") => {
            let to = next()?;
            let kind = match next()?.as_str() {
                "normal" => MsgKind::Normal,
                "action" => MsgKind::Action,
                "notice" => MsgKind::Notice,
                _ => return None,
            };
            let from = source(&mut next)?;
            let tags = next()?;
            let text = next()?;
            if !(tags.is_empty() || client_tags_ok(&tags)) || text.is_empty() {
                return None;
            }
            let tags = (!tags.is_empty()).then(|| Arc::from(tags));
            let msgid = msgid(next())?;
            if what == "priv" {
                check_nick(&to).ok()?;
                Shared::Private(PrivateMessage {
                    to: to.into(),
                    from,
                    text: text.into(),
                    kind,
                    tags,
                    msgid,
                })
            } else {
                Shared::Message(RoomMessage {
                    room: room(to)?,
                    from,
                    text: text.into(),
                    kind,
                    tags,
                    msgid,
                })
            }
        }
        "tagmsg" => {
            let room = room(next()?)?;
            let from = source(&mut next)?;
            let tags = next()?;
            if !client_tags_ok(&tags) {
                return None;
            }
            Shared::TagMsg {
                room,
                from,
                tags: Some(tags.into()),
                msgid: msgid(next())?,
            }
        }
        "join" => Shared::Joined {
            room: room(next()?)?,
            who: source(&mut next)?,
        },
        "part" => {
            let room = room(next()?)?;
            let who = source(&mut next)?;
            let reason = next()?;
            Shared::Parted {
                room,
                who,
                reason: (!reason.is_empty()).then(|| Arc::from(label(&reason))),
            }
        }
        what @ ("quit" | "nick") => {
            let who = source(&mut next)?;
            let text = next()?;
            let mut rooms = Vec::new();
            while let Some(r) = next() {
                rooms.push(room(r)?);
            }
            if rooms.is_empty() {
                return None;
            }
            let shared = if what == "quit" {
                Shared::Quit {
                    rooms,
                    who,
                    reason: label(&text).into(),
                }
            } else {
                check_nick(&text).ok()?;
                Shared::NickChanged {
                    rooms,
                    old: who,
                    new: text.into(),
                }
            };
            return Some(Received { origin, id, shared });
        }
        "topic" => {
            let room = room(next()?)?;
            let by = source(&mut next)?;
            let at = next()?.parse().ok()?;
            let text = next()?;
            Shared::Topic {
                room,
                by,
                topic: (!text.is_empty()).then(|| Arc::from(label(&text))),
                at,
            }
        }
        "modes" => {
            let room = room(next()?)?;
            let by = source(&mut next)?;
            let mut changes = Vec::new();
            while let Some(c) = next() {
                changes.push(parse_applied(&c)?);
            }
            if changes.is_empty() || changes.len() > 64 {
                return None;
            }
            return Some(Received {
                origin,
                id,
                shared: Shared::Modes { room, by, changes },
            });
        }
        "kick" => {
            let room = room(next()?)?;
            let by = source(&mut next)?;
            let nick = next()?;
            check_nick(&nick).ok()?;
            let reason = label(&next()?).into();
            Shared::Kicked {
                room,
                by,
                nick: nick.into(),
                reason,
            }
        }
        "invite" => {
            let room = room(next()?)?;
            let by = source(&mut next)?;
            let nick = next()?;
            check_nick(&nick).ok()?;
            let keeps = match next()?.as_str() {
                "1" => true,
                "0" => false,
                _ => return None,
            };
            Shared::Invite {
                room,
                by,
                nick: nick.into(),
                keeps,
            }
        }
        "kill" => {
            let nick = next()?;
            check_nick(&nick).ok()?;
            let by = source(&mut next)?;
            let reason = label(&next()?).into();
            Shared::Kill {
                nick: nick.into(),
                by,
                reason,
            }
        }
        _ => return None,
    };
    // Nothing may follow the last field (a quit's rooms run to the end).
    if next().is_some() {
        return None;
    }
    Some(Received { origin, id, shared })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alice() -> Arc<Source> {
        Source::new("alice", "line", "f1c0136b.a16b454c.ip", "Alice A.")
    }

    fn message() -> RoomMessage {
        RoomMessage {
            room: "#Chat".into(),
            from: alice(),
            text: "hello, world: *".into(),
            kind: MsgKind::Action,
            tags: Some("+typing=active;+draft/reply=x".into()),
            msgid: (3 << 40) + 17,
        }
    }

    #[test]
    fn envelopes_read_back_as_they_were_written() {
        let all = [
            Shared::Message(message()),
            Shared::Message(RoomMessage {
                tags: None,
                kind: MsgKind::Notice,
                ..message()
            }),
            Shared::TagMsg {
                room: "#a".into(),
                from: alice(),
                tags: Some("+typing=active".into()),
                msgid: 12,
            },
            Shared::Joined {
                room: "#a".into(),
                who: alice(),
            },
            Shared::Parted {
                room: "#a".into(),
                who: alice(),
                reason: Some("see you".into()),
            },
            Shared::Parted {
                room: "#a".into(),
                who: alice(),
                reason: None,
            },
            Shared::Quit {
                rooms: vec!["#a".into(), "#B".into()],
                who: alice(),
                reason: "quit: bye".into(),
            },
            Shared::NickChanged {
                rooms: vec!["#a".into()],
                old: alice(),
                new: "alicia".into(),
            },
            Shared::Private(PrivateMessage {
                to: "Bob".into(),
                from: alice(),
                text: "psst".into(),
                kind: MsgKind::Normal,
                tags: Some("+typing=done".into()),
                msgid: 13,
            }),
            Shared::Topic {
                room: "#a".into(),
                by: alice(),
                topic: Some("the topic: *".into()),
                at: 1_700_000_000_000,
            },
            Shared::Topic {
                room: "#a".into(),
                by: alice(),
                topic: None,
                at: 1,
            },
            Shared::Modes {
                room: "#a".into(),
                by: alice(),
                changes: [
                    "+o bob",
                    "-m",
                    "+k sesame",
                    "-k *",
                    "+l 10",
                    "-l",
                    "+b x!*@*",
                ]
                .iter()
                .map(|c| parse_applied(c).unwrap())
                .collect(),
            },
            Shared::Kicked {
                room: "#a".into(),
                by: alice(),
                nick: "bob".into(),
                reason: "enough".into(),
            },
            Shared::Kill {
                nick: "Bob".into(),
                by: alice(),
                reason: "spam".into(),
            },
            Shared::Invite {
                room: "#i".into(),
                by: alice(),
                nick: "bob".into(),
                keeps: true,
            },
        ];
        for (id, shared) in all.into_iter().enumerate() {
            let got = decode_envelope(&encode("node-1", id as u64, &shared)).expect("decodes");
            assert_eq!(
                got,
                Received {
                    origin: "node-1".into(),
                    id: id as u64,
                    shared
                }
            );
        }
    }

    #[test]
    fn a_command_is_a_resp_array_of_bulk_strings() {
        let mut out = Vec::new();
        encode_array(&mut out, &[b"PUBLISH", b"p:room:#a", b"x y"]);
        assert_eq!(
            out,
            b"*3\r\n$7\r\nPUBLISH\r\n$9\r\np:room:#a\r\n$3\r\nx y\r\n".to_vec()
        );
        assert_eq!(room_channel("pollchat:", "#chat"), b"pollchat:room:#chat");
        assert_eq!(
            channels("p:", &Shared::Message(message())),
            [b"p:room:#chat".to_vec()]
        );
        let quit = Shared::Quit {
            rooms: vec!["#A".into(), "#b".into()],
            who: alice(),
            reason: "x".into(),
        };
        assert_eq!(
            channels("p:", &quit),
            [b"p:room:#a".to_vec(), b"p:room:#b".to_vec()]
        );
    }

    #[test]
    fn nested_arrays_are_dropped_without_recursing() {
        // Anyone who may PUBLISH on a room's channel could send this: a recursive decoder
        // overflowed the loop's stack (the server aborted).
        assert!(decode_envelope(&b"*1\r\n".repeat(400_000)).is_none());
        let mut nested = b"*2\r\n".to_vec();
        encode_array(&mut nested, &[FORMAT.as_bytes()]);
        nested.extend_from_slice(b"$1\r\nx\r\n");
        assert!(decode_envelope(&nested).is_none());
        assert!(decode_envelope(b"*99999999999\r\n$1\r\nx\r\n").is_none());
        assert!(decode_envelope(b"*1\r\n$99999999999999999999\r\nx\r\n").is_none());
        assert!(decode_envelope(b"*1\r\n$-1\r\n").is_none());
    }

    #[test]
    fn what_is_not_a_well_formed_envelope_is_dropped() {
        let fields = |f: &dyn Fn(&mut Vec<Vec<u8>>)| {
            let mut parts: Vec<Vec<u8>> = [
                FORMAT, "n", "7", "msg", "#a", "normal", "bob", "u", "h", "Bob", "", "hi",
            ]
            .iter()
            .map(|s| s.as_bytes().to_vec())
            .collect();
            f(&mut parts);
            let refs: Vec<&[u8]> = parts.iter().map(|p| p.as_slice()).collect();
            let mut out = Vec::new();
            encode_array(&mut out, &refs);
            decode_envelope(&out)
        };
        assert!(fields(&|_| {}).is_some());
        assert!(
            fields(&|p| p[0] = b"pollchat/2".to_vec()).is_none(),
            "format"
        );
        assert!(fields(&|p| p[2] = b"x".to_vec()).is_none(), "id");
        assert!(fields(&|p| p[3] = b"shout".to_vec()).is_none(), "what");
        assert!(
            fields(&|p| p[11] = b"hi\r\nQUIT".to_vec()).is_none(),
            "CRLF"
        );
        assert!(fields(&|p| p[11] = b"a\0b".to_vec()).is_none(), "NUL");
        assert!(fields(&|p| p[6] = b"two words".to_vec()).is_none(), "nick");
        assert!(fields(&|p| p[4] = b"nohash".to_vec()).is_none(), "room");
        assert!(fields(&|p| p[7] = b"a b".to_vec()).is_none(), "user");
        // A user or host no node makes (huge, or with the mask's own separators) would be
        // kept by every room that hears of it and shown in every listing.
        assert!(
            fields(&|p| p[7] = vec![b'u'; 100_000]).is_none(),
            "long user"
        );
        assert!(
            fields(&|p| p[8] = vec![b'h'; 100_000]).is_none(),
            "long host"
        );
        assert!(fields(&|p| p[7] = b"a@b".to_vec()).is_none(), "user with @");
        assert!(fields(&|p| p[8] = b"h!x".to_vec()).is_none(), "host with !");
        assert!(fields(&|p| p[5] = b"shout".to_vec()).is_none(), "kind");
        assert!(
            fields(&|p| p[10] = b"+typing=active".to_vec()).is_some(),
            "client tags"
        );
        for tags in [
            "msgid=forged",
            "account=root;+a",
            "+a b",
            "+a=\\",
            "+ok;+ok",
        ] {
            assert!(
                fields(&|p| p[10] = tags.as_bytes().to_vec()).is_none(),
                "{tags}"
            );
        }
        let long = format!("+x={}", "A".repeat(20_000));
        assert!(
            fields(&|p| p[10] = long.as_bytes().to_vec()).is_none(),
            "over the tag budget"
        );

        assert!(fields(&|p| p[11] = vec![0xff]).is_none(), "UTF-8");
        assert!(fields(&|p| p.truncate(11)).is_none(), "too few");
        assert!(fields(&|p| p.push(b"x".to_vec())).is_none(), "too many");
        let quit = |rooms: &[&str]| {
            let mut parts = vec![FORMAT, "n", "1", "quit", "bob", "u", "h", "Bob", "bye"];
            parts.extend(rooms);
            let refs: Vec<&[u8]> = parts.iter().map(|p| p.as_bytes()).collect();
            let mut out = Vec::new();
            encode_array(&mut out, &refs);
            decode_envelope(&out)
        };
        assert!(quit(&["#a"]).is_some());
        assert!(quit(&[]).is_none(), "a quit names its rooms");
        assert!(quit(&["#a", "b"]).is_none(), "each a room");
        let nick = |new: &str| {
            let parts = [FORMAT, "n", "1", "nick", "bob", "u", "h", "Bob", new, "#a"];
            let refs: Vec<&[u8]> = parts.iter().map(|p| p.as_bytes()).collect();
            let mut out = Vec::new();
            encode_array(&mut out, &refs);
            decode_envelope(&out)
        };
        assert!(nick("robert").is_some());
        // Reasons and real names are labels, as a local user's: no escape sequence reaches a
        // terminal, nothing longer than a label.
        let got = quit(&["#a"]).unwrap();
        assert!(matches!(got.shared, Shared::Quit { ref reason, .. } if &**reason == "bye"));
        let mut out = Vec::new();
        let long = "x".repeat(5000);
        let parts = [
            FORMAT,
            "n",
            "1",
            "quit",
            "bob",
            "u",
            "h",
            "\u{1b}[2JBob",
            &long,
            "#a",
        ];
        encode_array(&mut out, &parts.map(str::as_bytes));
        let Some(Received {
            shared: Shared::Quit { who, reason, .. },
            ..
        }) = decode_envelope(&out)
        else {
            panic!("decodes");
        };
        assert_eq!(&*who.realname, "[2JBob");
        assert!(reason.len() <= crate::core::names::LABEL_MAX);
        assert!(nick("not a nick").is_none(), "the new nick is checked");
        let modes = |changes: &[&str]| {
            let mut parts = vec![FORMAT, "n", "1", "modes", "#a", "bob", "u", "h", "Bob"];
            parts.extend(changes);
            let refs: Vec<&[u8]> = parts.iter().map(|p| p.as_bytes()).collect();
            let mut out = Vec::new();
            encode_array(&mut out, &refs);
            decode_envelope(&out)
        };
        assert!(modes(&["+o alice", "-t"]).is_some());
        assert!(modes(&[]).is_none(), "at least one change");
        for bad in [
            "+x",
            "o alice",
            "+o",
            "+o two words",
            "+k",
            "+l 0",
            "+m arg",
            "+b a,b",
        ] {
            assert!(modes(&[bad]).is_none(), "{bad}");
        }
        assert!(decode_envelope(b"hello").is_none());
        assert!(decode_envelope(b"*1\r\n$1\r\n").is_none(), "incomplete");
    }
}
