//! The IRC front door over real sockets: exact numerics and their order, and IRC and line users
//! sharing rooms. Every test runs under each I/O model: the sessions, not the drivers, speak IRC.

mod common;

use std::time::Duration;

use common::{Client, IoModel, LOCAL_CLOAK, TestServer, for_each_io, register_with};
use pollchat::config::Config;

/// Connects to the IRC listener and registers as `nick`, reading the whole welcome burst.
fn register(server: &TestServer, nick: &str) -> Client {
    let mut c = Client::connect(server.irc_addr.expect("IRC listener"));
    c.send(&format!("NICK {nick}\r"));
    c.send(&format!("USER {nick} 0 * :The {nick}\r"));
    assert!(
        c.line()
            .starts_with(&format!(":pollchat 001 {nick} :Welcome"))
    );
    c.expect_prefix(":pollchat 422 ");
    c
}

/// A server whose one operator is `name` with `password` (irctest's is operuser/operpassword).
fn oper_server(
    io: IoModel,
    name: &str,
    password: &str,
    tweak: impl FnOnce(&mut Config),
) -> TestServer {
    let hash = pollchat::session::oper::hash_password(password);
    let oper = pollchat::session::oper::Oper::parse(&format!("{name}:{hash}")).unwrap();
    TestServer::with_io(io, |c| {
        c.opers = vec![oper];
        tweak(c);
    })
}

/// Sends a PING and reads up to its PONG: every line before it is returned, so a test can
/// assert that nothing else (or exactly something) was sent to this client.
fn sync(c: &mut Client) -> Vec<String> {
    c.send("PING :sync");
    let mut before = Vec::new();
    loop {
        let l = c.line();
        if l == ":pollchat PONG pollchat :sync" {
            return before;
        }
        before.push(l);
    }
}

for_each_io!(registration_burst_in_order);
fn registration_burst_in_order(io: IoModel) {
    let server = TestServer::with_io(io, |c| {
        c.motd = Some(vec!["be nice".into(), "have fun".into()])
    });
    let mut c = Client::connect(server.irc_addr.unwrap());
    c.send("NICK alice");
    c.send("USER al 0 * :Alice Liddell");
    let codes: Vec<String> = (0..16).map(|_| c.line()).collect();
    let numerics: Vec<&str> = codes.iter().map(|l| l.split(' ').nth(1).unwrap()).collect();
    // Two 005 lines: one holds at most 13 tokens.
    let expected = [
        "001", "002", "003", "004", "005", "005", "251", "252", "254", "255", "265", "266", "375",
        "372", "372", "376",
    ];
    assert_eq!(numerics, expected, "{codes:#?}");
    assert_eq!(
        codes[0],
        ":pollchat 001 alice :Welcome to the pollchat IRC network, alice!al@f1c0136b.a16b454c.ip"
    );
    for token in [
        "CASEMAPPING=ascii",
        "CHANTYPES=#",
        "PREFIX=",
        "NICKLEN=32",
        "CHANNELLEN=50",
        "TOPICLEN=300",
        "NETWORK=pollchat",
        "CHANMODES=",
        "CHANLIMIT=#:32",
        "AWAYLEN=300",
        "UTF8ONLY",
        "TARGMAX=NAMES:1,NOTICE:4,PRIVMSG:4,TAGMSG:4,WHOIS:1",
        "MAXTARGETS=4",
    ] {
        let both = format!("{} {}", codes[4], codes[5]);
        assert!(both.contains(token), "005 lacks {token}: {both}");
    }
    for line in &codes[4..6] {
        // alice, the tokens, the trailing text: at most 15 parameters.
        let tokens = line.split(" :").next().unwrap().split(' ').count() - 3;
        assert!(tokens <= 13, "{line}");
    }
    assert_eq!(codes[13], ":pollchat 372 alice :- be nice");
    assert_eq!(codes[15], ":pollchat 376 alice :End of /MOTD command");
    assert!(sync(&mut c).is_empty());
}

for_each_io!(cap_negotiation_pauses_registration_until_cap_end);
fn cap_negotiation_pauses_registration_until_cap_end(io: IoModel) {
    let server = TestServer::start_io(io);
    let mut c = Client::connect(server.irc_addr.unwrap());
    c.send("CAP LS 302");
    assert_eq!(
        c.line(),
        ":pollchat CAP * LS :echo-message message-tags multi-prefix server-time userhost-in-names"
    );
    c.send("NICK bob");
    c.send("USER bob 0 * :Bob");
    c.send("CAP REQ :server-time bogus");
    assert_eq!(c.line(), ":pollchat CAP * NAK :server-time bogus");
    c.send("CAP REQ :server-time echo-message");
    assert_eq!(c.line(), ":pollchat CAP * ACK :server-time echo-message");
    c.send("CAP LIST");
    assert_eq!(c.line(), ":pollchat CAP * LIST :echo-message server-time");
    c.send("CAP FROB");
    assert_eq!(c.line(), ":pollchat 410 * FROB :Invalid CAP command");
    // Registration completes only now.
    c.send("CAP END");
    assert!(c.line().starts_with(":pollchat 001 bob "));
    c.expect_prefix(":pollchat 422 bob");
    // CAP works after registration too.
    c.send("CAP REQ :-echo-message");
    assert_eq!(c.line(), ":pollchat CAP bob ACK :-echo-message");
    c.send("CAP LIST");
    assert_eq!(c.line(), ":pollchat CAP bob LIST :server-time");
}

for_each_io!(commands_before_registration_and_reregistration);
fn commands_before_registration_and_reregistration(io: IoModel) {
    let server = TestServer::start_io(io);
    let mut c = Client::connect(server.irc_addr.unwrap());
    c.send("JOIN #lobby");
    assert_eq!(c.line(), ":pollchat 451 * :You have not registered");
    c.send("NICK 9bad");
    assert_eq!(c.line(), ":pollchat 432 * 9bad :Erroneous nickname");
    c.send("NICK");
    assert_eq!(c.line(), ":pollchat 431 * :No nickname given");
    c.send("USER x");
    assert_eq!(c.line(), ":pollchat 461 * USER :Not enough parameters");
    let _taken = register(&server, "carol");
    c.send("NICK Carol");
    assert_eq!(
        c.line(),
        ":pollchat 433 * Carol :Nickname is already in use"
    );
    c.send("NICK dave");
    c.send("USER dave 0 * :Dave");
    assert!(c.line().starts_with(":pollchat 001 dave "));
    c.expect_prefix(":pollchat 422 dave");
    c.send("USER dave 0 * :Again");
    assert_eq!(c.line(), ":pollchat 462 dave :You may not reregister");
}

for_each_io!(a_server_password_is_required_when_configured);
fn a_server_password_is_required_when_configured(io: IoModel) {
    let server = TestServer::with_io(io, |c| c.irc_password = Some("sesame".into()));
    let mut wrong = Client::connect(server.irc_addr.unwrap());
    wrong.send("PASS guess");
    wrong.send("NICK eve");
    wrong.send("USER eve 0 * :Eve");
    assert_eq!(
        wrong.expect_closed(),
        [
            ":pollchat 464 * :Password incorrect",
            "ERROR :Closing link: (bad password)"
        ]
    );
    let mut missing = Client::connect(server.irc_addr.unwrap());
    missing.send("NICK eve");
    missing.send("USER eve 0 * :Eve");
    assert_eq!(missing.line(), ":pollchat 464 * :Password incorrect");
    let mut right = Client::connect(server.irc_addr.unwrap());
    right.send("PASS sesame");
    right.send("NICK eve");
    right.send("USER eve 0 * :Eve");
    assert!(right.line().starts_with(":pollchat 001 eve "));
}

for_each_io!(an_address_that_guesses_passwords_is_refused_for_a_while);
fn an_address_that_guesses_passwords_is_refused_for_a_while(io: IoModel) {
    let server = TestServer::with_io(io, |c| {
        c.irc_password = Some("sesame".into());
        c.irc_password_tries = 2;
    });
    for guess in ["guess", "sesam"] {
        let mut c = Client::connect(server.irc_addr.unwrap());
        c.send(&format!("PASS {guess}"));
        c.send("NICK eve");
        c.send("USER eve 0 * :Eve");
        assert_eq!(c.line(), ":pollchat 464 * :Password incorrect");
        assert_eq!(c.expect_closed(), ["ERROR :Closing link: (bad password)"]);
    }
    // The third connection is refused before it can guess, even with the right password.
    let mut third = Client::connect(server.irc_addr.unwrap());
    assert_eq!(
        third.expect_closed(),
        ["ERROR :Closing link: (too many wrong passwords, try again later)"]
    );
    // The line protocol asks for no password: its clients from the address are still served.
    server.join();
}

for_each_io!(join_answers_in_order_and_join_0_parts_all);
fn join_answers_in_order_and_join_0_parts_all(io: IoModel) {
    let server = TestServer::start_io(io);
    let mut alice = register(&server, "alice");
    alice.send("JOIN #rust");
    alice.send("TOPIC #rust :all things Rust");
    assert_eq!(alice.line(), ":alice!alice@f1c0136b.a16b454c.ip JOIN #rust");
    assert_eq!(alice.line(), ":pollchat 353 alice = #rust :@alice");
    assert_eq!(
        alice.line(),
        ":pollchat 366 alice #rust :End of /NAMES list"
    );
    assert_eq!(
        alice.line(),
        ":alice!alice@f1c0136b.a16b454c.ip TOPIC #rust :all things Rust"
    );
    let mut bob = register(&server, "bob");
    bob.send("JOIN #rust,#lobby");
    assert_eq!(bob.line(), ":bob!bob@f1c0136b.a16b454c.ip JOIN #rust");
    assert_eq!(bob.line(), ":pollchat 332 bob #rust :all things Rust");
    let l = bob.line();
    assert!(l.starts_with(":pollchat 333 bob #rust alice 1"), "{l}");
    assert_eq!(bob.line(), ":pollchat 353 bob = #rust :@alice bob");
    assert_eq!(bob.line(), ":pollchat 366 bob #rust :End of /NAMES list");
    assert_eq!(bob.line(), ":bob!bob@f1c0136b.a16b454c.ip JOIN #lobby");
    assert_eq!(bob.line(), ":pollchat 353 bob = #lobby :bob");
    assert_eq!(bob.line(), ":pollchat 366 bob #lobby :End of /NAMES list");
    assert_eq!(alice.line(), ":bob!bob@f1c0136b.a16b454c.ip JOIN #rust");
    bob.send("JOIN 0");
    assert_eq!(bob.line(), ":bob!bob@f1c0136b.a16b454c.ip PART #rust");
    assert_eq!(bob.line(), ":bob!bob@f1c0136b.a16b454c.ip PART #lobby");
    assert_eq!(alice.line(), ":bob!bob@f1c0136b.a16b454c.ip PART #rust");
    assert!(sync(&mut bob).is_empty());
}

