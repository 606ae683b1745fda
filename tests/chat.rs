//! The line protocol end to end over real sockets: rooms, private messages, presence, history.

mod common;

use std::sync::mpsc;
use std::time::Duration;

use common::{IoModel, LOCAL_CLOAK, TIMEOUT, TestServer, for_each_io};

for_each_io!(welcome_names_the_guest_nick_and_lobby);
fn welcome_names_the_guest_nick_and_lobby(io: IoModel) {
    let server = TestServer::start_io(io);
    let mut a = server.connect();
    assert_eq!(
        a.line(),
        "WELCOME guest1 #lobby welcome to pollchat, guest1! You are in #lobby; /help lists the commands"
    );
    assert_eq!(a.line(), "JOIN #lobby guest1");
    assert_eq!(a.line(), "NAMES #lobby guest1");
    let (_b, nick) = server.join();
    assert_eq!(nick, "guest2");
    assert_eq!(a.line(), "JOIN #lobby guest2");
}

for_each_io!(three_clients_chat_in_two_rooms_and_privately_with_history);
fn three_clients_chat_in_two_rooms_and_privately_with_history(io: IoModel) {
    let server = TestServer::start_io(io);
    let mut alice = server.join_as("alice", &mut []);
    let mut bob = server.join_as("bob", &mut [&mut alice]);
    let mut carol = server.join_as("carol", &mut [&mut alice, &mut bob]);

    // A plain line goes to every other member of the current room, verbatim, with no echo.
    alice.send("hello  everyone :)");
    assert_eq!(bob.line(), "MSG #lobby <alice> hello  everyone :)");
    assert_eq!(carol.line(), "MSG #lobby <alice> hello  everyone :)");
    alice.sync();

    // A second room: alice and bob.
    alice.send("/join #rust");
    assert_eq!(alice.line(), "JOIN #rust alice");
    assert_eq!(alice.line(), "NAMES #rust @alice");
    bob.send("/join #rust");
    assert_eq!(alice.line(), "JOIN #rust bob");
    assert_eq!(bob.line(), "JOIN #rust bob");
    assert_eq!(bob.line(), "NAMES #rust @alice bob");
    bob.send("borrowck says hi");
    bob.send("/me waves");
    assert_eq!(alice.line(), "MSG #rust <bob> borrowck says hi");
    assert_eq!(alice.line(), "MSG #rust * bob waves");
    carol.sync(); // carol, not in #rust, got nothing

    // `//` escapes a leading slash.
    alice.send("//not a command");
    assert_eq!(bob.line(), "MSG #rust <alice> /not a command");

    // Private messages, nick looked up case-insensitively.
    carol.send("/msg ALICE psst");
    assert_eq!(alice.line(), "PRIV <carol> psst");
    bob.sync();

    // Carol joins #rust later and gets its history, marked as such, then live messages.
    carol.send("/join #rust");
    assert_eq!(carol.line(), "JOIN #rust carol");
    assert_eq!(carol.line(), "NAMES #rust @alice bob carol");
    for expected in [
        "<bob> borrowck says hi",
        "* bob waves",
        "<alice> /not a command",
    ] {
        let l = carol.line();
        assert!(
            l.starts_with("HISTORY #rust 20") && l.ends_with(expected),
            "{l}"
        );
    }
    assert_eq!(alice.line(), "JOIN #rust carol");
    assert_eq!(bob.line(), "JOIN #rust carol");
    alice.send("welcome carol");
    assert_eq!(carol.line(), "MSG #rust <alice> welcome carol");
    assert_eq!(bob.line(), "MSG #rust <alice> welcome carol");
}

