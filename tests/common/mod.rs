//! Test harness: a real server on an ephemeral loopback port, and a line client with timeouts.
//!
//! Tests synchronise only on what the server sends (a reply proves everything before it was
//! handled), never on sleeps.
//!
//! The server can run any I/O model ([`TestServer::with_io`]); [`for_each_io!`] turns one test
//! function taking an [`IoModel`] into one `#[test]` per model, named `test_name::model`, so a
//! failure names the model.

#![allow(dead_code)]

pub mod redis;
pub mod tls;

use std::io::{BufRead, BufReader, ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::thread::JoinHandle;
use std::time::Duration;

use pollchat::config::Config;
pub use pollchat::driver::IoModel;
use pollchat::driver::ShutdownHandle;

/// How long any single expected line may take before the test fails.
pub const TIMEOUT: Duration = Duration::from_secs(10);

/// The `--cloak-key` of every test server.
pub const CLOAK_KEY: &str = "pollchat test cloak key";
/// The host other users see for a client from 127.0.0.1 under [`CLOAK_KEY`] (pinned by
/// `core::cloak`'s known-answer test).
/// Lines of `/help` after its first.
pub const HELP_LINES: usize = 23;

pub const LOCAL_CLOAK: &str = "f1c0136b.a16b454c.ip";

/// A server running its loop on a thread of the test process.
pub struct TestServer {
    pub addr: SocketAddr,
    /// Every bound address, in `--listen` order.
    pub addrs: Vec<SocketAddr>,
    /// The IRC listener's address, if any.
    pub irc_addr: Option<SocketAddr>,
    /// The line protocol's TLS listener, with TLS configured ([`TestServer::with_tls`]).
    pub tls_addr: Option<SocketAddr>,
    /// IRC's TLS listener, with TLS configured.
    pub irc_tls_addr: Option<SocketAddr>,
    handle: ShutdownHandle,
    thread: Option<JoinHandle<std::io::Result<()>>>,
}

impl TestServer {
    /// The event loop with the defaults.
    pub fn start() -> TestServer {
        Self::with(|_| {})
    }

    /// The event loop with the defaults changed by `tweak`, listening on 127.0.0.1:0.
    pub fn with(tweak: impl FnOnce(&mut Config)) -> TestServer {
        Self::with_io(IoModel::Poll, tweak)
    }

    /// A server of I/O model `io` with the defaults.
    pub fn start_io(io: IoModel) -> TestServer {
        Self::with_io(io, |_| {})
    }

    /// A server of I/O model `io` with the defaults changed by `tweak`, on 127.0.0.1:0.
    pub fn with_io(io: IoModel, tweak: impl FnOnce(&mut Config)) -> TestServer {
        let mut config = Config {
            listen: vec!["127.0.0.1:0".parse().unwrap()],
            irc_listen: vec!["127.0.0.1:0".parse().unwrap()],
            // Every test client comes from 127.0.0.1, hundreds of them in some tests: only the
            // tests of this limit set it.
            max_connects_per_ip: 0,
            // A fixed key, so that tests know the cloak every test client (127.0.0.1) gets.
            cloak_key: Some(CLOAK_KEY.into()),
            ..Config::default()
        };
        tweak(&mut config);
        let running = pollchat::driver::spawn(io, config).expect("bind");
        TestServer {
            addr: running.addrs[0],
            irc_addr: running.irc_addrs.first().copied(),
            tls_addr: running.tls_addrs.first().copied(),
            irc_tls_addr: running.irc_tls_addrs.first().copied(),
            addrs: running.addrs,
            handle: running.handle,
            thread: Some(running.thread),
        }
    }

    /// The event loop with TLS doors for both protocols (on 127.0.0.1:0) serving `cert`, and
    /// the defaults changed by `tweak`.
    pub fn with_tls(cert: &tls::Cert, tweak: impl FnOnce(&mut Config)) -> TestServer {
        Self::with(|c| {
            c.tls = Some(cert.files.clone());
            c.tls_listen = vec!["127.0.0.1:0".parse().unwrap()];
            c.irc_tls_listen = vec!["127.0.0.1:0".parse().unwrap()];
            tweak(c);
        })
    }

    pub fn connect(&self) -> Client {
        Client::connect(self.addr)
    }

    /// Connects and reads the greeting burst; returns the client and its guest nick.
    pub fn join(&self) -> (Client, String) {
        let mut c = self.connect();
        let welcome = c.line();
        assert!(welcome.starts_with("WELCOME guest"), "{welcome}");
        let nick = welcome.split(' ').nth(1).unwrap().to_string();
        assert_eq!(c.line(), format!("JOIN #lobby {nick}"));
        c.expect_prefix("NAMES #lobby");
        (c, nick)
    }

    /// Connects, reads the greeting and takes `nick`; `others` see the change.
    pub fn join_as(&self, nick: &str, others: &mut [&mut Client]) -> Client {
        let (mut c, guest) = self.join();
        for o in others.iter_mut() {
            assert_eq!(o.line(), format!("JOIN #lobby {guest}"));
        }
        c.send(&format!("/nick {nick}"));
        // (after the lobby's history, if any)
        c.expect_prefix(&format!("NICK {guest} {nick}"));
        for o in others.iter_mut() {
            assert_eq!(o.line(), format!("NICK {guest} {nick}"));
        }
        c
    }

    /// Asks the server to stop and waits for it; returns what `run` returned.
    pub fn stop(mut self) -> std::io::Result<()> {
        self.handle.shutdown();
        self.thread
            .take()
            .unwrap()
            .join()
            .expect("server thread panicked")
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(t) = self.thread.take() {
            self.handle.shutdown();
            let _ = t.join();
        }
    }
}

/// A line-protocol client over a blocking socket with a read timeout.
pub struct Client {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
}

impl Client {
    pub fn connect(addr: SocketAddr) -> Client {
        let stream = TcpStream::connect_timeout(&addr, TIMEOUT).expect("connect");
        stream.set_read_timeout(Some(TIMEOUT)).unwrap();
        stream.set_nodelay(true).unwrap();
        Client {
            writer: stream.try_clone().unwrap(),
            reader: BufReader::new(stream),
        }
    }

    pub fn send(&mut self, line: &str) {
        self.send_raw(format!("{line}\n").as_bytes());
    }

    pub fn send_raw(&mut self, bytes: &[u8]) {
        self.writer.write_all(bytes).expect("send");
    }

    /// Tries to send; false once the server has closed the connection.
    pub fn try_send_raw(&mut self, bytes: &[u8]) -> bool {
        self.writer.write_all(bytes).is_ok()
    }

    /// The next line, without its `\r\n`. Panics on timeout or end of stream.
    pub fn line(&mut self) -> String {
        self.try_line()
            .expect("connection closed while a line was expected")
    }

    /// The next line, or `None` at end of stream (or on a reset).
    pub fn try_line(&mut self) -> Option<String> {
        let mut buf = Vec::new();
        match self.reader.read_until(b'\n', &mut buf) {
            Ok(0) => None,
            Ok(_) => {
                assert!(buf.ends_with(b"\r\n"), "server lines end in CRLF: {buf:?}");
                buf.truncate(buf.len() - 2);
                Some(String::from_utf8(buf).expect("server lines are UTF-8"))
            }
            Err(e) if e.kind() == ErrorKind::ConnectionReset => None,
            Err(e) => panic!("no line within {TIMEOUT:?}: {e}"),
        }
    }

    /// Reads lines until one starts with `prefix`, and returns it.
    pub fn expect_prefix(&mut self, prefix: &str) -> String {
        loop {
            let l = self.line();
            if l.starts_with(prefix) {
                return l;
            }
        }
    }

    /// Sends a command whose answer is known and checks it is the very next line: proof that
    /// nothing else (an echo, a relayed line) was queued for this client before it.
    pub fn sync(&mut self) {
        self.send("/away sync");
        assert_eq!(self.line(), "NOTICE you are marked as away");
        self.send("/away");
        assert_eq!(self.line(), "NOTICE you are no longer marked as away");
    }

    /// Asserts the server closes the connection (after any lines, which are returned).
    pub fn expect_closed(&mut self) -> Vec<String> {
        let mut lines = Vec::new();
        while let Some(l) = self.try_line() {
            lines.push(l);
            assert!(lines.len() < 100_000, "connection never closed");
        }
        lines
    }

    pub fn shutdown_write(&self) {
        self.writer.shutdown(Shutdown::Write).unwrap();
    }

    /// Reads raw bytes until end of stream (for clients that never read before).
    pub fn drain_to_end(&mut self) -> usize {
        let mut total = 0;
        let mut buf = [0u8; 65536];
        loop {
            match self.reader.read(&mut buf) {
                Ok(0) => return total,
                Ok(n) => total += n,
                Err(e) if e.kind() == ErrorKind::ConnectionReset => return total,
                Err(e) => panic!("read: {e}"),
            }
        }
    }

    pub fn stream(&self) -> &TcpStream {
        &self.writer
    }
}

/// The model a `for_each_io!` test function is named after: `threads_direct` → threads-direct.
pub fn io_named(name: &str) -> IoModel {
    name.replace('_', "-").parse().expect("an I/O model")
}

/// `for_each_io!(test_fn)` defines `mod test_fn` with one `#[test]` per I/O model (`poll`,
/// `threads`, `threads_direct`) calling `test_fn(model)`; `for_each_io!(test_fn: poll, threads)`
/// only for the models listed (say why next to it when one is left out).
#[allow(unused_macros)]
macro_rules! for_each_io {
    ($test:ident) => {
        $crate::common::for_each_io!($test: poll, threads, threads_direct);
    };
    ($test:ident: $($model:ident),+) => {
        mod $test {
            $(
                #[test]
                fn $model() {
                    super::$test($crate::common::io_named(stringify!($model)));
                }
            )+
        }
    };
}
#[allow(unused_imports)]
pub(crate) use for_each_io;

impl Client {
    /// Shrinks this client's socket receive buffer (and stops the kernel from growing it), so
    /// that a client that stops reading backs up into the server quickly and predictably.
    pub fn shrink_receive_buffer(&self, bytes: i32) {
        let fd = std::os::fd::AsRawFd::as_raw_fd(&self.writer);
        // SAFETY: setting a socket option on a socket we own, with a correctly sized value.
        let rc = unsafe {
            libc::setsockopt(
                fd,
                libc::SOL_SOCKET,
                libc::SO_RCVBUF,
                &bytes as *const i32 as *const libc::c_void,
                std::mem::size_of::<i32>() as libc::socklen_t,
            )
        };
        assert_eq!(rc, 0, "setsockopt SO_RCVBUF");
    }
}

/// Registers on `server`'s IRC listener as `nick` after asking for `caps` (space-separated),
/// reading the welcome burst.
pub fn register_with(server: &TestServer, nick: &str, caps: &str) -> Client {
    let mut c = Client::connect(server.irc_addr.expect("IRC listener"));
    c.send(&format!("CAP REQ :{caps}"));
    assert_eq!(c.line(), format!(":pollchat CAP * ACK :{caps}"));
    c.send(&format!("NICK {nick}"));
    c.send(&format!("USER {nick} 0 * :The {nick}"));
    c.send("CAP END");
    c.expect_prefix(&format!(":pollchat 422 {nick}"));
    c
}