for_each_io!(irc_and_line_users_share_rooms_nicks_and_quits);
fn irc_and_line_users_share_rooms_nicks_and_quits(io: IoModel) {
    let server = TestServer::start_io(io);
    let mut line = server.join_as("liner", &mut []);
    let mut irc = register(&server, "ircer");
    irc.send("JOIN #lobby");
    assert_eq!(line.line(), "JOIN #lobby ircer");
    irc.expect_prefix(":pollchat 366 ircer #lobby");

    // Room messages both ways, actions included.
    line.send("hello from the line");
    assert_eq!(
        irc.line(),
        ":liner!line@f1c0136b.a16b454c.ip PRIVMSG #lobby :hello from the line"
    );
    line.send("/me waves");
    assert_eq!(
        irc.line(),
        ":liner!line@f1c0136b.a16b454c.ip PRIVMSG #lobby :\u{1}ACTION waves\u{1}"
    );
    irc.send("PRIVMSG #lobby :hello from IRC");
    assert_eq!(line.line(), "MSG #lobby <ircer> hello from IRC");
    irc.send("PRIVMSG #lobby :\u{1}ACTION bows\u{1}");
    assert_eq!(line.line(), "MSG #lobby * ircer bows");
    irc.send("NOTICE #lobby :a notice");
    assert_eq!(line.line(), "MSG #lobby -ircer- a notice");

    // Private messages both ways; nicks are one namespace.
    line.send("/msg IRCER psst");
    assert_eq!(
        irc.line(),
        ":liner!line@f1c0136b.a16b454c.ip PRIVMSG ircer :psst"
    );
    irc.send("PRIVMSG liner :psst back");
    assert_eq!(line.line(), "PRIV <ircer> psst back");
    irc.send("NICK liner");
    assert_eq!(
        irc.line(),
        ":pollchat 433 ircer liner :Nickname is already in use"
    );

    // Nick changes and quits are seen in both protocols, once.
    irc.send("NICK ircy");
    assert_eq!(irc.line(), ":ircer!ircer@f1c0136b.a16b454c.ip NICK :ircy");
    assert_eq!(line.line(), "NICK ircer ircy");
    line.send("/nick lina");
    assert_eq!(irc.line(), ":liner!line@f1c0136b.a16b454c.ip NICK :lina");
    line.send("/quit off now");
    assert_eq!(
        irc.line(),
        ":lina!line@f1c0136b.a16b454c.ip QUIT :quit: off now"
    );
    let mut line2 = server.join_as("watcher", &mut []);
    let joined = irc.line();
    assert!(
        joined.starts_with(":guest") && joined.ends_with("!line@f1c0136b.a16b454c.ip JOIN #lobby"),
        "{joined}"
    );
    assert!(
        irc.line()
            .ends_with("!line@f1c0136b.a16b454c.ip NICK :watcher")
    );
    irc.send("QUIT :bye");
    assert_eq!(irc.expect_closed(), ["ERROR :Closing link: (quit: bye)"]);
    assert_eq!(line2.line(), "QUIT ircy quit: bye");
}

for_each_io!(echo_message_and_server_time);
fn echo_message_and_server_time(io: IoModel) {
    let server = TestServer::with_io(io, |c| c.history = 10);
    let mut line = server.join_as("liner", &mut []);
    line.send("before anyone from IRC came");
    line.sync();
    let mut c = Client::connect(server.irc_addr.unwrap());
    c.send("CAP REQ :echo-message server-time");
    assert_eq!(c.line(), ":pollchat CAP * ACK :echo-message server-time");
    c.send("CAP END");
    c.send("NICK timed");
    c.send("USER timed 0 * :T");
    c.expect_prefix(":pollchat 422 timed");
    c.send("JOIN #lobby");
    c.expect_prefix(":pollchat 366 timed #lobby");
    // History replayed with the original time.
    let h = c.line();
    assert!(
        h.starts_with("@time=20")
            && h.ends_with(
                " :liner!line@f1c0136b.a16b454c.ip PRIVMSG #lobby :before anyone from IRC came"
            ),
        "{h}"
    );
    // Own messages come back (echo-message), tagged like everyone's.
    c.send("PRIVMSG #lobby :echo me");
    let e = c.line();
    assert!(
        e.starts_with("@time=20")
            && e.ends_with(" :timed!timed@f1c0136b.a16b454c.ip PRIVMSG #lobby :echo me"),
        "{e}"
    );
    assert_eq!(line.expect_prefix("MSG"), "MSG #lobby <timed> echo me");
    // A client without server-time gets no replay.
    let mut plain = register(&server, "plain");
    plain.send("JOIN #lobby");
    plain.expect_prefix(":pollchat 366 plain #lobby");
    assert!(sync(&mut plain).is_empty());
}

for_each_io!(queries_names_list_who_whois_away_ison_userhost);
fn queries_names_list_who_whois_away_ison_userhost(io: IoModel) {
    let server = TestServer::start_io(io);
    let mut a = register(&server, "alice");
    let mut b = register(&server, "bob");
    a.send("JOIN #x");
    a.expect_prefix(":pollchat 366");
    b.send("JOIN #x");
    b.expect_prefix(":pollchat 366");
    a.line(); // bob's join
    b.send("AWAY :lunch");
    assert_eq!(
        b.line(),
        ":pollchat 306 bob :You have been marked as being away"
    );
    a.send("PRIVMSG bob :there?");
    assert_eq!(a.line(), ":pollchat 301 alice bob :lunch");
    a.send("NOTICE bob :no auto-reply to notices");
    assert!(sync(&mut a).is_empty());
    assert_eq!(
        b.line(),
        ":alice!alice@f1c0136b.a16b454c.ip PRIVMSG bob :there?"
    );
    assert_eq!(
        b.line(),
        ":alice!alice@f1c0136b.a16b454c.ip NOTICE bob :no auto-reply to notices"
    );

    a.send("NAMES #x");
    assert_eq!(a.line(), ":pollchat 353 alice = #x :@alice bob");
    assert_eq!(a.line(), ":pollchat 366 alice #x :End of /NAMES list");
    a.send("WHO #x");
    assert_eq!(
        a.line(),
        ":pollchat 352 alice #x alice f1c0136b.a16b454c.ip pollchat alice H@ :0 The alice"
    );
    assert_eq!(
        a.line(),
        ":pollchat 352 alice #x bob f1c0136b.a16b454c.ip pollchat bob G :0 The bob"
    );
    assert_eq!(a.line(), ":pollchat 315 alice #x :End of /WHO list");
    a.send("WHOIS bob");
    assert_eq!(
        a.line(),
        ":pollchat 311 alice bob bob f1c0136b.a16b454c.ip * :The bob"
    );
    assert_eq!(a.line(), ":pollchat 312 alice bob pollchat :pollchat");
    assert_eq!(a.line(), ":pollchat 319 alice bob :#x");
    assert_eq!(a.line(), ":pollchat 301 alice bob :lunch");
    assert!(a.line().starts_with(":pollchat 317 alice bob "));
    assert_eq!(a.line(), ":pollchat 318 alice bob :End of /WHOIS list");
    a.send("LIST");
    assert_eq!(a.line(), ":pollchat 321 alice Channel :Users  Name");
    // The empty lobby is not listed to IRC clients.
    assert_eq!(a.line(), ":pollchat 322 alice #x 2 :");
    assert_eq!(a.line(), ":pollchat 323 alice :End of /LIST");
    a.send("ISON bob nobody ALICE");
    assert_eq!(a.line(), ":pollchat 303 alice :bob alice");
    a.send("USERHOST bob alice");
    assert_eq!(
        a.line(),
        ":pollchat 302 alice :bob=-bob@f1c0136b.a16b454c.ip alice=+alice@f1c0136b.a16b454c.ip"
    );
    b.send("AWAY");
    assert_eq!(
        b.line(),
        ":pollchat 305 bob :You are no longer marked as being away"
    );
    a.send("LUSERS");
    assert_eq!(
        a.line(),
        ":pollchat 251 alice :There are 2 users and 0 invisible on 1 servers"
    );
    sync(&mut a);
}

for_each_io!(mode_queries_are_answered_and_changes_refused);
fn mode_queries_are_answered_and_changes_refused(io: IoModel) {
    let server = TestServer::start_io(io);
    let mut a = register(&server, "alice");
    a.send("JOIN #m");
    a.expect_prefix(":pollchat 366");
    a.send("MODE #m");
    assert_eq!(a.line(), ":pollchat 324 alice #m +nt");
    assert!(a.line().starts_with(":pollchat 329 alice #m 1"));
    a.send("MODE #m b");
    assert_eq!(a.line(), ":pollchat 368 alice #m :End of channel ban list");
    // Bob is no operator of #m: changes are refused.
    let mut b = register(&server, "bob");
    b.send("JOIN #m");
    b.expect_prefix(":pollchat 366");
    a.expect_prefix(":bob!");
    b.send("MODE #m +m");
    assert_eq!(
        b.line(),
        ":pollchat 482 bob #m :You're not channel operator"
    );
    b.send("MODE #m +x");
    assert_eq!(
        b.line(),
        ":pollchat 482 bob #m :You're not channel operator"
    );
    a.send("MODE #m +x");
    assert_eq!(
        a.line(),
        ":pollchat 472 alice x :is unknown mode char to me"
    );
    // User modes exist now (+i, +w): setting one is echoed as a MODE.
    a.send("MODE alice +i");
    assert_eq!(a.line(), ":alice MODE alice :+i");
    a.send("MODE #nowhere");
    assert_eq!(a.line(), ":pollchat 403 alice #nowhere :No such channel");
}

for_each_io!(error_numerics);
fn error_numerics(io: IoModel) {
    let server = TestServer::start_io(io);
    let mut a = register(&server, "alice");
    let _b = register(&server, "bob");
    let cases = [
        (
            "PRIVMSG nobody :hi",
            ":pollchat 401 alice nobody :No such nick/channel",
        ),
        (
            "PRIVMSG #nowhere :hi",
            ":pollchat 403 alice #nowhere :No such channel",
        ),
        (
            "PRIVMSG #lobby :hi",
            ":pollchat 404 alice #lobby :Cannot send to channel",
        ),
        (
            "PRIVMSG",
            ":pollchat 411 alice :No recipient given (PRIVMSG)",
        ),
        ("PRIVMSG bob", ":pollchat 412 alice :No text to send"),
        ("FROB x", ":pollchat 421 alice FROB :Unknown command"),
        ("NICK", ":pollchat 431 alice :No nickname given"),
        ("NICK 9x", ":pollchat 432 alice 9x :Erroneous nickname"),
        (
            "NICK bob",
            ":pollchat 433 alice bob :Nickname is already in use",
        ),
        (
            "PART #lobby",
            ":pollchat 442 alice #lobby :You're not on that channel",
        ),
        ("TOPIC", ":pollchat 461 alice TOPIC :Not enough parameters"),
        ("JOIN bad", ":pollchat 403 alice bad :No such channel"),
        (
            "USER a b c d",
            ":pollchat 462 alice :You may not reregister",
        ),
    ];
    for (sent, expected) in cases {
        a.send(sent);
        assert_eq!(a.line(), expected, "after {sent}");
    }
}

