//! What one node tells the others, as bytes: the names of Redis channels, and the envelope of a
//! room message. Pure functions, tested without Redis.
//!
//! An envelope is itself a RESP2 array of bulk strings (the codec we already use for Redis), so
//! it is binary-safe and needs no parser of our own:
//!
//! ```text
//! [ "pollchat/1", origin node, "msg", room, kind, nick, user, host, realname, tags, text ]
//! ```
//!
//! `kind` is `normal`, `action` or `notice`; `tags` is empty when there are none. The first
//! element names the format, so a node ignores what a newer format (or anything else published
//! on our channels) says instead of misreading it. What comes from Redis is checked as a client
//! line would be: a field with CR, LF or NUL, or a nick or room that is not one, is dropped, so
//! nothing another Redis client publishes can split an IRC line or pass for something else.

use std::sync::Arc;

use redis_protocol::resp2::decode::decode;
use redis_protocol::resp2::encode::encode_borrowed;
use redis_protocol::resp2::types::{BorrowedFrame, OwnedFrame};

use crate::core::cluster::RoomMessage;
use crate::core::names::{check_nick, check_room, fold};
use crate::core::{MsgKind, Source};

/// The first element of every envelope: the format's name and version.
pub const FORMAT: &str = "pollchat/1";

/// The Redis channel of a room: `{prefix}room:{folded name}`. `folded` must be folded already
/// (every node folds the same way, so all meet on one channel).
pub fn room_channel(prefix: &str, folded: &str) -> Vec<u8> {
    format!("{prefix}room:{folded}").into_bytes()
}

/// The channel of the room a message was said in.
pub fn channel_of(prefix: &str, msg: &RoomMessage) -> Vec<u8> {
    room_channel(prefix, &fold(&msg.room))
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

/// The envelope of a room message said on node `origin`.
pub fn encode_message(origin: &str, msg: &RoomMessage) -> Vec<u8> {
    let from = &msg.from;
    let tags = msg.tags.as_deref().unwrap_or("");
    let mut out = Vec::with_capacity(128 + msg.text.len() + tags.len());
    encode_array(
        &mut out,
        &[
            FORMAT.as_bytes(),
            origin.as_bytes(),
            b"msg",
            msg.room.as_bytes(),
            kind_name(msg.kind).as_bytes(),
            from.nick.as_bytes(),
            from.user.as_bytes(),
            from.host.as_bytes(),
            from.realname.as_bytes(),
            tags.as_bytes(),
            msg.text.as_bytes(),
        ],
    );
    out
}

/// An envelope read back: which node said it, and the message.
#[derive(Debug, PartialEq, Eq)]
pub struct Received {
    pub origin: String,
    pub message: RoomMessage,
}

/// Reads an envelope; `None` for anything that is not a well-formed envelope of our format
/// (see the module doc).
pub fn decode_message(bytes: &[u8]) -> Option<Received> {
    let (frame, used) = decode(bytes).ok()??;
    if used != bytes.len() {
        return None;
    }
    let OwnedFrame::Array(parts) = frame else {
        return None;
    };
    let mut fields = Vec::with_capacity(parts.len());
    for part in parts {
        let OwnedFrame::BulkString(b) = part else {
            return None;
        };
        let s = String::from_utf8(b).ok()?;
        if s.contains(['\r', '\n', '\0']) {
            return None;
        }
        fields.push(s);
    }
    let [
        format,
        origin,
        what,
        room,
        kind,
        nick,
        user,
        host,
        realname,
        tags,
        text,
    ] = <[String; 11]>::try_from(fields).ok()?;
    if format != FORMAT || what != "msg" || text.is_empty() {
        return None;
    }
    check_nick(&nick).ok()?;
    check_room(&room).ok()?;
    let word = |s: &str| !s.is_empty() && !s.contains(' ');
    if !word(&user) || !word(&host) || tags.contains(' ') || origin.is_empty() {
        return None;
    }
    let kind = match kind.as_str() {
        "normal" => MsgKind::Normal,
        "action" => MsgKind::Action,
        "notice" => MsgKind::Notice,
        _ => return None,
    };
    Some(Received {
        origin,
        message: RoomMessage {
            room: room.into(),
            from: Source::new(&nick, &user, &host, &realname),
            text: text.into(),
            kind,
            tags: (!tags.is_empty()).then(|| Arc::from(tags)),
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message() -> RoomMessage {
        RoomMessage {
            room: "#Chat".into(),
            from: Source::new("alice", "line", "f1c0136b.a16b454c.ip", "Alice A."),
            text: "hello, world: *".into(),
            kind: MsgKind::Action,
            tags: Some("+typing=active;+draft/reply=x".into()),
        }
    }

    #[test]
    fn an_envelope_reads_back_as_it_was_written() {
        let bytes = encode_message("node-1", &message());
        let got = decode_message(&bytes).expect("decodes");
        assert_eq!(got.origin, "node-1");
        assert_eq!(got.message, message());
        let plain = RoomMessage {
            tags: None,
            kind: MsgKind::Notice,
            ..message()
        };
        assert_eq!(
            decode_message(&encode_message("n", &plain))
                .unwrap()
                .message,
            plain
        );
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
        assert_eq!(channel_of("p:", &message()), b"p:room:#chat");
    }

    #[test]
    fn what_is_not_a_well_formed_envelope_is_dropped() {
        let fields = |f: &dyn Fn(&mut Vec<Vec<u8>>)| {
            let mut parts: Vec<Vec<u8>> = [
                FORMAT, "n", "msg", "#a", "normal", "bob", "u", "h", "Bob", "", "hi",
            ]
            .iter()
            .map(|s| s.as_bytes().to_vec())
            .collect();
            f(&mut parts);
            let refs: Vec<&[u8]> = parts.iter().map(|p| p.as_slice()).collect();
            let mut out = Vec::new();
            encode_array(&mut out, &refs);
            decode_message(&out)
        };
        assert!(fields(&|_| {}).is_some());
        assert!(
            fields(&|p| p[0] = b"pollchat/2".to_vec()).is_none(),
            "format"
        );
        assert!(
            fields(&|p| p[10] = b"hi\r\nQUIT".to_vec()).is_none(),
            "CRLF"
        );
        assert!(fields(&|p| p[10] = b"a\0b".to_vec()).is_none(), "NUL");
        assert!(fields(&|p| p[5] = b"two words".to_vec()).is_none(), "nick");
        assert!(fields(&|p| p[3] = b"nohash".to_vec()).is_none(), "room");
        assert!(fields(&|p| p[6] = b"a b".to_vec()).is_none(), "user");
        assert!(fields(&|p| p[4] = b"shout".to_vec()).is_none(), "kind");
        assert!(fields(&|p| p[10] = vec![0xff]).is_none(), "UTF-8");
        assert!(fields(&|p| p.truncate(10)).is_none(), "count");
        assert!(decode_message(b"hello").is_none());
        assert!(decode_message(b"*1\r\n$1\r\n").is_none(), "incomplete");
    }
}
