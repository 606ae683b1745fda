//! TLS as a byte layer between a socket and everything above it (rustls, no thread, no runtime).
//!
//! A connection that came through a TLS door keeps a [`Tls`], driven by the loop as rustls's
//! `tlsserver-mio` example drives its connections, with one difference: it uses rustls's
//! *unbuffered* connection, so that the buffers are ours and exist only while they hold bytes.
//! rustls's buffered `ServerConnection` keeps a 4 KiB receive buffer per connection for its
//! whole life (and its output queues): half of an idle TLS client's memory (measured: 7.5 KiB
//! of heap per connection with it, 3.4 KiB without; BENCHMARKS.md).
//!
//! On input, [`Tls::read`] reads the socket into the loop's shared buffer and lets rustls
//! decrypt the records there (`process_tls_records`); only an incomplete record is copied aside
//! until the rest comes. The plaintext then goes through the connection's
//! [`Transform`](super::transform::Transform) and framer exactly like a plain socket's bytes:
//! nothing above this layer knows about TLS but the session, which is told whether its
//! connection is secure. On output, [`Tls::flush`] takes the connection's queue of shared
//! plaintext chunks in one pass, as much as the ciphertext budget ([`CIPHER_BUDGET`]) allows,
//! encrypts it together (a turn's lines share records) and writes the records with one `write`:
//! one system call per flush, as for a plain connection. What is neither encrypted nor written
//! stays in the queue, where `--max-sendq` sees it; the ciphertext pending is counted too
//! ([`Tls::pending`], to the byte).
//!
//! [`load`] reads the PEM certificate chain and key into a rustls `ServerConfig` (at bind and
//! on SIGHUP).

use std::fs;
use std::io::{self, IoSlice, Read, Write};
use std::ops::Deref;
use std::sync::Arc;

use rustls::ServerConfig;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ServerConnectionData, UnbufferedServerConnection};
use rustls::unbuffered::{
    ConnectionState, EncodeError, EncryptError, InsufficientSizeError, UnbufferedStatus,
    WriteTraffic,
};

use super::outq::{Flushed, OutQueue};
use crate::config::TlsFiles;

/// Ciphertext one connection may have encrypted and not yet written. Encrypting stops there, so
/// a client that stops reading holds its backlog as shared plaintext chunks in its queue (a
/// broadcast costs its bytes once, whatever the number of recipients), not as a private copy in
/// ciphertext. Four full records: a turn's output for a busy client in one `write`.
pub const CIPHER_BUDGET: usize = 4 * 16 * 1024;

/// Writes per flush at most; more output waits for the next turn, as a plain connection's
/// flush stops at `IOV_MAX` chunks.
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

/// One connection's TLS state: rustls's unbuffered connection and the few bytes only this
/// connection can hold. Between messages it owns no buffer: an idle TLS client costs rustls's
/// state (keys, the handshake's outcome) and nothing more.
pub struct Tls {
    conn: UnbufferedServerConnection,
    /// Received bytes rustls has not been able to use yet (an incomplete record, a handshake
    /// message spanning records); empty, with no allocation, between records.
    incoming: Vec<u8>,
    /// Decrypted bytes not yet handed to the caller (more than its buffer took).
    plain: Vec<u8>,
    /// Ciphertext made and not yet written: `outgoing[sent..]`; freed once written.
    outgoing: Vec<u8>,
    sent: usize,
    /// The peer said `close_notify`.
    peer_closed: bool,
    /// A `close_notify` has been queued: the connection says goodbye only once.
    closing: bool,
    /// The handshake's end has been reported ([`Tls::newly_established`]).
    established: bool,
}

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tls")
            .field("handshaking", &self.conn.is_handshaking())
            .field("pending", &self.pending())
            .finish()
    }
}

/// An error from rustls (a bad record, a failed handshake): the alert has been written, the
/// connection must be closed. Distinguished from socket errors by its kind.
pub fn is_protocol_error(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::InvalidData
}

