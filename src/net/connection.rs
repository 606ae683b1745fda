//! One client connection as the event loop keeps it: the socket, its TLS layer if it came
//! through a TLS door, its byte transform, framing state, protocol session, output queue, flood
//! bucket, and where it is in its life.
//!
//! The record is kept small on purpose: with no partial line and nothing queued it owns no heap
//! memory besides a tiny output ring (and, for IRC, its boxed session), which is what keeps an
//! idle client under a kilobyte of server memory (README, "Memory per idle client").

use std::io::{self, Read};
use std::net::SocketAddr;

use log::{debug, warn};
use mio::net::TcpStream;

use super::flood::TokenBucket;
use super::meter::Counted;
use super::outq::{Flushed, Later, OutQueue, Pending};
use super::tls::{Input, Tls};
use super::transform::Transform;
use crate::framer::LineFramer;
use crate::session::{Reason, Session, Tick};

/// Where a connection is in its life.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Phase {
    /// Registered with the chat core; reading and receiving.
    Open,
    /// Marked for closing during the current pass; the close is applied after the pass, never in
    /// the middle of a fan-out.
    Closing(Reason),
    /// Gone from the chat core; still writing what was queued (ending in its farewell line: `BYE`, IRC's `ERROR`), reading
    /// nothing, and removed once the queue is empty or the grace time is over.
    Draining,
}

/// What one [`Connection::flush`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flush {
    /// Done for this turn; `waiting`: output is left for when the socket is writable again.
    Done { waiting: bool },
    /// Not blocked: flush again next turn (capped at `IOV_MAX` chunks, or interrupted), as no
    /// WRITABLE edge will come for it.
    Again,
    /// The socket failed.
    Failed,
}

pub struct Connection {
    pub stream: TcpStream,
    /// Between the socket and everything else, for a connection that came through a TLS door
    /// (boxed: plain connections pay a pointer).
    pub tls: Option<Box<Tls>>,
    /// Distinguishes this connection from earlier ones that had the same slab key, so that a
    /// timer or queued work item left over from a closed connection is recognised as stale.
    pub serial: u64,
    pub phase: Phase,
    /// Between the socket and the framer (telnet stripping for line clients).
    pub transform: Transform,
    pub framer: LineFramer,
    /// The protocol it speaks and all of that protocol's state and deadlines.
    pub session: Session,
    pub out: OutQueue<Counted>,
    pub bucket: TokenBucket,
    /// The session deadline the loop's timer heap holds an entry for (the only live one), as a
    /// `Tick` (8 bytes, where an `Instant` takes 16).
    pub armed: Option<Tick>,
    /// Whether WRITABLE is in the registered interest: only while output is waiting on a full
    /// socket buffer.
    pub wants_write: bool,
    /// Already in the loop's list of connections to flush this turn.
    pub flush_listed: bool,
    /// Already in the loop's list of connections with reading left to do.
    pub read_listed: bool,
    /// Out of flood tokens; a timer resumes reading.
    pub throttled: bool,
    /// Has been throttled before (see [`TokenBucket::throttle`]).
    pub flooded: bool,
    /// A paged answer is under way: the loop keeps what waits behind it (a [`Later`]) in a
    /// side table, so that the many connections without one pay a flag, not a field.
    pub paged: bool,
    /// What its input waits for, if anything (not read meanwhile).
    pub awaiting: Awaiting,
}

/// Why a connection's input is held (one byte in the record, not a flag each).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Awaiting {
    Nothing,
    /// It has too many answers in progress (see the loop's `MAX_ANSWERS`).
    Pages,
    /// Its session holds its input (`Session::input_paused`: a nick being claimed in a
    /// cluster), or the core does (`Core::holds_input`: a join asked of the cluster).
    Session,
}

impl Connection {
    pub fn new(
        stream: TcpStream,
        tls: Option<Box<Tls>>,
        serial: u64,
        bucket: TokenBucket,
        session: Session,
    ) -> Self {
        Connection {
            stream,
            tls,
            serial,
            phase: Phase::Open,
            transform: session.transform(),
            framer: LineFramer::default(),
            session,
            out: OutQueue::default(),
            bucket,
            armed: None,
            wants_write: false,
            flush_listed: false,
            read_listed: false,
            throttled: false,
            flooded: false,
            paged: false,
            awaiting: Awaiting::Nothing,
        }
    }

    /// The peer's address (kept by the session, which shows it to others).
    pub fn peer(&self) -> SocketAddr {
        self.session.peer()
    }

    pub fn is_open(&self) -> bool {
        self.phase == Phase::Open
    }

