//! The command table's rules without sockets: lines go through [`IrcSession::on_frame`] with a
//! core built here, and the replies are read back as lines.

use std::collections::BTreeSet;
use std::time::Instant;

use super::commands::{Allowed, COMMANDS};
use super::*;
use crate::config::Config;
use crate::core::{CoreLimits, Millis, Outbox};
use crate::session::Now;

const ID: ClientId = ClientId(1);
const NOW: Millis = 1_000_000;

/// One IRC client of a core of its own.
struct Client {
    core: Core,
    session: IrcSession,
}

impl Client {
    fn new() -> Client {
        let limits = CoreLimits::counts(0, 8, 1000);
        Client {
            core: Core::new(limits, NOW),
            session: IrcSession::new(ID, "127.0.0.1:40000".parse().unwrap(), Instant::now()),
        }
    }

    fn registered() -> Client {
        let mut c = Client::new();
        c.send("NICK me");
        c.send("USER me 0 * :Me");
        assert!(c.session.registered);
        c
    }

    /// Passes one line to the session, as a driver does.
    fn step(&mut self, line: &str, out: &mut Outbox) -> Step {
        let config = Config {
            server_name: "srv".into(),
            max_rooms: 8,
            ..Config::default()
        };
        let ctx = Context::new(&config, 0);
        let frame = Frame::Line(line.as_bytes());
        let now = Now {
            at: Instant::now(),
            wall: NOW,
        };
        self.session.on_frame(&ctx, &mut self.core, frame, now, out)
    }

    /// Sends one line; returns the replies and the core's events for this client, as IRC lines.
    fn send(&mut self, line: &str) -> Vec<String> {
        let mut out = Outbox::default();
        let step = self.step(line, &mut out);
        let me = self
            .core
            .nick(ID)
            .map_or("*".to_string(), |n| n.to_string());
        let mut bytes = step.reply;
        for (event, to) in out.iter() {
            if to.contains(&ID) {
                bytes.extend(irc::render(event, "srv", &me, false, NOW));
            }
        }
        String::from_utf8(bytes)
            .unwrap()
            .split_terminator("\r\n")
            .map(String::from)
            .collect()
    }
}

#[test]
fn the_table_names_each_command_once_in_upper_case() {
    let names: BTreeSet<&str> = COMMANDS.iter().map(|e| e.name).collect();
    assert_eq!(names.len(), COMMANDS.len());
    assert!(names.iter().all(|n| *n == n.to_ascii_uppercase()));
}

#[test]
fn only_connection_commands_are_allowed_before_registration() {
    let before: BTreeSet<&str> = COMMANDS
        .iter()
        .filter(|e| e.allowed != Allowed::Registered)
        .map(|e| e.name)
        .collect();
    let expected = ["CAP", "NICK", "PASS", "PING", "PONG", "QUIT", "USER"];
    assert_eq!(before, expected.into_iter().collect());
    let once: Vec<&str> = COMMANDS
        .iter()
        .filter(|e| e.allowed == Allowed::Unregistered)
        .map(|e| e.name)
        .collect();
    assert_eq!(once, ["PASS", "USER"]);
}

#[test]
fn unknown_commands_get_451_before_registration_and_421_after() {
    let mut c = Client::new();
    assert_eq!(c.send("FROB x"), [":srv 451 * :You have not registered"]);
    let mut c = Client::registered();
    assert_eq!(c.send("frob x"), [":srv 421 me FROB :Unknown command"]);
    // The command is echoed without its control characters.
    assert_eq!(c.send("FR\u{1}OB"), [":srv 421 me FROB :Unknown command"]);
}

#[test]
fn registered_only_commands_get_451_before_registration_whatever_their_parameters() {
    for e in COMMANDS.iter().filter(|e| e.allowed == Allowed::Registered) {
        for line in [e.name.to_string(), format!("{} #a b c d e", e.name)] {
            let mut c = Client::new();
            assert_eq!(
                c.send(&line),
                [":srv 451 * :You have not registered"],
                "{line}"
            );
        }
    }
}

