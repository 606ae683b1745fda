//! The byte transform between a socket and its framer.
//!
//! Bytes read from a socket pass through the connection's [`Transform`] before they are framed
//! into lines; what the transform must answer on its own (telnet's refusals) goes back to the
//! peer ahead of anything else. Today's transforms are the identity and telnet's option
//! stripping; an encrypted door (TLS) plugs in here, below the framer, so nothing above it (the
//! sessions, the chat core) changes. A session chooses its transform
//! ([`crate::session::Session::transform`]); the drivers only call [`Transform::inbound`], and
//! charge the answers to the connection's flood bucket ([`Transform::reply_cost`]).

use crate::protocol::telnet;

/// A connection's inbound byte transform.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transform {
    /// Bytes go to the framer unchanged.
    Plain,
    /// Telnet option negotiation is stripped and refused (only input containing IAC pays).
    Telnet,
}

impl Transform {
    /// The bytes to frame from `data`, just read: `data` itself when nothing changes (no copy),
    /// otherwise the filtered bytes in `filtered`. Bytes for the peer are appended to `replies`.
    pub fn inbound<'a>(
        &mut self,
        data: &'a [u8],
        filtered: &'a mut Vec<u8>,
        replies: &mut Vec<u8>,
    ) -> &'a [u8] {
        match self {
            Transform::Telnet if data.contains(&telnet::IAC) => {
                filtered.clear();
                telnet::filter(data, filtered, replies);
                filtered
            }
            _ => data,
        }
    }

    /// The flood-control tokens the answers in `replies` cost: one per answer (telnet's are
    /// three bytes each), as a line costs one. Otherwise a client could make the server answer
    /// an endless stream of `IAC DO` without ever running out of tokens; charged, the answers
    /// stop with the reading, as lines do. The drivers charge it to the connection's bucket.
    /// (The bucket bounds how long any charge can throttle: `TokenBucket::charge`.)
    pub fn reply_cost(replies: &[u8]) -> u32 {
        u32::try_from(replies.len().div_ceil(3)).unwrap_or(u32::MAX)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_passes_bytes_through_and_telnet_strips_negotiation() {
        let (mut filtered, mut replies) = (Vec::new(), Vec::new());
        let out = Transform::Plain.inbound(b"a\xff\xfd\x06b\n", &mut filtered, &mut replies);
        assert_eq!(out, b"a\xff\xfd\x06b\n");
        assert!(replies.is_empty());
        let out = Transform::Telnet.inbound(b"a\xff\xfd\x06b\n", &mut filtered, &mut replies);
        assert_eq!(out, b"ab\n");
        assert_eq!(replies, [telnet::IAC, 252, 6]);
        let out = Transform::Telnet.inbound(b"hello\n", &mut filtered, &mut replies);
        assert_eq!(out, b"hello\n");
    }

    #[test]
    fn each_answer_costs_a_token() {
        let (mut filtered, mut replies) = (Vec::new(), Vec::new());
        let input = b"\xff\xfd\x01\xff\xfb\x03\xff\xfe\x05\xff\xf4hi\n";
        Transform::Telnet.inbound(input, &mut filtered, &mut replies);
        // DO and WILL are answered, DONT and IP are not.
        assert_eq!(Transform::reply_cost(&replies), 2);
        assert_eq!(Transform::reply_cost(&[]), 0);
    }
}
