//! `pollchat connect`: a terminal client that is itself one mio loop.
//!
//! Standard input and the server socket sit in the same `Poll`. What the server sends is printed
//! as it arrives; what is typed is queued and written without ever blocking the loop, so a slow
//! server never freezes typing and a burst of output never delays sending. It exits on end of
//! input (after the server has answered what was sent), when the server closes the connection,
//! and on SIGINT/SIGTERM.
//!
//! With `--tls` the socket is wrapped in a rustls `ClientConnection` driven by the same loop
//! ([`Link`]), trusting the certificate or CA given with `--ca`, or anything (`--insecure`,
//! for a self-signed test certificate one has not copied).

use std::fs::File;
use std::io::{self, Read, Write};
use std::net::{TcpStream as StdTcpStream, ToSocketAddrs};
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, ClientConnection, RootCertStore};

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

/// Whom a TLS client trusts.
#[derive(Clone, Debug)]
pub enum Trust {
    /// The certificates in this PEM file (the server's own, self-signed, or its CA).
    Ca(PathBuf),
    /// Any certificate: the connection is encrypted but the server is not authenticated.
    Insecure,
}

/// Connects to `addr` (over TLS when `tls` says whom to trust) and runs until the conversation
/// ends.
pub fn run(addr: &str, tls: Option<Trust>) -> io::Result<()> {
    let tls = match tls {
        Some(trust) => Some(Box::new(connection(addr, &trust)?)),
        None => None,
    };
    let target = addr
        .to_socket_addrs()
        .map_err(|e| io::Error::new(e.kind(), format!("cannot resolve {addr}: {e}")))?
        .next()
        .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, format!("no address for {addr}")))?;
    let std_stream = StdTcpStream::connect_timeout(&target, Duration::from_secs(10))
        .map_err(|e| io::Error::new(e.kind(), format!("cannot connect to {target}: {e}")))?;
    std_stream.set_nonblocking(true)?;
    std_stream.set_nodelay(true)?;
    let mut socket = Link {
        sock: TcpStream::from_std(std_stream),
        tls,
    };

    let mut poll = Poll::new()?;
    let mut events = Events::with_capacity(16);
    // WRITABLE at first: a TLS client speaks first (its ClientHello), before any input.
    poll.registry().register(
        &mut socket.sock,
        SOCKET,
        Interest::READABLE | Interest::WRITABLE,
    )?;
    let mut signals = Signals::new([libc::SIGINT, libc::SIGTERM])?;
    poll.registry()
        .register(&mut signals, SIGNALS, Interest::READABLE)?;
    let mut input = Stdin::open(&poll)?;

    let mut pending: Vec<u8> = Vec::new();
    let mut wants_write = true;
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
                // Our last words (a TLS close_notify) can reach a server that has just closed
                // after its own: its kernel answers with a reset. The conversation was over.
                Err(e) if e.kind() == io::ErrorKind::ConnectionReset && write_closed => {
                    eprintln!("connection closed by the server");
                    return Ok(());
                }
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
        let left = socket
            .send(&mut pending)
            .map_err(|e| io::Error::new(e.kind(), format!("connection lost: {e}")))?;
        if left != wants_write {
            wants_write = left;
            let interest = if wants_write {
                Interest::READABLE | Interest::WRITABLE
            } else {
                Interest::READABLE
            };
            poll.registry()
                .reregister(&mut socket.sock, SOCKET, interest)?;
        }
        // End of input: once everything typed is sent, half-close so the server answers the
        // last lines and says goodbye; the loop ends when it closes.
        if input_done && pending.is_empty() && !socket.handshaking() && !write_closed {
            socket.close_write();
            write_closed = true;
        }
    }
}

/// The connection to the server: the socket, and over it TLS if asked for.
struct Link {
    sock: TcpStream,
    tls: Option<Box<ClientConnection>>,
}