#[test]
fn registration_only_commands_get_462_after_registration_whatever_their_parameters() {
    for line in ["PASS", "PASS x", "USER", "USER a b c d"] {
        let mut c = Client::registered();
        assert_eq!(
            c.send(line),
            [":srv 462 me :You may not reregister"],
            "{line}"
        );
    }
}

#[test]
fn too_few_parameters_get_461_from_the_table() {
    for e in COMMANDS.iter().filter(|e| e.min_params > 0) {
        let (mut c, me) = match e.allowed {
            Allowed::Registered => (Client::registered(), "me"),
            _ => (Client::new(), "*"),
        };
        let short = std::iter::once(e.name)
            .chain(std::iter::repeat_n("x", e.min_params - 1))
            .collect::<Vec<_>>()
            .join(" ");
        assert_eq!(
            c.send(&short),
            [format!(":srv 461 {me} {} :Not enough parameters", e.name)],
            "{short}"
        );
    }
}

#[test]
fn commands_with_their_own_answer_to_a_missing_parameter() {
    let mut c = Client::new();
    assert_eq!(c.send("NICK"), [":srv 431 * :No nickname given"]);
    assert_eq!(c.send("NICK :"), [":srv 431 * :No nickname given"]);
    assert_eq!(c.send("PING"), [":srv 409 * :No origin specified"]);
    assert_eq!(c.send("CAP"), [":srv 410 * * :Invalid CAP command"]);
    assert_eq!(c.send("PONG"), Vec::<String>::new());
    let mut c = Client::registered();
    assert_eq!(c.send("NICK"), [":srv 431 me :No nickname given"]);
    assert_eq!(c.send("WHOIS"), [":srv 431 me :No nickname given"]);
    assert_eq!(c.send("NAMES"), [":srv 366 me * :End of /NAMES list"]);
    assert_eq!(c.send("WHO"), [":srv 315 me * :End of /WHO list"]);
    assert_eq!(
        c.send("PRIVMSG"),
        [":srv 411 me :No recipient given (PRIVMSG)"]
    );
    assert_eq!(c.send("PRIVMSG me"), [":srv 412 me :No text to send"]);
    // Nor is TAGMSG.
    for notice in [
        "NOTICE",
        "NOTICE me",
        "NOTICE nobody :x",
        "NOTICE #none :x",
        "TAGMSG",
        "TAGMSG :",
        "@+typing=active TAGMSG nobody,#none,#a,#b,#c,#d",
    ] {
        assert_eq!(c.send(notice), Vec::<String>::new(), "{notice}");
    }
}

#[test]
fn quit_is_allowed_before_registration_and_ends_the_session() {
    let step = Client::new().step("QUIT :bye", &mut Outbox::default());
    assert_eq!(step.leave, Some(Reason::Quit(Some("bye".into()))));
    assert!(step.reply.is_empty());
    let step = Client::registered().step("quit", &mut Outbox::default());
    assert_eq!(step.leave, Some(Reason::Quit(None)));
}

#[test]
fn every_command_costs_one_line_before_its_work() {
    for e in COMMANDS {
        // OPER checks a password hash, slow on purpose: it costs ten lines.
        let expected = if e.name == "OPER" { 10 } else { 1 };
        assert_eq!(e.cost, expected, "{}", e.name);
    }
    // An unknown command costs its line and nothing more, in any case.
    let mut c = Client::registered();
    assert_eq!(extra_cost(&mut c, "FROB"), 0);
    assert_eq!(extra_cost(&mut c, "lusers"), 0);
}

/// The flood tokens one line costs beyond a line's one, as the driver charges them.
fn extra_cost(c: &mut Client, line: &str) -> u32 {
    let mut out = Outbox::default();
    c.step(line, &mut out).extra_cost
}