for_each_io!(bad_lines_are_refused_and_the_connection_stays);
fn bad_lines_are_refused_and_the_connection_stays(io: IoModel) {
    let server = TestServer::start_io(io);
    let mut a = register(&server, "alice");
    let mut line = server.join_as("liner", &mut []);
    a.send("JOIN #lobby");
    a.expect_prefix(":pollchat 366");
    line.line(); // alice's join
    a.send(&format!("PRIVMSG #lobby :{}", "x".repeat(600)));
    assert_eq!(a.line(), ":pollchat 417 alice :Input line was too long");
    a.send_raw(b"PRIVMSG #lobby :caf\xe9\r\n");
    assert_eq!(
        a.line(),
        ":pollchat FAIL PRIVMSG INVALID_UTF8 :Message rejected: this server only accepts UTF-8"
    );
    a.send_raw(b"PRIVMSG #lobby :nul\0byte\r\n");
    assert_eq!(
        a.line(),
        ":pollchat FAIL PRIVMSG INVALID_TEXT :Message rejected: it contains a NUL byte"
    );
    a.send_raw(b"\r\n\n");
    // A bare CR inside a message is refused: it could split the line for someone else.
    a.send_raw(b"PRIVMSG #lobby :one\rMSG #lobby <liner> forged\r\n");
    assert_eq!(
        a.line(),
        ":pollchat FAIL * INVALID_TEXT :text may not contain CR, LF or NUL"
    );
    // Formatting codes are fine for IRC, and reach line users without control characters.
    a.send("PRIVMSG #lobby :\u{2}bold\u{2} move");
    assert_eq!(line.line(), "MSG #lobby <alice> bold move");
    a.send("PRIVMSG #lobby :still here");
    assert_eq!(line.line(), "MSG #lobby <alice> still here");
}

for_each_io!(silent_clients_are_pinged_then_timed_out);
fn silent_clients_are_pinged_then_timed_out(io: IoModel) {
    let server = TestServer::with_io(io, |c| {
        c.irc_ping_after = Duration::from_millis(200);
        c.irc_ping_timeout = Duration::from_millis(600);
        c.flood_rate = 0.0;
    });
    let mut line = server.join_as("liner", &mut []);
    let mut a = register(&server, "alice");
    a.send("JOIN #lobby");
    a.expect_prefix(":pollchat 366");
    assert_eq!(line.line(), "JOIN #lobby alice");
    // Answering the PING keeps the client.
    assert_eq!(a.line(), "PING :pollchat");
    a.send("PONG :pollchat");
    assert_eq!(a.line(), "PING :pollchat");
    // Not answering ends it; its rooms are told in both protocols.
    assert_eq!(a.expect_closed(), ["ERROR :Closing link: (ping timeout)"]);
    assert_eq!(line.line(), "QUIT alice ping timeout");
}

for_each_io!(unregistered_clients_are_closed_after_the_deadline);
fn unregistered_clients_are_closed_after_the_deadline(io: IoModel) {
    let server = TestServer::with_io(io, |c| c.irc_register_timeout = Duration::from_millis(200));
    let mut c = Client::connect(server.irc_addr.unwrap());
    c.send("NICK slowpoke");
    assert_eq!(
        c.expect_closed(),
        ["ERROR :Closing link: (registration timeout)"]
    );
}

for_each_io!(limits_apply_to_irc_connections_too);
fn limits_apply_to_irc_connections_too(io: IoModel) {
    let server = TestServer::with_io(io, |c| c.max_clients = 1);
    let _a = register(&server, "alice");
    let mut b = Client::connect(server.irc_addr.unwrap());
    assert_eq!(b.expect_closed(), ["ERROR :Closing link: (server full)"]);
}

for_each_io!(notices_and_tag_messages_are_never_answered_with_errors);
fn notices_and_tag_messages_are_never_answered_with_errors(io: IoModel) {
    let server = TestServer::start_io(io);
    let mut a = register(&server, "alice");
    a.send("NOTICE nobody :x");
    a.send("NOTICE #nowhere :x");
    a.send("NOTICE");
    a.send("@+typing=active TAGMSG #lobby");
    assert!(sync(&mut a).is_empty());
}

for_each_io!(queries_about_what_does_not_exist_still_end_their_lists);
fn queries_about_what_does_not_exist_still_end_their_lists(io: IoModel) {
    let server = TestServer::start_io(io);
    let mut a = register(&server, "alice");
    a.send("WHOIS ghost");
    assert_eq!(a.line(), ":pollchat 401 alice ghost :No such nick/channel");
    assert_eq!(a.line(), ":pollchat 318 alice ghost :End of /WHOIS list");
    a.send("WHO ghost");
    assert_eq!(a.line(), ":pollchat 315 alice ghost :End of /WHO list");
    a.send("NAMES #ghosts");
    assert_eq!(a.line(), ":pollchat 366 alice #ghosts :End of /NAMES list");
    // A control character sent in a PING token is not echoed back.
    a.send_raw(b"PING :a\x01b\r\n");
    assert_eq!(a.line(), ":pollchat PONG pollchat :ab");
    // A line that is only a source prefix has no command: it is ignored.
    a.send(":alice");
    assert!(sync(&mut a).is_empty());
}

for_each_io!(comma_lists_reach_each_target_once_and_are_capped);
/// One line must not buy dozens of fan-outs: repeated targets count once, and past TARGMAX the
/// client is told (407) and the rest ignored.
fn comma_lists_reach_each_target_once_and_are_capped(io: IoModel) {
    let server = TestServer::start_io(io);
    let mut a = register(&server, "alice");
    let mut b = register(&server, "bob");
    b.send("JOIN #x");
    b.expect_prefix(":pollchat 366");
    a.send("JOIN #x");
    a.expect_prefix(":pollchat 366");
    assert_eq!(b.line(), ":alice!alice@f1c0136b.a16b454c.ip JOIN #x");
    a.send("PRIVMSG #x,#X,bob,BOB,#x :once each");
    assert_eq!(
        b.line(),
        ":alice!alice@f1c0136b.a16b454c.ip PRIVMSG #x :once each"
    );
    assert_eq!(
        b.line(),
        ":alice!alice@f1c0136b.a16b454c.ip PRIVMSG bob :once each"
    );
    assert_eq!(sync(&mut b), Vec::<String>::new());
    assert_eq!(sync(&mut a), Vec::<String>::new());
    a.send("PRIVMSG bob,n1,n2,n3,n4,n5 :many");
    assert_eq!(
        b.line(),
        ":alice!alice@f1c0136b.a16b454c.ip PRIVMSG bob :many"
    );
    assert_eq!(
        sync(&mut a),
        [
            ":pollchat 407 alice n4 :Too many targets. The rest were ignored",
            ":pollchat 401 alice n1 :No such nick/channel",
            ":pollchat 401 alice n2 :No such nick/channel",
            ":pollchat 401 alice n3 :No such nick/channel",
        ]
    );
    // NAMES and WHOIS take one target.
    a.send("NAMES #x,#lobby");
    a.expect_prefix(":pollchat 407 alice #lobby ");
    a.expect_prefix(":pollchat 353 alice = #x :");
    a.expect_prefix(":pollchat 366 alice #x ");
    assert_eq!(sync(&mut b), Vec::<String>::new());
}

for_each_io!(a_long_line_from_a_line_user_reaches_irc_users_in_lines_that_fit);
/// A line user may send up to `--max-line` (4096) bytes; an IRC client must never get a line
/// over 512 bytes (it would cut it and read the rest as a line of its own), so the message
/// arrives as several PRIVMSGs that together are the whole text.
fn a_long_line_from_a_line_user_reaches_irc_users_in_lines_that_fit(io: IoModel) {
    let server = TestServer::start_io(io);
    let mut irc = register(&server, "ircer");
    irc.send("JOIN #lobby");
    irc.expect_prefix(":pollchat 366");
    let mut liner = server.join_as("liner", &mut []);
    while !irc.line().ends_with(" NICK :liner") {}
    let text: String = (0..1500).map(|i| ["é", "a", " ", "€"][i % 4]).collect();
    liner.send(&text);
    let head = ":liner!line@f1c0136b.a16b454c.ip PRIVMSG #lobby :";
    let mut whole = String::new();
    while whole.len() < text.len() {
        let line = irc.line();
        assert!(line.len() + 2 <= 512, "{} bytes", line.len() + 2);
        whole.push_str(line.strip_prefix(head).expect(&line));
    }
    assert_eq!(whole, text);
    assert_eq!(sync(&mut irc), Vec::<String>::new());
}

for_each_io!(service_names_are_refused_as_nicks_before_and_after_registration);
fn service_names_are_refused_as_nicks_before_and_after_registration(io: IoModel) {
    let server = TestServer::start_io(io);
    let mut c = Client::connect(server.irc_addr.unwrap());
    for nick in ["chanserv", "NickServ", "POLLCHAT"] {
        c.send(&format!("NICK {nick}"));
        assert_eq!(
            c.line(),
            format!(":pollchat 432 * {nick} :Erroneous nickname")
        );
    }
    c.send("NICK chan");
    c.send("USER chan 0 * :Chan");
    assert!(c.line().starts_with(":pollchat 001 chan "));
    c.expect_prefix(":pollchat 422 chan");
    c.send("NICK chanserv");
    assert_eq!(c.line(), ":pollchat 432 chan chanserv :Erroneous nickname");
    assert!(sync(&mut c).is_empty());
}

for_each_io!(a_room_name_with_a_direction_override_is_refused);
fn a_room_name_with_a_direction_override_is_refused(io: IoModel) {
    let server = TestServer::start_io(io);
    let mut a = register(&server, "alice");
    let mut line = server.join_as("liner", &mut []);
    // The echoed name loses the override, so the numeric reads as sent.
    a.send("JOIN #\u{202e}ybbol");
    assert_eq!(a.line(), ":pollchat 403 alice #ybbol :No such channel");
    a.send("JOIN #lobby");
    a.expect_prefix(":pollchat 366 alice #lobby");
    assert_eq!(line.line(), "JOIN #lobby alice");
    // A topic keeps its text and loses the override.
    a.send("TOPIC #lobby :\u{202e}cipot\u{2066}");
    assert_eq!(
        a.line(),
        ":alice!alice@f1c0136b.a16b454c.ip TOPIC #lobby :cipot"
    );
    assert_eq!(line.line(), "TOPIC #lobby alice cipot");
}

for_each_io!(refusals_of_long_bad_lines_fit_in_512_bytes);
/// A 500-byte line with a bad byte at its end, or a 500-byte command: the refusal echoes part of
/// it, and must still be one line of at most 512 bytes with its own text whole.
fn refusals_of_long_bad_lines_fit_in_512_bytes(io: IoModel) {
    let server = TestServer::start_io(io);
    let mut a = register(&server, "alice");
    let mut bad = "A".repeat(490).into_bytes();
    bad.extend_from_slice(b" \xff\r\n");
    a.send_raw(&bad);
    let fail = a.line();
    assert!(
        fail.starts_with(":pollchat FAIL ") && fail.contains(" INVALID_UTF8 :"),
        "{fail}"
    );
    assert!(fail.len() + 2 <= 512, "{} bytes", fail.len() + 2);
    a.send(&"Q".repeat(500));
    let unknown = a.line();
    assert!(unknown.ends_with(" :Unknown command"), "{unknown}");
    assert!(unknown.len() + 2 <= 512, "{} bytes", unknown.len() + 2);
    assert_eq!(sync(&mut a), Vec::<String>::new());
}

