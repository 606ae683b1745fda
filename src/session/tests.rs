//! Unit tests of the session state machines: no socket, no clock. Time is passed in, and what a
//! driver would send comes back in `Step`s and `Wake`s, so registration order, CAP, PINGs and
//! every deadline are checked exactly.

use std::time::{Duration, Instant};

use super::*;
use crate::core::{CoreLimits, Event, LOBBY};

/// A core, a context with the defaults, and a clock the tests move by hand.
struct Bench {
    core: Core,
    out: Outbox,
    ctx: Context,
    t0: Instant,
}

impl Bench {
    fn new(tweak: impl FnOnce(&mut Config)) -> Bench {
        let mut config = Config::default();
        tweak(&mut config);
        let ctx = Context::new(&config, 1_000_000);
        Bench {
            core: Core::new(CoreLimits::counts(10, 5, 1000), 1_000_000),
            out: Outbox::default(),
            // Deadlines are kept in milliseconds from the context's epoch: start the clock there.
            t0: ctx.epoch,
            ctx,
        }
    }

    fn at(&self, ms: u64) -> Now {
        Now {
            at: self.t0 + Duration::from_millis(ms),
            wall: 1_000_000 + ms,
        }
    }

    fn session(&self, protocol: Protocol, id: usize) -> Session {
        let peer = "10.0.0.7:40000".parse().unwrap();
        Session::new(&self.ctx, protocol, ClientId(id), peer, self.t0)
    }

    /// Feeds one line at `ms`; returns the reply as text.
    fn line(&mut self, s: &mut Session, ms: u64, text: &str) -> (String, Option<Reason>) {
        let now = self.at(ms);
        let frame = Frame::Line(text.as_bytes());
        let step = s.on_frame(&self.ctx, &mut self.core, frame, now, &mut self.out);
        (String::from_utf8(step.reply).unwrap(), step.leave)
    }

    /// The events queued since the last call, each rendered for the line protocol.
    fn events(&mut self) -> Vec<String> {
        let lines = self
            .out
            .iter()
            .map(|(e, _)| String::from_utf8(protocol::line::render(e)).unwrap())
            .collect();
        self.out.clear();
        lines
    }
}

/// The numeric codes in a reply, in order.
fn codes(reply: &str) -> Vec<&str> {
    reply.lines().filter_map(|l| l.split(' ').nth(1)).collect()
}

// ---- the line protocol -----------------------------------------------------------------------

#[test]
fn a_line_session_is_greeted_and_joins_the_lobby() {
    let mut b = Bench::new(|_| {});
    let mut s = b.session(Protocol::Line, 1);
    let now = b.at(0);
    let step = s.welcome(&mut b.core, now, &mut b.out);
    let greeting = String::from_utf8(step.reply).unwrap();
    assert!(greeting.starts_with("WELCOME guest1 #lobby "), "{greeting}");
    assert_eq!(b.core.nick(ClientId(1)).map(|n| &**n), Some("guest1"));
    assert_eq!(b.events()[0], "JOIN #lobby guest1\r\n");
    assert!(b.core.room_exists(LOBBY));
    assert_eq!(s.render_class(), RenderClass::LINE);
    assert_eq!(s.farewell("bye now"), b"BYE bye now\r\n");
}

#[test]
fn line_errors_help_and_quit() {
    let mut b = Bench::new(|_| {});
    let mut s = b.session(Protocol::Line, 1);
    let now = b.at(0);
    s.welcome(&mut b.core, now, &mut b.out);
    b.events();
    let (reply, leave) = b.line(&mut s, 1, "/frobnicate");
    assert!(
        reply.starts_with("ERROR unknown-command /frobnicate"),
        "{reply}"
    );
    assert_eq!(leave, None);
    let (reply, _) = b.line(&mut s, 2, "/help");
    assert!(reply.starts_with("NOTICE commands"), "{reply}");
    let now = b.at(3);
    let step = s.on_frame(&b.ctx, &mut b.core, Frame::TooLong, now, &mut b.out);
    assert!(
        String::from_utf8(step.reply)
            .unwrap()
            .starts_with("ERROR too-long")
    );
    let (_, leave) = b.line(&mut s, 4, "/quit gone fishing");
    assert_eq!(leave, Some(Reason::Quit(Some("gone fishing".into()))));
    // A plain line is a core command: its event goes to the outbox, not the reply.
    let (reply, _) = b.line(&mut s, 5, "hi");
    assert_eq!(reply, "");
}

