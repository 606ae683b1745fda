//! TLS as a byte layer between a socket and everything above it (rustls, no thread, no runtime).
//!
//! A connection that came through a TLS door keeps a [`Tls`]: a rustls `ServerConnection` after
//! rustls's `tlsserver-mio` example. On input, [`Tls::read`] feeds what the socket has to rustls
//! (`read_tls`, `process_new_packets`) and hands back plaintext (`reader`), which then goes
//! through the connection's [`Transform`](super::transform::Transform) and framer exactly like
//! a plain socket's bytes: nothing above this layer knows about TLS but the session, which is
//! told whether its connection is secure. On output, [`Tls::flush`] takes the connection's
//! queue of shared plaintext chunks, encrypts as many as the ciphertext budget
//! ([`CIPHER_BUDGET`]) allows in one pass (rustls packs many chunks into one record), and
//! writes the records with one vectored `write_tls`: one `writev` per flush, as for a plain
//! connection. What is neither encrypted nor written stays in the queue, where `--max-sendq`
//! sees it; the ciphertext pending is counted too ([`Tls::pending`]).
//!
//! [`load`] reads the PEM certificate chain and key into a rustls `ServerConfig` (at bind and
//! on SIGHUP).

use std::fs;
use std::io::{self, IoSlice, Read, Write};
use std::ops::Deref;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::{ServerConfig, ServerConnection};

use super::outq::{Flushed, OutQueue};
use crate::config::TlsFiles;

/// Ciphertext one connection may have encrypted and not yet written. Encrypting stops there, so
/// a client that stops reading holds its backlog as shared plaintext chunks in its queue (a
/// broadcast costs its bytes once, whatever the number of recipients), not as a private copy in
/// ciphertext. Four full records: a turn's output for a busy client in one `writev`.
pub const CIPHER_BUDGET: usize = 4 * 16 * 1024;

/// `write_tls` calls per flush at most (each one `writev`); more output waits for the next
/// turn, as a plain connection's flush stops at `IOV_MAX` chunks.
const WRITES_PER_FLUSH: usize = 4;

/// Reads the certificate chain and private key `files` name into a server configuration
/// (TLS 1.2 and 1.3, ring's algorithms, no client certificates). The error is one line naming
/// the file at fault.
pub fn load(files: &TlsFiles) -> Result<Arc<ServerConfig>, String> {
    let (cert, key) = (&files.cert, &files.key);
    let pem = fs::read(cert).map_err(|e| format!("--tls-cert {}: {e}", cert.display()))?;
    let chain = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("--tls-cert {}: not a PEM certificate: {e}", cert.display()))?;
    if chain.is_empty() {
        return Err(format!(
            "--tls-cert {}: no certificate in it (PEM, BEGIN CERTIFICATE)",
            cert.display()
        ));
    }
    let pem = fs::read(key).map_err(|e| format!("--tls-key {}: {e}", key.display()))?;
    let private = PrivateKeyDer::from_pem_slice(&pem)
        .map_err(|e| format!("--tls-key {}: no PEM private key in it: {e}", key.display()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS: {e}"))?
        .with_no_client_auth()
        .with_single_cert(chain, private)
        .map_err(|e| {
            let why = match e {
                rustls::Error::InconsistentKeys(_) => "the key is not the certificate's".into(),
                e => e.to_string(),
            };
            format!(
                "--tls-cert {} with --tls-key {}: {why}",
                cert.display(),
                key.display()
            )
        })?;
    Ok(Arc::new(config))
}

/// A self-signed certificate for `names` (host names or IP addresses) and its new ECDSA P-256
/// key, as PEM: `pollchat cert`, for trying TLS locally. No client trusts it unless told to
/// (`pollchat connect --tls --ca`, `openssl s_client -CAfile`): for testing only.
pub fn self_signed(names: &[String]) -> Result<(String, String), String> {
    let pair = rcgen::generate_simple_self_signed(names.to_vec()).map_err(|e| e.to_string())?;
    Ok((pair.cert.pem(), pair.signing_key.serialize_pem()))
}

/// What one [`Tls::read`] (or a plain socket's read) gave.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Input {
    /// This many plaintext bytes, at the start of the caller's buffer.
    Bytes(usize),
    /// Work was done (handshake messages, an empty record) but no plaintext came of it yet:
    /// read again (it counts against the caller's per-turn read budget).
    Nothing,
    /// The peer closed the connection (a TLS `close_notify`, or the end of the TCP stream).
    End,
}