for_each_io!(others_see_a_cloaked_host_and_only_the_user_itself_its_address);
/// No line another user receives (JOIN, PRIVMSG, WHO, WHOIS, USERHOST) carries a client's IP
/// address, only its cloak; two connections from one address share one cloak; the user's own
/// WHOIS tells it where it connects from (378), and nobody else's does.
fn others_see_a_cloaked_host_and_only_the_user_itself_its_address(io: IoModel) {
    let server = TestServer::start_io(io);
    let mut a = register(&server, "alice");
    let mut b = register(&server, "bob");
    a.send("JOIN #x");
    a.expect_prefix(":pollchat 366");
    b.send("JOIN #x");
    b.expect_prefix(":pollchat 366");
    a.send("PRIVMSG #x :hello");
    a.send("PRIVMSG bob :psst");
    // alice sees bob's JOIN with his cloak.
    let joined = sync(&mut a);
    assert_eq!(joined, [format!(":bob!bob@{LOCAL_CLOAK} JOIN #x")]);
    b.send("WHO #x");
    b.send("WHOIS alice");
    b.send("USERHOST alice");
    let seen = sync(&mut b);
    let cloaked = format!("alice!alice@{LOCAL_CLOAK}");
    assert!(
        seen.contains(&format!(":{cloaked} PRIVMSG #x :hello")),
        "{seen:#?}"
    );
    assert!(seen.contains(&format!(":{cloaked} PRIVMSG bob :psst")));
    assert!(seen.contains(&format!(
        ":pollchat 352 bob #x alice {LOCAL_CLOAK} pollchat alice H@ :0 The alice"
    )));
    // Two connections from one address: one cloak.
    assert!(seen.contains(&format!(
        ":pollchat 352 bob #x bob {LOCAL_CLOAK} pollchat bob H :0 The bob"
    )));
    assert!(seen.contains(&format!(
        ":pollchat 311 bob alice alice {LOCAL_CLOAK} * :The alice"
    )));
    assert!(seen.contains(&format!(":pollchat 302 bob :alice=+alice@{LOCAL_CLOAK}")));
    assert!(!seen.iter().any(|l| l.contains(" 378 ")), "{seen:#?}");
    assert!(!seen.iter().any(|l| l.contains("127.0.0.1")), "{seen:#?}");
    a.send("WHOIS alice");
    let own = sync(&mut a);
    assert!(own.contains(&format!(
        ":pollchat 311 alice alice alice {LOCAL_CLOAK} * :The alice"
    )));
    assert!(
        own.contains(
            &":pollchat 378 alice alice :is connecting from *@127.0.0.1 127.0.0.1".to_string()
        ),
        "{own:#?}"
    );
    assert_eq!(own.iter().filter(|l| l.contains("127.0.0.1")).count(), 1);
}

for_each_io!(a_server_without_a_cloak_key_cloaks_with_a_random_one);
fn a_server_without_a_cloak_key_cloaks_with_a_random_one(io: IoModel) {
    let server = TestServer::with_io(io, |c| c.cloak_key = None);
    let mut a = register(&server, "alice");
    let mut b = register(&server, "bob");
    for nick in ["alice", "bob"] {
        b.send(&format!("USERHOST {nick}"));
    }
    let seen = sync(&mut b);
    let host = |l: &str| l.rsplit_once('@').map(|(_, h)| h.to_string()).unwrap();
    let (alice, bob) = (host(&seen[0]), host(&seen[1]));
    assert_eq!(alice, bob, "one address, one cloak");
    assert_ne!(alice, LOCAL_CLOAK, "another key, another cloak");
    assert!(
        alice.ends_with(".ip") && !alice.contains("127.0.0.1"),
        "{alice}"
    );
    sync(&mut a);
}

for_each_io!(operators_moderate_rooms_across_both_protocols);
/// The creator of a room operates it; operators give voice and operator, moderate (+m), lock
/// the topic (+t, on by default), kick and ban, and line and IRC users moderate each other.
fn operators_moderate_rooms_across_both_protocols(io: IoModel) {
    let server = TestServer::start_io(io);
    let mut alice = register(&server, "alice");
    alice.send("JOIN #mod");
    assert_eq!(
        alice.expect_prefix(":pollchat 353"),
        ":pollchat 353 alice = #mod :@alice"
    );
    alice.expect_prefix(":pollchat 366");
    // Line user lena joins; alice sees her.
    let mut lena = server.join_as("lena", &mut []);
    lena.send("/join #mod");
    assert_eq!(lena.line(), "JOIN #mod lena");
    assert_eq!(lena.line(), "NAMES #mod @alice lena");
    alice.expect_prefix(":lena!");
    // +t: lena may not set the topic; alice may.
    lena.send("/topic mine now");
    assert_eq!(
        lena.line(),
        "ERROR not-operator you are not an operator of #mod"
    );
    // +m: only operators and voiced members speak.
    alice.send("MODE #mod +m");
    let mode = alice.line();
    assert!(mode.ends_with(" MODE #mod +m"), "{mode}");
    assert_eq!(lena.line(), "MODE #mod alice +m");
    lena.send("hello?");
    assert_eq!(
        lena.line(),
        "ERROR muted you may not speak in #mod: it is moderated (+m) or you are banned (+b)"
    );
    alice.send("MODE #mod +v lena");
    assert!(alice.line().ends_with(" MODE #mod +v lena"));
    assert_eq!(lena.line(), "MODE #mod alice +v lena");
    lena.send("now I may speak");
    assert!(alice.line().ends_with(" PRIVMSG #mod :now I may speak"));
    // An operator of IRC makes the line user an operator, who then kicks someone from IRC.
    alice.send("MODE #mod +o lena");
    assert!(alice.line().ends_with(" MODE #mod +o lena"));
    assert_eq!(lena.line(), "MODE #mod alice +o lena");
    let mut bob = register(&server, "bob");
    bob.send("JOIN #mod");
    bob.expect_prefix(":pollchat 366");
    assert!(alice.line().contains(" JOIN #mod"));
    assert_eq!(lena.line(), "JOIN #mod bob");
    lena.send("/kick bob spamming");
    assert_eq!(lena.line(), "KICK #mod bob lena spamming");
    assert!(alice.line().ends_with(" KICK #mod bob :spamming"));
    let kicked = bob.line();
    assert!(
        kicked.starts_with(":lena!") && kicked.ends_with(" KICK #mod bob :spamming"),
        "{kicked}"
    );
    // A ban keeps bob out; lifting it lets him back.
    lena.send("/ban bob");
    assert_eq!(lena.line(), "MODE #mod lena +b bob!*@*");
    assert!(alice.line().ends_with(" MODE #mod +b bob!*@*"));
    bob.send("JOIN #mod");
    assert_eq!(
        bob.line(),
        ":pollchat 474 bob #mod :Cannot join channel (+b)"
    );
    alice.send("MODE #mod +b");
    assert!(
        alice
            .line()
            .starts_with(":pollchat 367 alice #mod bob!*@* lena ")
    );
    assert_eq!(
        alice.line(),
        ":pollchat 368 alice #mod :End of channel ban list"
    );
    alice.send("MODE #mod -b bob!*@*");
    assert!(alice.line().ends_with(" MODE #mod -b bob!*@*"));
    assert_eq!(lena.line(), "MODE #mod alice -b bob!*@*");
    bob.send("JOIN #mod");
    bob.expect_prefix(":pollchat 366");
    // An IRC operator kicks the line user the other way round.
    alice.send("KICK #mod lena :enough");
    assert_eq!(lena.line(), "JOIN #mod bob");
    assert_eq!(lena.line(), "KICK #mod lena alice enough");
    // A non-operator cannot kick.
    assert!(bob.line().ends_with(" KICK #mod lena :enough"));
    bob.send("KICK #mod alice");
    assert_eq!(
        bob.line(),
        ":pollchat 482 bob #mod :You're not channel operator"
    );
}

for_each_io!(invite_only_keyed_limited_and_secret_rooms);
/// +i needs an INVITE (341 to the inviter, an INVITE line to the invited); +k a key; +l caps
/// the members; +s hides the room from LIST and WHOIS of outsiders.
fn invite_only_keyed_limited_and_secret_rooms(io: IoModel) {
    let server = TestServer::start_io(io);
    let mut alice = register(&server, "alice");
    let mut bob = register(&server, "bob");
    alice.send("JOIN #vip");
    alice.expect_prefix(":pollchat 366");
    alice.send("MODE #vip +isk sesame");
    assert!(alice.line().ends_with(" MODE #vip +isk sesame"));
    bob.send("JOIN #vip");
    assert_eq!(
        bob.line(),
        ":pollchat 473 bob #vip :Cannot join channel (+i)"
    );
    alice.send("INVITE bob #vip");
    assert_eq!(alice.line(), ":pollchat 341 alice bob #vip");
    assert!(bob.line().ends_with(" INVITE bob #vip"));
    bob.send("JOIN #vip");
    assert_eq!(
        bob.line(),
        ":pollchat 475 bob #vip :Cannot join channel (+k)"
    );
    bob.send("JOIN #vip sesame");
    assert!(bob.line().ends_with(" JOIN #vip"));
    bob.expect_prefix(":pollchat 366");
    assert!(alice.line().ends_with(" JOIN #vip"));
    // The key is shown to members only.
    bob.send("MODE #vip");
    assert_eq!(bob.line(), ":pollchat 324 bob #vip +instk sesame");
    bob.line();
    let mut carol = register(&server, "carol");
    carol.send("MODE #vip");
    assert_eq!(
        carol.line(),
        ":pollchat 442 carol #vip :You're not on that channel"
    );
    // Secret: carol's LIST and WHOIS do not show it; bob's WHOIS of alice does.
    carol.send("LIST");
    let listed: Vec<String> = std::iter::from_fn(|| Some(carol.line()))
        .take_while(|l| !l.starts_with(":pollchat 323"))
        .collect();
    assert!(listed.iter().all(|l| !l.contains("#vip")), "{listed:?}");
    carol.send("WHOIS alice");
    let whois: Vec<String> = std::iter::from_fn(|| Some(carol.line()))
        .take_while(|l| !l.starts_with(":pollchat 318"))
        .collect();
    assert!(whois.iter().all(|l| !l.contains("#vip")), "{whois:?}");
    // Nor what is inside: its members, topic and bans.
    carol.send("NAMES #vip");
    assert_eq!(carol.line(), ":pollchat 366 carol #vip :End of /NAMES list");
    carol.send("WHO #vip");
    assert_eq!(carol.line(), ":pollchat 315 carol #vip :End of /WHO list");
    carol.send("TOPIC #vip");
    assert_eq!(
        carol.line(),
        ":pollchat 442 carol #vip :You're not on that channel"
    );
    carol.send("MODE #vip +b");
    assert_eq!(
        carol.line(),
        ":pollchat 442 carol #vip :You're not on that channel"
    );
    // An outsider's change is refused as not being in the room (442), not 482.
    carol.send("MODE #vip -s");
    assert_eq!(
        carol.line(),
        ":pollchat 442 carol #vip :You're not on that channel"
    );
    // +l 2: full with alice and bob.
    alice.send("MODE #vip -i+l 2");
    assert!(alice.line().ends_with(" MODE #vip -i+l 2"));
    carol.send("JOIN #vip sesame");
    assert_eq!(
        carol.line(),
        ":pollchat 471 carol #vip :Cannot join channel (+l)"
    );
}