for_each_io!(nick_changes_are_checked_and_told_once_to_each_neighbour);
fn nick_changes_are_checked_and_told_once_to_each_neighbour(io: IoModel) {
    let server = TestServer::start_io(io);
    let mut alice = server.join_as("alice", &mut []);
    let mut bob = server.join_as("bob", &mut [&mut alice]);
    for (line, expected) in [
        (
            "/nick Alice",
            "ERROR nick-in-use the nick Alice is already taken",
        ),
        (
            "/nick 1st",
            "ERROR invalid-nick invalid nick \"1st\": 1-32 letters, digits or _-[]\\^{}|, not starting with a digit or -",
        ),
        (
            "/nick a:b",
            "ERROR invalid-nick invalid nick \"a:b\": 1-32 letters, digits or _-[]\\^{}|, not starting with a digit or -",
        ),
        ("/nick two words", "ERROR usage /nick NAME"),
    ] {
        bob.send(line);
        assert_eq!(bob.line(), expected);
    }
    // Sharing two rooms, alice still hears of bob's change once. (Alice's join is confirmed
    // before bob's is sent: two clients' lines have no order unless the test gives them one.)
    alice.send("/join #x");
    alice.expect_prefix("NAMES #x");
    bob.send("/join #x");
    alice.expect_prefix("JOIN #x bob");
    bob.expect_prefix("NAMES #x");
    bob.send("/nick robert");
    assert_eq!(bob.line(), "NICK bob robert");
    assert_eq!(alice.line(), "NICK bob robert");
    alice.sync();
    // The old nick is free again.
    alice.send("/msg bob hi");
    assert_eq!(alice.line(), "ERROR no-such-nick no user is called bob");
}

for_each_io!(topic_away_whois_rooms_and_who);
fn topic_away_whois_rooms_and_who(io: IoModel) {
    let server = TestServer::start_io(io);
    let mut alice = server.join_as("alice", &mut []);
    let mut bob = server.join_as("bob", &mut [&mut alice]);

    bob.send("/topic");
    assert_eq!(bob.line(), "NOTICE #lobby has no topic");
    alice.send("/topic all things chat");
    assert_eq!(alice.line(), "TOPIC #lobby alice all things chat");
    assert_eq!(bob.line(), "TOPIC #lobby alice all things chat");
    bob.send("/topic");
    let l = bob.line();
    assert!(
        l.starts_with("NOTICE topic of #lobby: all things chat (set by alice at 20"),
        "{l}"
    );

    alice.send("/away lunch");
    assert_eq!(alice.line(), "NOTICE you are marked as away");
    bob.send("/msg alice are you there?");
    assert_eq!(bob.line(), "NOTICE alice is away: lunch");
    assert_eq!(alice.line(), "PRIV <bob> are you there?");
    bob.send("/who");
    assert_eq!(bob.line(), "NAMES #lobby alice(away) bob");
    bob.send("/whois alice");
    assert_eq!(bob.line(), "NOTICE alice is in: #lobby");
    let l = bob.line();
    assert!(
        l.starts_with("NOTICE alice connected since 20") && l.contains(", idle "),
        "{l}"
    );
    assert_eq!(bob.line(), "NOTICE alice is away: lunch");
    bob.send("/whois nobody");
    assert_eq!(bob.line(), "ERROR no-such-nick no user is called nobody");
    // Only the user itself is told where it connects from (bob's answer above had no such line:
    // the error came next), with the cloak others see instead.
    alice.send("/whois alice");
    alice.expect_prefix("NOTICE alice is away: lunch");
    assert_eq!(
        alice.line(),
        format!(
            "NOTICE alice connects from 127.0.0.1 (only you see this; others see {LOCAL_CLOAK})"
        )
    );

    bob.send("/join #quiet");
    bob.expect_prefix("NAMES #quiet");
    bob.send("/rooms");
    assert_eq!(bob.line(), "ROOM #lobby 2 all things chat");
    assert_eq!(bob.line(), "ROOM #quiet 1");
    assert_eq!(bob.line(), "NOTICE 2 rooms");
    alice.send("/who #quiet");
    assert_eq!(alice.line(), "NAMES #quiet @bob");
    alice.send("/who #nowhere");
    assert_eq!(alice.line(), "ERROR no-such-room there is no room #nowhere");
}