#[test]
fn a_silent_line_client_is_closed_after_the_idle_timeout() {
    let mut b = Bench::new(|c| c.idle_timeout = Some(Duration::from_secs(10)));
    let mut s = b.session(Protocol::Line, 1);
    let t0 = b.t0;
    let t = |ms| t0 + Duration::from_millis(ms);
    assert_eq!(s.next_deadline(&b.ctx), Some(t(10_000)));
    // Activity moves the deadline; waking early finds nothing due.
    let now = b.at(4_000);
    s.welcome(&mut b.core, now, &mut b.out);
    b.line(&mut s, 4_000, "hello");
    assert_eq!(s.on_deadline(&b.ctx, t(10_000)), Wake::Rearm);
    assert_eq!(s.next_deadline(&b.ctx), Some(t(14_000)));
    assert_eq!(s.on_deadline(&b.ctx, t(14_000)), Wake::Close(Reason::Idle));
    // Without --idle-timeout (and no partial line) a line session never needs waking.
    let b = Bench::new(|_| {});
    assert_eq!(b.session(Protocol::Line, 2).next_deadline(&b.ctx), None);
}

#[test]
fn an_unfinished_line_is_completed_after_a_pause_unless_turned_off() {
    let b = Bench::new(|_| {});
    let mut s = b.session(Protocol::Line, 1);
    let t0 = b.t0;
    let t = |ms| t0 + Duration::from_millis(ms);
    s.note_partial(&b.ctx, true, true, t(100));
    assert_eq!(s.next_deadline(&b.ctx), Some(t(1_100)));
    // Input that added nothing to the line (telnet negotiation alone, a resumed read) does not
    // restart the pause; more bytes of the same line do.
    s.note_partial(&b.ctx, true, false, t(300));
    assert_eq!(s.next_deadline(&b.ctx), Some(t(1_100)));
    s.note_partial(&b.ctx, true, true, t(600));
    assert_eq!(s.on_deadline(&b.ctx, t(1_100)), Wake::Rearm);
    assert_eq!(s.on_deadline(&b.ctx, t(1_600)), Wake::CompleteLine);
    assert_eq!(s.next_deadline(&b.ctx), None);
    // Its newline arrived in time: nothing to complete.
    s.note_partial(&b.ctx, true, true, t(2_000));
    s.note_partial(&b.ctx, false, true, t(2_100));
    assert_eq!(s.next_deadline(&b.ctx), None);

    let b = Bench::new(|c| c.line_complete_after = None);
    let mut s = b.session(Protocol::Line, 1);
    s.note_partial(&b.ctx, true, true, b.t0);
    assert_eq!(s.next_deadline(&b.ctx), None);
    // Never for IRC, whose clients end their lines.
    let b = Bench::new(|_| {});
    let mut s = b.session(Protocol::Irc, 1);
    s.note_partial(&b.ctx, true, true, b.t0);
    assert_eq!(
        s.next_deadline(&b.ctx),
        Some(b.t0 + b.ctx.register_timeout.min(b.ctx.ping_after))
    );
}

// ---- IRC -------------------------------------------------------------------------------------

#[test]
fn irc_registers_with_nick_and_user_in_either_order() {
    for order in [
        ["NICK alice", "USER al 0 * :Alice"],
        ["USER al 0 * :Alice", "NICK alice"],
    ] {
        let mut b = Bench::new(|_| {});
        let cloak = crate::core::Cloak::new([1; 16], 64);
        b.core.set_cloak(cloak);
        let mut s = b.session(Protocol::Irc, 1);
        let now = b.at(0);
        assert_eq!(s.welcome(&mut b.core, now, &mut b.out), Step::default());
        let (first, _) = b.line(&mut s, 1, order[0]);
        assert_eq!(first, "", "nothing until both are in");
        assert_eq!(b.core.nick(ClientId(1)), None);
        let (burst, leave) = b.line(&mut s, 2, order[1]);
        assert_eq!(leave, None);
        assert_eq!(
            codes(&burst),
            [
                "001", "002", "003", "004", "005", "005", "251", "252", "254", "255", "265", "266",
                "422"
            ]
        );
        // 001 shows the prefix others see: the cloak, not 10.0.0.7 (as it did before cloaking).
        let host = cloak.host("10.0.0.7".parse().unwrap());
        assert!(burst.starts_with(&format!(
            ":pollchat 001 alice :Welcome to the pollchat IRC network, alice!al@{host}\r\n"
        )));
        assert_eq!(b.core.nick(ClientId(1)).map(|n| &**n), Some("alice"));
    }
}