for_each_io!(server_operators_oper_kill_and_operate_every_room);
/// `--oper NAME:HASH` (irctest's convention: operuser/operpassword): OPER gives exactly 381 and
/// a MODE +o; a wrong name or password 464, never 381. A server operator operates every room
/// (#lobby too), sees secret rooms, is flagged in WHO and WHOIS, and KILLs (481 for others);
/// a line user can be one too (/oper, /kill).
fn server_operators_oper_kill_and_operate_every_room(io: IoModel) {
    let server = oper_server(io, "operuser", "operpassword", |_| {});
    let mut a = register(&server, "alice");
    let mut b = register(&server, "bob");
    a.send("OPER operuser wrong");
    assert_eq!(a.line(), ":pollchat 464 alice :Password incorrect");
    a.send("OPER nobody operpassword");
    assert_eq!(a.line(), ":pollchat 464 alice :Password incorrect");
    b.send("KILL alice :no");
    assert_eq!(
        b.line(),
        ":pollchat 481 bob :Permission Denied- You're not an IRC operator"
    );
    a.send("OPER operuser operpassword");
    assert_eq!(a.line(), ":pollchat 381 alice :You are now an IRC operator");
    assert_eq!(a.line(), ":alice MODE alice :+o");
    // An operator of every room: bob's secret room too.
    b.send("JOIN #hidden");
    b.expect_prefix(":pollchat 366");
    b.send("MODE #hidden +s");
    b.line();
    a.send("LIST");
    let listed: Vec<String> = std::iter::from_fn(|| Some(a.line()))
        .take_while(|l| !l.starts_with(":pollchat 323"))
        .collect();
    assert!(listed.iter().any(|l| l.contains("#hidden")), "{listed:?}");
    a.send("MODE #hidden +m");
    assert!(a.line().ends_with(" MODE #hidden +m"));
    assert!(b.line().ends_with(" MODE #hidden +m"));
    b.send("WHOIS alice");
    let whois: Vec<String> = std::iter::from_fn(|| Some(b.line()))
        .take_while(|l| !l.starts_with(":pollchat 318"))
        .collect();
    assert!(
        whois.contains(&":pollchat 313 bob alice :is an IRC operator".to_string()),
        "{whois:?}"
    );
    // A line user is killed by the IRC operator; the rooms hear why.
    let mut lena = server.join_as("lena", &mut []);
    lena.send("/oper operuser wrong");
    assert_eq!(
        lena.line(),
        "ERROR bad-oper-login wrong operator name or password"
    );
    a.send("KILL lena :flooding");
    let bye = lena.expect_closed();
    assert_eq!(bye.last().unwrap(), "BYE killed by alice: flooding");
    a.send("KILL bob");
    let gone = b.expect_closed();
    assert!(gone.last().unwrap().contains("killed by alice"), "{gone:?}");
}

for_each_io!(lusers_gives_local_and_global_users_and_their_peak);
fn lusers_gives_local_and_global_users_and_their_peak(io: IoModel) {
    let server = TestServer::start_io(io);
    let mut a = register(&server, "alice");
    let mut b = register(&server, "bob");
    b.send("QUIT");
    b.expect_closed();
    // Bob's departure is in the core before alice's next command is read under every model
    // (the loop handles it in the turn it sees the close; a thread under the core's lock).
    sync(&mut a);
    a.send("LUSERS");
    let lines = sync(&mut a);
    assert_eq!(
        lines,
        [
            ":pollchat 251 alice :There are 1 users and 0 invisible on 1 servers",
            ":pollchat 252 alice 0 :IRC Operators online",
            ":pollchat 254 alice 1 :channels formed",
            ":pollchat 255 alice :I have 1 clients and 0 servers",
            ":pollchat 265 alice 1 2 :Current local users 1, max 2",
            ":pollchat 266 alice 1 2 :Current global users 1, max 2",
        ]
    );
}

for_each_io!(too_many_tags_get_417_and_nothing_is_relayed);
fn too_many_tags_get_417_and_nothing_is_relayed(io: IoModel) {
    let server = TestServer::start_io(io);
    let mut a = register(&server, "alice");
    let mut b = register(&server, "bob");
    for c in [&mut a, &mut b] {
        c.send("JOIN #t");
        c.expect_prefix(":pollchat 366");
    }
    a.line(); // bob's join
    a.send("CAP REQ :message-tags");
    assert_eq!(a.line(), ":pollchat CAP alice ACK :message-tags");
    // Short enough for the framer (512 + 4096), but 4,100 bytes of tags: over their budget.
    let tags = format!("@+example={}", "a".repeat(4100));
    a.send(&format!("{tags} PRIVMSG #t :hi"));
    assert_eq!(a.line(), ":pollchat 417 alice :Input line was too long");
    // Tags within their budget are fine.
    a.send("@+example=short PRIVMSG #t :hi");
    assert!(sync(&mut a).is_empty());
    assert!(
        b.line().ends_with(" PRIVMSG #t :hi"),
        "only the second message arrives"
    );
    assert!(sync(&mut b).is_empty());
}

for_each_io!(user_needs_a_real_name_and_may_send_latin1);
fn user_needs_a_real_name_and_may_send_latin1(io: IoModel) {
    let server = TestServer::start_io(io);
    let mut c = Client::connect(server.irc_addr.unwrap());
    c.send("NICK foo");
    c.send("USER username * * :");
    assert_eq!(c.line(), ":pollchat 461 * USER :Not enough parameters");
    c.send("USER  * * :Foo");
    assert_eq!(c.line(), ":pollchat 461 * USER :Not enough parameters");
    // A client set to Latin-1 (iè rcé): registered, the bad bytes replaced, not left waiting.
    c.send_raw(b"USER username * * :i\xe8rc\xe9\r\n");
    assert!(c.line().starts_with(":pollchat 001 foo "));
    c.expect_prefix(":pollchat 422 foo");
    c.send("WHOIS foo");
    assert_eq!(
        c.line(),
        format!(":pollchat 311 foo foo username {LOCAL_CLOAK} * :i\u{fffd}rc\u{fffd}")
    );
    // After registration, non-UTF-8 is refused, by the server (its name as the source).
    c.expect_prefix(":pollchat 318 ");
    c.send_raw(b"PRIVMSG foo :\xe9\r\n");
    assert_eq!(
        c.line(),
        ":pollchat FAIL PRIVMSG INVALID_UTF8 :Message rejected: this server only accepts UTF-8"
    );
}

for_each_io!(time_version_admin_and_info_answer_about_this_server);
fn time_version_admin_and_info_answer_about_this_server(io: IoModel) {
    let server = TestServer::start_io(io);
    let mut a = register(&server, "alice");
    a.send("TIME");
    let time = a.line();
    assert!(
        time.starts_with(":pollchat 391 alice pollchat :20"),
        "{time}"
    );
    assert!(time.ends_with('Z'), "{time}");
    a.send("VERSION");
    let version = env!("CARGO_PKG_VERSION");
    assert_eq!(
        a.line(),
        format!(
            ":pollchat 351 alice pollchat-{version} pollchat :{}",
            env!("CARGO_PKG_DESCRIPTION")
        )
    );
    assert!(
        a.line()
            .starts_with(":pollchat 005 alice CASEMAPPING=ascii ")
    );
    assert!(a.line().starts_with(":pollchat 005 alice "));
    a.send("ADMIN");
    assert_eq!(
        a.line(),
        ":pollchat 423 alice pollchat :No administrative info available"
    );
    a.send("INFO");
    let info = sync(&mut a);
    assert!(info.len() >= 2, "{info:#?}");
    assert!(info[0].starts_with(&format!(":pollchat 371 alice :pollchat {version}: ")));
    assert!(
        info[..info.len() - 1]
            .iter()
            .all(|l| l.starts_with(":pollchat 371 alice :"))
    );
    assert_eq!(
        info.last().unwrap(),
        ":pollchat 374 alice :End of INFO list"
    );
    // This server by name, by mask or by one of its users; any other is 402.
    for target in ["pollchat", "POLL*", "alice"] {
        a.send(&format!("ADMIN {target}"));
        a.expect_prefix(":pollchat 423 alice pollchat ");
    }
    for command in ["TIME", "VERSION", "ADMIN", "INFO"] {
        a.send(&format!("{command} other.example"));
        assert_eq!(
            a.line(),
            ":pollchat 402 alice other.example :No such server"
        );
    }
    assert!(sync(&mut a).is_empty());
}

for_each_io!(who_with_a_mask_lists_the_matching_users);
fn who_with_a_mask_lists_the_matching_users(io: IoModel) {
    let server = TestServer::start_io(io);
    let mut a = register(&server, "alice");
    let _al = register(&server, "Alan");
    let _b = register(&server, "bob");
    let _line = server.join_as("linus", &mut []);
    let who = |nick: &str, user: &str, realname: &str| {
        format!(":pollchat 352 alice * {user} {LOCAL_CLOAK} pollchat {nick} H :0 {realname}")
    };
    a.send("WHO AL*");
    assert_eq!(
        sync(&mut a),
        [
            who("Alan", "Alan", "The Alan"),
            who("alice", "alice", "The alice"),
            ":pollchat 315 alice AL* :End of /WHO list".to_string(),
        ]
    );
    a.send("WHO *");
    let all = sync(&mut a);
    assert_eq!(all.len(), 5, "{all:#?}");
    assert!(
        all[3].contains(" linus H :0 line protocol user"),
        "{all:#?}"
    );
    assert_eq!(all[4], ":pollchat 315 alice * :End of /WHO list");
    a.send("WHO b?b");
    assert_eq!(sync(&mut a)[0], who("bob", "bob", "The bob"));
    a.send("WHO *!line@*");
    let lines = sync(&mut a);
    assert_eq!(lines.len(), 2, "{lines:#?}");
    assert!(lines[0].contains(" linus "), "{lines:#?}");
    a.send("WHO zz*");
    assert_eq!(sync(&mut a), [":pollchat 315 alice zz* :End of /WHO list"]);
}

for_each_io!(multi_prefix_clients_see_every_prefix);
/// Without `multi-prefix` NAMES shows a member's highest prefix; with it, all of them (so a
/// client that sees `-o` still knows the member is voiced); `userhost-in-names` adds
/// `!user@host`.
fn multi_prefix_clients_see_every_prefix(io: IoModel) {
    let server = TestServer::start_io(io);
    let mut a = register(&server, "alice");
    a.send("JOIN #p");
    a.expect_prefix(":pollchat 366");
    a.send("MODE #p +v alice");
    a.line();
    a.send("NAMES #p");
    assert_eq!(a.line(), ":pollchat 353 alice = #p :@alice");
    a.line();
    let mut b = Client::connect(server.irc_addr.unwrap());
    b.send("CAP LS 302\r");
    b.send("NICK bob\r");
    b.send("USER bob 0 * :The bob\r");
    b.send("CAP REQ :multi-prefix\r");
    b.send("CAP END\r");
    b.expect_prefix(":pollchat 422 ");
    b.send("NAMES #p");
    assert_eq!(b.line(), ":pollchat 353 bob = #p :@+alice");
    b.line();
    // userhost-in-names: every member as nick!user@host.
    b.send("CAP REQ :userhost-in-names");
    assert_eq!(b.line(), ":pollchat CAP bob ACK :userhost-in-names");
    b.send("NAMES #p");
    assert_eq!(
        b.line(),
        format!(
            ":pollchat 353 bob = #p :@+alice!alice@{}",
            common::LOCAL_CLOAK
        )
    );
}