for_each_io!(part_and_quit_are_told_with_their_reasons);
fn part_and_quit_are_told_with_their_reasons(io: IoModel) {
    let server = TestServer::start_io(io);
    let mut alice = server.join_as("alice", &mut []);
    let mut bob = server.join_as("bob", &mut [&mut alice]);
    bob.send("/join #side");
    bob.expect_prefix("NAMES #side");
    bob.send("/part #lobby off to the side");
    assert_eq!(alice.line(), "PART #lobby bob off to the side");
    assert_eq!(bob.line(), "PART #lobby bob off to the side");
    bob.send("/part");
    assert_eq!(bob.line(), "PART #side bob");
    assert_eq!(bob.line(), "NOTICE you are in no room now: /join #room");
    bob.send("talking to nobody");
    assert_eq!(
        bob.line(),
        "ERROR no-current-room you are in no room: /join #room first"
    );
    bob.send("/join #lobby");
    assert_eq!(alice.line(), "JOIN #lobby bob");
    bob.send("/quit see you");
    assert_eq!(alice.line(), "QUIT bob quit: see you");
    let rest = bob.expect_closed();
    assert_eq!(rest.last().map(String::as_str), Some("BYE quit: see you"));
}

for_each_io!(help_and_unknown_commands);
fn help_and_unknown_commands(io: IoModel) {
    let server = TestServer::start_io(io);
    let (mut a, _) = server.join();
    a.send("/help");
    assert_eq!(
        a.line(),
        "NOTICE commands (a line without / talks in the current room):"
    );
    let mut lines = Vec::new();
    for _ in 0..common::HELP_LINES {
        lines.push(a.line());
    }
    assert!(
        lines.iter().all(|l| l.starts_with("NOTICE   /")),
        "{lines:?}"
    );
    assert!(lines.iter().any(|l| l.contains("/msg NICK text")));
    a.send("/dance");
    assert_eq!(
        a.line(),
        "ERROR unknown-command /dance: /help lists the commands"
    );
    a.send("/msg");
    assert_eq!(a.line(), "ERROR usage /msg NICK text");
}

for_each_io!(peers_that_vanish_are_removed_and_their_rooms_told);
fn peers_that_vanish_are_removed_and_their_rooms_told(io: IoModel) {
    let server = TestServer::start_io(io);
    let mut alice = server.join_as("alice", &mut []);
    let bob = server.join_as("bob", &mut [&mut alice]);
    drop(bob);
    assert_eq!(alice.line(), "QUIT bob connection closed");
    // A reset (SO_LINGER 0 makes close send RST) is a lost connection.
    let carol = server.join_as("carol", &mut [&mut alice]);
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    let fd = std::os::fd::AsRawFd::as_raw_fd(carol.stream());
    // SAFETY: setting a socket option on a socket we own, with a correctly sized value.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            &linger as *const _ as *const libc::c_void,
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        )
    };
    assert_eq!(rc, 0);
    drop(carol);
    assert_eq!(alice.line(), "QUIT carol connection lost");
    alice.send("/who");
    assert_eq!(alice.line(), "NAMES #lobby alice");
}

for_each_io!(a_half_closed_client_still_gets_its_answers);
fn a_half_closed_client_still_gets_its_answers(io: IoModel) {
    let server = TestServer::start_io(io);
    let (mut a, nick) = server.join();
    // The last line has no newline; end of stream completes it.
    a.send_raw(b"/who\n/whois guest1");
    a.shutdown_write();
    let lines = a.expect_closed();
    assert_eq!(lines[0], format!("NAMES #lobby {nick}"));
    assert_eq!(lines[1], "NOTICE guest1 is in: #lobby");
    assert_eq!(lines.last().unwrap(), "BYE connection closed");
}

for_each_io!(shutdown_says_goodbye_to_everyone_and_returns);
fn shutdown_says_goodbye_to_everyone_and_returns(io: IoModel) {
    let server = TestServer::start_io(io);
    let (mut a, _) = server.join();
    let (mut b, _) = server.join();
    a.line(); // b's join
    server.stop().expect("run returns Ok");
    assert_eq!(a.expect_closed(), ["BYE server shutting down"]);
    assert_eq!(b.expect_closed(), ["BYE server shutting down"]);
}