#[test]
fn irc_commands_before_registration_get_451_and_pass_must_come_first() {
    let mut b = Bench::new(|c| c.irc_password = Some("sesame".into()));
    let mut s = b.session(Protocol::Irc, 1);
    let (reply, _) = b.line(&mut s, 0, "JOIN #a");
    assert_eq!(reply, ":pollchat 451 * :You have not registered\r\n");
    let (reply, _) = b.line(&mut s, 1, "PING x");
    assert_eq!(reply, ":pollchat PONG pollchat :x\r\n");
    b.line(&mut s, 2, "NICK alice");
    let (reply, leave) = b.line(&mut s, 3, "USER al 0 * :Alice");
    assert_eq!(reply, ":pollchat 464 * :Password incorrect\r\n");
    assert_eq!(leave, Some(Reason::BadPassword));

    // PASS, in any position before registration completes.
    let mut s = b.session(Protocol::Irc, 2);
    b.line(&mut s, 0, "NICK bob");
    b.line(&mut s, 1, "PASS sesame");
    let (reply, leave) = b.line(&mut s, 2, "USER bo 0 * :Bob");
    assert_eq!((codes(&reply)[0], leave), ("001", None));
    let (reply, _) = b.line(&mut s, 3, "USER again 0 * :x");
    assert_eq!(reply, ":pollchat 462 bob :You may not reregister\r\n");
}

#[test]
fn cap_negotiation_pauses_registration_until_cap_end() {
    let mut b = Bench::new(|_| {});
    let mut s = b.session(Protocol::Irc, 1);
    let (ls, _) = b.line(&mut s, 0, "CAP LS 302");
    assert_eq!(
        ls,
        ":pollchat CAP * LS :echo-message message-tags multi-prefix server-time userhost-in-names\r\n"
    );
    b.line(&mut s, 1, "NICK alice");
    let (reply, _) = b.line(&mut s, 2, "USER al 0 * :Alice");
    assert_eq!(reply, "", "registration waits for CAP END");
    let (reply, _) = b.line(&mut s, 3, "CAP REQ :server-time message-tags");
    assert_eq!(reply, ":pollchat CAP * ACK :server-time message-tags\r\n");
    let (reply, _) = b.line(&mut s, 4, "CAP REQ :no-such-cap");
    assert_eq!(reply, ":pollchat CAP * NAK :no-such-cap\r\n");
    assert_eq!(
        s.render_class(),
        RenderClass(RenderClass::IRC_BIT | RenderClass::TIME | RenderClass::TAGS)
    );
    assert_eq!(
        s.max_line(&b.ctx),
        protocol::irc::MAX_LINE + protocol::irc::MAX_TAGS
    );
    let (reply, _) = b.line(&mut s, 5, "CAP END");
    assert_eq!(codes(&reply)[0], "001");
    let (reply, _) = b.line(&mut s, 6, "CAP LIST");
    assert_eq!(
        reply,
        ":pollchat CAP alice LIST :message-tags server-time\r\n"
    );
    // Turning server-time off changes how events are rendered for this client.
    b.line(&mut s, 7, "CAP REQ -server-time");
    assert_eq!(s.render_class(), RenderClass::IRC_TAGS);
    b.line(&mut s, 8, "CAP REQ -message-tags");
    assert_eq!(s.render_class(), RenderClass::IRC);
    assert_eq!(s.max_line(&b.ctx), protocol::irc::MAX_LINE);
}

#[test]
fn an_unregistered_irc_client_is_closed_at_the_registration_deadline() {
    let b = Bench::new(|c| c.irc_register_timeout = Duration::from_secs(60));
    let mut s = b.session(Protocol::Irc, 1);
    let deadline = b.t0 + Duration::from_secs(60);
    assert_eq!(s.next_deadline(&b.ctx), Some(deadline));
    assert_eq!(
        s.on_deadline(&b.ctx, deadline - Duration::from_millis(1)),
        Wake::Rearm
    );
    assert_eq!(
        s.on_deadline(&b.ctx, deadline),
        Wake::Close(Reason::RegistrationTimeout)
    );
}