for_each_io!(whowas_tells_who_left_lately);
/// WHOWAS: who had a nick (or a nick matching a mask) lately, newest first, at most `count`;
/// 406 when nobody; 369 always ends the answer. A nick change leaves the old name behind too.
fn whowas_tells_who_left_lately(io: IoModel) {
    let server = TestServer::start_io(io);
    let mut a = register(&server, "alice");
    for ident in ["first", "second"] {
        let mut b = Client::connect(server.irc_addr.unwrap());
        b.send("NICK gone\r");
        b.send(&format!("USER {ident} 0 * :Gone Soon\r"));
        b.expect_prefix(":pollchat 422 ");
        b.send("QUIT :bye");
        b.expect_closed();
    }
    a.send("WHOWAS gone");
    let cloak = common::LOCAL_CLOAK;
    assert_eq!(
        a.line(),
        format!(":pollchat 314 alice gone second {cloak} * :Gone Soon")
    );
    assert_eq!(a.line(), ":pollchat 312 alice gone pollchat :pollchat");
    assert!(a.line().starts_with(":pollchat 314 alice gone first "));
    a.line();
    assert_eq!(a.line(), ":pollchat 369 alice gone :End of WHOWAS");
    a.send("WHOWAS *ne 1");
    assert!(a.line().starts_with(":pollchat 314 alice gone second "));
    a.line();
    assert_eq!(a.line(), ":pollchat 369 alice gone :End of WHOWAS");
    a.send("WHOWAS nobody");
    assert_eq!(
        a.line(),
        ":pollchat 406 alice nobody :There was no such nickname"
    );
    assert_eq!(a.line(), ":pollchat 369 alice nobody :End of WHOWAS");
    // The line protocol's /whowas, after a nick change.
    let mut lena = server.join_as("lena", &mut []);
    lena.send("/whowas guest1");
    let l = lena.line();
    assert!(
        l.starts_with("NOTICE guest1 was line@") && l.contains(" until 20"),
        "{l}"
    );
}

for_each_io!(ban_masks_that_would_break_a_line_are_refused);
// (Keys and limits that are not what they should be are refused with 696 as well.)
/// A ban mask is one word: one with a space (IRC's trailing parameter), a comma, a leading
/// colon or a control character would change the shape of the MODE and 367 lines it goes into
/// (or reach a terminal as an escape), so it is refused, in both protocols.
fn ban_masks_that_would_break_a_line_are_refused(io: IoModel) {
    let server = TestServer::start_io(io);
    let mut a = register(&server, "alice");
    a.send("JOIN #r");
    a.expect_prefix(":pollchat 366");
    a.send("MODE #r +b :evil +o");
    assert_eq!(
        a.line(),
        ":pollchat 696 alice #r b * :a ban mask is one word like nick!user@host, with * and ?, without commas"
    );
    a.send("MODE #r +b");
    assert_eq!(a.line(), ":pollchat 368 alice #r :End of channel ban list");
    // Keys and limits too: a key is one printable word, a limit a positive number.
    a.send("MODE #r +k :a b");
    assert!(
        a.line()
            .starts_with(":pollchat 696 alice #r k * :a key is 1-")
    );
    a.send("MODE #r +l abc");
    assert_eq!(
        a.line(),
        ":pollchat 696 alice #r l * :a member limit is a positive number"
    );
    a.send("MODE #r");
    assert_eq!(a.line(), ":pollchat 324 alice #r +nt");
    a.line();
    let mut lena = server.join_as("lena", &mut []);
    lena.send("/join #l");
    lena.expect_prefix("NAMES #l");
    lena.send("/ban a,b");
    assert_eq!(
        lena.line(),
        "ERROR invalid-mask a ban mask is one word like nick!user@host, with * and ?, without commas"
    );
    lena.send("/bans");
    assert_eq!(lena.line(), "NOTICE 0 bans on #l");
}

for_each_io!(user_modes_hide_invisible_users_and_carry_wallops);
/// `MODE nick +i` hides a user from the WHO masks of users who share no room with it (a WHO of
/// its exact nick still finds it), and LUSERS counts it as invisible; `+w` users, IRC and line
/// alike (`/umode +w`), receive a server operator's WALLOPS, others do not; an unknown letter
/// is 501; WALLOPS from anyone else is 481.
fn user_modes_hide_invisible_users_and_carry_wallops(io: IoModel) {
    let server = oper_server(io, "operuser", "operpassword", |_| {});
    let mut evan = register(&server, "evan");
    let mut sam = register(&server, "sam");
    evan.send("MODE evan +i");
    assert_eq!(evan.line(), ":evan MODE evan :+i");
    evan.send("MODE evan +i");
    assert_eq!(evan.line(), ":pollchat 221 evan +i");
    evan.send("MODE evan +x");
    assert_eq!(evan.line(), ":pollchat 221 evan +i");
    assert_eq!(evan.line(), ":pollchat 501 evan :Unknown MODE flag");
    sam.send("WHO eva*");
    assert_eq!(sync(&mut sam), [":pollchat 315 sam eva* :End of /WHO list"]);
    sam.send("WHO evan");
    assert_eq!(sync(&mut sam).len(), 2);
    sam.send("LUSERS");
    assert_eq!(
        sync(&mut sam)[..2],
        [
            ":pollchat 251 sam :There are 1 users and 1 invisible on 1 servers",
            ":pollchat 252 sam 0 :IRC Operators online",
        ]
    );
    // Sharing a room, sam finds evan by a mask too.
    evan.send("JOIN #r");
    sync(&mut evan);
    sam.send("JOIN #r");
    sync(&mut sam);
    sam.send("WHO eva*");
    assert_eq!(sync(&mut sam).len(), 2);
    assert_eq!(sync(&mut evan).len(), 1, "sam's JOIN");

    sam.send("WALLOPS :hello");
    assert_eq!(
        sam.line(),
        ":pollchat 481 sam :Permission Denied- You're not an IRC operator"
    );
    sam.send("MODE sam +w");
    assert_eq!(sam.line(), ":sam MODE sam :+w");
    let mut lena = server.join_as("lena", &mut []);
    lena.send("/umode +w");
    assert_eq!(lena.line(), "MODE lena +w");
    evan.send("OPER operuser operpassword");
    assert_eq!(
        evan.line(),
        ":pollchat 381 evan :You are now an IRC operator"
    );
    assert_eq!(evan.line(), ":evan MODE evan :+o");
    evan.send("MODE evan");
    assert_eq!(evan.line(), ":pollchat 221 evan +io");
    evan.send("WALLOPS :server restarts at noon");
    let wallops = format!(":evan!evan@{LOCAL_CLOAK} WALLOPS :server restarts at noon");
    assert_eq!(evan.line(), wallops);
    assert_eq!(sam.line(), wallops);
    assert_eq!(lena.line(), "WALLOPS evan server restarts at noon");
    // A user without +w got nothing; -w stops them.
    let mut carl = register(&server, "carl");
    evan.send("WALLOPS :second");
    evan.line();
    sam.line();
    lena.line();
    assert!(sync(&mut carl).is_empty());
    lena.send("/umode -w");
    assert_eq!(lena.line(), "MODE lena -w");
    evan.send("WALLOPS :third");
    evan.line();
    sam.line();
    lena.send("/umode");
    assert_eq!(lena.line(), "NOTICE your user modes: +");
}

for_each_io!(silence_and_ignore_drop_private_messages_from_the_ignored);
/// `SILENCE +mask` (IRC) and `/ignore NICK` (line) drop private messages, notices and
/// invitations from matching senders without telling them; others still get through; the
/// list shows (271/272, NOTICE) and shrinks (`SILENCE -mask`, `/unignore`).
fn silence_and_ignore_drop_private_messages_from_the_ignored(io: IoModel) {
    let server = TestServer::start_io(io);
    let mut alice = register(&server, "alice");
    let mut bob = register(&server, "bob");
    let mut carol = register(&server, "carol");
    alice.send("SILENCE +Bob");
    assert_eq!(alice.line(), ":alice SILENCE +bob!*@*");
    alice.send("SILENCE");
    assert_eq!(
        sync(&mut alice),
        [
            ":pollchat 271 alice alice bob!*@*",
            ":pollchat 272 alice alice :End of Silence List",
        ]
    );
    bob.send("PRIVMSG alice :psst");
    bob.send("NOTICE alice :psst");
    bob.send("JOIN #club");
    sync(&mut bob);
    bob.send("INVITE alice #club");
    assert_eq!(bob.line(), ":pollchat 341 bob alice #club");
    carol.send("PRIVMSG alice :hello");
    assert_eq!(
        alice.line(),
        format!(":carol!carol@{LOCAL_CLOAK} PRIVMSG alice :hello")
    );
    assert!(sync(&mut alice).is_empty());
    alice.send("SILENCE -bob!*@*");
    assert_eq!(alice.line(), ":alice SILENCE -bob!*@*");
    bob.send("PRIVMSG alice :now?");
    assert_eq!(
        alice.line(),
        format!(":bob!bob@{LOCAL_CLOAK} PRIVMSG alice :now?")
    );
    alice.send("SILENCE +bad,mask");
    assert_eq!(
        alice.line(),
        ":pollchat FAIL SILENCE INVALID_MASK :an ignore mask is a nick or one word like nick!user@host, with * and ?"
    );

    // A line user ignores an IRC user, and the reverse.
    let mut lena = server.join_as("lena", &mut []);
    lena.send("/ignore alice");
    assert_eq!(
        lena.line(),
        "NOTICE ignoring alice!*@*: their private messages and invitations"
    );
    alice.send("PRIVMSG lena :hi lena");
    carol.send("PRIVMSG lena :hi from carol");
    assert_eq!(lena.line(), "PRIV <carol> hi from carol");
    lena.send("/ignore");
    assert_eq!(lena.line(), "NOTICE you ignore: alice!*@*");
    lena.send("/unignore alice");
    assert_eq!(lena.line(), "NOTICE no longer ignoring alice!*@*");
    lena.send("/ignore");
    assert_eq!(lena.line(), "NOTICE you ignore nobody");
    carol.send("SILENCE +*!line@*");
    carol.line();
    lena.send("/msg carol are you there?");
    assert!(sync(&mut carol).is_empty());
}

for_each_io!(links_and_help_answer_from_the_server_and_the_command_table);
/// LINKS lists this one server with its description (`--server-description`); HELP lists the
/// commands, HELP PRIVMSG gives its usage (704…706), an unknown subject 524.
fn links_and_help_answer_from_the_server_and_the_command_table(io: IoModel) {
    let server = TestServer::with_io(io, |c| c.server_description = "test server".into());
    let mut a = register(&server, "alice");
    a.send("LINKS");
    assert_eq!(
        sync(&mut a),
        [
            ":pollchat 364 alice pollchat pollchat :0 test server",
            ":pollchat 365 alice * :End of LINKS list",
        ]
    );
    a.send("HELP privmsg");
    assert_eq!(
        sync(&mut a),
        [
            ":pollchat 704 alice PRIVMSG :PRIVMSG target[,target] :text: talk to rooms and nicks",
            ":pollchat 706 alice PRIVMSG :End of /HELP",
        ]
    );
    a.send("HELP");
    let all = sync(&mut a);
    assert!(all[0].starts_with(":pollchat 704 alice * :"), "{all:?}");
    assert!(
        all[1..all.len() - 1]
            .iter()
            .all(|l| l.starts_with(":pollchat 705 alice * :"))
    );
    assert!(all.iter().any(|l| l.contains(" WALLOPS ")), "{all:?}");
    assert_eq!(all.last().unwrap(), ":pollchat 706 alice * :End of /HELP");
    a.send("HELP DANCE");
    assert_eq!(
        a.line(),
        ":pollchat 524 alice DANCE :No help available on this topic"
    );
}