// A client that reads nothing cannot hold a shutdown up: what it has not taken within the grace
// time is cut off and the server returns, having said goodbye to everyone else.
for_each_io!(shutdown_does_not_wait_for_a_client_that_never_reads);
fn shutdown_does_not_wait_for_a_client_that_never_reads(io: IoModel) {
    let server = TestServer::with_io(io, |c| {
        c.max_line = 64 * 1024;
        c.max_sendq = 64 << 20;
        c.flood_rate = 0.0;
        c.shutdown_grace = Duration::from_millis(300);
        c.write_timeout = Duration::from_millis(300);
    });
    let (mut talker, _) = server.join();
    let (stuck, stuck_nick) = server.join();
    stuck.shrink_receive_buffer(16 * 1024);
    assert_eq!(talker.line(), format!("JOIN #lobby {stuck_nick}"));
    // 6 MiB of private messages, more than loopback TCP holds for a client that reads nothing.
    let text = "p".repeat(60 * 1024);
    for _ in 0..100 {
        talker.send(&format!("/msg {stuck_nick} {text}"));
    }
    talker.send("/who");
    let names = talker.expect_prefix("NAMES #lobby");
    if io == IoModel::ThreadsDirect {
        // Its writes have a timeout too: the stuck client is gone already.
        assert_eq!(names, "NAMES #lobby guest1");
    } else {
        assert_eq!(names, format!("NAMES #lobby guest1 {stuck_nick}"));
    }
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || tx.send(server.stop()));
    rx.recv_timeout(TIMEOUT)
        .expect("the server stopped")
        .expect("run returns Ok");
    let said = talker.expect_closed();
    assert_eq!(said.last().unwrap(), "BYE server shutting down", "{said:?}");
    drop(stuck);
}

for_each_io!(history_can_be_turned_off_and_is_bounded);
fn history_can_be_turned_off_and_is_bounded(io: IoModel) {
    let server = TestServer::with_io(io, |c| c.history = 2);
    let (mut a, _) = server.join();
    for i in 0..5 {
        a.send(&format!("m{i}"));
    }
    a.sync();
    let (mut b, _) = server.join();
    let l1 = b.line();
    let l2 = b.line();
    assert!(
        l1.ends_with("<guest1> m3") && l2.ends_with("<guest1> m4"),
        "{l1} / {l2}"
    );
    b.sync();

    let server = TestServer::with_io(io, |c| c.history = 0);
    let (mut a, _) = server.join();
    a.send("not kept");
    a.sync();
    let (mut b, _) = server.join();
    b.sync(); // the next line after the join burst is the sync reply: no history
}

for_each_io!(listens_on_several_addresses_including_ipv6);
fn listens_on_several_addresses_including_ipv6(io: IoModel) {
    let v6 = std::net::TcpListener::bind("[::1]:0").is_ok();
    let second = if v6 { "[::1]:0" } else { "127.0.0.2:0" };
    let server = TestServer::with_io(io, |c| c.listen.push(second.parse().unwrap()));
    let running_second = server.addrs[1];
    let mut first = server.connect();
    let mut other = common::Client::connect(running_second);
    first.expect_prefix("NAMES");
    other.expect_prefix("NAMES");
    assert_eq!(first.line(), "JOIN #lobby guest2");
    other.send("over the other listener");
    assert_eq!(first.line(), "MSG #lobby <guest2> over the other listener");
}

#[test]
fn big_rooms_keep_presence_quiet() {
    let server = TestServer::with(|c| c.big_room = 2);
    let (mut a, _) = server.join();
    let (_b, _) = server.join();
    assert_eq!(a.line(), "JOIN #lobby guest2");
    // The third member makes #lobby big: nobody else hears of it, and its name list is cut.
    let mut c = server.connect();
    c.expect_prefix("WELCOME");
    assert_eq!(c.line(), "JOIN #lobby guest3");
    assert_eq!(
        c.line(),
        "NAMES #lobby guest1 guest3",
        "the joiner is always in its list"
    );
    assert_eq!(
        c.line(),
        "NOTICE #lobby has 3 members; /who #lobby lists them all"
    );
    c.send("/who");
    assert_eq!(c.line(), "NAMES #lobby guest1 guest2 guest3");
    c.send("still heard");
    assert_eq!(a.line(), "MSG #lobby <guest3> still heard");
}