/// One connection's TLS state.
pub struct Tls {
    conn: ServerConnection,
    /// Ciphertext encrypted and not yet taken by the socket, as the last `write_tls` left it.
    pending: usize,
    /// A `close_notify` has been queued: the connection says goodbye only once.
    closing: bool,
    /// The handshake's end has been reported ([`Tls::newly_established`]).
    established: bool,
}

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tls")
            .field("handshaking", &self.conn.is_handshaking())
            .field("pending", &self.pending)
            .finish()
    }
}

/// An error from rustls (a bad record, a failed handshake): the alert has been written, the
/// connection must be closed. Distinguished from socket errors by its kind.
pub fn is_protocol_error(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::InvalidData
}

impl Tls {
    /// The TLS state of a new connection under `config` (boxed: it is a few hundred bytes, and
    /// plain connections pay only a pointer).
    pub fn new(config: Arc<ServerConfig>) -> io::Result<Box<Tls>> {
        let mut conn = ServerConnection::new(config).map_err(io::Error::other)?;
        // rustls's limit applies to ciphertext once the handshake is done: see CIPHER_BUDGET.
        conn.set_buffer_limit(Some(CIPHER_BUDGET));
        Ok(Box::new(Tls {
            conn,
            pending: 0,
            closing: false,
            established: false,
        }))
    }

    pub fn is_handshaking(&self) -> bool {
        self.conn.is_handshaking()
    }

    /// True once, the first time it is asked after the handshake completed: the moment the
    /// connection's session may begin.
    pub fn newly_established(&mut self) -> bool {
        if self.established || self.conn.is_handshaking() {
            return false;
        }
        self.established = true;
        true
    }

    /// The protocol version and cipher suite agreed, for the log.
    pub fn describe(&self) -> String {
        match (
            self.conn.protocol_version(),
            self.conn.negotiated_cipher_suite(),
        ) {
            (Some(v), Some(s)) => format!("{v:?} {:?}", s.suite()),
            _ => "handshaking".into(),
        }
    }

    /// Reads plaintext into `buf`: what rustls already decrypted first, else one `read_tls` from
    /// `sock` and the records in it. `WouldBlock` when the socket has nothing more. A TLS
    /// protocol error (garbage, a failed handshake) writes rustls's alert to `sock` (best
    /// effort) and comes back as an `InvalidData` error ([`is_protocol_error`]) carrying
    /// rustls's reason.
    pub fn read<S: Read + Write>(&mut self, sock: &mut S, buf: &mut [u8]) -> io::Result<Input> {
        if let Some(input) = self.plaintext(buf)? {
            return Ok(input);
        }
        if self.conn.read_tls(sock)? == 0 {
            return Ok(Input::End);
        }
        if let Err(e) = self.conn.process_new_packets() {
            // The last gasp: the alert rustls queued for the peer says why.
            let _ = self.write(sock);
            return Err(io::Error::new(io::ErrorKind::InvalidData, e));
        }
        Ok(self.plaintext(buf)?.unwrap_or(Input::Nothing))
    }

    /// Plaintext rustls holds, if any.
    fn plaintext(&mut self, buf: &mut [u8]) -> io::Result<Option<Input>> {
        match self.conn.reader().read(buf) {
            Ok(0) => Ok(Some(Input::End)),
            Ok(n) => Ok(Some(Input::Bytes(n))),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(None),
            // The TCP stream ended without a close_notify: an end all the same.
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Ok(Some(Input::End)),
            Err(e) => Err(e),
        }
    }

    /// Whether ciphertext (handshake messages, records, an alert) waits to be written.
    pub fn wants_write(&self) -> bool {
        self.conn.wants_write()
    }

    /// Ciphertext encrypted and not yet written, as far as the last write could tell (exact
    /// while it fits one `writev`, which [`CIPHER_BUDGET`] makes the rule).
    pub fn pending(&self) -> usize {
        self.pending
    }

    /// Queues a `close_notify`, written by the next flush, so that the peer can tell the end
    /// of the stream from a cut connection; true the first time (said once, and never during
    /// the handshake).
    pub fn close_notify(&mut self) -> bool {
        if self.closing || self.conn.is_handshaking() {
            return false;
        }
        self.closing = true;
        self.conn.send_close_notify();
        true
    }

    /// Encrypts what `out` holds (within [`CIPHER_BUDGET`]) and writes the ciphertext to
    /// `sock` with one vectored write, a few times at most. `Short` (or `WouldBlock`): the
    /// socket is full, wait for WRITABLE; `More`: flush again next turn. During the handshake
    /// only handshake messages go out; `out` waits.
    pub fn flush<C, S>(&mut self, out: &mut OutQueue<C>, sock: &mut S) -> io::Result<Flushed>
    where
        C: Deref<Target = [u8]>,
        S: Write,
    {
        for _ in 0..WRITES_PER_FLUSH {
            if !self.conn.is_handshaking() && !out.is_empty() {
                // Into rustls's buffer, which takes what the budget leaves room for (rustls
                // returns fewer bytes than offered, never an error, when it is full).
                out.flush_to(&mut self.conn.writer())?;
            }
            if !self.conn.wants_write() {
                self.pending = 0;
                return Ok(if out.is_empty() || self.conn.is_handshaking() {
                    Flushed::All
                } else {
                    Flushed::More
                });
            }
            if self.write(sock)? {
                return Ok(Flushed::Short);
            }
        }
        Ok(Flushed::More)
    }