for_each_io!(server_bans_keep_matching_users_off_and_survive_a_restart);
/// KLINE (IRC) and /kline (line) ban a `user@host` mask from the server: matching users are
/// disconnected, matching newcomers refused (465 and ERROR for IRC, BYE for the line
/// protocol); the mask may name the real address or the cloaked host; masks that would ban
/// everyone are refused; STATS k and /klines list the bans, UNKLINE lifts one; only server
/// operators may (481). The bans are written to --kline-file, from which a restarted server
/// reads them back.
fn server_bans_keep_matching_users_off_and_survive_a_restart(io: IoModel) {
    let dir = std::env::temp_dir().join(format!(
        "pollchat-kline-{}-{}",
        std::process::id(),
        io.name()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("klines");
    let _ = std::fs::remove_file(&file);
    let hash = pollchat::session::oper::hash_password("operpassword");
    let opers = vec![pollchat::session::oper::Oper::parse(&format!("operuser:{hash}")).unwrap()];
    let server = TestServer::with_io(io, |c| {
        c.opers = opers.clone();
        c.kline_file = Some(file.clone());
    });
    let mut alice = register(&server, "alice");
    let mut bob = register(&server, "bob");
    bob.send("KLINE *@10.0.0.1 :nope");
    assert_eq!(
        bob.line(),
        ":pollchat 481 bob :Permission Denied- You're not an IRC operator"
    );
    alice.send("OPER operuser operpassword");
    alice.line();
    alice.line();
    alice.send("KLINE line@*");
    assert_eq!(
        alice.line(),
        ":pollchat FAIL KLINE INVALID_MASK :\"line@*\" is not a server ban mask: user@host (or a host), with * and ?, naming some host"
    );
    // Every line user comes from 127.0.0.1 here: ban them by user name and real address.
    let mut lena = server.join_as("lena", &mut []);
    alice.send("KLINE line@127.0.0.1 :no line users today");
    assert_eq!(
        alice.line(),
        ":pollchat NOTICE alice :K-line added for line@127.0.0.1 for good: no line users today (1 disconnected)"
    );
    assert_eq!(
        lena.expect_closed().last().unwrap(),
        "BYE killed by alice: banned from this server: no line users today"
    );
    let mut late = server.connect();
    assert_eq!(
        late.expect_closed(),
        ["BYE banned from this server: no line users today"]
    );
    // IRC users are still welcome; bob is banned by his cloaked host for an hour.
    alice.send(&format!("KLINE 60 bob@{LOCAL_CLOAK} :flooding"));
    let notice = alice.line();
    assert!(
        notice.starts_with(&format!(
            ":pollchat NOTICE alice :K-line added for bob@{LOCAL_CLOAK} until "
        )) && notice.ends_with(": flooding (1 disconnected)"),
        "{notice}"
    );
    bob.expect_closed();
    let mut again = Client::connect(server.irc_addr.unwrap());
    again.send("NICK bob\r");
    again.send("USER bob 0 * :Bob\r");
    assert_eq!(
        again.expect_closed(),
        [
            ":pollchat 465 * :You are banned from this server",
            "ERROR :Closing link: (banned from this server: flooding)",
        ]
    );
    alice.send("STATS k");
    let listed = sync(&mut alice);
    assert_eq!(listed.len(), 3, "{listed:?}");
    assert_eq!(
        listed[0],
        ":pollchat 216 alice K 127.0.0.1 0 line :no line users today (by alice)"
    );
    assert_eq!(listed[2], ":pollchat 219 alice k :End of /STATS report");
    let saved = std::fs::read_to_string(&file).unwrap();
    assert!(
        saved.contains("\nline@127.0.0.1 0 alice no line users today\n"),
        "{saved}"
    );
    alice.send("UNKLINE line@127.0.0.1");
    assert_eq!(
        alice.line(),
        ":pollchat NOTICE alice :K-line for line@127.0.0.1 removed"
    );
    alice.send("UNKLINE line@127.0.0.1");
    assert_eq!(
        alice.line(),
        ":pollchat FAIL UNKLINE NO_SUCH_BAN :no server ban has the mask line@127.0.0.1"
    );
    let mut op = server.join_as("op", &mut []);
    op.send("/kline 5 *@192.0.2.*");
    assert_eq!(
        op.line(),
        "ERROR not-server-operator only a server operator may do that"
    );
    drop(server);

    // A restarted server reads the file back: bob's ban holds, line users are welcome again.
    let saved = std::fs::read_to_string(&file).unwrap();
    let bans = pollchat::core::kline::parse(&saved).unwrap();
    assert_eq!(bans.len(), 1, "{saved}");
    let server = TestServer::with_io(io, |c| {
        c.opers = opers.clone();
        c.kline_file = Some(file.clone());
        c.server_bans = bans;
    });
    let mut bob = Client::connect(server.irc_addr.unwrap());
    bob.send("NICK bob\r");
    bob.send("USER bob 0 * :Bob\r");
    assert_eq!(
        bob.line(),
        ":pollchat 465 * :You are banned from this server"
    );
    let mut lena = server.join_as("lena", &mut []);
    lena.send("/oper operuser operpassword");
    lena.line();
    lena.send("/klines");
    assert!(
        lena.line()
            .starts_with(&format!("SERVERBAN bob@{LOCAL_CLOAK} 20"))
    );
    assert_eq!(lena.line(), "NOTICE 1 server bans");
    lena.send(&format!("/unkline bob@{LOCAL_CLOAK}"));
    assert_eq!(
        lena.line(),
        format!("NOTICE bob@{LOCAL_CLOAK} is no longer banned")
    );
    let _ = std::fs::remove_dir_all(&dir);
}

for_each_io!(monitor_and_watch_tell_when_nicks_come_and_go);
/// Presence across both doors: `MONITOR + nicks` (IRC) and `/watch NICK` (line) answer at once
/// who is online (730 / `ONLINE`) and offline (731 / `OFFLINE`), then tell of each arrival,
/// departure and nick change (not of a change of case); `MONITOR L`/`S`/`-`/`C` and `/unwatch`
/// manage the list; a full list is 734.
fn monitor_and_watch_tell_when_nicks_come_and_go(io: IoModel) {
    let server = TestServer::start_io(io);
    let mut alice = register(&server, "alice");
    let mut lena = server.join_as("lena", &mut []);
    alice.send("MONITOR + lena,bob");
    assert_eq!(
        sync(&mut alice),
        [
            format!(":pollchat 730 alice :lena!line@{LOCAL_CLOAK}"),
            ":pollchat 731 alice :bob".to_string(),
        ]
    );
    lena.send("/watch bob alice");
    assert_eq!(lena.line(), "ONLINE alice");
    assert_eq!(lena.line(), "OFFLINE bob");
    let mut bob = register(&server, "bob");
    assert_eq!(
        alice.line(),
        format!(":pollchat 730 alice :bob!bob@{LOCAL_CLOAK}")
    );
    assert_eq!(lena.line(), "ONLINE bob");
    bob.send("NICK BOB");
    sync(&mut bob);
    bob.send("NICK robert");
    sync(&mut bob);
    assert_eq!(alice.line(), ":pollchat 731 alice :BOB");
    assert_eq!(lena.line(), "OFFLINE BOB");
    bob.send("NICK bob");
    sync(&mut bob);
    assert_eq!(
        alice.line(),
        format!(":pollchat 730 alice :bob!bob@{LOCAL_CLOAK}")
    );
    assert_eq!(lena.line(), "ONLINE bob");
    lena.send("/quit");
    lena.expect_closed();
    assert_eq!(alice.line(), ":pollchat 731 alice :lena");
    alice.send("MONITOR L");
    assert_eq!(
        sync(&mut alice),
        [
            ":pollchat 732 alice :lena,bob",
            ":pollchat 733 alice :End of MONITOR list",
        ]
    );
    alice.send("MONITOR S");
    assert_eq!(
        sync(&mut alice),
        [
            format!(":pollchat 730 alice :bob!bob@{LOCAL_CLOAK}"),
            ":pollchat 731 alice :lena".to_string(),
        ]
    );
    alice.send("MONITOR - bob");
    // (Taken in before bob leaves: under the threaded models two clients' lines race.)
    assert!(sync(&mut alice).is_empty());
    bob.send("QUIT");
    bob.expect_closed();
    alice.send("MONITOR C");
    alice.send("MONITOR L");
    assert_eq!(
        sync(&mut alice),
        [":pollchat 733 alice :End of MONITOR list"]
    );
    // At most 100 nicks: the 101st is refused with 734.
    let many: Vec<String> = (0..101).map(|i| format!("n{i}")).collect();
    alice.send(&format!("MONITOR + {}", many.join(",")));
    let lines = sync(&mut alice);
    assert_eq!(
        lines.last().unwrap(),
        ":pollchat 734 alice 100 n100 :Monitor list is full"
    );
    assert!(lines.iter().all(|l| l.len() <= 510), "{lines:?}");
    let mut late = server.join_as("late", &mut []);
    late.send("/watch");
    assert_eq!(late.line(), "NOTICE you watch nobody");
    late.send("/watch alice");
    assert_eq!(late.line(), "ONLINE alice");
    late.send("/unwatch alice");
    late.send("/watch");
    assert_eq!(late.line(), "NOTICE you watch nobody");
}

/// The value of tag `key` in a line (`Some("")` for a tag without a value).
fn tag<'l>(line: &'l str, key: &str) -> Option<&'l str> {
    let tags = line.strip_prefix('@')?.split(' ').next()?;
    tags.split(';').find_map(|t| match t.split_once('=') {
        Some((k, v)) if k == key => Some(v),
        None if t == key => Some(""),
        _ => None,
    })
}