#[test]
fn comma_lists_are_deduplicated_capped_and_charged_by_their_targets() {
    let mut c = Client::registered();
    assert_eq!(
        extra_cost(&mut c, "JOIN #a,#B,#b,#c"),
        2,
        "3 distinct rooms"
    );
    assert_eq!(extra_cost(&mut c, "PRIVMSG #a,#A,#a :hi"), 0, "one target");
    assert_eq!(extra_cost(&mut c, "PRIVMSG #a,#b,#c :hi"), 2);
    // TAGMSG is charged as PRIVMSG: a fan-out per target.
    assert_eq!(extra_cost(&mut c, "@+typing=active TAGMSG #a,#b,#c"), 2);
    assert_eq!(extra_cost(&mut c, "TAGMSG #a,#A"), 0);
    assert_eq!(
        extra_cost(&mut c, "PRIVMSG #a,#b,#c,x1,x2,x3 :hi"),
        3,
        "capped at 4"
    );
    let replies = c.send("PRIVMSG #a,#b,#c,x1,x2,x3 :hi");
    assert_eq!(
        replies[0],
        ":srv 407 me x2 :Too many targets. The rest were ignored"
    );
    assert!(!replies.iter().any(|l| l.contains("x3")), "{replies:?}");
    // NOTICE is capped too, but never answered with an error.
    let replies = c.send("NOTICE #a,#b,#c,x1,x2 :hi");
    assert!(replies.is_empty(), "{replies:?}");
    let replies = c.send("WHOIS me,me,you");
    assert_eq!(
        replies[0],
        ":srv 407 me you :Too many targets. The rest were ignored"
    );
    // A line that does one thing costs one line; JOIN 0 costs a line per room left.
    assert_eq!(extra_cost(&mut c, "TOPIC #a"), 0);
    assert_eq!(extra_cost(&mut c, "JOIN 0"), 2);
    assert_eq!(extra_cost(&mut c, "JOIN 0"), 0);
}

/// review2: a ban mask given as a trailing parameter (`:a b`) reaches the MODE line all
/// members get, and the 367 ban list, as two parameters.
#[test]
fn a_trailing_ban_mask_with_a_space_breaks_mode_and_367() {
    let mut c = Client::registered();
    c.send("JOIN #r");
    let mode = c.send("MODE #r +b :evil +o");
    let bans = c.send("MODE #r +b");
    let all: Vec<&String> = mode.iter().chain(&bans).collect();
    for line in &all {
        let params = irc::parse(line).map(|m| m.params.len());
        assert!(
            !line.contains("evil +o"),
            "a mask with a space reached the wire: {line:?} ({params:?} params)"
        );
    }
}

