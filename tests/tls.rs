//! TLS doors end to end over real sockets, with a certificate made in the test: both protocols
//! over TLS in the same rooms as plain clients, garbage instead of a handshake, a handshake
//! that never ends, a TLS client that stops reading. TLS is served by the event loop only (the
//! threaded models refuse it), so these tests run under `--io poll`.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::tls::{Cert, TlsClient};
use common::{Client, IoModel, TIMEOUT, TestServer};
use pollchat::config::Config;

/// Reads until the server closes the connection; what it sent.
fn read_to_end(s: &mut TcpStream) -> Vec<u8> {
    s.set_read_timeout(Some(TIMEOUT)).unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return got,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return got,
            Err(e) => panic!("not closed within {TIMEOUT:?}: {e}"),
        }
    }
}

/// A line client over TLS, greeted and renamed to `nick`; `others` see it arrive.
fn join_tls(server: &TestServer, cert: &Cert, nick: &str, others: &mut [&mut Client]) -> TlsClient {
    let mut c = TlsClient::connect(server.tls_addr.unwrap(), &cert.der);
    let welcome = c.line();
    assert!(welcome.starts_with("WELCOME guest"), "{welcome}");
    let guest = welcome.split(' ').nth(1).unwrap().to_string();
    c.expect_prefix("NAMES #lobby");
    for o in others.iter_mut() {
        assert_eq!(o.line(), format!("JOIN #lobby {guest}"));
    }
    c.send(&format!("/nick {nick}"));
    c.expect_prefix(&format!("NICK {guest} {nick}"));
    for o in others.iter_mut() {
        assert_eq!(o.line(), format!("NICK {guest} {nick}"));
    }
    c
}

#[test]
fn line_clients_over_tls_chat_with_plain_ones() {
    let cert = Cert::new();
    let server = TestServer::with_tls(&cert, |c| c.flood_rate = 0.0);
    let mut plain = server.join_as("plain", &mut []);
    let mut secure = join_tls(&server, &cert, "secure", &mut [&mut plain]);
    secure.send("hello from TLS");
    assert_eq!(plain.line(), "MSG #lobby <secure> hello from TLS");
    plain.send("hello in clear");
    assert_eq!(secure.line(), "MSG #lobby <plain> hello in clear");
    // A burst of lines in one write is read, framed and relayed in order.
    let burst: String = (0..50).map(|i| format!("line {i}\n")).collect();
    secure.send(burst.trim_end());
    for i in 0..50 {
        assert_eq!(plain.line(), format!("MSG #lobby <secure> line {i}"));
    }
    secure.send("/quit bye");
    assert_eq!(secure.line(), "BYE quit: bye");
    assert_eq!(secure.try_line(), None, "closed with a close_notify");
    plain.expect_prefix("QUIT secure");
}

#[test]
fn irc_over_tls_shares_rooms_with_plain_irc_and_line_users() {
    let cert = Cert::new();
    let server = TestServer::with_tls(&cert, |_| {});
    let mut tls = TlsClient::connect(server.irc_tls_addr.unwrap(), &cert.der);
    tls.send("NICK sec\r");
    tls.send("USER sec 0 * :Secure\r");
    assert!(tls.line().starts_with(":pollchat 001 sec :Welcome"));
    tls.expect_prefix(":pollchat 422 ");
    tls.send("JOIN #lobby\r");
    tls.expect_prefix(":pollchat 366 sec #lobby");

    let mut irc = Client::connect(server.irc_addr.unwrap());
    irc.send("NICK clear\r");
    irc.send("USER clear 0 * :Clear\r");
    irc.expect_prefix(":pollchat 422 ");
    irc.send("JOIN #lobby\r");
    irc.expect_prefix(":pollchat 366 clear #lobby");
    tls.expect_prefix(":clear!");

    let mut line = server.join_as("liner", &mut []);
    tls.expect_prefix(":guest");
    tls.expect_prefix(":guest");

    tls.send("PRIVMSG #lobby :over TLS\r");
    assert!(
        irc.expect_prefix(":sec!")
            .ends_with("PRIVMSG #lobby :over TLS")
    );
    assert_eq!(line.expect_prefix("MSG"), "MSG #lobby <sec> over TLS");
    line.send("back in clear");
    assert!(
        tls.expect_prefix(":liner!")
            .ends_with("PRIVMSG #lobby :back in clear")
    );

    // Who is on TLS is told: WHOIS's 671, the user mode +z, the line protocol's /whois.
    irc.send("WHOIS sec\r");
    let whois: Vec<String> = std::iter::from_fn(|| Some(irc.line()))
        .take_while(|l| !l.starts_with(":pollchat 318 "))
        .collect();
    assert!(
        whois.contains(&":pollchat 671 clear sec :is using a secure connection".to_string()),
        "{whois:?}"
    );
    tls.send("WHOIS clear\r");
    let whois: Vec<String> = std::iter::from_fn(|| Some(tls.line()))
        .take_while(|l| !l.starts_with(":pollchat 318 "))
        .collect();
    assert!(!whois.iter().any(|l| l.contains(" 671 ")), "{whois:?}");
    tls.send("MODE sec\r");
    assert_eq!(tls.line(), ":pollchat 221 sec +z");
    irc.send("MODE clear\r");
    assert_eq!(irc.line(), ":pollchat 221 clear +");
    line.send("/whois sec");
    assert_eq!(
        line.expect_prefix("NOTICE sec is using"),
        "NOTICE sec is using a secure connection"
    );
}