for_each_io!(a_nick_that_left_a_big_room_is_held_for_the_nick_delay);
/// Big rooms do not announce quits, so the nick of a member who quit is refused to others for
/// `--nick-delay` (here one second), in both protocols, and given out after it.
fn a_nick_that_left_a_big_room_is_held_for_the_nick_delay(io: IoModel) {
    let server = TestServer::with_io(io, |c| {
        c.big_room = 2;
        c.nick_delay = Duration::from_secs(1);
    });
    let mut alice = server.join_as("alice", &mut []);
    let (mut b, _) = server.join();
    assert_eq!(alice.line(), "JOIN #lobby guest2");
    let (mut c, guest) = server.join(); // #lobby is big now
    c.expect_prefix("NOTICE #lobby has 3 members");
    alice.send("/quit");
    assert_eq!(alice.expect_closed(), ["BYE quit"]);
    b.sync(); // nobody in the big room was told
    c.send("/nick alice");
    let refused = c.line();
    assert!(
        refused.starts_with("ERROR nick-unavailable the nick alice was left moments ago"),
        "{refused}"
    );
    let mut irc = common::Client::connect(server.irc_addr.unwrap());
    irc.send("NICK ALICE\r");
    assert_eq!(
        irc.line(),
        ":pollchat 437 * ALICE :Nick is temporarily unavailable: its owner left it moments ago"
    );
    // After the delay it is anybody's: retry until then (paced, with a deadline).
    let deadline = std::time::Instant::now() + TIMEOUT;
    loop {
        c.send("/nick alice");
        let answer = c.line();
        if answer == format!("NICK {guest} alice") {
            break;
        }
        assert!(answer.starts_with("ERROR nick-unavailable"), "{answer}");
        assert!(std::time::Instant::now() < deadline, "still held");
        std::thread::sleep(Duration::from_millis(200));
    }
}

for_each_io!(the_sketch_client_is_heard_without_newlines);
/// The Python sketch pollchat started from had a client that sends what its user typed with one
/// `send()` and no newline, and prints whatever arrives. With the default settings its messages
/// reach the room: an unterminated line that sits for `--line-complete-after` (1 s) is complete.
fn the_sketch_client_is_heard_without_newlines(io: IoModel) {
    let server = TestServer::start_io(io);
    let (mut reader, _) = server.join();
    let (mut sketch, guest) = server.join();
    assert_eq!(reader.line(), format!("JOIN #lobby {guest}"));
    sketch.send_raw(b"hello from the sketch");
    assert_eq!(
        reader.line(),
        format!("MSG #lobby <{guest}> hello from the sketch")
    );
    // Commands work the same way.
    sketch.send_raw(b"/nick sketchy");
    assert_eq!(reader.line(), format!("NICK {guest} sketchy"));
    sketch.send_raw(b"a second message");
    assert_eq!(reader.line(), "MSG #lobby <sketchy> a second message");
    // A line whose newline arrives in time is one line, not two.
    sketch.send_raw(b"split ");
    sketch.send_raw(b"line\n");
    assert_eq!(reader.line(), "MSG #lobby <sketchy> split line");
    reader.sync();
}

for_each_io!(service_and_server_names_are_refused_as_nicks);
fn service_and_server_names_are_refused_as_nicks(io: IoModel) {
    let server = TestServer::with_io(io, |c| {
        c.server_name = "chat.example".into();
        c.reserved_nicks = vec!["Helper".into()];
    });
    let (mut a, guest) = server.join();
    for nick in ["NickServ", "chanserv", "GLOBAL", "helper"] {
        a.send(&format!("/nick {nick}"));
        assert_eq!(
            a.line(),
            format!(
                "ERROR reserved-nick the nick {nick} is reserved: it names a service or this server"
            )
        );
    }
    // The server's name is refused as a nick only where it could be one.
    let server2 = TestServer::with_io(io, |c| c.server_name = "Chatter".into());
    let (mut b, _) = server2.join();
    b.send("/nick chatter");
    b.expect_prefix("ERROR reserved-nick the nick chatter is reserved");
    // The guest nick was kept, and names that merely contain a service's are anybody's.
    a.send("/nick NickServ2");
    assert_eq!(a.line(), format!("NICK {guest} NickServ2"));
}