    /// One vectored `write_tls`; true if the socket took less than it was offered.
    fn write<S: Write>(&mut self, sock: &mut S) -> io::Result<bool> {
        let mut tap = Vectored {
            sink: sock,
            offered: 0,
        };
        let result = self.conn.write_tls(&mut tap);
        let offered = tap.offered;
        match result {
            Ok(n) => {
                self.pending = offered - n;
                Ok(n < offered)
            }
            Err(e) => {
                self.pending = offered;
                Err(e)
            }
        }
    }
}

/// The socket as `write_tls` sees it: every write is the socket's `writev` (rustls hands over
/// all its pending records at once), and what was offered is noted, so that what the socket
/// did not take is known to the byte ([`Tls::pending`]).
struct Vectored<'a, S> {
    sink: &'a mut S,
    offered: usize,
}

impl<S: Write> Write for Vectored<'_, S> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.offered = buf.len();
        self.sink.write(buf)
    }

    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        self.offered = bufs.iter().map(|b| b.len()).sum();
        self.sink.write_vectored(bufs)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.sink.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustls::pki_types::ServerName;
    use rustls::{ClientConfig, ClientConnection, RootCertStore};
    use std::collections::VecDeque;
    use std::rc::Rc;

    /// One direction of an in-memory socket: what was written, read back; `WouldBlock` when
    /// empty, and room for at most `room` bytes before writes are cut short.
    #[derive(Default)]
    struct Pipe {
        to_server: VecDeque<u8>,
        to_client: VecDeque<u8>,
        /// Bytes the server's side may still write (`usize::MAX`: unbounded).
        room: usize,
        /// Vectored writes the server made.
        writes: usize,
    }

    /// The server's end of a [`Pipe`].
    struct ServerEnd<'a>(&'a mut Pipe);

    impl Read for ServerEnd<'_> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            if self.0.to_server.is_empty() {
                return Err(io::ErrorKind::WouldBlock.into());
            }
            let n = buf.len().min(self.0.to_server.len());
            for (b, byte) in buf.iter_mut().zip(self.0.to_server.drain(..n)) {
                *b = byte;
            }
            Ok(n)
        }
    }

    impl Write for ServerEnd<'_> {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.write_vectored(&[IoSlice::new(buf)])
        }
        fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
            self.0.writes += 1;
            if self.0.room == 0 {
                return Err(io::ErrorKind::WouldBlock.into());
            }
            let mut n = 0;
            for b in bufs {
                let take = b.len().min(self.0.room - n);
                self.0.to_client.extend(&b[..take]);
                n += take;
            }
            self.0.room -= n.min(self.0.room);
            Ok(n)
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    fn pair() -> (Box<Tls>, ClientConnection) {
        let cert = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
        let dir = std::env::temp_dir().join(format!(
            "pollchat-tls-unit-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        fs::create_dir_all(&dir).unwrap();
        let files = TlsFiles {
            cert: dir.join("cert.pem"),
            key: dir.join("key.pem"),
        };
        fs::write(&files.cert, cert.cert.pem()).unwrap();
        fs::write(&files.key, cert.signing_key.serialize_pem()).unwrap();
        let server = Tls::new(load(&files).unwrap()).unwrap();
        let mut roots = RootCertStore::empty();
        roots.add(cert.cert.der().clone()).unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        let name = ServerName::try_from("localhost").unwrap();
        let client = ClientConnection::new(Arc::new(config), name).unwrap();
        (server, client)
    }

    /// Runs the handshake over `pipe`, the server reading and flushing as the loop would.
    fn handshake(server: &mut Tls, client: &mut ClientConnection, pipe: &mut Pipe) {
        let mut out: OutQueue<Rc<[u8]>> = OutQueue::default();
        let mut buf = [0u8; 4096];
        for _ in 0..10 {
            while client.wants_write() {
                let mut to = Vec::new();
                client.write_tls(&mut to).unwrap();
                pipe.to_server.extend(to);
            }
            loop {
                match server.read(&mut ServerEnd(pipe), &mut buf) {
                    Ok(Input::Nothing) => continue,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    other => panic!("{other:?}"),
                }
            }
            server.flush(&mut out, &mut ServerEnd(pipe)).unwrap();
            let from: Vec<u8> = pipe.to_client.drain(..).collect();
            client.read_tls(&mut &from[..]).unwrap();
            client.process_new_packets().unwrap();
            if !server.is_handshaking() && !client.is_handshaking() {
                return;
            }
        }
        panic!("no handshake");
    }

    fn client_reads(client: &mut ClientConnection, pipe: &mut Pipe) -> Vec<u8> {
        let from: Vec<u8> = pipe.to_client.drain(..).collect();
        let mut slice = &from[..];
        let mut got = Vec::new();
        while !slice.is_empty() {
            client.read_tls(&mut slice).unwrap();
            client.process_new_packets().unwrap();
            let _ = client.reader().read_to_end(&mut got);
        }
        got
    }

    #[test]
    fn plaintext_crosses_both_ways_and_a_turn_of_chunks_is_one_write() {
        let (mut server, mut client) = pair();
        let mut pipe = Pipe {
            room: usize::MAX,
            ..Pipe::default()
        };
        handshake(&mut server, &mut client, &mut pipe);
        assert!(server.describe().contains("TLS"), "{}", server.describe());

        client.writer().write_all(b"hello\nworld\n").unwrap();
        let mut to = Vec::new();
        client.write_tls(&mut to).unwrap();
        pipe.to_server.extend(to);
        let mut buf = [0u8; 4096];
        let mut got = Vec::new();
        loop {
            match server.read(&mut ServerEnd(&mut pipe), &mut buf) {
                Ok(Input::Bytes(n)) => got.extend_from_slice(&buf[..n]),
                Ok(Input::Nothing) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(got, b"hello\nworld\n");

        // Fifty shared chunks, as a turn of broadcasts leaves them: one writev.
        let mut out: OutQueue<Rc<[u8]>> = OutQueue::default();
        let line: Rc<[u8]> = Rc::from(&b"MSG #lobby <alice> hi\r\n"[..]);
        for _ in 0..50 {
            out.push(line.clone());
        }
        pipe.writes = 0;
        let done = server.flush(&mut out, &mut ServerEnd(&mut pipe)).unwrap();
        assert_eq!(done, Flushed::All);
        assert_eq!(pipe.writes, 1, "one vectored write for the turn");
        assert_eq!(server.pending(), 0);
        assert_eq!(client_reads(&mut client, &mut pipe), line.repeat(50));
    }

    #[test]
    fn a_full_socket_leaves_ciphertext_pending_and_plaintext_queued() {
        let (mut server, mut client) = pair();
        let mut pipe = Pipe {
            room: usize::MAX,
            ..Pipe::default()
        };
        handshake(&mut server, &mut client, &mut pipe);
        let mut out: OutQueue<Rc<[u8]>> = OutQueue::default();
        let chunk: Rc<[u8]> = Rc::from(vec![b'x'; 1000]);
        for _ in 0..200 {
            out.push(chunk.clone());
        }
        pipe.room = 10_000;
        let done = server.flush(&mut out, &mut ServerEnd(&mut pipe)).unwrap();
        assert_eq!(done, Flushed::Short);
        // The budget was encrypted, a part of it written; the rest stays plaintext.
        let encrypted = 200_000 - out.len();
        assert!(
            (CIPHER_BUDGET - 1000..=CIPHER_BUDGET).contains(&encrypted),
            "{encrypted}"
        );
        assert!(
            server.pending() > encrypted - 10_000 && server.pending() < CIPHER_BUDGET,
            "{}",
            server.pending()
        );
        // Once the socket takes everything, everything arrives, in order.
        pipe.room = usize::MAX;
        let mut got = client_reads(&mut client, &mut pipe);
        while !out.is_empty() || server.pending() > 0 {
            server.flush(&mut out, &mut ServerEnd(&mut pipe)).unwrap();
            got.extend(client_reads(&mut client, &mut pipe));
        }
        assert_eq!(got.len(), 200_000);
    }

    #[test]
    fn garbage_gets_an_alert_and_an_error() {
        let (mut server, _) = pair();
        let mut pipe = Pipe {
            room: usize::MAX,
            ..Pipe::default()
        };
        pipe.to_server.extend(b"GET / HTTP/1.0\r\n\r\n");
        let mut buf = [0u8; 4096];
        let err = server
            .read(&mut ServerEnd(&mut pipe), &mut buf)
            .unwrap_err();
        assert!(is_protocol_error(&err), "{err}");
        assert_eq!(
            pipe.to_client.front(),
            Some(&0x15),
            "a TLS alert record: {:?}",
            pipe.to_client
        );
    }
}
