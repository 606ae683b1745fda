//! One non-blocking connection to Redis in the event loop's `mio::Poll`: a bounded queue of
//! pipelined commands written with one `write` per loop turn, and a bounded input buffer that
//! RESP2 replies are decoded from (with `redis-protocol`) as they arrive.
//!
//! Opening it at start is the one blocking step, done once when the server starts (like
//! binding the listeners): connect with a timeout and check that Redis answers `PING`, so that
//! a wrong address or a Redis that is down stops the start with one clear line instead of a
//! node that silently chats alone. Reconnecting later ([`RedisConn::reconnect`]) blocks on
//! nothing: a non-blocking connect to the address found at start, with the hello queued.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream as StdStream, ToSocketAddrs};
use std::time::{Duration, Instant};

use mio::net::TcpStream;
use mio::{Interest, Registry, Token};
use redis_protocol::resp2::decode::decode;
use redis_protocol::resp2::types::OwnedFrame;

use super::envelope::encode_array;

/// How long the start waits for Redis to accept and answer: far more than a healthy Redis on a
/// LAN needs, short enough that a firewalled address fails the start quickly.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// Bytes read per `read` call.
const READ_CHUNK: usize = 64 * 1024;
/// `read` calls per connection per loop turn: with [`READ_CHUNK`], at most 1 MiB of what other
/// nodes said is taken in per turn, so a burst from the cluster cannot starve local clients
/// (the rest stays in the kernel, or in Redis's output buffer for us, and is read next turn).
pub const READS_PER_TURN: usize = 16;
/// The most the input buffer holds without a complete reply in it. The biggest reply that is
/// ours is an envelope: a `--max-line` text (at most 1 MiB), its client tags and a few names.
/// Anything bigger is not a reply we could use: the connection is taken as broken rather than
/// buffered without end.
pub const MAX_REPLY: usize = 2 << 20;

/// How reading a connection ended this turn.
#[derive(Debug, PartialEq, Eq)]
pub enum ReadEnd {
    /// Everything available was read.
    Drained,
    /// The turn's read budget ran out: read again next turn (no new readiness edge will come).
    Budget,
}

/// A connection to Redis.
pub struct RedisConn {
    stream: TcpStream,
    token: Token,
    /// What the connection is for, in log lines ("commands", "subscriptions").
    pub role: &'static str,
    /// Encoded commands not yet written, oldest first.
    out: Vec<u8>,
    /// Bytes read that do not make a whole reply yet.
    input: Vec<u8>,
    /// WRITABLE interest is registered (the kernel's buffer was full, or the connect is under
    /// way).
    wants_write: bool,
}

/// The hello of every connection: AUTH with the password if there is one, its name for
/// Redis's `CLIENT LIST`, and a PING; returns how many replies it asks for.
fn hello(out: &mut Vec<u8>, name: &str, password: Option<&str>) -> usize {
    if let Some(p) = password {
        encode_array(out, &[b"AUTH", p.as_bytes()]);
    }
    encode_array(out, &[b"CLIENT", b"SETNAME", name.as_bytes()]);
    encode_array(out, &[b"PING"]);
    2 + usize::from(password.is_some())
}

/// Resolves `addr` (`host:port`) and connects within [`CONNECT_TIMEOUT`], trying each address
/// the name resolves to. Blocking: for the server's start only.
fn connect(addr: &str) -> io::Result<StdStream> {
    let addrs: Vec<SocketAddr> = addr.to_socket_addrs()?.collect();
    let mut last = io::Error::new(io::ErrorKind::NotFound, "the name resolves to no address");
    for a in addrs {
        match StdStream::connect_timeout(&a, CONNECT_TIMEOUT) {
            Ok(s) => return Ok(s),
            Err(e) => last = e,
        }
    }
    Err(last)
}