#[test]
fn taking_pages_of_a_long_answer_keeps_an_irc_client_alive() {
    let mut b = Bench::new(|c| {
        c.irc_ping_after = Duration::from_secs(120);
        c.irc_ping_timeout = Duration::from_secs(240);
    });
    let mut s = b.session(Protocol::Irc, 1);
    b.line(&mut s, 0, "NICK alice");
    b.line(&mut s, 0, "USER al 0 * :Alice");
    let t = |secs: u64| b.t0 + Duration::from_secs(secs);
    assert!(matches!(s.on_deadline(&b.ctx, t(120)), Wake::Send(_)));
    // Its PONG waits unread behind its answers, but it takes a page at 200 s.
    s.note_alive(t(200));
    assert_eq!(s.on_deadline(&b.ctx, t(240)), Wake::Rearm, "not closed");
    assert_eq!(s.next_deadline(&b.ctx), Some(t(320)));
}

#[test]
fn a_silent_irc_client_is_pinged_once_then_closed() {
    let mut b = Bench::new(|c| {
        c.irc_ping_after = Duration::from_secs(120);
        c.irc_ping_timeout = Duration::from_secs(240);
    });
    let mut s = b.session(Protocol::Irc, 1);
    b.line(&mut s, 0, "NICK alice");
    b.line(&mut s, 0, "USER al 0 * :Alice");
    let t0 = b.t0;
    let t = |s: u64| t0 + Duration::from_secs(s);
    // Registered: only the ping clock counts.
    assert_eq!(s.next_deadline(&b.ctx), Some(t(120)));
    assert_eq!(
        s.on_deadline(&b.ctx, t(120)),
        Wake::Send(b"PING :pollchat\r\n".to_vec())
    );
    assert_eq!(s.next_deadline(&b.ctx), Some(t(240)));
    assert_eq!(s.on_deadline(&b.ctx, t(200)), Wake::Rearm, "one PING only");
    // Any line (a PONG) is an answer: the clock starts again.
    b.line(&mut s, 230_000, "PONG :pollchat");
    assert_eq!(s.next_deadline(&b.ctx), Some(t(350)));
    assert!(matches!(s.on_deadline(&b.ctx, t(350)), Wake::Send(_)));
    assert_eq!(
        s.on_deadline(&b.ctx, t(470)),
        Wake::Close(Reason::PingTimeout)
    );
    assert_eq!(
        s.farewell("ping timeout"),
        b"ERROR :Closing link: (ping timeout)\r\n"
    );
}

#[test]
fn events_render_once_per_class() {
    let b = Bench::new(|_| {});
    let event = Event::Joined {
        room: "#a".into(),
        who: crate::core::Source::new("alice", "al", "h", "Alice"),
    };
    let mut rendered: Rendered<std::rc::Rc<[u8]>> = Rendered::new();
    let mut calls = 0;
    for class in [
        RenderClass::LINE,
        RenderClass::IRC,
        RenderClass::LINE,
        RenderClass::IRC,
    ] {
        let bytes = rendered.get(class, || {
            calls += 1;
            render(class, &event, &b.ctx, "bob", 0)
        });
        let expected: &[u8] = match class {
            RenderClass::LINE => b"JOIN #a alice\r\n",
            _ => b":alice!al@h JOIN #a\r\n",
        };
        assert_eq!(&*bytes, expected);
    }
    assert_eq!(calls, 2);
}

