//! One client connection as the event loop keeps it: the socket, framing state, output queue,
//! flood bucket, and where it is in its life.
//!
//! The record is kept small on purpose: with no partial line and nothing queued it owns no heap
//! memory besides a tiny output ring, which is what lets an idle client cost well under 2 KiB.

use std::net::SocketAddr;
use std::time::Instant;

use mio::net::TcpStream;

use super::flood::TokenBucket;
use super::outq::OutQueue;
use crate::framer::LineFramer;
use crate::session::{Proto, Reason};

/// Where a connection is in its life.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Phase {
    /// Registered with the chat core; reading and receiving.
    Open,
    /// Marked for closing during the current pass; the close is applied after the pass, never in
    /// the middle of a fan-out.
    Closing(Reason),
    /// Gone from the chat core; still writing what was queued (ending in `BYE`), reading
    /// nothing, and removed once the queue is empty or the grace time is over.
    Draining,
}

pub struct Connection {
    pub stream: TcpStream,
    pub peer: SocketAddr,
    /// Distinguishes this connection from earlier ones that had the same slab key, so that a
    /// timer or queued work item left over from a closed connection is recognised as stale.
    pub serial: u64,
    pub phase: Phase,
    /// The protocol it speaks and that protocol's state.
    pub proto: Proto,
    pub framer: LineFramer,
    pub out: OutQueue,
    pub bucket: TokenBucket,
    /// Last time a line arrived, for `--idle-timeout`.
    pub last_heard: Instant,
    /// Whether WRITABLE is in the registered interest: only while output is waiting on a full
    /// socket buffer.
    pub wants_write: bool,
    /// Already in the loop's list of connections to flush this turn.
    pub flush_listed: bool,
    /// Already in the loop's list of connections with reading left to do.
    pub read_listed: bool,
    /// Out of flood tokens; a timer resumes reading.
    pub throttled: bool,
    /// Has hit flood control before (its first time is logged at info, later ones at debug).
    pub flooded: bool,
}

impl Connection {
    pub fn new(
        stream: TcpStream,
        peer: SocketAddr,
        serial: u64,
        bucket: TokenBucket,
        proto: Proto,
        now: Instant,
    ) -> Self {
        Connection {
            stream,
            peer,
            serial,
            phase: Phase::Open,
            proto,
            framer: LineFramer::default(),
            out: OutQueue::default(),
            bucket,
            last_heard: now,
            wants_write: false,
            flush_listed: false,
            read_listed: false,
            throttled: false,
            flooded: false,
        }
    }

    pub fn is_open(&self) -> bool {
        self.phase == Phase::Open
    }

    /// The longest line this connection may send: `--max-line` for the line protocol, IRC's
    /// own limit for IRC.
    pub fn max_line(&self, line_max: usize) -> usize {
        match &self.proto {
            Proto::Line => line_max,
            Proto::Irc(session) => session.max_line(),
        }
    }
}
