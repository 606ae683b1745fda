//! TLS for the tests: a certificate made here with rcgen (as `pollchat cert` does), written to a
//! temporary directory for the server, and a line client over rustls and a blocking socket with
//! the same timeouts as [`super::Client`].

use std::io::{BufRead, BufReader, ErrorKind, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use pollchat::config::TlsFiles;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, ClientConnection, RootCertStore, StreamOwned};

use super::TIMEOUT;

/// A self-signed certificate for `localhost` and 127.0.0.1, and its key, as PEM files in a directory of their
/// own (removed on drop).
pub struct Cert {
    pub files: TlsFiles,
    /// The certificate, for clients to trust.
    pub der: CertificateDer<'static>,
    dir: PathBuf,
}

impl Cert {
    pub fn new() -> Cert {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "pollchat-test-tls-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::SeqCst)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let files = TlsFiles {
            cert: dir.join("cert.pem"),
            key: dir.join("key.pem"),
        };
        let der = Self::write(&files);
        Cert { files, der, dir }
    }

    /// Writes a new pair over `files`; returns its certificate.
    pub fn write(files: &TlsFiles) -> CertificateDer<'static> {
        let names = vec!["localhost".to_string(), "127.0.0.1".to_string()];
        let pair = rcgen::generate_simple_self_signed(names).unwrap();
        std::fs::write(&files.cert, pair.cert.pem()).unwrap();
        std::fs::write(&files.key, pair.signing_key.serialize_pem()).unwrap();
        pair.cert.der().clone()
    }

    /// Replaces the pair on disk with a new one (for a reload); returns its certificate.
    pub fn renew(&mut self) -> CertificateDer<'static> {
        self.der = Self::write(&self.files);
        self.der.clone()
    }
}

impl Drop for Cert {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A client configuration trusting `cert` alone.
pub fn client_config(cert: &CertificateDer<'static>) -> Arc<ClientConfig> {
    let mut roots = RootCertStore::empty();
    roots.add(cert.clone()).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    Arc::new(config)
}

/// A client of the line protocol (or IRC) over TLS.
pub struct TlsClient {
    stream: BufReader<StreamOwned<ClientConnection, TcpStream>>,
}

impl TlsClient {
    /// Connects and completes the handshake, trusting `cert` for `localhost`.
    pub fn connect(addr: SocketAddr, cert: &CertificateDer<'static>) -> TlsClient {
        Self::try_connect(addr, cert).expect("TLS handshake")
    }

    /// Connects; the handshake's error if it fails.
    pub fn try_connect(
        addr: SocketAddr,
        cert: &CertificateDer<'static>,
    ) -> std::io::Result<TlsClient> {
        let sock = TcpStream::connect_timeout(&addr, TIMEOUT)?;
        sock.set_read_timeout(Some(TIMEOUT))?;
        sock.set_write_timeout(Some(TIMEOUT))?;
        sock.set_nodelay(true)?;
        let name = ServerName::try_from("localhost").unwrap();
        let conn = ClientConnection::new(client_config(cert), name).unwrap();
        let mut stream = StreamOwned::new(conn, sock);
        while stream.conn.is_handshaking() {
            stream.conn.complete_io(&mut stream.sock)?;
        }
        Ok(TlsClient {
            stream: BufReader::new(stream),
        })
    }

    /// The certificate the server showed.
    pub fn server_certificate(&self) -> CertificateDer<'static> {
        let conn = &self.stream.get_ref().conn;
        conn.peer_certificates().unwrap()[0].clone().into_owned()
    }

    pub fn send(&mut self, line: &str) {
        let s = self.stream.get_mut();
        s.write_all(format!("{line}\n").as_bytes()).expect("send");
        s.flush().expect("send");
    }

    /// The next line, without its `\r\n`. Panics on timeout or end of stream.
    pub fn line(&mut self) -> String {
        self.try_line()
            .expect("connection closed while a line was expected")
    }

    /// The next line, or `None` at end of stream (a close_notify, or a reset).
    pub fn try_line(&mut self) -> Option<String> {
        let mut buf = Vec::new();
        match self.stream.read_until(b'\n', &mut buf) {
            Ok(0) => None,
            Ok(_) => {
                assert!(buf.ends_with(b"\r\n"), "server lines end in CRLF: {buf:?}");
                buf.truncate(buf.len() - 2);
                Some(String::from_utf8(buf).expect("server lines are UTF-8"))
            }
            Err(e)
                if matches!(
                    e.kind(),
                    ErrorKind::ConnectionReset | ErrorKind::UnexpectedEof
                ) =>
            {
                None
            }
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

    /// The socket under TLS (to shrink its buffers).
    pub fn socket(&self) -> &TcpStream {
        &self.stream.get_ref().sock
    }
}
