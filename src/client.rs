//! `pollchat connect`: a terminal client that is itself one mio loop.
//!
//! Standard input and the server socket sit in the same `Poll`. What the server sends is printed
//! as it arrives; what is typed is queued and written without ever blocking the loop, so a slow
//! server never freezes typing and a burst of output never delays sending. It exits on end of
//! input (after the server has answered what was sent), when the server closes the connection,
//! and on SIGINT/SIGTERM.

use std::fs::File;
use std::io::{self, Read, Write};
use std::net::{TcpStream as StdTcpStream, ToSocketAddrs};
use std::os::fd::AsRawFd;
use std::time::Duration;

use mio::net::TcpStream;
use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token};
use signal_hook_mio::v1_0::Signals;

const STDIN: Token = Token(0);
const SOCKET: Token = Token(1);
const SIGNALS: Token = Token(2);

/// Typed input waiting to be sent is capped here; past it, stdin is not read until the socket
/// takes more (the same back-pressure the server applies).
const MAX_PENDING: usize = 1 << 20;

/// Connects to `addr` and runs until the conversation ends.
pub fn run(addr: &str) -> io::Result<()> {
    let target = addr
        .to_socket_addrs()
        .map_err(|e| io::Error::new(e.kind(), format!("cannot resolve {addr}: {e}")))?
        .next()
        .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, format!("no address for {addr}")))?;
    let std_stream = StdTcpStream::connect_timeout(&target, Duration::from_secs(10))
        .map_err(|e| io::Error::new(e.kind(), format!("cannot connect to {target}: {e}")))?;
    std_stream.set_nonblocking(true)?;
    std_stream.set_nodelay(true)?;
    let mut socket = TcpStream::from_std(std_stream);

    let mut poll = Poll::new()?;
    let mut events = Events::with_capacity(16);
    poll.registry()
        .register(&mut socket, SOCKET, Interest::READABLE)?;
    let mut signals = Signals::new([libc::SIGINT, libc::SIGTERM])?;
    poll.registry()
        .register(&mut signals, SIGNALS, Interest::READABLE)?;
    let mut input = Stdin::open(&poll)?;

    let mut pending: Vec<u8> = Vec::new();
    let mut wants_write = false;
    let mut input_done = false;
    // Stdin may have more to give: set by its readiness event, cleared only by WouldBlock. Reading
    // can stop early because the send queue is full; with edge-triggered readiness no new event
    // would come for what is already waiting, so the loop resumes it by itself.
    let mut stdin_ready = input.always_ready;
    let mut write_closed = false;
    let mut buf = vec![0u8; 16 * 1024];
    let mut stdout = io::stdout().lock();
    loop {
        // Input left unread (or a regular file, always ready): do not sleep.
        let timeout =
            (stdin_ready && !input_done && pending.len() < MAX_PENDING).then_some(Duration::ZERO);
        if let Err(e) = poll.poll(&mut events, timeout) {
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        for event in events.iter() {
            match event.token() {
                SIGNALS => return Ok(()),
                STDIN => stdin_ready = true,
                _ => {}
            }
        }
        // Server → terminal, until WouldBlock.
        loop {
            match socket.read(&mut buf) {
                Ok(0) => {
                    eprintln!("connection closed by the server");
                    return Ok(());
                }
                Ok(n) => {
                    let text: Vec<u8> = buf[..n].iter().copied().filter(|&b| b != b'\r').collect();
                    stdout.write_all(&text)?;
                    stdout.flush()?;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(io::Error::new(e.kind(), format!("connection lost: {e}"))),
            }
        }
        // Terminal → queue, until WouldBlock or the queue is full.
        while stdin_ready && !input_done && pending.len() < MAX_PENDING {
            match input.file.read(&mut buf) {
                Ok(0) => input_done = true,
                Ok(n) => pending.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    stdin_ready = input.always_ready;
                    break;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
            if input.always_ready {
                break;
            }
        }
        // Queue → server, never blocking; WRITABLE only while something is left.
        while !pending.is_empty() {
            match socket.write(&pending) {
                Ok(n) => drop(pending.drain(..n)),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(io::Error::new(e.kind(), format!("connection lost: {e}"))),
            }
        }
        if pending.is_empty() == wants_write {
            wants_write = !pending.is_empty();
            let interest = if wants_write {
                Interest::READABLE | Interest::WRITABLE
            } else {
                Interest::READABLE
            };
            poll.registry().reregister(&mut socket, SOCKET, interest)?;
        }
        // End of input: once everything typed is sent, half-close so the server answers the
        // last lines and says goodbye; the loop ends when it closes.
        if input_done && pending.is_empty() && !write_closed {
            socket.shutdown(std::net::Shutdown::Write)?;
            write_closed = true;
        }
    }
}

/// Standard input, opened so that it can be made non-blocking without affecting the shell.
struct Stdin {
    file: File,
    /// Regular files cannot be registered with epoll; they are read without waiting instead.
    always_ready: bool,
}

impl Stdin {
    fn open(poll: &Poll) -> io::Result<Stdin> {
        // A new open file description for the same terminal or pipe: O_NONBLOCK set on it does not
        // leak into the shell that shares descriptor 0. A socket cannot be reopened that way; a
        // duplicate of descriptor 0 is used instead (no terminal to disturb there).
        let file = match File::open("/proc/self/fd/0") {
            Ok(file) => file,
            Err(_) => {
                // SAFETY: dup returns a new descriptor that only this File will own and close.
                let fd = unsafe { libc::dup(0) };
                if fd < 0 {
                    return Err(io::Error::last_os_error());
                }
                unsafe { std::os::fd::FromRawFd::from_raw_fd(fd) }
            }
        };
        let fd = file.as_raw_fd();
        // SAFETY: fcntl on a descriptor we own, changing only its status flags.
        unsafe {
            let flags = libc::fcntl(fd, libc::F_GETFL);
            libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK);
        }
        match poll
            .registry()
            .register(&mut SourceFd(&fd), STDIN, Interest::READABLE)
        {
            Ok(()) => Ok(Stdin {
                file,
                always_ready: false,
            }),
            Err(e) if e.raw_os_error() == Some(libc::EPERM) => Ok(Stdin {
                file,
                always_ready: true,
            }),
            Err(e) => Err(e),
        }
    }
}