/// What [`Tls::process`] stopped at.
enum Stop {
    /// Everything complete was used; more bytes are needed.
    NeedInput,
    /// The peer closed (`close_notify`).
    Closed,
}

/// Bytes a TLS record adds to its payload at most (header, TLS 1.2's explicit nonce or 1.3's
/// content type, the AEAD tag), with room to spare.
const RECORD_OVERHEAD: usize = 64;
/// A TLS record's payload at most.
const RECORD_PAYLOAD: usize = 16 * 1024;
/// What one connection may hold of received bytes rustls cannot use yet: the largest handshake
/// message rustls accepts (64 KiB) and a record's worth. More is an attack, not a handshake.
const MAX_INCOMING: usize = 64 * 1024 + RECORD_PAYLOAD + RECORD_OVERHEAD;

fn tls_error(e: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e)
}

impl Tls {
    /// The TLS state of a new connection under `config` (boxed: rustls's state is a kilobyte,
    /// and plain connections pay only a pointer).
    pub fn new(config: Arc<ServerConfig>) -> io::Result<Box<Tls>> {
        let conn = UnbufferedServerConnection::new(config).map_err(io::Error::other)?;
        Ok(Box::new(Tls {
            conn,
            incoming: Vec::new(),
            plain: Vec::new(),
            outgoing: Vec::new(),
            sent: 0,
            peer_closed: false,
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

    /// Reads plaintext into `buf`: what was decrypted before and not yet taken, else one read
    /// from `sock` into `buf` and the records in it (an incomplete one is kept). `WouldBlock`
    /// when the socket has nothing more. A TLS protocol error (garbage, a failed handshake)
    /// writes rustls's alert to `sock` (best effort) and comes back as an `InvalidData` error
    /// ([`is_protocol_error`]) carrying rustls's reason.
    pub fn read<S: Read + Write>(&mut self, sock: &mut S, buf: &mut [u8]) -> io::Result<Input> {
        if !self.plain.is_empty() {
            return Ok(self.take_plain(buf));
        }
        if self.peer_closed {
            return Ok(Input::End);
        }
        let n = sock.read(buf)?;
        if n == 0 {
            return Ok(Input::End);
        }
        // The records are processed where they are: in `buf` if nothing was left over, else
        // after what was.
        let result = if self.incoming.is_empty() {
            let result = self.process(&mut buf[..n]);
            if let Ok((used, _)) = &result {
                self.incoming.extend_from_slice(&buf[*used..n]);
            }
            result
        } else {
            self.incoming.extend_from_slice(&buf[..n]);
            let mut incoming = std::mem::take(&mut self.incoming);
            let result = self.process(&mut incoming);
            if let Ok((used, _)) = &result {
                incoming.drain(..*used);
                self.incoming = incoming;
            }
            result
        };
        match result {
            Ok((_, stop)) => {
                if self.incoming.len() > MAX_INCOMING {
                    return Err(tls_error("more than a handshake message's worth of bytes"));
                }
                if self.incoming.is_empty() {
                    self.incoming = Vec::new();
                }
                if let Stop::Closed = stop {
                    self.peer_closed = true;
                }
                if !self.plain.is_empty() {
                    return Ok(self.take_plain(buf));
                }
                Ok(if self.peer_closed {
                    Input::End
                } else {
                    Input::Nothing
                })
            }
            Err(e) => {
                self.incoming = Vec::new();
                // The last gasp: the alert rustls queued says why.
                let _ = self.write(sock);
                Err(tls_error(e))
            }
        }
    }

    /// Hands decrypted bytes to the caller.
    fn take_plain(&mut self, buf: &mut [u8]) -> Input {
        let n = self.plain.len().min(buf.len());
        buf[..n].copy_from_slice(&self.plain[..n]);
        self.plain.drain(..n);
        if self.plain.is_empty() {
            self.plain = Vec::new();
        }
        Input::Bytes(n)
    }

    /// Runs rustls over `data` until it needs more: handshake messages it answers go to
    /// `outgoing`, decrypted bytes to `plain`. Returns how many bytes of `data` were used up.
    /// On an error, the alert rustls queued is put in `outgoing` too.
    fn process(&mut self, data: &mut [u8]) -> Result<(usize, Stop), rustls::Error> {
        let mut used = 0;
        let result = self.process_from(data, &mut used);
        if result.is_err() {
            self.drain_alert(&mut data[used..]);
        }
        result.map(|stop| (used, stop))
    }

    fn process_from(&mut self, data: &mut [u8], used: &mut usize) -> Result<Stop, rustls::Error> {
        loop {
            let UnbufferedStatus { discard, state } =
                self.conn.process_tls_records(&mut data[*used..]);
            *used += discard;
            match state? {
                ConnectionState::ReadTraffic(mut traffic) => {
                    while let Some(record) = traffic.next_record() {
                        self.plain.extend_from_slice(record?.payload);
                    }
                }
                ConnectionState::ReadEarlyData(mut early) => {
                    while let Some(record) = early.next_record() {
                        self.plain.extend_from_slice(record?.payload);
                    }
                }
                ConnectionState::EncodeTlsData(mut encode) => {
                    encode_into(&mut self.outgoing, |out| encode.encode(out))?
                }
                // Written by the next flush, in order: rustls may go on.
                ConnectionState::TransmitTlsData(transmit) => transmit.done(),
                ConnectionState::BlockedHandshake | ConnectionState::WriteTraffic(_) => {
                    return Ok(Stop::NeedInput);
                }
                ConnectionState::PeerClosed | ConnectionState::Closed => return Ok(Stop::Closed),
                _ => return Ok(Stop::NeedInput),
            }
        }
    }

    /// After an error: the alert rustls queued (one message), into `outgoing`. rustls is shown
    /// the bytes it has not used (`data`), never an empty buffer in their place: it may hold
    /// positions into them (an empty one made it index out of bounds, found by the property
    /// test below).
    fn drain_alert(&mut self, data: &mut [u8]) {
        let UnbufferedStatus { state, .. } = self.conn.process_tls_records(data);
        if let Ok(ConnectionState::EncodeTlsData(mut encode)) = state {
            let _ = encode_into(&mut self.outgoing, |out| encode.encode(out));
        }
    }

    /// Runs rustls over the bytes held (no new ones) until it can encrypt, and calls `f` with
    /// it and `outgoing`. What rustls has to send or hand over meanwhile is dealt with as
    /// [`Tls::process`] does. rustls is always shown the bytes it has not used yet, never an
    /// empty buffer in their place: it may hold positions into them.
    fn write_traffic<R>(
        &mut self,
        f: impl FnOnce(&mut WriteTraffic<'_, ServerConnectionData>, &mut Vec<u8>) -> R,
    ) -> Option<R> {
        let mut incoming = std::mem::take(&mut self.incoming);
        let mut used = 0;
        let mut result = None;
        for _ in 0..8 {
            let UnbufferedStatus { discard, state } =
                self.conn.process_tls_records(&mut incoming[used..]);
            used += discard;
            match state {
                Ok(ConnectionState::WriteTraffic(mut traffic)) => {
                    result = Some(f(&mut traffic, &mut self.outgoing));
                    break;
                }
                Ok(ConnectionState::EncodeTlsData(mut encode)) => {
                    if encode_into(&mut self.outgoing, |out| encode.encode(out)).is_err() {
                        break;
                    }
                }
                Ok(ConnectionState::TransmitTlsData(transmit)) => transmit.done(),
                Ok(ConnectionState::ReadTraffic(mut traffic)) => {
                    while let Some(Ok(record)) = traffic.next_record() {
                        self.plain.extend_from_slice(record.payload);
                    }
                }
                _ => break,
            }
        }
        incoming.drain(..used);
        if !incoming.is_empty() {
            self.incoming = incoming;
        }
        result
    }

    /// Whether ciphertext (handshake messages, records, an alert) waits to be written.
    pub fn wants_write(&self) -> bool {
        self.sent < self.outgoing.len()
    }

    /// Ciphertext made and not yet taken by the socket, to the byte.
    pub fn pending(&self) -> usize {
        self.outgoing.len() - self.sent
    }

    /// Queues a `close_notify`, written by the next flush, so that the peer can tell the end
    /// of the stream from a cut connection; true the first time (said once, and never during
    /// the handshake).
    pub fn close_notify(&mut self) -> bool {
        if self.closing || self.conn.is_handshaking() {
            return false;
        }
        self.closing = true;
        self.write_traffic(|traffic, outgoing| {
            encode_into(outgoing, |out| {
                traffic.queue_close_notify(out).map_err(encode_error)
            })
        });
        true
    }

    /// Encrypts what `out` holds (within [`CIPHER_BUDGET`], many chunks to a record) and
    /// writes the ciphertext to `sock`, one `write` a few times at most. `Short` (or
    /// `WouldBlock`): the socket is full, wait for WRITABLE; `More`: flush again next turn.
    /// During the handshake only handshake messages go out; `out` waits.
    pub fn flush<C, S>(&mut self, out: &mut OutQueue<C>, sock: &mut S) -> io::Result<Flushed>
    where
        C: Deref<Target = [u8]>,
        S: Write,
    {
        for _ in 0..WRITES_PER_FLUSH {
            if !self.conn.is_handshaking() && !out.is_empty() && self.pending() < CIPHER_BUDGET {
                self.encrypt(out)?;
            }
            if !self.wants_write() {
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

    /// Moves plaintext from `out` into records in `outgoing`, up to the budget: the queued
    /// chunks are gathered (one pass, as a `writev` would) and encrypted together, so a turn's
    /// lines share records instead of paying a record each.
    fn encrypt<C: Deref<Target = [u8]>>(&mut self, out: &mut OutQueue<C>) -> io::Result<()> {
        let room = CIPHER_BUDGET - self.pending();
        let mut gathered = Gather {
            buf: Vec::with_capacity(out.len().min(room)),
            room,
        };
        out.flush_to(&mut gathered)?;
        let plaintext = gathered.buf;
        if plaintext.is_empty() {
            return Ok(());
        }
        let encrypted = self.write_traffic(|traffic, outgoing| {
            encode_into(outgoing, |out| {
                traffic.encrypt(&plaintext, out).map_err(encode_error)
            })
        });
        match encrypted {
            Some(Ok(())) => Ok(()),
            Some(Err(e)) => Err(tls_error(e)),
            None => Err(tls_error(
                "cannot encrypt: the connection is not established",
            )),
        }
    }

    /// One write of the pending ciphertext; true if the socket took less than it was offered.
    fn write<S: Write>(&mut self, sock: &mut S) -> io::Result<bool> {
        let offered = self.pending();
        let n = sock.write(&self.outgoing[self.sent..])?;
        self.sent += n;
        if self.sent == self.outgoing.len() {
            // Written: the buffer goes back, an idle connection holds none.
            self.outgoing = Vec::new();
            self.sent = 0;
        }
        Ok(n < offered)
    }
}

/// An encryption error as an encoding one: too small a buffer is asked again, bigger.
fn encode_error(e: EncryptError) -> EncodeError {
    match e {
        EncryptError::InsufficientSize(e) => EncodeError::InsufficientSize(e),
        _ => EncodeError::AlreadyEncoded,
    }
}

/// Appends what `encode` writes to `out`, growing it to the size rustls asks for.
fn encode_into(
    out: &mut Vec<u8>,
    mut encode: impl FnMut(&mut [u8]) -> Result<usize, EncodeError>,
) -> Result<(), rustls::Error> {
    let start = out.len();
    let mut size = RECORD_PAYLOAD + RECORD_OVERHEAD;
    loop {
        out.resize(start + size, 0);
        match encode(&mut out[start..]) {
            Ok(n) => {
                out.truncate(start + n);
                return Ok(());
            }
            Err(EncodeError::InsufficientSize(InsufficientSizeError { required_size }))
                if required_size > size =>
            {
                size = required_size;
            }
            Err(_) => {
                out.truncate(start);
                return Err(rustls::Error::General("cannot encode a TLS message".into()));
            }
        }
    }
}

/// The plaintext of a flush, gathered from the queue's chunks up to `room` bytes (the queue
/// sees a `writev` that takes what fits).
struct Gather {
    buf: Vec<u8>,
    room: usize,
}

impl Write for Gather {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.write_vectored(&[IoSlice::new(buf)])
    }

    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        let mut n = 0;
        for b in bufs {
            let take = b.len().min(self.room - n);
            self.buf.extend_from_slice(&b[..take]);
            n += take;
            if n == self.room {
                break;
            }
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
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
        /// Bytes one read gives at most (0: no limit), to split records across reads.
        read_limit: usize,
    }

    /// The server's end of a [`Pipe`].
    struct ServerEnd<'a>(&'a mut Pipe);

    impl Read for ServerEnd<'_> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            if self.0.to_server.is_empty() {
                return Err(io::ErrorKind::WouldBlock.into());
            }
            let mut n = buf.len().min(self.0.to_server.len());
            if self.0.read_limit > 0 {
                n = n.min(self.0.read_limit);
            }
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
        let (config, client) = configs();
        let server = Tls::new(config).unwrap();
        let name = ServerName::try_from("localhost").unwrap();
        (server, ClientConnection::new(client, name).unwrap())
    }

    /// A server configuration with a new self-signed pair, and a client's trusting it.
    fn configs() -> (Arc<ServerConfig>, Arc<ClientConfig>) {
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
        let server = load(&files).unwrap();
        let mut roots = RootCertStore::empty();
        roots.add(cert.cert.der().clone()).unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        (server, Arc::new(config))
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

        // Fifty shared chunks, as a turn of broadcasts leaves them: one write.
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

    /// The peer's records arrive a few bytes at a time (as a slow link or a hostile client
    /// may send them): the handshake and the data still come through whole, and nothing is
    /// held once the records are complete.
    #[test]
    fn records_split_across_reads_are_joined() {
        let (mut server, mut client) = pair();
        let mut pipe = Pipe {
            room: usize::MAX,
            read_limit: 7,
            ..Pipe::default()
        };
        handshake(&mut server, &mut client, &mut pipe);
        let text = b"a line split into many small reads\n".repeat(100);
        client.writer().write_all(&text).unwrap();
        let mut to = Vec::new();
        client.write_tls(&mut to).unwrap();
        pipe.to_server.extend(to);
        pipe.read_limit = 3;
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
        assert_eq!(got, text);
        assert_eq!(server.incoming.capacity(), 0, "no buffer is kept");
        assert_eq!(server.plain.capacity(), 0);
        assert_eq!(server.outgoing.capacity(), 0);
    }

    /// A server configuration and a real ClientHello for it, made once for the property test.
    fn fixture() -> &'static (Arc<ServerConfig>, Vec<u8>, Arc<ClientConfig>) {
        static FIXTURE: std::sync::OnceLock<(Arc<ServerConfig>, Vec<u8>, Arc<ClientConfig>)> =
            std::sync::OnceLock::new();
        FIXTURE.get_or_init(|| {
            let (config, client_config) = configs();
            let name = ServerName::try_from("localhost").unwrap();
            let mut client = ClientConnection::new(client_config.clone(), name).unwrap();
            let mut hello = Vec::new();
            client.write_tls(&mut hello).unwrap();
            (config, hello, client_config)
        })
    }

    /// Feeds `input` to a new server connection, `limit` bytes a read, until it stops.
    fn feed(input: &[u8], limit: usize) -> io::Result<Input> {
        let (config, ..) = fixture();
        let mut server = Tls::new(config.clone()).unwrap();
        let mut pipe = Pipe {
            room: usize::MAX,
            read_limit: limit,
            ..Pipe::default()
        };
        pipe.to_server.extend(input);
        let mut buf = [0u8; 4096];
        loop {
            let read = server.read(&mut ServerEnd(&mut pipe), &mut buf);
            assert!(server.incoming.len() <= MAX_INCOMING);
            match read {
                Ok(Input::Nothing | Input::Bytes(_)) => {}
                other => return other,
            }
        }
    }

    proptest::proptest! {
        #![proptest_config(proptest::test_runner::Config::with_cases(200))]
        /// Whatever a peer sends (garbage, a ClientHello cut short or followed by garbage, a
        /// record header announcing more than comes), in reads of any size: the server never
        /// panics, holds at most `MAX_INCOMING`, and ends in an error or waiting for more.
        #[test]
        fn no_input_makes_the_server_panic_or_hold_more_than_its_bound(
            prefix in 0usize..3,
            cut in 0usize..400,
            tail in proptest::collection::vec(proptest::num::u8::ANY, 0..600),
            limit in 1usize..300,
        ) {
            let (_, hello, _) = fixture();
            let mut input = match prefix {
                0 => Vec::new(),
                1 => hello[..cut.min(hello.len())].to_vec(),
                _ => vec![0x16, 0x03, 0x01, 0x40, 0x00],
            };
            input.extend(&tail);
            match feed(&input, limit) {
                Err(e) => proptest::prop_assert!(
                    e.kind() == io::ErrorKind::WouldBlock || is_protocol_error(&e), "{e}"
                ),
                Ok(input) => proptest::prop_assert_eq!(input, Input::End),
            }
        }
    }

    proptest::proptest! {
        #![proptest_config(proptest::test_runner::Config::with_cases(64))]
        /// After a complete handshake, the peer's records cut short, altered or followed by
        /// garbage: the server never panics, ends in an error or waits, and can still flush.
        #[test]
        fn no_input_after_the_handshake_makes_the_server_panic(
            flip in 0usize..200,
            cut in 0usize..200,
            tail in proptest::collection::vec(proptest::num::u8::ANY, 0..300),
            limit in 1usize..100,
        ) {
            let (config, _, client_config) = fixture();
            let mut server = Tls::new(config.clone()).unwrap();
            let name = ServerName::try_from("localhost").unwrap();
            let mut client = ClientConnection::new(client_config.clone(), name).unwrap();
            let mut pipe = Pipe { room: usize::MAX, ..Pipe::default() };
            handshake(&mut server, &mut client, &mut pipe);
            client.writer().write_all(b"a line\nand another\n").unwrap();
            let mut records = Vec::new();
            client.write_tls(&mut records).unwrap();
            let flip = flip % records.len();
            records[flip] ^= 0x5a;
            records.truncate(records.len() - cut.min(records.len()));
            records.extend(&tail);
            pipe.to_server.extend(records);
            pipe.read_limit = limit;
            let mut buf = [0u8; 4096];
            loop {
                match server.read(&mut ServerEnd(&mut pipe), &mut buf) {
                    Ok(Input::Nothing | Input::Bytes(_)) => {}
                    Ok(Input::End) => break,
                    Err(e) => {
                        proptest::prop_assert!(
                            e.kind() == io::ErrorKind::WouldBlock || is_protocol_error(&e), "{e}"
                        );
                        break;
                    }
                }
            }
            let mut out: OutQueue<Rc<[u8]>> = OutQueue::default();
            out.push(Rc::from(&b"MSG x\r\n"[..]));
            let _ = server.flush(&mut out, &mut ServerEnd(&mut pipe));
            let _ = server.close_notify();
        }
    }

    /// A handshake message announced as 16 MiB, sent in full records: refused (by rustls or
    /// by the bound) long before it is held whole.
    #[test]
    fn a_huge_handshake_message_is_refused() {
        let mut input = Vec::new();
        let mut first = true;
        for _ in 0..20 {
            input.extend([0x16, 0x03, 0x03, 0x40, 0x00]);
            let mut payload = vec![0u8; 0x4000];
            if first {
                payload[..4].copy_from_slice(&[0x01, 0xff, 0xff, 0xff]);
                first = false;
            }
            input.extend(payload);
        }
        let err = feed(&input, 0).unwrap_err();
        assert!(is_protocol_error(&err), "{err}");
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