proptest::proptest! {
    /// Any sequence of IRC lines (commands in any order, before and after registration, with
    /// odd parameters): the session never panics, and every reply line fits IRC's 512 bytes with
    /// no CR, LF or NUL inside.
    #[test]
    fn an_irc_session_survives_any_sequence_of_lines(
        lines in proptest::collection::vec(
            (
                proptest::sample::select(vec![
                    "NICK", "USER", "PASS", "CAP", "JOIN", "PART", "PRIVMSG", "NOTICE", "TOPIC",
                    "NAMES", "LIST", "WHO", "WHOIS", "MODE", "AWAY", "ISON", "USERHOST", "PING",
                    "PONG", "MOTD", "LUSERS", "TAGMSG", "FROB", "TIME", "VERSION", "ADMIN",
                    "INFO",
                ]),
                proptest::collection::vec(
                    proptest::sample::select(vec![
                        "#a", "#a,#b,#a", "alice", "me", "0", ":", ":hello there", "LS", "REQ",
                        ":server-time", "END", "+o", "*", "", "x".repeat(400).leak(),
                        "é€😀", "#\u{202e}evil", "al*", "*!*@*", "?",
                    ]),
                    0..5,
                ),
            ),
            0..40,
        ),
    ) {
        let mut b = Bench::new(|c| c.irc_password = None);
        let mut s = b.session(Protocol::Irc, 1);
        for (i, (command, params)) in lines.iter().enumerate() {
            let line = format!("{command} {}", params.join(" "));
            let (reply, leave) = b.line(&mut s, i as u64, &line);
            for l in reply.split_terminator("\r\n") {
                proptest::prop_assert!(l.len() + 2 <= 512, "{} bytes: {l}", l.len() + 2);
                proptest::prop_assert!(!l.contains(['\r', '\n', '\0']));
            }
            b.events();
            if leave.is_some() {
                break;
            }
        }
    }
}

#[test]
fn replies_that_echo_a_long_word_still_fit_in_512_bytes() {
    let mut b = Bench::new(|c| c.server_name = "s".repeat(63));
    let mut s = b.session(Protocol::Irc, 1);
    b.line(&mut s, 0, "NICK alice");
    b.line(&mut s, 0, "USER al 0 * :Alice");
    let mut bad_utf8 = "A".repeat(490).into_bytes();
    bad_utf8.extend_from_slice(b" \xff");
    let mut nul = "B".repeat(490).into_bytes();
    nul.extend_from_slice(b" \0");
    let long_command = "Q".repeat(500).into_bytes();
    let many_targets = format!("PRIVMSG a,b,c,d,{} :hi", "x".repeat(480)).into_bytes();
    for line in [bad_utf8, nul, long_command, many_targets] {
        let now = b.at(1);
        let step = s.on_frame(&b.ctx, &mut b.core, Frame::Line(&line), now, &mut b.out);
        let reply = String::from_utf8(step.reply).unwrap();
        assert!(!reply.is_empty());
        for l in reply.split_terminator("\r\n") {
            assert!(l.len() + 2 <= 512, "{} bytes: {l}", l.len() + 2);
            // The numeric's own text is whole: the echoed word was shortened, not the line.
            assert!(!l.ends_with('…'), "{l}");
        }
        b.events();
    }
}

/// With TLS configured, `/oper` in clear from another host is refused with the TLS port, before
/// any password is checked; over TLS it is checked as usual.
#[test]
fn line_oper_in_clear_from_another_host_is_refused_once_tls_is_configured() {
    let mut b = Bench::new(|c| {
        c.tls = Some(crate::config::TlsFiles {
            cert: "cert.pem".into(),
            key: "key.pem".into(),
        })
    });
    let mut clear = b.session(Protocol::Line, 1);
    let t = b.at(0);
    clear.welcome(&mut b.core, t, &mut b.out);
    let (reply, _) = b.line(&mut clear, 1, "/oper boss secret");
    assert_eq!(
        reply,
        "ERROR tls-required passwords are not accepted in clear: use TLS, port 9224\r\n"
    );
    let mut secure = b.session(Protocol::Line, 2);
    secure.secured();
    assert!(secure.is_secure());
    secure.welcome(&mut b.core, t, &mut b.out);
    let (reply, _) = b.line(&mut secure, 1, "/oper boss secret");
    assert!(reply.starts_with("ERROR bad-oper-login"), "{reply}");
}

// ---- message-tags ----------------------------------------------------------------------------

/// An IRC client registered as `nick` with the capabilities `caps` (space-separated, may be
/// empty), joined to #a.
fn irc_client(b: &mut Bench, id: usize, nick: &str, caps: &str) -> Session {
    let mut s = b.session(Protocol::Irc, id);
    if !caps.is_empty() {
        b.line(&mut s, 0, &format!("CAP REQ :{caps}"));
    }
    b.line(&mut s, 0, &format!("NICK {nick}"));
    b.line(&mut s, 0, "USER u 0 * :R");
    b.line(&mut s, 0, "CAP END");
    b.line(&mut s, 0, "JOIN #a");
    b.out.clear();
    s
}