impl RedisConn {
    /// Connects to Redis at `addr`, authenticates with `password` if given, names the
    /// connection (`CLIENT SETNAME`, shown by Redis's `CLIENT LIST`) and checks it answers (an
    /// error reply, such as a wrong password, is the error), then registers it with `registry` under `token`.
    /// Blocking, within [`CONNECT_TIMEOUT`]: for the server's start only. `first`, if given,
    /// is one more command sent after the hello, whose reply is returned (an error reply is
    /// the error).
    #[allow(clippy::too_many_arguments)]
    pub fn open(
        addr: &str,
        name: &str,
        password: Option<&str>,
        role: &'static str,
        registry: &Registry,
        token: Token,
        first: Option<&[&[u8]]>,
    ) -> io::Result<(RedisConn, Option<OwnedFrame>)> {
        let mut stream = connect(addr)?;
        stream.set_read_timeout(Some(CONNECT_TIMEOUT))?;
        stream.set_nodelay(true)?;
        let mut greeting = Vec::new();
        let mut replies = hello(&mut greeting, name, password);
        if let Some(command) = first {
            encode_array(&mut greeting, command);
            replies += 1;
        }
        let mut last = None;
        stream.write_all(&greeting)?;
        let deadline = Instant::now() + CONNECT_TIMEOUT;
        let mut input = Vec::new();
        let mut answers = 0;
        while answers < replies {
            if Instant::now() >= deadline {
                return Err(io::Error::new(io::ErrorKind::TimedOut, "no answer to PING"));
            }
            let mut chunk = [0u8; 1024];
            let n = stream.read(&mut chunk)?;
            if n == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "Redis closed the connection",
                ));
            }
            input.extend_from_slice(&chunk[..n]);
            while let Some((frame, used)) = decode(&input).map_err(bad_reply)? {
                input.drain(..used);
                if let OwnedFrame::Error(e) = frame {
                    return Err(io::Error::other(format!("Redis answered: {e}")));
                }
                answers += 1;
                last = Some(frame);
            }
        }
        stream.set_read_timeout(None)?;
        stream.set_nonblocking(true)?;
        let mut stream = TcpStream::from_std(stream);
        registry.register(&mut stream, token, Interest::READABLE)?;
        let conn = RedisConn {
            stream,
            token,
            role,
            out: Vec::new(),
            input,
            wants_write: false,
        };
        Ok((conn, last.filter(|_| first.is_some())))
    }

    /// A new connection to `addr` (the address the start connected to: no name is resolved in
    /// the loop), started without blocking, its hello queued to go out once it is connected.
    /// A refused or failed connect shows later, as an error of a read or a write.
    pub fn reconnect(
        addr: SocketAddr,
        name: &str,
        password: Option<&str>,
        role: &'static str,
        registry: &Registry,
        token: Token,
    ) -> io::Result<RedisConn> {
        let mut stream = TcpStream::connect(addr)?;
        let _ = stream.set_nodelay(true);
        registry.register(&mut stream, token, Interest::READABLE | Interest::WRITABLE)?;
        let mut out = Vec::new();
        hello(&mut out, name, password);
        Ok(RedisConn {
            stream,
            token,
            role,
            out,
            input: Vec::new(),
            wants_write: true,
        })
    }

    /// The address of the Redis this connection reached.
    pub fn peer(&self) -> io::Result<SocketAddr> {
        self.stream.peer_addr()
    }

    /// Queues one command (pipelined: written with everything else this turn).
    pub fn push(&mut self, parts: &[&[u8]]) {
        encode_array(&mut self.out, parts);
    }

    /// Bytes queued and not yet written.
    pub fn queued(&self) -> usize {
        self.out.len()
    }

    /// Whether bytes are queued and the socket is not known to be full (no WRITABLE awaited).
    pub fn unwritten(&self) -> bool {
        !self.out.is_empty() && !self.wants_write
    }

    /// Writes what is queued with one `write`; what the kernel did not take waits for the
    /// socket to be writable (WRITABLE interest is registered only then).
    pub fn flush(&mut self, registry: &Registry) -> io::Result<()> {
        if !self.out.is_empty() {
            match self.stream.write(&self.out) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => {
                    self.out.drain(..n);
                }
                // (NotConnected: a reconnect still under way; WRITABLE says when it is done.)
                Err(e)
                    if e.kind() == io::ErrorKind::WouldBlock
                        || e.kind() == io::ErrorKind::Interrupted
                        || e.kind() == io::ErrorKind::NotConnected => {}
                Err(e) => return Err(e),
            }
        }
        let want = !self.out.is_empty();
        if want != self.wants_write {
            let interest = if want {
                Interest::READABLE | Interest::WRITABLE
            } else {
                Interest::READABLE
            };
            registry.reregister(&mut self.stream, self.token, interest)?;
            self.wants_write = want;
        }
        Ok(())
    }

    /// Reads until `WouldBlock` or the turn's budget, handing each complete reply to `reply`.
    /// The end of the stream, a reply that is not RESP2, or one over [`MAX_REPLY`] is an error:
    /// the connection is no longer usable.
    pub fn read(&mut self, mut reply: impl FnMut(OwnedFrame)) -> io::Result<ReadEnd> {
        for _ in 0..READS_PER_TURN {
            let start = self.input.len();
            self.input.resize(start + READ_CHUNK, 0);
            let got = self.stream.read(&mut self.input[start..]);
            self.input.truncate(start + *got.as_ref().unwrap_or(&0));
            match got {
                Ok(0) => {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "Redis closed the connection",
                    ));
                }
                Ok(_) => {}
                Err(e)
                    if e.kind() == io::ErrorKind::WouldBlock
                        || e.kind() == io::ErrorKind::NotConnected =>
                {
                    return Ok(ReadEnd::Drained);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
            let mut used = 0;
            while let Some((frame, n)) = decode(&self.input[used..]).map_err(bad_reply)? {
                used += n;
                reply(frame);
            }
            self.input.drain(..used);
            if self.input.len() > MAX_REPLY {
                return Err(io::Error::other(format!(
                    "a reply of more than {MAX_REPLY} bytes"
                )));
            }
        }
        Ok(ReadEnd::Budget)
    }

    /// Takes the connection out of the poll (it is closed when dropped).
    pub fn deregister(&mut self, registry: &Registry) {
        let _ = registry.deregister(&mut self.stream);
    }
}

fn bad_reply(e: redis_protocol::error::RedisProtocolError) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("not a RESP2 reply: {e}"),
    )
}