/// With TLS configured, PASS and OPER in clear from another host are refused with a pointer to
/// the TLS port (the password is never kept or checked); on TLS, or from loopback, they are not.
#[test]
fn credentials_in_clear_from_another_host_are_refused_once_tls_is_configured() {
    let config = Config {
        server_name: "srv".into(),
        irc_password: Some("sesame".into()),
        ..Config::default()
    };
    let mut ctx = Context::new(&config, 0);
    let run = |ctx: &Context, peer: &str, secure: bool, lines: &[&str]| {
        let mut core = Core::new(CoreLimits::counts(0, 8, 1000), NOW);
        let mut session = IrcSession::new(ID, peer.parse().unwrap(), Instant::now());
        session.secure = secure;
        let mut got = String::new();
        for line in lines {
            let now = Now {
                at: Instant::now(),
                wall: NOW,
            };
            let mut out = Outbox::default();
            let frame = Frame::Line(line.as_bytes());
            let step = session.on_frame(ctx, &mut core, frame, now, &mut out);
            got.push_str(&String::from_utf8(step.reply).unwrap());
        }
        got
    };
    let login = ["PASS sesame", "NICK me", "USER me 0 * :Me", "OPER boss pw"];
    // Without TLS configured, nothing changes.
    let plain = run(&ctx, "192.0.2.7:4000", false, &login);
    assert!(plain.contains(" 001 me "), "{plain}");
    ctx.tls = Some(crate::session::TlsPorts {
        line: Some(9224),
        irc: Some(6697),
    });
    let refused = run(&ctx, "192.0.2.7:4000", false, &login);
    assert!(
        refused.starts_with(
            ":srv FAIL PASS TLS_REQUIRED :passwords are not accepted in clear: use TLS, port 6697\r\n"
        ),
        "{refused}"
    );
    // The password was not taken: registration fails as without one.
    assert!(refused.contains(" 464 "), "{refused}");
    for (peer, secure) in [("192.0.2.7:4000", true), ("127.0.0.1:4000", false)] {
        let fine = run(&ctx, peer, secure, &login);
        assert!(fine.contains(" 001 me "), "{peer} {secure}: {fine}");
        assert!(!fine.contains("TLS_REQUIRED"), "{fine}");
    }
    // OPER alone (no server password), in clear from elsewhere.
    ctx.password = None;
    let oper = run(&ctx, "[2001:db8::1]:4000", false, &login[1..]);
    assert!(
        oper.ends_with(
            ":srv FAIL OPER TLS_REQUIRED :passwords are not accepted in clear: use TLS, port 6697\r\n"
        ),
        "{oper}"
    );
}

/// In a cluster, NICK + USER ask the core to claim the nick; nothing is sent until the answer,
/// a second NICK meanwhile is refused, and the answer brings the welcome or 433.
#[test]
fn a_clustered_registration_waits_for_the_claim_then_welcomes_or_says_433() {
    use crate::core::cluster::{ClaimAnswer, Note, Outcome};
    let mut c = Client::new();
    c.core.set_cluster(true);
    c.core.set_node_number(1);
    let config = Config {
        server_name: "srv".into(),
        ..Config::default()
    };
    let ctx = Context::new(&config, 0);
    let mut out = Outbox::default();
    // (After a refusal, the USER given is kept: a new NICK alone asks again.)
    let mut claim = |c: &mut Client, nick: &str| {
        let mut lines = vec![format!("NICK {nick}")];
        if c.session.user.is_none() {
            lines.push("USER me 0 * :Me".into());
        }
        for line in lines {
            let step = c.step(&line, &mut out);
            assert!(step.reply.is_empty(), "nothing before the answer");
        }
        assert!(!c.session.registered);
        match &out.drain_notes().collect::<Vec<_>>()[..] {
            [Note::Claim(claim)] => claim.clone(),
            other => panic!("expected a claim, got {other:?}"),
        }
    };
    let taken = claim(&mut c, "held");
    assert_eq!(
        c.send("NICK other"),
        [":srv 437 * other :Nick change already under way: wait for its answer"]
    );
    let answer = |c: &mut Client, claim, outcome| {
        let mut out = Outbox::default();
        c.core
            .claimed(ClaimAnswer { claim, outcome }, NOW, &mut out);
        let refused = out.iter().find_map(|(e, _)| match e {
            crate::core::Event::Registration(r) => Some(r.clone()),
            _ => None,
        });
        let step = c
            .session
            .registration(&ctx, &mut c.core, refused.expect("told").as_ref());
        String::from_utf8(step.reply).unwrap()
    };
    assert_eq!(
        answer(&mut c, taken, Outcome::Taken),
        ":srv 433 * held :Nickname is already in use\r\n"
    );
    assert!(!c.session.registered);
    let won = claim(&mut c, "free");
    let welcome = answer(&mut c, won, Outcome::Won);
    assert!(welcome.starts_with(":srv 001 free :"), "{welcome}");
    assert!(c.session.registered);
    assert_eq!(c.core.nick(ID).map(|n| &**n), Some("free"));
}