/// What each of `clients` got from the events queued since the last call, rendered in its own
/// class as a driver renders them (once per class: the bytes are checked to be the same for
/// clients of the same class).
fn delivered(b: &mut Bench, clients: &[(usize, &Session)]) -> Vec<String> {
    let mut got = vec![String::new(); clients.len()];
    for (event, to) in b.out.iter() {
        let mut rendered: Rendered<std::rc::Rc<[u8]>> = Rendered::new();
        for (i, (id, s)) in clients.iter().enumerate() {
            if to.contains(&ClientId(*id)) {
                let class = s.render_class();
                let bytes = rendered.get(class, || render(class, event, &b.ctx, "x", 1_500));
                got[i].push_str(std::str::from_utf8(&bytes).unwrap());
            }
        }
    }
    b.out.clear();
    got
}

/// The value of tag `key` in an IRC line, if it has it.
fn tag<'l>(line: &'l str, key: &str) -> Option<&'l str> {
    let tags = line.strip_prefix('@')?.split(' ').next()?;
    tags.split(';').find_map(|t| match t.split_once('=') {
        Some((k, v)) if k == key => Some(v),
        None if t == key => Some(""),
        _ => None,
    })
}

/// A line-protocol user as client 5, joined to #a.
fn line_client(b: &mut Bench) -> Session {
    let now = b.at(0);
    let mut s = b.session(Protocol::Line, 5);
    s.welcome(&mut b.core, now, &mut b.out);
    let join = crate::core::Command::Join("#a".into());
    b.core.handle(ClientId(5), join, 1_000_000, &mut b.out);
    b.out.clear();
    s
}

#[test]
fn client_tags_and_msgid_reach_only_message_tags_clients() {
    let mut b = Bench::new(|_| {});
    let mut alice = irc_client(&mut b, 1, "alice", "message-tags");
    let mut bob = irc_client(&mut b, 2, "bob", "message-tags echo-message");
    let carol = irc_client(&mut b, 3, "carol", "");
    let dave = irc_client(&mut b, 4, "dave", "server-time");
    let line = line_client(&mut b);
    let (reply, _) = b.line(&mut alice, 1, "@+baz=bat;fizz=buzz PRIVMSG #a :hi");
    assert_eq!(reply, "");
    let got = delivered(
        &mut b,
        &[(1, &alice), (2, &bob), (3, &carol), (4, &dave), (5, &line)],
    );
    assert_eq!(got[0], "", "alice has no echo-message");
    let to_bob = got[1].as_str();
    assert_eq!(tag(to_bob, "+baz"), Some("bat"), "{to_bob}");
    assert_eq!(tag(to_bob, "fizz"), None, "not a client tag: {to_bob}");
    assert_eq!(
        tag(to_bob, "time"),
        None,
        "bob has no server-time: {to_bob}"
    );
    let msgid = tag(to_bob, "msgid").expect("a msgid").to_string();
    assert!(msgid.starts_with(&b.ctx.msgid_prefix), "{msgid}");
    assert!(to_bob.ends_with(" PRIVMSG #a :hi\r\n"), "{to_bob}");
    assert!(
        got[2].starts_with(":alice!u@"),
        "no tags at all: {}",
        got[2]
    );
    assert!(got[2].ends_with(" PRIVMSG #a :hi\r\n"), "{}", got[2]);
    assert!(
        got[3].starts_with("@time=1970-01-01T00:00:01.500Z :alice!"),
        "server-time only: {}",
        got[3]
    );
    assert_eq!(got[4], "MSG #a <alice> hi\r\n");

    // bob, with echo-message, gets his own message as alice gets it: the same bytes.
    b.line(&mut bob, 2, "@+bat=baz;+fizz=buzz PRIVMSG #a :hi yourself");
    let got = delivered(&mut b, &[(1, &alice), (2, &bob), (3, &carol)]);
    assert_eq!(got[0], got[1]);
    assert_eq!(tag(&got[0], "+bat"), Some("baz"));
    assert_eq!(tag(&got[0], "+fizz"), Some("buzz"));
    assert_ne!(tag(&got[0], "msgid"), Some(msgid.as_str()), "a new msgid");
    assert!(got[2].starts_with(':'), "{}", got[2]);

    // A client without message-tags cannot send tags: they are dropped, the message goes.
    let mut carol = carol;
    b.line(&mut carol, 3, "@+x=y PRIVMSG #a :plain");
    let got = delivered(&mut b, &[(2, &bob)]);
    assert_eq!(tag(&got[0], "+x"), None, "{}", got[0]);
    assert!(tag(&got[0], "msgid").is_some(), "{}", got[0]);
}