for_each_io!(invisible_characters_are_refused_in_rooms_and_stripped_from_topics);
fn invisible_characters_are_refused_in_rooms_and_stripped_from_topics(io: IoModel) {
    let server = TestServer::start_io(io);
    let mut alice = server.join_as("alice", &mut []);
    // U+202E RIGHT-TO-LEFT OVERRIDE: "#\u{202e}ybbol" would show as "#lobby".
    alice.send("/join #\u{202e}ybbol");
    assert_eq!(
        alice.line(),
        "ERROR invalid-room invalid room \"#\\u{202e}ybbol\": # and 1-49 characters without spaces, commas, control or invisible characters"
    );
    alice.send("/topic \u{202e}dlrow\u{200b} olleh");
    assert_eq!(alice.line(), "TOPIC #lobby alice dlrow olleh");
}

for_each_io!(line_users_operate_their_rooms);
/// The line protocol's moderation commands: the creator of a room is its operator and shown
/// with `@`; `/mode`, `/op`, `/voice`, `/invite`, `/ban`, `/bans`, `/kick`, and `/join` with a
/// key, each refused with an error code to a non-operator.
fn line_users_operate_their_rooms(io: IoModel) {
    let server = TestServer::start_io(io);
    let mut alice = server.join_as("alice", &mut []);
    let mut bob = server.join_as("bob", &mut [&mut alice]);
    alice.send("/join #den");
    assert_eq!(alice.line(), "JOIN #den alice");
    assert_eq!(alice.line(), "NAMES #den @alice");
    alice.send("/mode");
    assert_eq!(alice.line(), "NOTICE modes of #den: +nt");
    alice.send("/mode +k");
    assert!(alice.line().starts_with("ERROR usage /mode [#room]"));
    alice.send("/mode +ik sesame");
    assert_eq!(alice.line(), "MODE #den alice +ik sesame");
    bob.send("/join #den sesame");
    assert_eq!(
        bob.line(),
        "ERROR invite-only cannot join #den: it is invite-only (+i)"
    );
    alice.send("/invite bob");
    assert_eq!(alice.line(), "NOTICE invited bob to #den");
    assert_eq!(bob.line(), "INVITE #den alice");
    bob.send("/join #den");
    assert_eq!(
        bob.line(),
        "ERROR bad-key cannot join #den: it needs the right key (+k): /join #den KEY"
    );
    bob.send("/join #den sesame");
    assert_eq!(bob.line(), "JOIN #den bob");
    assert_eq!(bob.line(), "NAMES #den @alice bob");
    assert_eq!(alice.line(), "JOIN #den bob");
    bob.send("/mode -i");
    assert_eq!(
        bob.line(),
        "ERROR not-operator you are not an operator of #den"
    );
    bob.send("/kick alice");
    assert_eq!(
        bob.line(),
        "ERROR not-operator you are not an operator of #den"
    );
    alice.send("/op bob");
    assert_eq!(alice.line(), "MODE #den alice +o bob");
    assert_eq!(bob.line(), "MODE #den alice +o bob");
    bob.send("/ban *!*@nowhere.example");
    assert_eq!(bob.line(), "MODE #den bob +b *!*@nowhere.example");
    assert_eq!(alice.line(), "MODE #den bob +b *!*@nowhere.example");
    alice.send("/bans");
    let ban = alice.line();
    assert!(
        ban.starts_with("BAN #den *!*@nowhere.example bob 20"),
        "{ban}"
    );
    assert_eq!(alice.line(), "NOTICE 1 ban on #den");
    bob.send("/kick #den alice bye now");
    assert_eq!(bob.line(), "KICK #den alice bob bye now");
    assert_eq!(alice.line(), "KICK #den alice bob bye now");
    assert_eq!(alice.line(), "NOTICE now talking in #lobby");
    bob.send("/mode #den +q");
    assert_eq!(
        bob.line(),
        "ERROR unknown-mode unknown mode 'q': modes are b, i, k, l, m, n, o, s, t, v"
    );
}