    /// Still in its TLS handshake (never for a plain connection).
    pub fn is_handshaking(&self) -> bool {
        self.tls.as_ref().is_some_and(|t| t.is_handshaking())
    }

    /// Reads what the peer sent into `buf`: straight from the socket, or plaintext out of TLS.
    pub fn read_input(&mut self, buf: &mut [u8]) -> io::Result<Input> {
        match &mut self.tls {
            Some(tls) => tls.read(&mut self.stream, buf),
            None => match self.stream.read(buf)? {
                0 => Ok(Input::End),
                n => Ok(Input::Bytes(n)),
            },
        }
    }

    /// Output held for this client as `--max-sendq` counts it: the queue (plaintext) plus, under
    /// TLS, the ciphertext its socket has not taken yet.
    pub fn held(&self) -> usize {
        self.out.len() + self.tls.as_ref().map_or(0, |t| t.pending())
    }

    /// One vectored write of what is queued (under TLS: encrypted first, in one pass).
    fn write_out(&mut self) -> io::Result<Flushed> {
        match &mut self.tls {
            Some(tls) => tls.flush(&mut self.out, &mut self.stream),
            None => self.out.flush_to(&mut self.stream),
        }
    }

    /// Queues `bytes` (behind a paged answer in `later`, when there is one), unless that makes
    /// this client a slow consumer: when what it has not taken yet, plus this chunk, is over
    /// `max_sendq` (`Err(SendQueue)`), or its socket failed (`Err(Lost)`). A chunk into an
    /// empty queue always goes in: one line bigger than the limit says nothing about how the
    /// client reads (long answers come a page at a time, see `core::page`).
    pub fn queue(
        &mut self,
        bytes: Counted,
        later: Option<&mut Later<Counted>>,
        max_sendq: usize,
    ) -> Result<(), Reason> {
        let behind = later.as_ref().map_or(0, |l| l.len());
        let over = |queued: usize| {
            let queued = queued + behind;
            queued > 0 && queued + bytes.len() > max_sendq
        };
        if over(self.held()) {
            // Over the limit only counts once the client has had its chance: write what its
            // socket takes now (a burst from many senders within one turn is no reason to
            // disconnect a client that reads), and judge what is left.
            match self.write_out() {
                Ok(_) => {}
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
                    ) => {}
                Err(_) => return Err(Reason::Lost),
            }
            if over(self.held()) {
                warn!(
                    "{}: send queue over --max-sendq {max_sendq} bytes, disconnecting",
                    self.peer()
                );
                return Err(Reason::SendQueue);
            }
        }
        match later {
            Some(later) => later.push(Pending::Bytes(bytes)),
            None => self.out.push(bytes),
        }
        Ok(())
    }

    /// One vectored write of what is queued. A draining TLS connection whose queue is empty
    /// (its farewell encrypted) says `close_notify` last.
    pub fn flush(&mut self) -> Flush {
        let mut result = self.write_out();
        if matches!(result, Ok(Flushed::All))
            && self.phase == Phase::Draining
            && !self.paged
            && let Some(tls) = &mut self.tls
            && tls.close_notify()
        {
            result = self.write_out();
        }
        match result {
            Ok(Flushed::All) => Flush::Done { waiting: false },
            Ok(Flushed::Short) => Flush::Done { waiting: true },
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Flush::Done { waiting: true },
            Ok(Flushed::More) => Flush::Again,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => Flush::Again,
            Err(e) => {
                debug!("{}: write failed: {e}", self.peer());
                Flush::Failed
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every idle client costs one of these records (README, "Memory per idle client"): a field
    /// added here is paid 10,000 times on a server with 10,000 clients. 232 bytes: the 216 of
    /// the record before sessions owned their protocol, plus the unfinished line's clock
    /// (`--line-complete-after`), plus the pointer to a TLS connection's state (boxed, so that
    /// plain connections pay 8 bytes for TLS and no more).
    #[test]
    #[cfg(all(target_os = "linux", target_pointer_width = "64"))]
    fn the_per_connection_record_stays_small() {
        eprintln!(
            "Connection {} Session {} TokenBucket {} Phase {} OutQueue {} LineFramer {}",
            size_of::<Connection>(),
            size_of::<Session>(),
            size_of::<TokenBucket>(),
            size_of::<Phase>(),
            size_of::<OutQueue>(),
            size_of::<LineFramer>()
        );
        assert!(
            size_of::<Connection>() <= 232,
            "{}",
            size_of::<Connection>()
        );
    }
}