#[test]
fn tagmsg_goes_only_to_message_tags_clients() {
    let mut b = Bench::new(|_| {});
    let mut alice = irc_client(&mut b, 1, "alice", "message-tags echo-message");
    let bob = irc_client(&mut b, 2, "bob", "message-tags server-time");
    let carol = irc_client(&mut b, 3, "carol", "server-time");
    let line = line_client(&mut b);
    let (reply, _) = b.line(&mut alice, 1, r"@+typing=active;+r=a\:b;cat=dog TAGMSG #a");
    assert_eq!(reply, "");
    let got = delivered(&mut b, &[(1, &alice), (2, &bob), (3, &carol), (5, &line)]);
    let echo = got[0].as_str();
    assert!(echo.contains(" :alice!u@"), "{echo}");
    assert!(echo.ends_with(" TAGMSG #a\r\n"), "{echo}");
    assert_eq!(tag(echo, "+typing"), Some("active"));
    assert_eq!(tag(echo, "+r"), Some(r"a\:b"), "escaped as it came");
    assert_eq!(tag(echo, "cat"), None);
    assert_eq!(tag(&got[1], "msgid"), tag(echo, "msgid"));
    assert!(tag(&got[1], "time").is_some(), "{}", got[1]);
    assert_eq!(
        got[2], "",
        "no TAGMSG without message-tags, server-time or not"
    );
    assert_eq!(got[3], "", "nor to a line user");

    // To a nick, and to a comma list: one message (one msgid) per target.
    let (reply, _) = b.line(&mut alice, 2, "@+typing=done TAGMSG bob,#a");
    assert_eq!(reply, "");
    let got = delivered(&mut b, &[(2, &bob)]);
    let lines: Vec<&str> = got[0].lines().collect();
    assert_eq!(lines.len(), 2, "{lines:?}");
    assert!(lines[0].ends_with(" TAGMSG bob"), "{}", lines[0]);
    assert!(lines[1].ends_with(" TAGMSG #a"), "{}", lines[1]);
    assert_ne!(tag(lines[0], "msgid"), tag(lines[1], "msgid"));
    // Unlike PRIVMSG, and like NOTICE, never answered with an error.
    let (reply, _) = b.line(&mut alice, 3, "@+typing=done TAGMSG nobody,#nowhere");
    assert_eq!(reply, "");
    assert!(b.out.is_empty());
}

#[test]
fn tag_limits_answer_417_and_relay_nothing() {
    let mut b = Bench::new(|_| {});
    let mut alice = irc_client(&mut b, 1, "alice", "message-tags echo-message");
    let at_limit = format!("@foo=bar;+baz={} TAGMSG #a", "a".repeat(4081));
    assert_eq!(at_limit.find("TAGMSG"), Some(protocol::irc::MAX_TAGS));
    let (reply, _) = b.line(&mut alice, 1, &at_limit);
    assert_eq!(reply, "");
    let got = delivered(&mut b, &[(1, &alice)]);
    assert_eq!(tag(&got[0], "+baz").map(str::len), Some(4081));
    let over = format!("@foo=bar;+baz={} TAGMSG #a", "a".repeat(4082));
    let (reply, _) = b.line(&mut alice, 2, &over);
    assert_eq!(reply, ":pollchat 417 alice :Input line was too long\r\n");
    assert!(b.out.is_empty());
    // Tags within their budget, and a message within its 510 bytes, but too long to relay
    // in one line once the sender's `nick!user@host` is its source: refused, not split.
    let long = format!("@+baz=x PRIVMSG #a {}", "b".repeat(496));
    let (reply, _) = b.line(&mut alice, 3, &long);
    assert_eq!(reply, ":pollchat 417 alice :Input line was too long\r\n");
    assert!(b.out.is_empty());
    // Without client tags, the same message is split as ever.
    let (reply, _) = b.line(&mut alice, 4, &long[8..]);
    assert_eq!(reply, "");
    let got = delivered(&mut b, &[(1, &alice)]);
    let lines: Vec<&str> = got[0].lines().collect();
    assert_eq!(lines.len(), 2, "{lines:?}");
    let first = tag(lines[0], "msgid").unwrap();
    assert_eq!(tag(lines[1], "msgid"), Some(format!("{first}-1").as_str()));
}