for_each_io!(message_tags_clients_get_client_tags_and_msgid_others_the_plain_message);
fn message_tags_clients_get_client_tags_and_msgid_others_the_plain_message(io: IoModel) {
    let server = TestServer::start_io(io);
    let mut alice = register_with(&server, "alice", "message-tags");
    let mut bob = register_with(&server, "bob", "echo-message message-tags");
    let mut carol = register(&server, "carol");
    for c in [&mut alice, &mut bob, &mut carol] {
        c.send("JOIN #lobby");
        c.expect_prefix(":pollchat 366");
    }
    let mut line = server.join_as("liner", &mut []);
    for c in [&mut alice, &mut bob, &mut carol] {
        sync(c);
    }

    alice.send(r"@+baz=bat\sand\:more;fizz=buzz;msgid=forged PRIVMSG #lobby :hi");
    let to_bob = bob.line();
    assert!(
        to_bob.ends_with(&format!(" :alice!alice@{LOCAL_CLOAK} PRIVMSG #lobby :hi")),
        "{to_bob}"
    );
    assert_eq!(tag(&to_bob, "+baz"), Some(r"bat\sand\:more"), "{to_bob}");
    assert_eq!(tag(&to_bob, "fizz"), None, "not a client tag: {to_bob}");
    let msgid = tag(&to_bob, "msgid").unwrap().to_string();
    assert!(!msgid.is_empty() && msgid != "forged", "{to_bob}");
    assert_eq!(
        carol.line(),
        format!(":alice!alice@{LOCAL_CLOAK} PRIVMSG #lobby :hi"),
        "no tags for a client without message-tags"
    );
    assert_eq!(line.expect_prefix("MSG"), "MSG #lobby <alice> hi");
    assert!(sync(&mut alice).is_empty(), "alice has no echo-message");

    // bob's own message comes back exactly as alice gets it: same tags, same msgid.
    bob.send("@+draft/reply=x PRIVMSG #lobby :hi yourself");
    let echo = bob.line();
    let to_alice = alice.line();
    assert_eq!(echo, to_alice);
    assert_eq!(tag(&echo, "+draft/reply"), Some("x"));
    assert_ne!(
        tag(&echo, "msgid"),
        Some(msgid.as_str()),
        "one msgid per message"
    );
    assert!(!carol.line().starts_with('@'));
    line.expect_prefix("MSG #lobby <bob>");

    // Private messages too, and NOTICE.
    bob.send("@+react=ok PRIVMSG alice :psst");
    bob.send("@+react=ok NOTICE alice :note");
    for verb in ["PRIVMSG alice :psst", "NOTICE alice :note"] {
        let (echo, relay) = (bob.line(), alice.line());
        assert_eq!(echo, relay);
        assert!(echo.ends_with(verb), "{echo}");
        assert_eq!(tag(&echo, "+react"), Some("ok"));
        assert!(tag(&echo, "msgid").is_some());
    }

    // TAGMSG reaches message-tags clients only: never carol, never a line user.
    bob.send("@+typing=active TAGMSG #lobby");
    let echo = bob.line();
    assert_eq!(echo, alice.line());
    assert!(
        echo.ends_with(&format!(" :bob!bob@{LOCAL_CLOAK} TAGMSG #lobby")) && echo.starts_with('@'),
        "{echo}"
    );
    assert_eq!(tag(&echo, "+typing"), Some("active"));
    assert!(sync(&mut carol).is_empty(), "carol gets no TAGMSG");
    line.sync();
}

for_each_io!(tag_data_is_limited_to_4094_bytes_and_a_tagged_message_to_one_line);
fn tag_data_is_limited_to_4094_bytes_and_a_tagged_message_to_one_line(io: IoModel) {
    let server = TestServer::start_io(io);
    let mut alice = register_with(&server, "alice", "echo-message message-tags");
    let mut bob = register_with(&server, "bob", "message-tags");
    for c in [&mut alice, &mut bob] {
        c.send("JOIN #test");
        c.expect_prefix(":pollchat 366");
    }
    sync(&mut alice);
    // irctest's testLengthLimits, over each I/O model. Right at the limit: 4094 bytes of tag data, 4096 with `@` and the space.
    let at_limit = format!("@foo=bar;+baz={} TAGMSG #test", "a".repeat(4081));
    assert_eq!(at_limit.find("TAGMSG"), Some(4096));
    alice.send(&at_limit);
    let (echo, relay) = (alice.line(), bob.line());
    assert_eq!(echo, relay);
    assert_eq!(tag(&echo, "+baz"), Some("a".repeat(4081).as_str()));
    assert_eq!(tag(&echo, "foo"), None);
    // One byte more: 417, and nothing relayed.
    alice.send(&format!("@foo=bar;+baz={} TAGMSG #test", "a".repeat(4082)));
    assert_eq!(alice.line(), ":pollchat 417 alice :Input line was too long");
    // The longest line there is (4096 bytes of tags, 510 of message) passes the framer; its
    // message is too long to relay in one line with alice's source, so it is refused whole
    // rather than split or cut (tags belong to one message).
    let longest = format!(
        "@foo=bar;+baz={} PRIVMSG #test {}",
        "a".repeat(4081),
        "b".repeat(496)
    );
    assert_eq!(longest.len(), 4096 + 510);
    alice.send(&longest);
    assert_eq!(alice.line(), ":pollchat 417 alice :Input line was too long");
    // A tagged message that fits one line is relayed.
    alice.send(&format!("@+baz=x PRIVMSG #test :{}", "b".repeat(400)));
    let (echo, relay) = (alice.line(), bob.line());
    assert_eq!(echo, relay);
    assert!(echo.ends_with(&"b".repeat(400)));
    assert!(sync(&mut alice).is_empty());
    assert!(sync(&mut bob).is_empty(), "nothing of the refused lines");
}

for_each_io!(mistakes_in_the_new_commands_get_clear_answers);
/// What a new user got wrong trying this session's commands (found by trying them as one):
/// each mistake is answered, and nothing half-done is left unsaid.
fn mistakes_in_the_new_commands_get_clear_answers(io: IoModel) {
    let server = oper_server(io, "root", "correct horse", |_| {});
    // A password with a space, from the line side: the rest of the line is the password.
    let mut lena = server.join_as("lena", &mut []);
    lena.send("/oper root correct horse");
    lena.expect_prefix("NOTICE you are now a server operator");
    // Commands /help mentions only in passing have their own usage.
    lena.send("/kill");
    assert_eq!(lena.line(), "ERROR usage /kill NICK [why]");
    lena.send("/unwatch");
    assert_eq!(lena.line(), "ERROR usage /unwatch NICK...");
    // Server bans that would hit everyone behind a cloak, or a nick typed as a host.
    for mask in ["*@*.ip", "rawo", "line@*.IP"] {
        lena.send(&format!("/kline 1 {mask}"));
        assert!(
            lena.line().starts_with("ERROR invalid-server-mask "),
            "{mask}"
        );
    }
    // A watch list with a bad nick in it: the others are still watched.
    lena.send("/watch ok1 bad*x ok2");
    assert_eq!(
        lena.line(),
        "ERROR invalid-nick invalid nick \"bad*x\": 1-32 letters, digits or _-[]\\^{}|, not starting with a digit or -"
    );
    assert_eq!(lena.line(), "OFFLINE ok1 ok2");
    // An unknown user mode letter does not stop the ones after it.
    lena.send("/umode +x+w");
    assert_eq!(lena.line(), "MODE lena +w");
    assert!(
        lena.line()
            .starts_with("ERROR unknown-user-mode unknown user mode 'x'")
    );
    lena.send("/unignore nobody");
    assert_eq!(lena.line(), "NOTICE you were not ignoring nobody!*@*");
    lena.send("/join #den");
    lena.expect_prefix("NAMES #den");
    lena.send("/ban bob!");
    assert_eq!(lena.line(), "MODE #den lena +b bob!*@*");

    let mut a = register(&server, "alice");
    a.send("JOIN #raw");
    sync(&mut a);
    a.send("MODE #raw +l");
    assert_eq!(a.line(), ":pollchat 461 alice MODE :Not enough parameters");
    a.send("MODE #raw +k");
    assert_eq!(a.line(), ":pollchat 461 alice MODE :Not enough parameters");
    a.send("LINKS other.server");
    assert_eq!(
        sync(&mut a),
        [":pollchat 365 alice other.server :End of LINKS list"]
    );
    let many: Vec<String> = (0..103).map(|i| format!("m{i}")).collect();
    a.send(&format!("MONITOR + {}", many.join(",")));
    assert_eq!(
        sync(&mut a).last().unwrap(),
        ":pollchat 734 alice 100 m100,m101,m102 :Monitor list is full"
    );
}

for_each_io!(a_bot_says_so_in_its_messages_who_and_whois);
/// IRCv3 bot-mode: ISUPPORT `BOT=B`; `MODE nick +B` marks a user a bot: its messages carry the
/// `bot` tag to message-tags clients (echoes too), WHO flags show `B`, WHOIS adds 335, the
/// line protocol's `/whois` says so; `-B` undoes it; a line user may be a bot too.
fn a_bot_says_so_in_its_messages_who_and_whois(io: IoModel) {
    let server = TestServer::start_io(io);
    let mut c = Client::connect(server.irc_addr.expect("IRC listener"));
    c.send("NICK probe");
    c.send("USER probe 0 * :p");
    let mut burst = Vec::new();
    while !burst
        .last()
        .is_some_and(|l: &String| l.starts_with(":pollchat 422 "))
    {
        burst.push(c.line());
    }
    assert!(
        burst
            .iter()
            .any(|l| l.starts_with(":pollchat 005 ") && l.contains(" BOT=B ")),
        "ISUPPORT names the bot mode: {burst:?}"
    );
    let mut bot = register_with(&server, "robo", "echo-message message-tags");
    let mut user = register_with(&server, "ann", "message-tags");
    let mut plain = register(&server, "carl");
    bot.send("MODE robo +B");
    assert_eq!(bot.line(), ":robo MODE robo :+B");
    bot.send("MODE robo");
    assert_eq!(bot.line(), ":pollchat 221 robo +B");

    bot.send("PRIVMSG ann :beep");
    let echo = bot.line();
    let to_ann = user.line();
    assert_eq!(echo, to_ann, "the echo carries the same tags");
    assert_eq!(tag(&to_ann, "bot"), Some(""), "{to_ann}");
    assert!(to_ann.ends_with(" PRIVMSG ann :beep"), "{to_ann}");
    bot.send("PRIVMSG carl :beep");
    bot.line();
    assert_eq!(
        plain.line(),
        format!(":robo!robo@{LOCAL_CLOAK} PRIVMSG carl :beep"),
        "no tags without message-tags"
    );
    for c in [&mut bot, &mut user] {
        c.send("JOIN #chan");
        c.expect_prefix(":pollchat 366");
    }
    sync(&mut bot);
    bot.send("PRIVMSG #chan :boop");
    bot.line();
    let in_room = user.line();
    assert_eq!(tag(&in_room, "bot"), Some(""), "{in_room}");

    user.send("WHO #chan");
    let who = sync(&mut user);
    assert!(
        who.iter()
            .any(|l| l.starts_with(":pollchat 352 ann #chan robo ") && l.contains(" robo H@B ")),
        "{who:?}"
    );
    assert!(
        who.iter()
            .any(|l| l.contains(" ann H ") || l.contains(" ann H@ ")),
        "{who:?}"
    );
    user.send("WHOIS robo");
    let whois = sync(&mut user);
    assert!(
        whois.contains(&":pollchat 335 ann robo :is a bot".to_string()),
        "{whois:?}"
    );
    let mut line = server.join_as("liner", &mut []);
    line.send("/whois robo");
    assert_eq!(line.line(), "NOTICE robo is in: @#chan");
    line.expect_prefix("NOTICE robo connected since ");
    assert_eq!(line.line(), "NOTICE robo is a bot");

    bot.send("MODE robo -B");
    assert_eq!(bot.line(), ":robo MODE robo :-B");
    bot.send("PRIVMSG ann :human now");
    bot.line();
    assert_eq!(tag(&user.line(), "bot"), None);
    line.send("/umode +B");
    assert_eq!(line.line(), "MODE liner +B");
}