#[test]
fn garbage_instead_of_a_handshake_gets_an_alert_and_the_server_goes_on() {
    let cert = Cert::new();
    let server = TestServer::with_tls(&cert, |_| {});
    for garbage in [
        &b"NICK plaintext\r\nUSER x 0 * :x\r\n"[..],
        // A handshake record holding a ClientHello one byte long.
        &b"\x16\x03\x01\x00\x05\x01\x00\x00\x01\x00"[..],
        &[0u8; 64][..],
    ] {
        for addr in [server.tls_addr.unwrap(), server.irc_tls_addr.unwrap()] {
            let mut s = TcpStream::connect(addr).unwrap();
            s.write_all(garbage).unwrap();
            let got = read_to_end(&mut s);
            assert_eq!(
                got.first(),
                Some(&0x15),
                "a TLS alert record, then the close, for {garbage:?}: {got:?}"
            );
        }
    }
    // Everyone else is still served, over TLS and in clear.
    let mut plain = server.join_as("plain", &mut []);
    let mut secure = join_tls(&server, &cert, "secure", &mut [&mut plain]);
    secure.send("still here");
    assert_eq!(plain.line(), "MSG #lobby <secure> still here");
}

#[test]
fn a_handshake_that_never_ends_is_cut_at_the_deadline_and_holds_its_address_until_then() {
    let cert = Cert::new();
    let server = TestServer::with_tls(&cert, |c| {
        c.tls_handshake_timeout = Duration::from_millis(300);
        c.max_per_ip = 1;
    });
    let started = Instant::now();
    // Connects, sends half a ClientHello, and waits.
    let mut stuck = TcpStream::connect(server.tls_addr.unwrap()).unwrap();
    stuck.write_all(b"\x16\x03\x01\x02\x00\x01").unwrap();
    // Its address is at --max-per-ip while it handshakes: a second connection is refused
    // (closed; a TLS client is told nothing in clear).
    let mut second = TcpStream::connect(server.tls_addr.unwrap()).unwrap();
    assert_eq!(read_to_end(&mut second), b"");
    // At the deadline it is closed without a word.
    assert_eq!(read_to_end(&mut stuck), b"");
    assert!(started.elapsed() >= Duration::from_millis(300));
    // Then the address may connect again, and completes its handshake.
    let mut c = TlsClient::connect(server.tls_addr.unwrap(), &cert.der);
    assert!(c.line().starts_with("WELCOME guest"));
}

#[test]
fn a_tls_client_that_stops_reading_is_cut_at_max_sendq() {
    let cert = Cert::new();
    let server = TestServer::with_tls(&cert, |c| {
        c.max_sendq = 64 * 1024;
        c.flood_rate = 0.0;
        c.send_buffer = Some(16 * 1024);
    });
    let mut alice = server.join_as("alice", &mut []);
    let mut bob = server.join_as("bob", &mut [&mut alice]);
    let carol = join_tls(&server, &cert, "carol", &mut [&mut alice, &mut bob]);
    // Carol now never reads.
    let _ = carol.socket();
    let text = "w".repeat(1000);
    let mut sent = 0;
    let reason = loop {
        alice.send(&text);
        sent += 1;
        let l = bob.line();
        if l.starts_with("QUIT carol") {
            break l;
        }
        assert_eq!(l, format!("MSG #lobby <alice> {text}"));
        assert!(sent < 50_000, "carol was never disconnected");
    };
    assert_eq!(reason, "QUIT carol send queue exceeded");
    alice.expect_prefix("QUIT carol");
    alice.send("/who");
    assert_eq!(alice.line(), "NAMES #lobby alice bob");
}

#[test]
fn the_threaded_models_refuse_tls_in_one_line() {
    let cert = Cert::new();
    for io in [IoModel::Threads, IoModel::ThreadsDirect] {
        let config = Config {
            listen: vec!["127.0.0.1:0".parse().unwrap()],
            irc_listen: vec![],
            tls: Some(cert.files.clone()),
            tls_listen: vec!["127.0.0.1:0".parse().unwrap()],
            ..Config::default()
        };
        let Err(e) = pollchat::driver::spawn(io, config) else {
            panic!("--io {io} took TLS");
        };
        assert_eq!(
            e.to_string(),
            format!("TLS (--tls-cert, --tls-key) needs --io poll: --io {io} speaks plain TCP only")
        );
    }
}

/// `--sts-duration`: IRC clients that speak CAP 302 are told in clear where the TLS port is,
/// and over TLS for how long to keep using it; older CAP clients, and servers without the
/// flag, say nothing of it.
#[test]
fn sts_sends_clear_clients_to_the_tls_port_and_tells_tls_clients_how_long() {
    let cert = Cert::new();
    let server = TestServer::with_tls(&cert, |c| {
        c.sts_duration = Some(Duration::from_secs(86_400))
    });
    let tls_port = server.irc_tls_addr.unwrap().port();
    let caps = "echo-message message-tags multi-prefix server-time userhost-in-names";
    let mut clear = Client::connect(server.irc_addr.unwrap());
    clear.send("CAP LS 302\r");
    assert_eq!(
        clear.line(),
        format!(":pollchat CAP * LS :{caps} sts=port={tls_port}")
    );
    clear.send("CAP LS\r");
    assert_eq!(clear.line(), format!(":pollchat CAP * LS :{caps}"));
    // It is information, not something to ask for.
    clear.send("CAP REQ :sts\r");
    assert_eq!(clear.line(), ":pollchat CAP * NAK :sts");
    let mut secure = TlsClient::connect(server.irc_tls_addr.unwrap(), &cert.der);
    secure.send("CAP LS 302\r");
    assert_eq!(
        secure.line(),
        format!(":pollchat CAP * LS :{caps} sts=duration=86400")
    );

    let without = TestServer::with_tls(&cert, |_| {});
    let mut clear = Client::connect(without.irc_addr.unwrap());
    clear.send("CAP LS 302\r");
    assert_eq!(clear.line(), format!(":pollchat CAP * LS :{caps}"));
}