impl Link {
    /// What the server sent (decrypted): `Ok(0)` at its end, `WouldBlock` when nothing more.
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let Some(tls) = &mut self.tls else {
            return self.sock.read(buf);
        };
        loop {
            match tls.reader().read(buf) {
                Ok(n) => return Ok(n),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(0),
                Err(e) => return Err(e),
            }
            if tls.read_tls(&mut self.sock)? == 0 {
                return Ok(0);
            }
            tls.process_new_packets()
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, format!("TLS: {e}")))?;
        }
    }

    /// Writes what it can of `pending` (encrypted first under TLS, which also sends the
    /// handshake); true if something is left for when the socket is writable.
    fn send(&mut self, pending: &mut Vec<u8>) -> io::Result<bool> {
        let Some(tls) = &mut self.tls else {
            while !pending.is_empty() {
                match self.sock.write(pending) {
                    Ok(n) => drop(pending.drain(..n)),
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(true),
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => return Err(e),
                }
            }
            return Ok(false);
        };
        if !pending.is_empty() && !tls.is_handshaking() {
            // rustls takes what its buffer has room for.
            let n = tls.writer().write(pending)?;
            pending.drain(..n);
        }
        while tls.wants_write() {
            match tls.write_tls(&mut self.sock) {
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(true),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        }
        // What waits for the handshake waits for a readable event, not a writable one.
        Ok(!pending.is_empty() && !tls.is_handshaking())
    }

    /// Still in the TLS handshake: nothing typed has been sent yet.
    fn handshaking(&self) -> bool {
        self.tls.as_ref().is_some_and(|t| t.is_handshaking())
    }

    /// Says the client is done sending: a `close_notify` under TLS, then a half-close. Best
    /// effort: the server may have closed already (after a `/quit`), which the reading side
    /// reports.
    fn close_write(&mut self) {
        if let Some(tls) = &mut self.tls {
            tls.send_close_notify();
            // One try: if the socket is full, the half-close below still ends what the server
            // hears.
            let _ = tls.write_tls(&mut self.sock);
        }
        let _ = self.sock.shutdown(std::net::Shutdown::Write);
    }
}

/// A TLS client connection to `addr` (its host part is the name checked in the certificate).
fn connection(addr: &str, trust: &Trust) -> io::Result<ClientConnection> {
    let host = addr
        .rsplit_once(':')
        .map_or(addr, |(host, _)| host)
        .trim_start_matches('[')
        .trim_end_matches(']');
    let name = ServerName::try_from(host.to_string())
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, format!("{host}: {e}")))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(io::Error::other)?;
    let config = match trust {
        Trust::Ca(path) => {
            let mut roots = RootCertStore::empty();
            let pem = std::fs::read(path)
                .map_err(|e| io::Error::new(e.kind(), format!("--ca {}: {e}", path.display())))?;
            for cert in CertificateDer::pem_slice_iter(&pem) {
                let cert = cert.map_err(|e| {
                    io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!("--ca {}: {e}", path.display()),
                    )
                })?;
                roots.add(cert).map_err(|e| {
                    io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!("--ca {}: {e}", path.display()),
                    )
                })?;
            }
            if roots.is_empty() {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("--ca {}: no certificate in it", path.display()),
                ));
            }
            builder.with_root_certificates(roots).with_no_client_auth()
        }
        Trust::Insecure => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AnyCertificate(provider)))
            .with_no_client_auth(),
    };
    ClientConnection::new(Arc::new(config), name).map_err(io::Error::other)
}

/// A client configuration that accepts any certificate (`--insecure`; `pollchat bench --tls`,
/// which measures a server on loopback, not who it is).
pub fn insecure_config() -> Arc<ClientConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .expect("ring supports the default versions")
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyCertificate(provider)))
        .with_no_client_auth();
    Arc::new(config)
}

/// `--insecure`: accepts any certificate, but still checks that the server holds its key (the
/// handshake's signature), so the connection is encrypted, only not authenticated.
#[derive(Debug)]
struct AnyCertificate(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        let algorithms = &self.0.signature_verification_algorithms;
        rustls::crypto::verify_tls12_signature(message, cert, dss, algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        let algorithms = &self.0.signature_verification_algorithms;
        rustls::crypto::verify_tls13_signature(message, cert, dss, algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
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
