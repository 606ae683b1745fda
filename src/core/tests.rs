//! Unit tests of the chat core: commands in, events out, no sockets and no clock.

use std::net::{IpAddr, Ipv4Addr};

use super::*;

const A: ClientId = ClientId(1);
const B: ClientId = ClientId(2);
const C: ClientId = ClientId(3);
/// Where the test users connect from.
const IP: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);
const TEN: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1));

/// A core with three users, `alice` and `bob` in #lobby, `carol` nowhere yet.
struct World {
    core: Core,
    out: Outbox,
    now: Millis,
}

impl World {
    fn new(history: usize) -> World {
        let mut w = World {
            core: Core::new(CoreLimits::counts(history, 3, 1000), 1_000_000),
            out: Outbox::default(),
            now: 1_000_000,
        };
        for (id, nick) in [(A, "alice"), (B, "bob"), (C, "carol")] {
            w.core.connect(id, IP, w.now, &mut Outbox::default());
            w.run(id, Command::Nick(nick.into()));
        }
        w.run(A, Command::Join(LOBBY.into()));
        w.run(B, Command::Join(LOBBY.into()));
        w.out.clear();
        w
    }

    /// Runs a command and returns the events it produced, each with its recipients.
    fn run(&mut self, id: ClientId, cmd: Command) -> Vec<(Event, Vec<ClientId>)> {
        self.out.clear();
        self.core.handle(id, cmd, self.now, &mut self.out);
        self.collect()
    }

    /// The outbox's events, paged answers expanded into their pages.
    fn collect(&self) -> Vec<(Event, Vec<ClientId>)> {
        expand(&self.core, &self.out)
    }

    fn say(&mut self, id: ClientId, text: &str) -> Vec<(Event, Vec<ClientId>)> {
        self.run(
            id,
            Command::Say {
                room: None,
                text: text.into(),
                kind: MsgKind::Normal,
                echo: false,
                tags: None,
            },
        )
    }
}

/// The events of `out`, each paged answer replaced by all its pages (as a driver sends them).
fn expand(core: &Core, out: &Outbox) -> Vec<(Event, Vec<ClientId>)> {
    let mut events = Vec::new();
    for (e, to) in out.iter() {
        match e {
            Event::Page(cursor) => events.extend(
                core.all_pages(cursor.clone())
                    .into_iter()
                    .map(|page| (page, to.to_vec())),
            ),
            _ => events.push((e.clone(), to.to_vec())),
        }
    }
    events
}

fn rc(s: &str) -> Arc<str> {
    s.into()
}

/// A compact, protocol-free description of an event, for readable assertions.
fn describe(e: &Event) -> String {
    match e {
        Event::Message {
            room,
            from,
            text,
            kind,
            ..
        } => format!("msg {room} {} {kind:?} {text}", from.nick),
        Event::History {
            room,
            from,
            text,
            at,
            ..
        } => format!("history {room} {} {at} {text}", from.nick),
        Event::Private {
            from,
            to,
            text,
            kind,
            ..
        } => format!("private {}>{to} {kind:?} {text}", from.nick),
        Event::Joined { room, who } => format!("joined {room} {}", who.nick),
        Event::Parted { room, who, reason } => format!("parted {room} {} {reason:?}", who.nick),
        Event::Quit { who, reason } => format!("quit {} {reason}", who.nick),
        Event::NickChanged { old, new } => format!("nick {} {new}", old.nick),
        Event::Names {
            room,
            members,
            listing,
            ..
        } => {
            let nicks: Vec<&str> = members.iter().map(|m| &*m.source.nick).collect();
            format!("names {room} {listing:?} {}", nicks.join(" "))
        }
        other => format!("{other:?}"),
    }
}

impl World {
    /// Runs a command and describes what it produced.
    fn see(&mut self, id: ClientId, cmd: Command) -> Vec<(String, Vec<ClientId>)> {
        self.run(id, cmd)
            .iter()
            .map(|(e, to)| (describe(e), to.clone()))
            .collect()
    }
}

fn say(text: &str) -> Command {
    Command::Say {
        room: None,
        text: text.into(),
        kind: MsgKind::Normal,
        echo: false,
        tags: None,
    }
}

fn msg(to: &str, text: &str) -> Command {
    Command::Private {
        to: to.into(),
        text: text.into(),
        kind: MsgKind::Normal,
        echo: false,
        tags: None,
    }
}

fn who(room: &str) -> Command {
    Command::Who {
        target: Some(room.into()),
        listing: Listing::Names,
    }
}

#[test]
fn guests_get_distinct_nicks_skipping_taken_ones() {
    let mut core = Core::new(CoreLimits::counts(0, 3, 1000), 1_000_000);
    let mut out = Outbox::default();
    assert_eq!(&*core.connect(A, IP, 0, &mut Outbox::default()), "guest1");
    core.handle(A, Command::Nick("guest2".into()), 0, &mut out);
    assert_eq!(&*core.connect(B, IP, 0, &mut Outbox::default()), "guest3");
}

#[test]
fn registering_with_a_chosen_nick_checks_it() {
    let mut core = Core::new(CoreLimits::counts(0, 3, 1000), 1_000_000);
    assert_eq!(
        core.register(A, "alice", "al", "Alice L", TEN, 0, &mut Outbox::default()),
        Ok(Registration::Done)
    );
    assert_eq!(
        core.register(B, "ALICE", "x", "x", IP, 0, &mut Outbox::default()),
        Err(Error::NickInUse("ALICE".into()))
    );
    assert!(matches!(
        core.register(B, "9", "x", "x", IP, 0, &mut Outbox::default()),
        Err(Error::InvalidNick(_))
    ));
    assert_eq!(core.user_count(), 1);
    let mut out = Outbox::default();
    core.handle(A, Command::Whois("alice".into()), 0, &mut out);
    let (Event::Whois(info), _) = out.iter().next().unwrap() else {
        panic!()
    };
    // The host is the address's cloak (was the address itself before cloaking).
    assert_eq!(
        (
            &*info.source.user,
            &*info.source.host,
            &*info.source.realname
        ),
        ("al", &*core.cloak.host(TEN), "Alice L")
    );
}

#[test]
fn a_room_message_goes_to_every_other_member_once() {
    let mut w = World::new(10);
    assert_eq!(
        w.see(A, say("hello")),
        [("msg #lobby alice Normal hello".into(), vec![B])]
    );
}

#[test]
fn echo_includes_the_sender_in_the_same_event() {
    let mut w = World::new(10);
    let echoed = Command::Say {
        room: Some("#lobby".into()),
        text: "hi".into(),
        kind: MsgKind::Normal,
        echo: true,
        tags: None,
    };
    assert_eq!(
        w.see(A, echoed),
        [("msg #lobby alice Normal hi".into(), vec![A, B])]
    );
    let private = Command::Private {
        to: "bob".into(),
        text: "psst".into(),
        kind: MsgKind::Normal,
        echo: true,
        tags: None,
    };
    assert_eq!(
        w.see(A, private),
        [("private alice>bob Normal psst".into(), vec![B, A])]
    );
}

#[test]
fn joining_tells_members_and_replays_history_marked_as_such() {
    let mut w = World::new(2);
    w.say(A, "one");
    w.say(B, "two");
    w.now += 5000;
    w.say(A, "three");
    // Notices are not kept in history.
    w.run(
        A,
        Command::Say {
            room: None,
            text: "n".into(),
            kind: MsgKind::Notice,
            echo: false,
            tags: None,
        },
    );
    let seen = w.see(C, Command::Join("#LOBBY".into()));
    assert_eq!(
        seen,
        [
            ("joined #lobby carol".to_string(), vec![A, B, C]),
            ("names #lobby Join alice bob carol".to_string(), vec![C]),
            ("history #lobby bob 1000000 two".to_string(), vec![C]),
            ("history #lobby alice 1005000 three".to_string(), vec![C]),
        ]
    );
}

#[test]
fn nick_rules_and_case_insensitive_uniqueness() {
    let mut w = World::new(0);
    assert_eq!(
        w.run(C, Command::Nick("ALICE".into())),
        vec![(Event::Error(Error::NickInUse("ALICE".into())), vec![C])]
    );
    assert!(matches!(
        w.run(C, Command::Nick("9lives".into()))[0].0,
        Event::Error(Error::InvalidNick(_))
    ));
    assert_eq!(&**w.core.nick(C).unwrap(), "carol");
    // Changing the case of one's own nick is allowed, and told to everyone sharing a room, once.
    w.run(B, Command::Join("#rust".into()));
    w.run(A, Command::Join("#rust".into()));
    assert_eq!(
        w.see(A, Command::Nick("Alice".into())),
        [("nick alice Alice".into(), vec![A, B])]
    );
    // The new source keeps user and host.
    let events = w.run(A, say("x"));
    let Event::Message { from, .. } = &events[0].0 else {
        panic!()
    };
    assert_eq!(
        (&*from.nick, &*from.user, &*from.host),
        ("Alice", "line", &*w.core.cloak.host(IP))
    );
    // The old nick is free again once changed.
    w.run(A, Command::Nick("ally".into()));
    assert_eq!(
        w.see(C, Command::Nick("alice".into())),
        [("nick carol alice".into(), vec![C])]
    );
}

#[test]
fn service_and_server_names_are_reserved_nicks_case_insensitively() {
    let mut w = World::new(0);
    w.core.reserve_nick("pollchat");
    w.core.reserve_nick("Helper");
    for nick in [
        "NickServ", "nickserv", "CHANSERV", "OperServ", "memoserv", "HostServ", "botSERV",
        "Global", "global", "pollchat", "PollChat", "helper", "HELPER",
    ] {
        assert_eq!(
            w.run(C, Command::Nick(nick.into())),
            vec![(Event::Error(Error::ReservedNick(nick.into())), vec![C])],
            "{nick}"
        );
    }
    assert_eq!(&**w.core.nick(C).unwrap(), "carol");
    // Only the exact names: a nick that merely contains one is anybody's.
    for nick in ["NickServ2", "globals", "pollchat_"] {
        assert_eq!(w.see(C, Command::Nick(nick.into())).len(), 1, "{nick}");
    }
    // Registering (IRC) checks the same, and the check a session makes before it too.
    assert_eq!(
        w.core.check_new_nick(None, "ChanServ", 0),
        Err(Error::ReservedNick("ChanServ".into()))
    );
    assert_eq!(
        w.core.register(
            ClientId(9),
            "chanserv",
            "u",
            "r",
            IP,
            0,
            &mut Outbox::default()
        ),
        Err(Error::ReservedNick("chanserv".into()))
    );
    assert_eq!(w.core.user_count(), 3);
    // Malformed beats reserved, reserved beats taken; one's own nick is no conflict.
    assert!(matches!(
        w.core.check_new_nick(None, "9x", 0),
        Err(Error::InvalidNick(_))
    ));
    assert_eq!(
        w.core.check_new_nick(None, "ALICE", 0),
        Err(Error::NickInUse("ALICE".into()))
    );
    assert_eq!(w.core.check_new_nick(Some(A), "ALICE", 0), Ok(()));
    assert_eq!(Error::ReservedNick("x".into()).code(), "reserved-nick");
}

#[test]
fn guest_nicks_are_unaffected_unless_reserved_themselves() {
    let mut core = Core::new(CoreLimits::counts(0, 3, 1000), 0);
    core.reserve_nick("pollchat");
    assert_eq!(&*core.connect(A, IP, 0, &mut Outbox::default()), "guest1");
    // An operator who reserves a guest nick never sees it handed out.
    core.reserve_nick("GUEST2");
    assert_eq!(&*core.connect(B, IP, 0, &mut Outbox::default()), "guest3");
}

#[test]
fn invisible_characters_are_refused_in_room_names() {
    let mut w = World::new(0);
    for room in [
        "#lobby\u{202e}",
        "#\u{202e}ybbol",
        "#a\u{200b}b",
        "#lob\u{ad}by",
        "#a\u{2066}b\u{2069}",
        "#a\u{2028}",
        "#\u{feff}x",
    ] {
        assert_eq!(
            w.run(A, Command::Join(room.into())),
            vec![(Event::Error(Error::InvalidRoom(room.into())), vec![A])],
            "{room:?}"
        );
    }
    assert_eq!(w.core.room_count(), 1);
    // Other scripts are fine, right-to-left ones included.
    assert_eq!(
        w.see(A, Command::Join("#שלום".into()))[0].0,
        "joined #שלום alice"
    );
}

#[test]
fn invisible_characters_are_stripped_from_every_label() {
    let mut w = World::new(0);
    let rlo = "\u{202e}";
    let topic = Command::Topic {
        room: None,
        text: Some(format!("{rlo}cipot\u{200b} ok\u{2028}x")),
    };
    let events = w.run(A, topic);
    assert!(
        matches!(&events[0].0, Event::TopicChanged { topic: Some(t), .. } if &**t == "cipot ok x"),
        "{events:?}"
    );
    w.run(B, Command::Away(Some(format!("{rlo}lunch\u{feff}"))));
    let Event::TargetAway { message, .. } = &w.run(A, msg("bob", "hi"))[0].0 else {
        panic!()
    };
    assert_eq!(&**message, "lunch");
    w.run(C, Command::Join("#lobby".into()));
    let part = Command::Part {
        room: None,
        reason: Some(format!("bye{rlo}\u{2066}")),
    };
    let events = w.run(C, part);
    assert!(
        matches!(&events[0].0, Event::Parted { reason: Some(r), .. } if &**r == "bye"),
        "{events:?}"
    );
    w.out.clear();
    w.core
        .disconnect(B, &format!("quit: {rlo}tiuq\u{ad}"), w.now, &mut w.out);
    assert_eq!(
        w.collect()
            .iter()
            .map(|(e, _)| describe(e))
            .collect::<Vec<_>>(),
        ["quit bob quit: tiuq"]
    );
    w.core
        .register(
            ClientId(9),
            "dave",
            "d",
            &format!("Dave{rlo} \u{200f}L"),
            IP,
            0,
            &mut Outbox::default(),
        )
        .unwrap();
    let Event::Whois(info) = &w.run(A, Command::Whois("dave".into()))[0].0 else {
        panic!()
    };
    assert_eq!(&*info.source.realname, "Dave L");
}

#[test]
fn private_messages_and_away() {
    let mut w = World::new(0);
    assert_eq!(
        w.see(A, msg("CAROL", "psst")),
        [("private alice>carol Normal psst".into(), vec![C])]
    );
    assert_eq!(
        w.run(C, Command::Away(Some("lunch".into()))),
        vec![(Event::AwayIs { away: true }, vec![C])]
    );
    let events = w.run(A, msg("carol", "hi"));
    assert_eq!(
        events[0],
        (
            Event::TargetAway {
                nick: rc("carol"),
                message: rc("lunch")
            },
            vec![A]
        )
    );
    assert_eq!(events[1].1, vec![C]);
    // A notice gets no automatic "away" reply.
    let notice = Command::Private {
        to: "carol".into(),
        text: "n".into(),
        kind: MsgKind::Notice,
        echo: false,
        tags: None,
    };
    assert_eq!(
        w.see(A, notice),
        [("private alice>carol Notice n".into(), vec![C])]
    );
    assert_eq!(
        w.run(C, Command::Away(None)),
        vec![(Event::AwayIs { away: false }, vec![C])]
    );
    assert_eq!(
        w.run(A, msg("nobody", "x")),
        vec![(Event::Error(Error::NoSuchNick("nobody".into())), vec![A])]
    );
}

#[test]
fn text_that_could_split_a_line_is_refused() {
    let mut w = World::new(5);
    for bad in ["a\rb", "a\nb", "a\0b"] {
        assert_eq!(w.say(A, bad), vec![(Event::Error(Error::BadText), vec![A])]);
    }
    // Labels are cleaned instead of refused.
    w.run(
        A,
        Command::Topic {
            room: None,
            text: Some("x\r\ny".into()),
        },
    );
    let events = w.run(
        C,
        Command::Topic {
            room: Some("#lobby".into()),
            text: None,
        },
    );
    let Event::TopicIs { topic: Some(t), .. } = &events[0].0 else {
        panic!("{events:?}")
    };
    assert_eq!(&*t.text, "x  y");
}

#[test]
fn part_switches_current_room_and_empty_rooms_vanish() {
    let mut w = World::new(5);
    w.run(A, Command::Join("#rust".into()));
    w.say(A, "in rust");
    let events = w.run(
        A,
        Command::Part {
            room: None,
            reason: Some("bye".into()),
        },
    );
    assert_eq!(describe(&events[0].0), "parted #rust alice Some(\"bye\")");
    assert_eq!(events[0].1, vec![A]);
    assert_eq!(
        events[1],
        (
            Event::CurrentRoom {
                room: Some(rc("#lobby"))
            },
            vec![A]
        )
    );
    assert_eq!(w.core.room_count(), 1, "#rust was empty and is gone");
    assert_eq!(
        w.run(A, who("#rust"))[0].0,
        Event::Error(Error::NoSuchRoom("#rust".into()))
    );
    // The lobby stays even when empty.
    w.run(
        A,
        Command::Part {
            room: None,
            reason: None,
        },
    );
    w.run(
        B,
        Command::Part {
            room: None,
            reason: None,
        },
    );
    assert_eq!(w.core.room_count(), 1);
    assert_eq!(
        w.say(A, "anyone?"),
        vec![(Event::Error(Error::NoCurrentRoom), vec![A])]
    );
}

#[test]
fn part_all_leaves_every_room() {
    let mut w = World::new(0);
    w.run(A, Command::Join("#a".into()));
    w.run(A, Command::Join("#b".into()));
    let parted: Vec<String> = w
        .see(A, Command::PartAll)
        .into_iter()
        .map(|(d, _)| d)
        .filter(|d| d.starts_with("parted"))
        .collect();
    assert_eq!(
        parted,
        [
            "parted #lobby alice None",
            "parted #a alice None",
            "parted #b alice None"
        ]
    );
    assert_eq!(w.run(A, Command::Whois("alice".into())).len(), 1);
    assert_eq!(w.core.room_count(), 1);
}

#[test]
fn rejoining_a_room_only_switches_to_it() {
    let mut w = World::new(5);
    w.run(A, Command::Join("#rust".into()));
    let events = w.run(A, Command::Join("#Lobby".into()));
    assert_eq!(
        events,
        vec![(
            Event::CurrentRoom {
                room: Some(rc("#lobby"))
            },
            vec![A]
        )]
    );
    assert_eq!(w.say(A, "back")[0].1, vec![B]);
}

#[test]
fn room_limit_and_membership_checks() {
    let mut w = World::new(0);
    w.run(A, Command::Join("#r2".into()));
    w.run(A, Command::Join("#r3".into()));
    assert_eq!(
        w.run(A, Command::Join("#r4".into()))[0].0,
        Event::Error(Error::TooManyRooms {
            room: "#r4".into(),
            max: 3
        })
    );
    let to_other = Command::Say {
        room: Some("#r2".into()),
        text: "x".into(),
        kind: MsgKind::Normal,
        echo: false,
        tags: None,
    };
    assert_eq!(
        w.run(B, to_other)[0].0,
        Event::Error(Error::CannotSend("#r2".into()))
    );
    let part_other = Command::Part {
        room: Some("#r2".into()),
        reason: None,
    };
    assert_eq!(
        w.run(B, part_other)[0].0,
        Event::Error(Error::NotInRoom("#r2".into()))
    );
    assert!(matches!(
        w.run(A, Command::Join("bad room".into()))[0].0,
        Event::Error(Error::InvalidRoom(_))
    ));
}

#[test]
fn disconnect_tells_each_neighbour_once_with_the_reason() {
    let mut w = World::new(0);
    w.run(A, Command::Join("#rust".into()));
    w.run(B, Command::Join("#rust".into()));
    w.out.clear();
    w.core
        .disconnect(A, "send queue exceeded", w.now, &mut w.out);
    let events: Vec<(String, Vec<ClientId>)> = w
        .collect()
        .iter()
        .map(|(e, to)| (describe(e), to.clone()))
        .collect();
    assert_eq!(events, [("quit alice send queue exceeded".into(), vec![B])]);
    assert_eq!(w.core.user_count(), 2);
    // The nick is free, and commands from the gone client are ignored.
    assert!(w.run(A, Command::Rooms).is_empty());
    w.run(C, Command::Nick("alice".into()));
    assert_eq!(&**w.core.nick(C).unwrap(), "alice");
}

#[test]
fn whois_reports_rooms_away_and_idle_time() {
    let mut w = World::new(0);
    w.say(A, "hi");
    w.run(A, Command::Away(Some("brb".into())));
    w.now += 61_000;
    let events = w.run(B, Command::Whois("Alice".into()));
    let Event::Whois(info) = &events[0].0 else {
        panic!("{events:?}")
    };
    assert_eq!(&*info.source.nick, "alice");
    assert_eq!(info.rooms, vec![rc("#lobby")]);
    assert_eq!(info.away.as_deref(), Some("brb"));
    assert_eq!(info.idle_secs, 61);
    assert_eq!(info.connected_at, 1_000_000);
}

#[test]
fn who_lists_a_room_or_one_user_and_lookup_finds_online_nicks() {
    let mut w = World::new(0);
    w.run(B, Command::Away(Some("x".into())));
    let events = w.run(
        C,
        Command::Who {
            target: Some("#lobby".into()),
            listing: Listing::Who,
        },
    );
    let Event::Names {
        members,
        listing: Listing::Who,
        ..
    } = &events[0].0
    else {
        panic!("{events:?}")
    };
    let got: Vec<(&str, bool)> = members.iter().map(|m| (&*m.source.nick, m.away)).collect();
    assert_eq!(got, [("alice", false), ("bob", true)]);
    assert_eq!(
        w.see(
            C,
            Command::Who {
                target: Some("ALICE".into()),
                listing: Listing::Who
            }
        ),
        [("names alice Who alice".into(), vec![C])]
    );
    let events = w.run(
        C,
        Command::Lookup {
            nicks: vec!["BOB".into(), "zed".into(), "alice".into()],
            listing: Listing::Ison,
        },
    );
    let Event::Found { members, .. } = &events[0].0 else {
        panic!()
    };
    let nicks: Vec<&str> = members.iter().map(|m| &*m.source.nick).collect();
    assert_eq!(nicks, ["bob", "alice"]);
}

#[test]
fn room_info_and_stats() {
    let mut w = World::new(0);
    assert_eq!(
        w.run(A, Command::RoomInfo(Some("#LOBBY".into())))[0].0,
        Event::RoomInfo {
            room: rc("#lobby"),
            created_at: 1_000_000,
            modes: rc("+n"),
        }
    );
    assert_eq!(
        w.run(A, Command::RoomInfo(Some("#none".into())))[0].0,
        Event::Error(Error::NoSuchRoom("#none".into()))
    );
    assert_eq!(
        w.run(A, Command::Stats)[0].0,
        Event::Stats(Stats {
            users: 3,
            invisible: 0,
            opers: 0,
            rooms: 1,
            peak: 3
        })
    );
}

#[test]
fn rooms_lists_counts_and_topics_sorted() {
    let mut w = World::new(0);
    w.run(C, Command::Join("#b".into()));
    w.run(
        C,
        Command::Topic {
            room: None,
            text: Some("bees".into()),
        },
    );
    let events = w.run(A, Command::Rooms);
    let Event::RoomList { rooms: list, .. } = &events[0].0 else {
        panic!()
    };
    let got: Vec<(&str, usize, Option<&str>)> = list
        .iter()
        .map(|r| (&*r.name, r.members, r.topic.as_deref()))
        .collect();
    assert_eq!(got, [("#b", 1, Some("bees")), ("#lobby", 2, None)]);
}

#[test]
fn topic_set_by_member_is_broadcast_and_cleared_by_empty_text() {
    let mut w = World::new(0);
    let events = w.run(
        A,
        Command::Topic {
            room: None,
            text: Some("rust talk".into()),
        },
    );
    assert_eq!(events[0].1, vec![A, B]);
    assert!(
        matches!(&events[0].0, Event::TopicChanged { topic: Some(t), by, .. } if &**t == "rust talk" && &*by.nick == "alice")
    );
    let events = w.run(
        B,
        Command::Topic {
            room: None,
            text: Some(String::new()),
        },
    );
    assert!(matches!(
        &events[0].0,
        Event::TopicChanged { topic: None, .. }
    ));
    let not_member = Command::Topic {
        room: Some("#lobby".into()),
        text: Some("x".into()),
    };
    assert_eq!(
        w.run(C, not_member)[0].0,
        Event::Error(Error::NotInRoom("#lobby".into()))
    );
}

#[test]
fn big_rooms_do_not_announce_presence_and_list_few_names_on_join() {
    let mut core = Core::new(CoreLimits::counts(0, 3, 2), 0);
    let mut out = Outbox::default();
    for i in 1..=4 {
        core.connect(ClientId(i), IP, 0, &mut Outbox::default());
    }
    for i in 1..=2 {
        core.handle(ClientId(i), Command::Join("#big".into()), 0, &mut out);
    }
    out.clear();
    // The third member makes the room big: only the joiner hears of its join.
    core.handle(ClientId(3), Command::Join("#big".into()), 0, &mut out);
    let events = expand(&core, &out);
    let seen: Vec<(String, Vec<ClientId>)> = events
        .iter()
        .map(|(e, to)| (describe(e), to.to_vec()))
        .collect();
    assert_eq!(
        seen[0],
        ("joined #big guest3".to_string(), vec![ClientId(3)])
    );
    let Event::Names { members, total, .. } = &events[1].0 else {
        panic!()
    };
    assert_eq!((members.len(), *total), (2, 3));
    // An explicit listing has everyone.
    out.clear();
    core.handle(ClientId(3), who("#big"), 0, &mut out);
    let events = expand(&core, &out);
    let Event::Names { members, total, .. } = &events[0].0 else {
        panic!()
    };
    assert_eq!((members.len(), *total), (3, 3));
    // Quits and nick changes are not fanned out to a big room's members either.
    out.clear();
    core.handle(ClientId(1), Command::Nick("renamed".into()), 0, &mut out);
    assert_eq!(
        out.iter().map(|(_, to)| to.to_vec()).collect::<Vec<_>>(),
        vec![vec![ClientId(1)]]
    );
    out.clear();
    core.disconnect(ClientId(1), "bye", 0, &mut out);
    assert!(out.is_empty());
    // Messages still reach everyone.
    core.handle(ClientId(2), say("hello"), 0, &mut out);
    assert_eq!(out.iter().next().unwrap().1, [ClientId(3)]);
}

/// A core for the budget tests: three users, history of up to 10 messages a room.
fn budget_core(room_bytes: usize, total_bytes: usize, max_total_rooms: usize) -> Core {
    let mut core = Core::new(
        CoreLimits {
            history: 10,
            max_rooms: 8,
            big_room: 1000,
            room_history_bytes: room_bytes,
            history_bytes: total_bytes,
            max_total_rooms,
            nick_delay: 0,
        },
        0,
    );
    for (id, nick) in [(A, "alice"), (B, "bob"), (C, "carol")] {
        core.connect(id, IP, 0, &mut Outbox::default());
        core.handle(id, Command::Nick(nick.into()), 0, &mut Outbox::default());
    }
    core
}

fn say_in(core: &mut Core, id: ClientId, room: &str, text: &str, now: Millis) {
    let say = Command::Say {
        room: Some(room.into()),
        text: text.into(),
        kind: MsgKind::Normal,
        echo: false,
        tags: None,
    };
    core.handle(id, say, now, &mut Outbox::default());
}

/// The history a joiner of `room` is replayed, as texts.
fn replayed(core: &mut Core, id: ClientId, room: &str) -> Vec<String> {
    let mut out = Outbox::default();
    core.handle(id, Command::Join(room.into()), 0, &mut out);
    expand(core, &out)
        .into_iter()
        .filter_map(|(e, _)| match e {
            Event::History { text, .. } => Some(text.to_string()),
            _ => None,
        })
        .collect()
}

#[test]
fn history_is_bounded_per_room_and_server_wide_oldest_first() {
    // Each message here costs 1 byte of text + 64: a room keeps 3, the server 5.
    let mut core = budget_core(3 * 65, 5 * 65, 100);
    core.handle(A, Command::Join("#a".into()), 0, &mut Outbox::default());
    core.handle(A, Command::Join("#b".into()), 0, &mut Outbox::default());
    for (i, text) in ["1", "2", "3", "4"].iter().enumerate() {
        say_in(&mut core, A, "#a", text, i as Millis);
    }
    assert_eq!(
        replayed(&mut core, B, "#a"),
        ["2", "3", "4"],
        "the room's budget"
    );
    for (i, text) in ["x", "y", "z"].iter().enumerate() {
        say_in(&mut core, A, "#b", text, 10 + i as Millis);
    }
    // Six messages kept in all is over the server's five: the oldest of the server goes ("2").
    assert_eq!(core.history_bytes(), 5 * 65);
    assert_eq!(replayed(&mut core, C, "#a"), ["3", "4"]);
    assert_eq!(replayed(&mut core, C, "#b"), ["x", "y", "z"]);
    // A room that disappears gives its history back.
    for id in [A, B, C] {
        let part = Command::Part {
            room: Some("#a".into()),
            reason: None,
        };
        core.handle(id, part, 20, &mut Outbox::default());
    }
    assert_eq!(core.history_bytes(), 3 * 65);
}

#[test]
fn the_server_creates_at_most_max_total_rooms() {
    // The lobby and one more.
    let mut core = budget_core(usize::MAX, usize::MAX, 2);
    let mut out = Outbox::default();
    core.handle(A, Command::Join("#one".into()), 0, &mut out);
    out.clear();
    core.handle(B, Command::Join("#two".into()), 0, &mut out);
    let (event, to) = out.iter().next().unwrap();
    assert_eq!(
        event,
        &Event::Error(Error::ServerRoomsFull {
            room: "#two".into(),
            max: 2
        })
    );
    assert_eq!(to, [B]);
    // Existing rooms can still be joined.
    out.clear();
    core.handle(B, Command::Join("#ONE".into()), 0, &mut out);
    assert!(out.iter().all(|(e, _)| !matches!(e, Event::Error(_))));
}

proptest::proptest! {
    /// Joins, parts, nick changes and disconnects in any order: every room's members are
    /// exactly those of a plain model, in join order, and every user's memberships point at
    /// its own slot (the O(1) removal moves members around when it squeezes holes out); each
    /// room's nick index holds the same members under their current nicks.
    #[test]
    fn members_and_memberships_stay_consistent(
        ops in proptest::collection::vec((0usize..4, 1usize..9, 0usize..4), 0..200),
    ) {
        let mut core = Core::new(CoreLimits::counts(0, 8, 1000), 0);
        let mut out = Outbox::default();
        let mut model: HashMap<String, Vec<ClientId>> = HashMap::new();
        for id in 1..9 {
            core.connect(ClientId(id), IP, 0, &mut Outbox::default());
        }
        for (op, id, room) in ops {
            let (id, room) = (ClientId(id), format!("#r{room}"));
            match op {
                0 => {
                    core.handle(id, Command::Join(room.clone()), 0, &mut out);
                    let members = model.entry(room).or_default();
                    if !members.contains(&id) {
                        members.push(id);
                    }
                }
                1 => {
                    let part = Command::Part { room: Some(room.clone()), reason: None };
                    core.handle(id, part, 0, &mut out);
                    model.entry(room).or_default().retain(|&m| m != id);
                }
                2 => {
                    core.disconnect(id, "gone", 0, &mut out);
                    core.connect(id, IP, 0, &mut Outbox::default());
                    model.values_mut().for_each(|m| m.retain(|&x| x != id));
                }
                _ => {
                    // Taken nicks are refused: the index must not change then either.
                    core.handle(id, Command::Nick(format!("N{room}")), 0, &mut out);
                }
            }
            out.clear();
            for (_, r) in &core.rooms {
                let mut members: Vec<ClientId> = r.members.iter().copied().collect();
                members.sort();
                let mut indexed: Vec<ClientId> = r.by_nick.iter().map(|m| m.1).collect();
                indexed.sort();
                proptest::prop_assert_eq!(members, indexed);
                for m in &r.by_nick {
                    proptest::prop_assert_eq!(&m.0, &core.users[&m.1].source.nick);
                }
            }
            for (name, expected) in &model {
                let got: Vec<ClientId> = match core.room_keys.get(&fold(name)) {
                    Some(&key) => core.rooms[key].members.iter().copied().collect(),
                    None => Vec::new(),
                };
                proptest::prop_assert_eq!(&got, expected, "{}", name);
            }
            for (&uid, user) in &core.users {
                for m in &user.rooms {
                    proptest::prop_assert_eq!(core.rooms[m.key()].members.at(m.slot), Some(uid));
                }
            }
        }
    }
}

#[test]
fn others_see_a_cloak_and_only_the_user_itself_its_address() {
    let mut w = World::new(0);
    let cloak = Cloak::new([9; 16], 64);
    w.core.set_cloak(cloak);
    w.core
        .register(
            ClientId(9),
            "dave",
            "d",
            "D",
            TEN,
            w.now,
            &mut Outbox::default(),
        )
        .unwrap();
    w.core
        .register(
            ClientId(10),
            "erin",
            "e",
            "E",
            TEN,
            w.now,
            &mut Outbox::default(),
        )
        .unwrap();
    let whois = |w: &mut World, asker, nick: &str| {
        let Event::Whois(info) = w.run(asker, Command::Whois(nick.into())).remove(0).0 else {
            panic!()
        };
        info
    };
    // Two connections from one address get one cloak, that of the server's key.
    let (dave, erin) = (whois(&mut w, A, "dave"), whois(&mut w, A, "erin"));
    assert_eq!(&*dave.source.host, cloak.host(TEN));
    assert_eq!(dave.source.host, erin.source.host);
    assert!(!dave.source.host.contains("10.0.0.1"));
    // Nobody else is told the address; the user itself is.
    assert_eq!(dave.address, None);
    assert_eq!(whois(&mut w, ClientId(10), "dave").address, None);
    assert_eq!(whois(&mut w, ClientId(9), "dave").address, Some(TEN));
    // A message carries the cloak too.
    w.run(ClientId(9), Command::Join("#x".into()));
    w.run(ClientId(10), Command::Join("#x".into()));
    let said = w.run(
        ClientId(9),
        Command::Say {
            room: Some("#x".into()),
            text: "hi".into(),
            kind: MsgKind::Normal,
            echo: false,
            tags: None,
        },
    );
    let Event::Message { from, .. } = &said[0].0 else {
        panic!()
    };
    assert_eq!(*from.host, *cloak.host(TEN));
}

/// A core whose rooms are big past 2 members, with a 30 s nick delay; users 1–3 (`u1`…`u3`)
/// in `#big` (big), user 4 (`u4`) and 5 (`u5`) in `#small` only.
fn delay_core() -> Core {
    let limits = CoreLimits {
        nick_delay: 30_000,
        ..CoreLimits::counts(0, 3, 2)
    };
    let mut core = Core::new(limits, 0);
    let mut out = Outbox::default();
    for i in 1..=5 {
        core.connect(ClientId(i), IP, 0, &mut Outbox::default());
        core.handle(ClientId(i), Command::Nick(format!("u{i}")), 0, &mut out);
        let room = if i <= 3 { "#big" } else { "#small" };
        core.handle(ClientId(i), Command::Join(room.into()), 0, &mut out);
    }
    core
}

/// Whether `id` may take `nick` at `now`, as the core answers a NICK.
fn take(core: &mut Core, id: ClientId, nick: &str, now: Millis) -> Result<(), Error> {
    let mut out = Outbox::default();
    core.handle(id, Command::Nick(nick.into()), now, &mut out);
    match out.iter().next() {
        Some((Event::Error(e), _)) => Err(e.clone()),
        _ => Ok(()),
    }
}

#[test]
fn a_nick_that_quits_a_big_room_is_held_for_the_delay() {
    let mut core = delay_core();
    let mut out = Outbox::default();
    core.disconnect(ClientId(1), "bye", 10_000, &mut out);
    let held = Err(Error::NickDelayed {
        nick: "U1".into(),
        secs: 30,
    });
    // Case-insensitively, to a user changing nick and to one registering…
    assert_eq!(take(&mut core, ClientId(4), "U1", 10_000), held);
    assert_eq!(
        core.register(
            ClientId(9),
            "u1",
            "u",
            "r",
            IP,
            39_999,
            &mut Outbox::default()
        ),
        Err(Error::NickDelayed {
            nick: "u1".into(),
            secs: 1,
        })
    );
    // …and to a new user given the same ClientId (drivers reuse them).
    core.connect(ClientId(1), IP, 20_000, &mut Outbox::default());
    assert!(matches!(
        take(&mut core, ClientId(1), "u1", 20_000),
        Err(Error::NickDelayed { .. })
    ));
    // Once the delay is over, anyone may have it.
    assert_eq!(take(&mut core, ClientId(4), "u1", 40_000), Ok(()));
    // A quit from small rooms only was announced: nothing is held.
    core.disconnect(ClientId(5), "bye", 40_000, &mut out);
    assert_eq!(take(&mut core, ClientId(1), "u5", 40_000), Ok(()));
}

#[test]
fn a_nick_left_by_a_change_in_a_big_room_is_held_for_its_owner_only() {
    let mut core = delay_core();
    assert_eq!(take(&mut core, ClientId(2), "away2", 1_000), Ok(()));
    assert!(matches!(
        take(&mut core, ClientId(4), "u2", 2_000),
        Err(Error::NickDelayed { secs: 29, .. })
    ));
    // The same person takes it back; then it is an ordinary nick in use.
    assert_eq!(take(&mut core, ClientId(2), "U2", 3_000), Ok(()));
    assert_eq!(
        take(&mut core, ClientId(4), "u2", 4_000),
        Err(Error::NickInUse("u2".into()))
    );
    // Its owner gone, a held nick is nobody's, even under the owner's old ClientId.
    assert_eq!(take(&mut core, ClientId(3), "other3", 5_000), Ok(()));
    let mut out = Outbox::default();
    core.disconnect(ClientId(3), "bye", 6_000, &mut out);
    core.connect(ClientId(3), IP, 7_000, &mut Outbox::default());
    for nick in ["u3", "other3"] {
        assert!(
            matches!(
                take(&mut core, ClientId(3), nick, 7_000),
                Err(Error::NickDelayed { .. })
            ),
            "{nick}"
        );
    }
    // Changes in small rooms were announced: nothing is held.
    assert_eq!(take(&mut core, ClientId(4), "four", 8_000), Ok(()));
    assert_eq!(take(&mut core, ClientId(5), "u4", 8_000), Ok(()));
}

#[test]
fn no_delay_when_it_is_off() {
    let mut core = Core::new(CoreLimits::counts(0, 3, 2), 0);
    let mut out = Outbox::default();
    for i in 1..=4 {
        core.connect(ClientId(i), IP, 0, &mut Outbox::default());
        core.handle(ClientId(i), Command::Join("#big".into()), 0, &mut out);
    }
    core.disconnect(ClientId(1), "bye", 0, &mut out);
    assert_eq!(take(&mut core, ClientId(2), "guest1", 0), Ok(()));
}

#[test]
fn guest_nicks_skip_held_ones() {
    let mut core = delay_core();
    // u4 takes "guest6", the next guest nick, and leaves it in a big room.
    let mut out = Outbox::default();
    core.handle(ClientId(4), Command::Join("#big".into()), 0, &mut out);
    assert_eq!(take(&mut core, ClientId(4), "guest6", 0), Ok(()));
    core.disconnect(ClientId(4), "bye", 0, &mut out);
    assert_eq!(
        &*core.connect(ClientId(9), IP, 1, &mut Outbox::default()),
        "guest7"
    );
}

/// A core with `n` users `u0000`.. in #lobby (big rooms over `big`).
fn crowd(n: usize, big: usize) -> Core {
    let mut core = Core::new(CoreLimits::counts(10, 8, big), 0);
    let mut out = Outbox::default();
    for i in 0..n {
        let id = ClientId(i + 1);
        core.connect(id, IP, 0, &mut Outbox::default());
        core.handle(id, Command::Nick(format!("u{i:04}")), 0, &mut out);
        core.handle(id, Command::Join(LOBBY.into()), 0, &mut out);
        out.clear();
    }
    core
}

/// The cursor a command answers with.
fn cursor_of(core: &mut Core, id: ClientId, cmd: Command) -> Cursor {
    let mut out = Outbox::default();
    core.handle(id, cmd, 0, &mut out);
    let found = out.iter().find_map(|(e, _)| match e {
        Event::Page(c) => Some(c.clone()),
        _ => None,
    });
    found.expect("a paged answer")
}

/// One page of `cursor`: the nicks listed, the part, and whether the answer is done.
fn names_page(core: &Core, cursor: &mut Cursor) -> (Vec<String>, Part, bool) {
    let mut page = None;
    let done = core.page(cursor, &mut |e| match e {
        Event::Names { members, part, .. } => {
            let nicks = members.iter().map(|m| m.source.nick.to_string()).collect();
            page = Some((nicks, part));
        }
        other => panic!("{other:?}"),
    });
    let (nicks, part) = page.expect("one Names event a page");
    (nicks, part, done)
}

#[test]
fn a_long_member_list_comes_in_pages_that_resume_after_the_last_name_sent() {
    let mut core = crowd(700, 10_000);
    let mut cursor = cursor_of(&mut core, ClientId(1), who(LOBBY));
    let (first, part, done) = names_page(&core, &mut cursor);
    assert!(!done && part.first && !part.last && part.before == 0);
    assert_eq!(first.len(), 256, "a page of names");
    assert_eq!(first[0], "u0000");
    // The list changes under the cursor: one listed member leaves, one ahead of the cursor
    // leaves, one joins behind it and one ahead of it.
    let mut out = Outbox::default();
    core.disconnect(ClientId(1), "gone", 0, &mut out);
    core.disconnect(ClientId(301), "gone", 0, &mut out);
    for (id, nick) in [(ClientId(5000), "a-behind"), (ClientId(5001), "zz-ahead")] {
        core.connect(id, IP, 0, &mut Outbox::default());
        core.handle(id, Command::Nick(nick.into()), 0, &mut out);
        core.handle(id, Command::Join(LOBBY.into()), 0, &mut out);
    }
    let mut all = first;
    loop {
        let (nicks, part, done) = names_page(&core, &mut cursor);
        assert!(!part.first);
        assert_eq!(part.before, all.len());
        all.extend(nicks);
        assert_eq!(part.last, done);
        if done {
            break;
        }
    }
    let mut sorted = all.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(all, sorted, "in order, each name once");
    assert!(all.contains(&"u0000".to_string()), "sent before it left");
    assert!(!all.contains(&"u0300".to_string()), "left before its page");
    assert!(
        !all.contains(&"a-behind".to_string()),
        "joined behind the cursor"
    );
    assert_eq!(all.last().unwrap(), "zz-ahead", "joined ahead of it");
    assert_eq!(all.len(), 700 - 1 + 1);
}

#[test]
fn a_listing_of_a_room_that_disappears_still_ends() {
    let mut core = crowd(3, 10);
    let mut out = Outbox::default();
    core.handle(ClientId(1), Command::Join("#short".into()), 0, &mut out);
    let mut cursor = cursor_of(&mut core, ClientId(2), who("#short"));
    let part = Command::Part {
        room: Some("#short".into()),
        reason: None,
    };
    core.handle(ClientId(1), part, 0, &mut out);
    let (nicks, part, done) = names_page(&core, &mut cursor);
    assert!(nicks.is_empty() && part.last && done);
}

#[test]
fn a_joiner_of_a_big_room_is_sent_a_few_names_and_always_itself() {
    // Over 300 members the room is big: a joiner is shown 300 names, itself included, where it
    // sorts (here, after every name shown).
    let mut core = crowd(700, 300);
    let id = ClientId(9999);
    core.connect(id, IP, 0, &mut Outbox::default());
    core.handle(id, Command::Nick("zed".into()), 0, &mut Outbox::default());
    let mut cursor = cursor_of(&mut core, id, Command::Join(LOBBY.into()));
    let mut all = Vec::new();
    let mut pages = 0;
    loop {
        let (nicks, _, done) = names_page(&core, &mut cursor);
        all.extend(nicks);
        pages += 1;
        if done {
            break;
        }
    }
    assert_eq!(pages, 2, "256 names a page");
    assert_eq!(all.len(), 300);
    assert_eq!(all.last().unwrap(), "zed");
    assert_eq!(all[0], "u0000");
}

#[test]
fn rooms_are_listed_in_case_folded_order_across_pages() {
    let mut core = Core::new(CoreLimits::counts(0, 200, 1000), 0);
    let mut out = Outbox::default();
    core.connect(A, IP, 0, &mut Outbox::default());
    for i in 0..150 {
        let name = if i % 2 == 0 {
            format!("#Room{i:03}")
        } else {
            format!("#room{i:03}")
        };
        core.handle(A, Command::Join(name), 0, &mut out);
    }
    let cursor = cursor_of(&mut core, A, Command::Rooms);
    let pages = core.all_pages(cursor);
    assert_eq!(pages.len(), 3, "64 rooms a page");
    let mut names = Vec::new();
    for (i, page) in pages.iter().enumerate() {
        let Event::RoomList { rooms, part } = page else {
            panic!("{page:?}")
        };
        assert_eq!((part.first, part.last), (i == 0, i == 2));
        names.extend(rooms.iter().map(|r| r.name.to_string()));
    }
    assert_eq!(names.len(), 151);
    assert_eq!(names[0], LOBBY);
    assert_eq!(names[1], "#Room000");
    assert_eq!(names[2], "#room001");
    assert_eq!(names[150], "#room149");
}

#[test]
fn a_history_replay_stops_at_what_was_said_before_the_join() {
    let mut core = budget_core(1 << 20, 1 << 20, 100);
    core.handle(A, Command::Join("#h".into()), 0, &mut Outbox::default());
    for i in 0..5 {
        say_in(&mut core, A, "#h", &format!("{i}{}", "x".repeat(3000)), i);
    }
    let mut out = Outbox::default();
    core.handle(B, Command::Join("#h".into()), 10, &mut out);
    let mut cursor = out
        .iter()
        .filter_map(|(e, _)| match e {
            Event::Page(c) if matches!(c.of(), page::Paged::History { .. }) => Some(c.clone()),
            _ => None,
        })
        .next()
        .expect("a history replay");
    // Said after the join: arrives live, never in the replay.
    say_in(&mut core, A, "#h", "late", 11);
    let mut pages = Vec::new();
    loop {
        let mut texts = Vec::new();
        let done = core.page(&mut cursor, &mut |e| match e {
            Event::History { text, .. } => texts.push(text.chars().next().unwrap()),
            other => panic!("{other:?}"),
        });
        pages.push(texts);
        if done {
            break;
        }
    }
    // 8 KiB a page: three 3 KiB entries fill one.
    assert_eq!(pages, [vec!['0', '1', '2'], vec!['3', '4']]);
}

#[test]
fn a_big_room_joiner_that_renames_between_pages_is_still_listed() {
    // Same set-up as a_joiner_of_a_big_room_is_sent_a_few_names_and_always_itself, but the
    // joiner (pipelining `JOIN` then `NICK`, or any client whose first page was rendered at
    // once) changes its nick to one sorting before where the cursor stands.
    let mut core = crowd(700, 300);
    let id = ClientId(9999);
    core.connect(id, IP, 0, &mut Outbox::default());
    core.handle(id, Command::Nick("zed".into()), 0, &mut Outbox::default());
    let mut cursor = cursor_of(&mut core, id, Command::Join(LOBBY.into()));
    let mut all = Vec::new();
    let (nicks, _, done) = names_page(&core, &mut cursor);
    all.extend(nicks);
    assert!(!done);
    core.handle(id, Command::Nick("aaa".into()), 0, &mut Outbox::default());
    loop {
        let (nicks, _, done) = names_page(&core, &mut cursor);
        all.extend(nicks);
        if done {
            break;
        }
    }
    assert!(
        all.iter().any(|n| n == "aaa" || n == "zed"),
        "the joiner is missing from its own names list ({} names)",
        all.len()
    );
}

/// A core for the authority tests: alice creates #r, bob joins it.
fn authority() -> World {
    let mut w = World::new(0);
    w.run(A, Command::Join("#r".into()));
    w.run(B, Command::Join("#r".into()));
    w
}

fn mode(room: &str, set: bool, mode: Mode) -> Command {
    Command::Mode {
        room: Some(room.into()),
        changes: vec![ModeChange { set, mode }],
    }
}

fn errors(events: &[(Event, Vec<ClientId>)]) -> Vec<Error> {
    events
        .iter()
        .filter_map(|(e, _)| match e {
            Event::Error(e) => Some(e.clone()),
            _ => None,
        })
        .collect()
}

#[test]
fn the_creator_operates_a_room_and_nobody_operates_the_lobby() {
    let mut w = authority();
    assert!(w.core.status_in(w.core.room_keys["#r"], A).op);
    assert!(!w.core.status_in(w.core.room_keys["#r"], B).op);
    let lobby = w.core.room_keys[LOBBY];
    assert!(!w.core.status_in(lobby, A).op);
    // Nobody may change the lobby's modes; anyone may set its topic.
    assert_eq!(
        errors(&w.run(A, mode(LOBBY, true, Mode::Flag('m')))),
        [Error::NotOperator(LOBBY.into())]
    );
    let topic = Command::Topic {
        room: Some(LOBBY.into()),
        text: Some("open".into()),
    };
    assert!(errors(&w.run(B, topic)).is_empty());
    // A non-operator may not change #r's topic (+t) nor its modes.
    let topic = Command::Topic {
        room: Some("#r".into()),
        text: Some("mine".into()),
    };
    assert_eq!(errors(&w.run(B, topic)), [Error::NotOperator("#r".into())]);
}

#[test]
fn moderation_mutes_bans_invites_and_kicks() {
    let mut w = authority();
    let say_r = |text: &str| Command::Say {
        room: Some("#r".into()),
        text: text.into(),
        kind: MsgKind::Normal,
        echo: false,
        tags: None,
    };
    // +m: bob is muted until voiced.
    w.run(A, mode("#r", true, Mode::Flag('m')));
    assert_eq!(errors(&w.run(B, say_r("hi"))), [Error::Muted("#r".into())]);
    w.run(A, mode("#r", true, Mode::Voice("bob".into())));
    assert!(errors(&w.run(B, say_r("hi"))).is_empty());
    // -n lets outsiders speak; +n (the default) does not.
    assert_eq!(
        errors(&w.run(C, say_r("hey"))),
        [Error::CannotSend("#r".into())]
    );
    w.run(A, mode("#r", false, Mode::Flag('m')));
    w.run(A, mode("#r", false, Mode::Flag('n')));
    assert!(errors(&w.run(C, say_r("hey"))).is_empty());
    // A ban keeps carol out; an invitation lets her past +i only.
    w.run(A, mode("#r", true, Mode::Ban("car*".into())));
    assert_eq!(
        errors(&w.run(C, Command::Join("#r".into()))),
        [Error::Banned("#r".into())]
    );
    w.run(A, mode("#r", false, Mode::Ban("car*!*@*".into())));
    w.run(A, mode("#r", true, Mode::Flag('i')));
    assert_eq!(
        errors(&w.run(C, Command::Join("#r".into()))),
        [Error::InviteOnly("#r".into())]
    );
    let invite = Command::Invite {
        nick: "carol".into(),
        room: Some("#r".into()),
    };
    assert_eq!(
        errors(&w.run(B, invite.clone())),
        [Error::NotOperator("#r".into())],
        "only operators invite to a +i room"
    );
    assert!(errors(&w.run(A, invite)).is_empty());
    assert!(errors(&w.run(C, Command::Join("#r".into()))).is_empty());
    // The invitation is used up: after a kick, carol cannot come back.
    let kick = Command::Kick {
        room: Some("#r".into()),
        nick: "carol".into(),
        reason: None,
    };
    let seen = w.see(A, kick);
    assert!(
        seen.iter()
            .any(|(e, to)| e.starts_with("Kicked") && to.contains(&C)),
        "{seen:?}"
    );
    assert_eq!(
        errors(&w.run(C, Command::Join("#r".into()))),
        [Error::InviteOnly("#r".into())]
    );
    // An operator who leaves keeps no standing.
    let part = Command::Part {
        room: Some("#r".into()),
        reason: None,
    };
    w.run(A, part);
    w.run(A, Command::Join("#r".into()));
    let key = w.core.room_keys["#r"];
    assert!(!w.core.status_in(key, A).op);
}

#[test]
fn a_limit_and_a_key_gate_joining() {
    let mut w = authority();
    w.run(A, mode("#r", true, Mode::Limit(Some(2))));
    assert_eq!(
        errors(&w.run(C, Command::Join("#r".into()))),
        [Error::RoomFull("#r".into())]
    );
    w.run(A, mode("#r", false, Mode::Limit(None)));
    w.run(A, mode("#r", true, Mode::Key(Some("k1".into()))));
    assert_eq!(
        errors(&w.run(C, Command::Join("#r".into()))),
        [Error::BadKey("#r".into())]
    );
    let join = Command::JoinWithKey {
        room: "#r".into(),
        key: "k1".into(),
    };
    assert!(errors(&w.run(C, join)).is_empty());
    assert_eq!(
        errors(&w.run(A, mode("#r", true, Mode::Key(Some("has space".into()))))),
        [Error::InvalidKey("#r".into())]
    );
}

// --- review2: findings ---

/// An invitation is keyed by `ClientId`, and a `ClientId` is a slab key the drivers reuse for
/// the next connection. An invited user that quits without joining leaves its invitation
/// behind, and whoever connects next under the same id walks into the +i room.
#[test]
fn an_invitation_does_not_outlive_the_invited_connection() {
    let mut w = authority();
    w.run(A, mode("#r", true, Mode::Flag('i')));
    let invite = Command::Invite {
        nick: "carol".into(),
        room: Some("#r".into()),
    };
    assert!(errors(&w.run(A, invite)).is_empty());
    // carol quits without joining; a stranger gets her (reused) ClientId.
    let now = w.now;
    w.core.disconnect(C, "bye", now, &mut w.out);
    w.core.connect(C, TEN, now, &mut Outbox::default());
    w.run(C, Command::Nick("mallory".into()));
    assert_eq!(
        errors(&w.run(C, Command::Join("#r".into()))),
        [Error::InviteOnly("#r".into())],
        "mallory inherited carol's invitation to the invite-only #r"
    );
}

/// A ban mask reaches the MODE line every member gets (and 367, and the line protocol's
/// MODE/BAN lines) as given: with a space it splits into two parameters, with a leading ':'
/// it turns into a trailing one, and control characters (ESC) reach line users' terminals.
#[test]
fn a_ban_mask_cannot_break_the_mode_line() {
    let mut broken = Vec::new();
    for bad in ["a b", ":x", "\u{1b}[2Jx"] {
        let mut w = authority();
        let events = w.run(A, mode("#r", true, Mode::Ban(bad.into())));
        for (e, _) in &events {
            if let Event::ModeChanged { changes, .. } = e {
                for c in changes {
                    let arg = c.arg.as_deref().unwrap_or("");
                    if arg.contains(' ')
                        || arg.starts_with(':')
                        || arg.chars().any(char::is_control)
                    {
                        broken.push(format!(
                            "mask {bad:?} kept as {arg:?}: {:?}",
                            String::from_utf8_lossy(&crate::protocol::irc::render(
                                e, "srv", "me", false, 0
                            ))
                        ));
                    }
                }
            }
        }
    }
    assert!(broken.is_empty(), "{broken:#?}");
}

/// README: a server operator "sees secret rooms and users' real addresses in /whois".
#[test]
fn a_server_operator_sees_secret_rooms_in_whois() {
    let mut w = authority();
    w.run(A, mode("#r", true, Mode::Flag('s')));
    w.run(C, Command::MakeOper);
    let whois = w.run(C, Command::Whois("alice".into()));
    let rooms: Vec<String> = whois
        .iter()
        .filter_map(|(e, _)| match e {
            Event::Whois(i) => Some(i.rooms.iter().map(|r| r.to_string()).collect::<Vec<_>>()),
            _ => None,
        })
        .flatten()
        .collect();
    assert!(
        rooms.iter().any(|r| r.ends_with("#r")),
        "the server operator's WHOIS of alice leaves out the secret #r: {rooms:?}"
    );
}

/// README: a server operator "operates every room"; TOPIC on a +t room checks only the
/// channel status.
#[test]
fn a_server_operator_sets_a_topic_on_a_plus_t_room() {
    let mut w = authority();
    w.run(C, Command::MakeOper);
    // Joined but not a channel operator: a server operator still "operates every room".
    w.run(C, Command::Join("#r".into()));
    let topic = Command::Topic {
        room: Some("#r".into()),
        text: Some("set by the server operator".into()),
    };
    assert_eq!(
        errors(&w.run(C, topic)),
        [],
        "a server operator cannot set a +t topic"
    );
}

/// An invitation from a plain member (allowed while the room is not +i) is remembered, and
/// setting +i afterwards does not forget it: the non-operator's guest walks into the now
/// invite-only room. README: "joining needs an /invite from an operator".
#[test]
fn a_plain_members_invitation_made_before_plus_i_opens_it() {
    let mut w = authority();
    let invite = Command::Invite {
        nick: "carol".into(),
        room: Some("#r".into()),
    };
    // bob is no operator of #r; the room is not +i yet, so this is allowed.
    assert!(errors(&w.run(B, invite)).is_empty());
    // alice locks the room.
    w.run(A, mode("#r", true, Mode::Flag('i')));
    assert_eq!(
        errors(&w.run(C, Command::Join("#r".into()))),
        [Error::InviteOnly("#r".into())],
        "bob's invitation from before +i let carol into the invite-only #r"
    );
}

#[test]
fn operator_passwords_are_checked_a_few_times_a_second_server_wide() {
    let mut core = Core::new(CoreLimits::counts(0, 3, 1000), 0);
    let granted = (0..20).filter(|_| core.may_check_password(5_500)).count();
    assert_eq!(granted, PASSWORD_CHECKS_PER_SECOND as usize);
    assert!(!core.may_check_password(5_999), "the same second");
    assert!(core.may_check_password(6_000), "the next second");
}

/// Client tags ride along with a message to every recipient, each message has its own number
/// (the same for all its recipients), and neither tags nor tag-only messages reach the history.
#[test]
fn tags_travel_with_messages_and_tag_only_messages_are_not_remembered() {
    let mut w = World::new(5);
    let tags: ClientTags = Some("+typing=done".into());
    let said = w.run(
        A,
        Command::Say {
            room: None,
            text: "hi".into(),
            kind: MsgKind::Normal,
            echo: true,
            tags: tags.clone(),
        },
    );
    let Event::Message { tags: t, id, .. } = &said[0].0 else {
        panic!("{said:?}")
    };
    assert_eq!((t, said[0].1.as_slice()), (&tags, [A, B].as_slice()));
    let first = *id;
    let private = w.run(
        A,
        Command::Private {
            to: "bob".into(),
            text: "psst".into(),
            kind: MsgKind::Normal,
            echo: false,
            tags: tags.clone(),
        },
    );
    let Event::Private { tags: t, id, .. } = &private[0].0 else {
        panic!("{private:?}")
    };
    assert_eq!((t, *id), (&tags, first + 1));
    // A tag-only message goes where a message would, echo included, and is numbered too.
    let typing = |to| Command::TagMsg {
        to,
        tags: Some("+typing=active".into()),
        echo: false,
    };
    let to_room = w.run(A, typing(Target::Room("#LOBBY".into())));
    assert_eq!(
        to_room,
        [(
            Event::TagMsg {
                from: w.core.source(A).unwrap().clone(),
                to: "#lobby".into(),
                tags: Some("+typing=active".into()),
                id: first + 2,
            },
            vec![B]
        )]
    );
    let to_nick = w.run(A, typing(Target::Nick("CAROL".into())));
    assert!(
        matches!(&to_nick[..], [(Event::TagMsg { to, .. }, r)] if &**to == "carol" && r == &[C]),
        "{to_nick:?}"
    );
    // The rules of messages hold: not to a nick nobody has, nor to a room one may not speak in.
    let nobody = w.run(A, typing(Target::Nick("nobody".into())));
    assert!(matches!(nobody[0].0, Event::Error(Error::NoSuchNick(_))));
    // One who ignores the sender gets none, as with a private message, and the sender is not
    // told (its echo still comes).
    w.run(C, Command::Silence(Some((true, "alice".into()))));
    let ignored = w.run(
        A,
        Command::TagMsg {
            to: Target::Nick("carol".into()),
            tags: None,
            echo: true,
        },
    );
    assert!(
        matches!(&ignored[..], [(Event::TagMsg { .. }, r)] if r == &[A]),
        "{ignored:?}"
    );
    w.run(C, Command::Silence(Some((false, "alice".into()))));
    w.run(C, Command::Join("#quiet".into()));
    w.run(
        C,
        Command::Mode {
            room: Some("#quiet".into()),
            changes: vec![ModeChange {
                set: true,
                mode: Mode::Flag('n'),
            }],
        },
    );
    let outside = w.run(A, typing(Target::Room("#quiet".into())));
    assert!(matches!(outside[0].0, Event::Error(Error::CannotSend(_))));
    // Only the message is replayed to a joiner: no tags (a replay has none), no TAGMSG.
    let seen = w.see(C, Command::Join(LOBBY.into()));
    let replayed: Vec<&String> = seen
        .iter()
        .map(|(s, _)| s)
        .filter(|s| s.starts_with("history"))
        .collect();
    assert_eq!(replayed, ["history #lobby alice 1000000 hi"]);
}

// ---- cluster notes -------------------------------------------------------------------------

/// The notes a command left for the backplane, but the subscriptions to users' channels
/// (see [`all_notes`]).
fn notes(out: &mut Outbox) -> Vec<cluster::Note> {
    use cluster::Note;
    all_notes(out)
        .into_iter()
        .filter(|n| !matches!(n, Note::SubscribeUser(_) | Note::UnsubscribeUser(_)))
        .collect()
}

/// The notes for the backplane, but the users' states for the registry of live nodes (see
/// [`presence`]).
fn all_notes(out: &mut Outbox) -> Vec<cluster::Note> {
    use cluster::Note;
    out.drain_notes()
        .filter(|n| !matches!(n, Note::Present(_) | Note::Absent(_)))
        .collect()
}

/// Only the users' states for the registry of live nodes: (client, nick, rooms) of each
/// `Present`, or `None` rooms for an `Absent`.
fn presence(out: &mut Outbox) -> Vec<(ClientId, String, Option<Vec<String>>)> {
    use cluster::Note;
    out.drain_notes()
        .filter_map(|n| match n {
            Note::Present(u) => Some((
                u.client,
                u.source.nick.to_string(),
                Some(u.rooms.iter().map(|r| r.to_string()).collect()),
            )),
            Note::Absent(c) => Some((c, String::new(), None)),
            _ => None,
        })
        .collect()
}

fn publish(shared: cluster::Shared) -> cluster::Note {
    cluster::Note::Publish(shared)
}

fn won(claim: cluster::NickClaim) -> cluster::ClaimAnswer {
    cluster::ClaimAnswer {
        claim,
        outcome: cluster::Outcome::Won,
    }
}

/// `id` joins `room`, a room with no local member, on a clustered core: the join is asked of
/// the cluster, which answers that it `created` the room (nobody else is in it); the notes
/// of the completed join are returned.
fn cluster_join(
    core: &mut Core,
    out: &mut Outbox,
    id: ClientId,
    room: &str,
    created: bool,
) -> Vec<cluster::Note> {
    out.clear();
    core.handle(id, Command::Join(room.into()), 0, out);
    assert!(core.holds_input(id), "its next lines wait for the answer");
    let request = match &notes(out)[..] {
        // (The room's shared history is asked with its subscription.)
        [
            cluster::Note::Subscribe(_),
            cluster::Note::History { .. },
            cluster::Note::Join(r),
        ]
        | [cluster::Note::Join(r)] => r.clone(),
        other => panic!("expected a join asked of the cluster, got {other:?}"),
    };
    assert!(out.is_empty(), "nothing told before the answer");
    let answer = cluster::JoinAnswer {
        created,
        members: Vec::new(),
        state: cluster::RoomState::default(),
    };
    core.joined(request, Some(answer), 0, out);
    assert!(!core.holds_input(id));
    notes(out)
}

/// A clustered core (node number 7) with guests A and B, and the notes drained.
fn cluster_core() -> (Core, Outbox) {
    let mut core = Core::new(CoreLimits::counts(10, 5, 1000), 0);
    core.set_cluster(true);
    core.set_node_number(7);
    let mut out = Outbox::default();
    core.connect(A, IP, 0, &mut out);
    core.connect(B, IP, 0, &mut out);
    out.clear();
    out.drain_notes();
    (core, out)
}

/// Asks for `nick` for `id`, and returns the claim the core made.
fn claim(core: &mut Core, out: &mut Outbox, id: ClientId, nick: &str) -> cluster::NickClaim {
    core.handle(id, Command::Nick(nick.into()), 0, out);
    assert!(out.is_empty(), "nothing is told before the cluster answers");
    match &notes(out)[..] {
        [cluster::Note::Claim(c)] => c.clone(),
        other => panic!("expected one claim, got {other:?}"),
    }
}

fn cluster_errors(out: &Outbox) -> Vec<(Error, Vec<ClientId>)> {
    out.iter()
        .filter_map(|(e, to)| match e {
            Event::Error(e) => Some((e.clone(), to.to_vec())),
            _ => None,
        })
        .collect()
}

#[test]
fn a_clustered_node_names_its_guests_in_its_own_space_and_nobody_takes_such_a_nick() {
    let (mut core, mut out) = cluster_core();
    assert_eq!(&**core.nick(A).unwrap(), "guest7-1");
    assert_eq!(&**core.nick(B).unwrap(), "guest7-2");
    for nick in ["guest7-9", "Guest3-1", "guest12-40"] {
        core.handle(A, Command::Nick(nick.into()), 0, &mut out);
        assert!(
            matches!(&cluster_errors(&out)[..], [(Error::ReservedNick(_), _)]),
            "{nick}"
        );
        assert!(!out.has_notes(), "not even asked");
        out.clear();
    }
    // Not a guest nick of a node: an ordinary nick, claimed.
    for nick in ["guest5", "guest-1", "guestx-1"] {
        let c = claim(&mut core, &mut out, A, nick);
        core.claimed(
            cluster::ClaimAnswer {
                claim: c,
                outcome: cluster::Outcome::Taken,
            },
            0,
            &mut out,
        );
        out.clear();
    }
    let single = Core::new(CoreLimits::counts(10, 5, 1000), 0);
    assert!(
        single.check_new_nick(None, "guest7-1", 0).is_ok(),
        "one node: as before"
    );
}

#[test]
fn a_clustered_nick_change_is_made_when_the_cluster_answers_and_releases_the_old_claim() {
    use cluster::{ClaimAnswer, Note, Outcome};
    let (mut core, mut out) = cluster_core();
    let first = claim(&mut core, &mut out, A, "alice");
    assert_eq!(first.nick.as_ref(), "alice");
    assert_eq!(first.client, A);
    // A second change while the first is under way is refused, not queued.
    core.handle(A, Command::Nick("alicia".into()), 0, &mut out);
    assert_eq!(
        cluster_errors(&out),
        [(Error::NickPending("alicia".into()), vec![A])]
    );
    assert!(!out.has_notes());
    out.clear();
    assert_eq!(
        &**core.nick(A).unwrap(),
        "guest7-1",
        "unchanged until the answer"
    );
    core.claimed(won(first.clone()), 0, &mut out);
    assert_eq!(&**core.nick(A).unwrap(), "alice");
    assert!(out.iter().any(
        |(e, to)| matches!(e, Event::NickChanged { new, .. } if &**new == "alice")
            && to.contains(&A)
    ));
    assert!(
        notes(&mut out).is_empty(),
        "a guest nick is not released: never claimed"
    );
    out.clear();
    // A change of case needs no claim.
    core.handle(A, Command::Nick("Alice".into()), 0, &mut out);
    assert!(all_notes(&mut out).is_empty(), "no claim, no release");
    assert_eq!(&**core.nick(A).unwrap(), "Alice");
    out.clear();
    // Taken elsewhere: the usual error, nothing changes.
    let second = claim(&mut core, &mut out, A, "bob");
    core.claimed(
        ClaimAnswer {
            claim: second,
            outcome: Outcome::Taken,
        },
        0,
        &mut out,
    );
    assert_eq!(
        cluster_errors(&out),
        [(Error::NickInUse("bob".into()), vec![A])]
    );
    assert!(!out.has_notes());
    out.clear();
    // Redis could not decide: cluster link down.
    let third = claim(&mut core, &mut out, A, "ally");
    core.claimed(
        ClaimAnswer {
            claim: third,
            outcome: Outcome::Failed,
        },
        0,
        &mut out,
    );
    assert_eq!(
        cluster_errors(&out),
        [(Error::ClusterDown("ally".into()), vec![A])]
    );
    out.clear();
    // Won: the old nick's claim (case as it is now) is released.
    let fourth = claim(&mut core, &mut out, A, "ally");
    core.claimed(won(fourth.clone()), 0, &mut out);
    assert_eq!(
        notes(&mut out),
        [Note::Release(cluster::NickClaim {
            nick: rc("Alice"),
            ..first
        })]
    );
    out.clear();
    // Leaving releases the nick held.
    core.disconnect(A, "bye", 0, &mut out);
    assert_eq!(notes(&mut out), [Note::Release(fourth)]);
}

#[test]
fn a_late_answer_for_a_user_who_left_is_not_told_and_a_won_claim_is_released() {
    use cluster::{ClaimAnswer, Note, Outcome};
    let (mut core, mut out) = cluster_core();
    let c = claim(&mut core, &mut out, A, "alice");
    core.disconnect(A, "bye", 0, &mut out);
    assert_eq!(
        notes(&mut out),
        [Note::Release(c.clone())],
        "the claim under way is released (after it, in Redis's order)"
    );
    out.clear();
    // A new user with the same client id.
    core.connect(A, IP, 0, &mut out);
    out.clear();
    core.claimed(won(c.clone()), 0, &mut out);
    assert!(out.is_empty(), "nobody told");
    assert_eq!(notes(&mut out), [Note::Release(c.clone())]);
    assert!(core.nick(A).unwrap().starts_with("guest7-"));
    core.claimed(
        ClaimAnswer {
            claim: c,
            outcome: Outcome::Taken,
        },
        0,
        &mut out,
    );
    assert!(out.is_empty() && !out.has_notes());
}

#[test]
fn while_the_cluster_link_is_down_nick_changes_are_refused_at_once() {
    let (mut core, mut out) = cluster_core();
    core.tell_cluster_link(false, &mut out);
    out.clear();
    core.handle(A, Command::Nick("alice".into()), 0, &mut out);
    assert_eq!(
        cluster_errors(&out),
        [(Error::ClusterDown("alice".into()), vec![A])]
    );
    assert!(!out.has_notes());
    // Guests still arrive (their nicks need no claim).
    core.connect(C, IP, 0, &mut out);
    assert_eq!(&**core.nick(C).unwrap(), "guest7-3");
    out.clear();
    core.tell_cluster_link(true, &mut out);
    out.clear();
    claim(&mut core, &mut out, A, "alice");
}

#[test]
fn a_cluster_core_subscribes_while_a_room_has_local_members_and_publishes_once() {
    use cluster::{Note, Shared};
    let mut core = Core::new(CoreLimits::counts(10, 5, 1000), 0);
    core.set_cluster(true);
    core.set_node_number(1);
    let mut out = Outbox::default();
    core.connect(A, IP, 0, &mut out);
    core.connect(B, IP, 0, &mut out);
    let (a, b) = (
        core.source(A).unwrap().clone(),
        core.source(B).unwrap().clone(),
    );
    // (The subscription goes with the join asked of the cluster: see `cluster_join`.)
    assert_eq!(
        cluster_join(&mut core, &mut out, A, "#Chat", true),
        [publish(Shared::Joined {
            room: rc("#Chat"),
            who: a.clone()
        })]
    );
    core.handle(B, Command::Join("#chat".into()), 0, &mut out);
    let plain = modes::Status::default();
    assert_eq!(
        notes(&mut out),
        [
            Note::Member {
                room: rc("#chat"),
                drop: None,
                set: Some((b.clone(), plain))
            },
            publish(Shared::Joined {
                room: rc("#Chat"),
                who: b.clone()
            })
        ],
        "the second member is joined at once, and subscribes nothing more"
    );
    let say = Command::Say {
        room: Some("#chat".into()),
        text: "hi".into(),
        kind: MsgKind::Action,
        echo: true,
        tags: Some(rc("+typing=done")),
    };
    out.clear();
    core.handle(A, say, 0, &mut out);
    let msgid = match out.iter().next() {
        Some((Event::Message { id, .. }, _)) => *id,
        other => panic!("{other:?}"),
    };
    assert!(msgid > 1 << 40, "node 1's ids: {msgid:#x}");
    assert_eq!(
        notes(&mut out),
        [publish(Shared::Message(cluster::RoomMessage {
            room: rc("#Chat"),
            from: a.clone(),
            text: rc("hi"),
            kind: MsgKind::Action,
            tags: Some(rc("+typing=done")),
            msgid,
        }))],
        "one publish for two local recipients, with the msgid they got"
    );
    let part = Command::Part {
        room: None,
        reason: Some("later".into()),
    };
    core.handle(A, part, 0, &mut out);
    assert_eq!(
        notes(&mut out),
        [
            publish(Shared::Parted {
                room: rc("#Chat"),
                who: a,
                reason: Some(rc("later"))
            }),
            Note::Member {
                room: rc("#chat"),
                drop: Some(rc("guest1-1")),
                set: None
            }
        ]
    );
    cluster_join(&mut core, &mut out, B, "#other", true);
    core.handle(B, Command::Nick("bee".into()), 0, &mut out);
    let [Note::Claim(claim)] = &notes(&mut out)[..] else {
        panic!("a nick change is a claim first")
    };
    core.claimed(won(claim.clone()), 0, &mut out);
    let bee = core.source(B).unwrap().clone();
    let op = modes::Status {
        op: true,
        voice: false,
    };
    // Its entries in the rooms' shared member lists follow (it created #other: `@`).
    let entry = |room: &str, status| Note::Member {
        room: rc(room),
        drop: Some(rc("guest1-2")),
        set: Some((bee.clone(), status)),
    };
    assert_eq!(
        notes(&mut out),
        [
            entry("#chat", plain),
            entry("#other", op),
            publish(Shared::NickChanged {
                rooms: vec![rc("#Chat"), rc("#other")],
                old: b,
                new: rc("bee"),
            })
        ],
        "a guest nick was never claimed: nothing to release"
    );
    let b = bee;
    core.disconnect(B, "bye", 0, &mut out);
    let gone = |room: &str| Note::Member {
        room: rc(room),
        drop: Some(rc("bee")),
        set: None,
    };
    assert_eq!(
        notes(&mut out),
        [
            Note::Release(claim.clone()),
            publish(Shared::Quit {
                rooms: vec![rc("#Chat"), rc("#other")],
                who: b,
                reason: rc("bye")
            }),
            gone("#chat"),
            Note::Unsubscribe(rc("#chat")),
            gone("#other"),
            Note::Unsubscribe(rc("#other")),
        ]
    );
}

/// The texts of the history replayed in `events`, and to whom.
fn history_to(events: &[(Event, Vec<ClientId>)]) -> Vec<(String, Vec<ClientId>)> {
    events
        .iter()
        .filter_map(|(e, to)| match e {
            Event::History { text, .. } => Some((text.to_string(), to.clone())),
            _ => None,
        })
        .collect()
}

#[test]
fn a_first_local_member_is_replayed_the_shared_history_when_the_cluster_answers() {
    use cluster::{Answer, HistoryItem, Note};
    let (mut core, mut out) = cluster_core();
    let item = |text: &str, at| HistoryItem {
        from: Source::new("zed", "line", "elsewhere", "Zed"),
        text: text.into(),
        kind: MsgKind::Normal,
        at,
    };
    // What the lobby kept from before it had no member here is stale: the cluster's history
    // replaces it.
    cluster_join(&mut core, &mut out, A, "#lobby", false);
    core.handle(A, say("stale"), 0, &mut out);
    core.handle(
        A,
        Command::Part {
            room: None,
            reason: None,
        },
        0,
        &mut out,
    );
    out.clear();
    out.drain_notes();
    core.handle(A, Command::Join("#Lobby".into()), 0, &mut out);
    let (ask, request) = match &notes(&mut out)[..] {
        [
            Note::Subscribe(_),
            Note::History { room, ask },
            Note::Join(r),
        ] if &**room == "#lobby" => (*ask, r.clone()),
        other => panic!("{other:?}"),
    };
    let answer = cluster::JoinAnswer {
        created: false,
        members: Vec::new(),
        state: cluster::RoomState::default(),
    };
    core.joined(request, Some(answer), 0, &mut out);
    let joined = expand(&core, &out);
    assert!(
        history_to(&joined).is_empty(),
        "nothing replayed before the answer"
    );
    // A second member joins and the first speaks before the answer comes.
    core.handle(B, Command::Join("#lobby".into()), 0, &mut out);
    core.handle(A, say("said since"), 0, &mut out);
    out.clear();
    let stale = Answer::History {
        room: rc("#lobby"),
        ask: ask + 1,
        entries: vec![item("wrong ask", 1)],
    };
    core.answer(stale, 0, &mut out);
    assert!(out.is_empty(), "an answer to another ask is dropped");
    let answer = Answer::History {
        room: rc("#lobby"),
        ask,
        entries: vec![item("one", 1), item("two", 2)],
    };
    core.answer(answer.clone(), 0, &mut out);
    let got = history_to(&expand(&core, &out));
    assert_eq!(
        got,
        [("one".into(), vec![A, B]), ("two".into(), vec![A, B])],
        "every member, the cluster's history only (they saw what was said since)"
    );
    out.clear();
    core.answer(answer, 0, &mut out);
    assert!(out.is_empty(), "answered once");
    // A later joiner gets it all, in order.
    core.connect(C, IP, 0, &mut out);
    out.clear();
    core.handle(C, Command::Join("#lobby".into()), 0, &mut out);
    let events = expand(&core, &out);
    let texts: Vec<String> = history_to(&events).into_iter().map(|r| r.0).collect();
    assert_eq!(texts, ["one", "two", "said since"]);
    // With the link down, a first joiner gets what the node has, at once.
    core.tell_cluster_link(false, &mut out);
    core.handle(A, Command::Join("#new".into()), 0, &mut out);
    assert!(
        !notes(&mut out)
            .iter()
            .any(|n| matches!(n, Note::History { .. }))
    );
}

#[test]
fn a_kick_crosses_nodes_as_a_kick() {
    let (mut core, mut out) = cluster_core();
    cluster_join(&mut core, &mut out, A, "#k", true);
    core.handle(B, Command::Join("#k".into()), 0, &mut out);
    out.drain_notes();
    let (a, b) = (
        core.source(A).unwrap().clone(),
        core.source(B).unwrap().clone(),
    );
    let kick = Command::Kick {
        room: None,
        nick: b.nick.to_string(),
        reason: Some("spam".into()),
    };
    core.handle(A, kick, 0, &mut out);
    assert_eq!(
        notes(&mut out),
        [
            publish(cluster::Shared::Kicked {
                room: rc("#k"),
                by: a,
                nick: b.nick.clone(),
                reason: rc("spam"),
            }),
            cluster::Note::Member {
                room: rc("#k"),
                drop: Some(b.nick.clone()),
                set: None
            }
        ]
    );
}

#[test]
fn a_core_outside_a_cluster_leaves_no_notes() {
    let mut w = World::new(5);
    w.say(A, "hello");
    w.run(C, Command::Join("#new".into()));
    w.run(
        C,
        Command::Part {
            room: None,
            reason: None,
        },
    );
    w.core.disconnect(B, "bye", w.now, &mut w.out);
    assert!(!w.out.has_notes());
}

#[test]
fn a_remote_message_reaches_local_members_only_and_is_remembered() {
    let mut w = World::new(5);
    let from = Source::new("zed", "line", "elsewhere", "Zed");
    let msg = |room: &str| cluster::RoomMessage {
        room: rc(room),
        from: from.clone(),
        text: rc("from afar"),
        kind: MsgKind::Normal,
        tags: None,
        msgid: 0,
    };
    // The sender's node's msgid, when it sent one, is the message's here too.
    w.out.clear();
    let sent = cluster::RoomMessage {
        msgid: 77,
        ..msg("#lobby")
    };
    w.core.remote_message(sent, w.now, &mut w.out);
    assert!(matches!(
        w.collect()[..],
        [(Event::Message { id: 77, .. }, _)]
    ));
    w.out.clear();
    w.core
        .remote(cluster::Shared::Message(msg("#LOBBY")), w.now, &mut w.out);
    let events = w.collect();
    assert_eq!(events.len(), 1);
    let (event, to) = &events[0];
    assert_eq!(to, &[A, B]);
    assert!(
        matches!(event, Event::Message { room, from: f, text, .. }
            if &**room == "#lobby" && f.nick.as_ref() == "zed" && &**text == "from afar"),
        "{event:?}"
    );
    w.out.clear();
    w.core.remote_message(msg("#nowhere"), w.now, &mut w.out);
    assert!(
        w.collect().is_empty(),
        "a room with no local member is not made"
    );
    assert!(!w.core.room_exists("#nowhere"));
    // A joiner sees it in the history, like a local message.
    let events = w.run(C, Command::Join(LOBBY.into()));
    assert!(
        events
            .iter()
            .any(|(e, _)| matches!(e, Event::History { text, .. } if &**text == "from afar")),
        "{events:?}"
    );
}

#[test]
fn a_node_lost_quit_of_a_local_user_is_not_told_here() {
    // A node taken for dead while stalled hears, once it resumes, the quits another node
    // published for its own users ("node lost"). They are still here: nobody here is told,
    // neither the user itself nor its neighbours (who would never see it join again).
    use cluster::Shared;
    let mut w = World::new(5);
    w.run(A, Command::Join("#two".into()));
    w.run(B, Command::Join("#two".into()));
    let me = w.core.users[&A].source.clone();
    w.out.clear();
    w.core.remote(
        Shared::Quit {
            rooms: vec![rc("#lobby"), rc("#two")],
            who: me.clone(),
            reason: rc("node lost"),
        },
        w.now,
        &mut w.out,
    );
    assert_eq!(w.collect(), [], "nobody is told a local user quit");
    // Nor a quit of the same nick from another address (two users shared the nick after
    // Redis lost its keys, until the claims settle it): here the nick is the local user's, and
    // a QUIT would take it out of its neighbours' lists.
    let other = Source::new(&me.nick, "line", "elsewhere", "Other");
    w.out.clear();
    w.core.remote(
        Shared::Quit {
            rooms: vec![rc("#two")],
            who: other.clone(),
            reason: rc("node lost"),
        },
        w.now,
        &mut w.out,
    );
    assert_eq!(w.collect(), []);
    // Another nick's quit is told as always.
    let zed = Source::new("zed", "line", "elsewhere", "Zed");
    w.core.remote(
        Shared::Quit {
            rooms: vec![rc("#two")],
            who: zed,
            reason: rc("node lost"),
        },
        w.now,
        &mut w.out,
    );
    assert_eq!(w.collect().len(), 1);
}

#[test]
fn remote_joins_parts_and_quits_are_told_to_local_members_once() {
    use cluster::Shared;
    let mut w = World::new(5);
    w.run(A, Command::Join("#two".into()));
    w.run(C, Command::Join("#two".into()));
    let zed = Source::new("zed", "line", "elsewhere", "Zed");
    let tell = |w: &mut World, shared| {
        w.out.clear();
        w.core.remote(shared, w.now, &mut w.out);
        w.collect()
    };
    let joined = tell(
        &mut w,
        Shared::Joined {
            room: rc("#TWO"),
            who: zed.clone(),
        },
    );
    assert_eq!(
        joined,
        [(
            Event::Joined {
                room: rc("#two"),
                who: zed.clone()
            },
            vec![A, C]
        )]
    );
    let parted = tell(
        &mut w,
        Shared::Parted {
            room: rc("#lobby"),
            who: zed.clone(),
            reason: None,
        },
    );
    assert_eq!(parted[0].1, [A, B]);
    let quit = tell(
        &mut w,
        Shared::Quit {
            rooms: vec![rc("#lobby"), rc("#two"), rc("#absent")],
            who: zed.clone(),
            reason: rc("gone"),
        },
    );
    assert_eq!(
        quit,
        [(
            Event::Quit {
                who: zed.clone(),
                reason: rc("gone")
            },
            vec![A, B, C]
        )],
        "once to each local user sharing a room with the quitter"
    );
    let renamed = tell(
        &mut w,
        Shared::NickChanged {
            rooms: vec![rc("#two"), rc("#lobby")],
            old: zed.clone(),
            new: rc("zedd"),
        },
    );
    assert_eq!(
        renamed,
        [(
            Event::NickChanged {
                old: zed.clone(),
                new: rc("zedd")
            },
            vec![A, B, C]
        )]
    );
    // Big rooms (over big_room local members) are told no presence, as for local users.
    let mut w = World::new(5);
    w.core.limits.big_room = 1;
    let quiet = tell(
        &mut w,
        Shared::Joined {
            room: rc("#lobby"),
            who: zed,
        },
    );
    assert!(quiet.is_empty());
}

#[test]
fn a_room_tagmsg_is_published_once_and_a_remote_one_reaches_every_local_member() {
    let mut core = Core::new(CoreLimits::counts(10, 5, 1000), 0);
    core.set_cluster(true);
    let mut out = Outbox::default();
    core.connect(A, IP, 0, &mut out);
    core.connect(B, IP, 0, &mut out);
    cluster_join(&mut core, &mut out, A, "#t", true);
    core.handle(B, Command::Join("#t".into()), 0, &mut out);
    out.drain_notes();
    let a = core.source(A).unwrap().clone();
    let tagmsg = Command::TagMsg {
        to: Target::Room("#T".into()),
        tags: Some(rc("+typing=active")),
        echo: false,
    };
    out.clear();
    core.handle(A, tagmsg, 0, &mut out);
    let msgid = match out.iter().next() {
        Some((Event::TagMsg { id, .. }, _)) => *id,
        other => panic!("{other:?}"),
    };
    let shared = cluster::Shared::TagMsg {
        room: rc("#t"),
        from: a,
        tags: Some(rc("+typing=active")),
        msgid,
    };
    assert_eq!(notes(&mut out), [publish(shared.clone())]);
    out.clear();
    core.remote(shared, 0, &mut out);
    let got: Vec<_> = out.iter().map(|(e, to)| (e.clone(), to.to_vec())).collect();
    assert_eq!(got.len(), 1);
    assert!(
        matches!(&got[0].0, Event::TagMsg { to, id, .. } if &**to == "#t" && *id == msgid),
        "the sender's msgid"
    );
    assert_eq!(
        got[0].1,
        [A, B],
        "the sender's node is not told again: it ignores its own"
    );
}

#[test]
fn a_clustered_irc_registration_waits_for_its_claim_and_is_told_how_it_ended() {
    use cluster::{ClaimAnswer, Note, Outcome};
    let (mut core, mut out) = cluster_core();
    let register = |core: &mut Core, out: &mut Outbox, id, nick: &str| {
        let r = core.register(id, nick, "u", "U", IP, 0, out);
        let claim = match &notes(out)[..] {
            [Note::Claim(c)] => c.clone(),
            other => panic!("expected a claim, got {other:?}"),
        };
        (r, claim)
    };
    let (r, claim) = register(&mut core, &mut out, C, "carol");
    assert_eq!(r, Ok(Registration::Pending));
    assert!(core.nick(C).is_none(), "not registered before the answer");
    assert_eq!(
        core.register(C, "carol", "u", "U", IP, 0, &mut out),
        Err(Error::NickPending("carol".into()))
    );
    core.claimed(
        ClaimAnswer {
            claim,
            outcome: Outcome::Taken,
        },
        0,
        &mut out,
    );
    assert!(core.nick(C).is_none());
    let told: Vec<_> = out.iter().map(|(e, to)| (e.clone(), to.to_vec())).collect();
    assert_eq!(
        told,
        [(
            Event::Registration(Some(Error::NickInUse("carol".into()))),
            vec![C]
        )]
    );
    out.clear();
    let (_, claim) = register(&mut core, &mut out, C, "carla");
    core.claimed(won(claim.clone()), 0, &mut out);
    assert_eq!(&**core.nick(C).unwrap(), "carla");
    assert!(
        out.iter()
            .any(|(e, to)| *e == Event::Registration(None) && to == [C])
    );
    out.clear();
    core.disconnect(C, "bye", 0, &mut out);
    assert_eq!(notes(&mut out), [Note::Release(claim)]);
    // A client that leaves while its claim is under way: released; the late answer is not
    // told to anyone.
    let (_, claim) = register(&mut core, &mut out, C, "dora");
    core.disconnect(C, "bye", 0, &mut out);
    assert_eq!(notes(&mut out), [Note::Release(claim.clone())]);
    out.clear();
    core.claimed(won(claim.clone()), 0, &mut out);
    assert!(out.is_empty());
    assert_eq!(notes(&mut out), [Note::Release(claim)]);
    // While the link is down: refused at once.
    core.tell_cluster_link(false, &mut out);
    out.clear();
    assert_eq!(
        core.register(C, "erin", "u", "U", IP, 0, &mut out),
        Err(Error::ClusterDown("erin".into()))
    );
}

#[test]
fn a_clustered_node_subscribes_to_its_users_nicks_and_sends_a_message_to_another_nick_out() {
    use cluster::{Answer, Note, PrivateMessage, Shared};
    let (mut core, mut out) = cluster_core();
    core.connect(C, IP, 0, &mut out);
    assert_eq!(all_notes(&mut out), [Note::SubscribeUser(rc("guest7-3"))]);
    let c = claim(&mut core, &mut out, C, "Carol");
    core.claimed(won(c), 0, &mut out);
    assert_eq!(
        all_notes(&mut out),
        [
            Note::UnsubscribeUser(rc("guest7-3")),
            Note::SubscribeUser(rc("carol"))
        ]
    );
    out.clear();
    // To a nick nobody holds here: echoed if asked, and told out with who sent it.
    let say = |to: &str, echo| Command::Private {
        to: to.into(),
        text: "psst".into(),
        kind: MsgKind::Normal,
        echo,
        tags: None,
    };
    core.handle(C, say("Dave", true), 0, &mut out);
    let carol = core.source(C).unwrap().clone();
    let serial = core.users[&C].serial;
    let echo_id = out
        .iter()
        .find_map(|(e, _)| match e {
            Event::Private { id, .. } => Some(*id),
            _ => None,
        })
        .expect("the echo");
    let msg = PrivateMessage {
        to: rc("Dave"),
        from: carol.clone(),
        text: rc("psst"),
        kind: MsgKind::Normal,
        tags: None,
        msgid: echo_id,
    };
    assert_eq!(
        all_notes(&mut out),
        [Note::Tell {
            by: (C, serial),
            msg: msg.clone()
        }]
    );
    assert!(
        out.iter()
            .any(|(e, to)| matches!(e, Event::Private { .. }) && to == [C]),
        "the echo"
    );
    out.clear();
    // Nobody received it: the sender is told, as for a local nick nobody holds.
    core.answer(
        Answer::Undelivered {
            by: (C, serial),
            to: rc("Dave"),
        },
        0,
        &mut out,
    );
    assert_eq!(
        cluster_errors(&out),
        [(Error::NoSuchNick("Dave".into()), vec![C])]
    );
    out.clear();
    // From another node to a local user: delivered to it only, found case-insensitively.
    core.remote(
        Shared::Private(PrivateMessage {
            to: rc("CAROL"),
            from: Source::new("dave", "u", "h", "D"),
            ..msg.clone()
        }),
        0,
        &mut out,
    );
    let got: Vec<_> = out.iter().map(|(e, to)| (e.clone(), to.to_vec())).collect();
    assert!(
        matches!(&got[..], [(Event::Private { to, from, id, .. }, who)]
            if &**to == "Carol" && &*from.nick == "dave" && who == &[C] && *id == echo_id),
        "{got:?}"
    );
    out.clear();
    core.disconnect(C, "bye", 0, &mut out);
    assert!(all_notes(&mut out).contains(&Note::UnsubscribeUser(rc("carol"))));
    // A local target stays local; and while the link is down, nothing goes out.
    core.handle(A, say("guest7-2", false), 0, &mut out);
    assert!(all_notes(&mut out).is_empty());
    core.tell_cluster_link(false, &mut out);
    out.clear();
    core.handle(A, say("Dave", false), 0, &mut out);
    assert!(all_notes(&mut out).is_empty());
    assert!(matches!(
        &cluster_errors(&out)[..],
        [(Error::NoSuchNick(_), _)]
    ));
}

/// `id` joins `room`, a room with no local member, on a clustered core, and the cluster
/// answers that it created it: the notes of the completed join are left in `out`.
fn join_answered(core: &mut Core, out: &mut Outbox, id: ClientId, room: &str) {
    core.handle(id, Command::Join(room.into()), 0, out);
    let request = out
        .drain_notes()
        .find_map(|n| match n {
            cluster::Note::Join(r) => Some(r),
            _ => None,
        })
        .expect("a join asked of the cluster");
    let answer = cluster::JoinAnswer {
        created: true,
        members: Vec::new(),
        state: cluster::RoomState::default(),
    };
    core.joined(request, Some(answer), 0, out);
}

#[test]
fn a_clustered_core_tells_the_registry_each_users_nick_and_rooms_as_they_change() {
    let (mut core, mut out) = cluster_core();
    core.connect(C, IP, 0, &mut out);
    assert_eq!(presence(&mut out), [(C, "guest7-3".into(), Some(vec![]))]);
    out.clear();
    join_answered(&mut core, &mut out, C, "#Big");
    assert_eq!(
        presence(&mut out),
        [(C, "guest7-3".into(), Some(vec!["#big".into()]))],
        "told once the join is made"
    );
    out.clear();
    let c = claim(&mut core, &mut out, C, "Carol");
    core.claimed(won(c), 0, &mut out);
    assert_eq!(
        presence(&mut out),
        [(C, "Carol".into(), Some(vec!["#big".into()]))]
    );
    out.clear();
    join_answered(&mut core, &mut out, C, "#other");
    out.drain_notes();
    let part = Command::Part {
        room: Some("#BIG".into()),
        reason: None,
    };
    core.handle(C, part, 0, &mut out);
    assert_eq!(
        presence(&mut out),
        [(C, "Carol".into(), Some(vec!["#other".into()]))]
    );
    out.clear();
    core.disconnect(C, "bye", 0, &mut out);
    assert_eq!(presence(&mut out), [(C, String::new(), None)]);
}

#[test]
fn a_user_whose_nick_was_taken_while_the_link_was_down_becomes_a_guest_and_is_told() {
    use cluster::Answer;
    let (mut core, mut out) = cluster_core();
    join_answered(&mut core, &mut out, A, "#r");
    out.clear();
    out.drain_notes();
    let c = claim(&mut core, &mut out, A, "alice");
    core.claimed(won(c.clone()), 0, &mut out);
    out.clear();
    out.drain_notes();
    // An answer for a nick the user no longer holds (or a user who left) changes nothing.
    let stale = cluster::NickClaim {
        nick: "other".into(),
        ..c.clone()
    };
    core.answer(Answer::NickLost(stale), 0, &mut out);
    assert!(out.is_empty() && !out.has_notes());
    core.answer(Answer::NickLost(c.clone()), 0, &mut out);
    let guest = core.nick(A).unwrap().clone();
    assert_eq!(&*guest, "guest7-3", "the next guest nick of this node");
    let told: Vec<&Event> = out
        .iter()
        .filter(|(_, to)| to.contains(&A))
        .map(|(e, _)| e)
        .collect();
    assert!(
        matches!(&told[..], [Event::NickChanged { new, .. }, Event::NickLost { nick, guest: g }]
            if **new == *guest && &**nick == "alice" && **g == *guest),
        "{told:?}"
    );
    // Other nodes see a nick change; the lost claim's release is harmless (compare-and-delete).
    let notes = notes(&mut out);
    assert!(notes.iter().any(|n| matches!(n, cluster::Note::Publish(cluster::Shared::NickChanged { new, .. }) if *new == guest)), "{notes:?}");
}

/// The names (with `@`/`+`) a listing of `room` gives, every page.
fn listed(core: &Core, room: &str) -> Vec<String> {
    core.all_pages(Cursor::members(rc(room), Listing::Names))
        .into_iter()
        .flat_map(|e| match e {
            Event::Names { members, .. } => members
                .into_iter()
                .map(|m| format!("{}{}", m.status.prefixes(), m.source.nick))
                .collect::<Vec<_>>(),
            _ => Vec::new(),
        })
        .collect()
}

fn remote_member(node: u64, nick: &str, op: bool) -> cluster::RemoteMember {
    cluster::RemoteMember {
        node,
        source: Source::new(nick, "u", "elsewhere", "R"),
        status: modes::Status { op, voice: false },
    }
}

/// `id` asks to join `room` (a room with no local member) with `key`; returns the request.
fn ask(
    core: &mut Core,
    out: &mut Outbox,
    id: ClientId,
    room: &str,
    key: Option<&str>,
) -> cluster::JoinRequest {
    let command = match key {
        Some(k) => Command::JoinWithKey {
            room: room.into(),
            key: k.into(),
        },
        None => Command::Join(room.into()),
    };
    core.handle(id, command, 0, out);
    let found = notes(out).into_iter().find_map(|n| match n {
        cluster::Note::Join(r) => Some(r),
        _ => None,
    });
    found.expect("a join asked of the cluster")
}

#[test]
fn a_join_answered_by_the_cluster_learns_the_room_and_is_checked_against_its_modes() {
    use cluster::{JoinAnswer, Note, RoomState};
    let (mut core, mut out) = cluster_core();
    let me = core.source(A).unwrap().clone();
    let answer = || JoinAnswer {
        created: false,
        members: vec![
            remote_member(3, "zed", true),
            remote_member(4, "amy", false),
            // This node's own entry (the joiner's): skipped.
            cluster::RemoteMember {
                node: 7,
                source: me.clone(),
                status: modes::Status::default(),
            },
        ],
        state: RoomState {
            topic: Some(event::Topic {
                text: rc("shared"),
                by: rc("zed"),
                at: 5,
            }),
            modes: Some("+ntk sesame".into()),
            bans: Vec::new(),
            founded: Some(4),
        },
    };
    // Without the key the cluster's room wants: refused, and taken back from the shared list.
    let request = ask(&mut core, &mut out, A, "#r", None);
    assert!(core.holds_input(A));
    core.joined(request, Some(answer()), 0, &mut out);
    assert!(!core.holds_input(A));
    assert_eq!(
        cluster_errors(&out),
        [(Error::BadKey("#r".into()), vec![A])]
    );
    assert_eq!(
        notes(&mut out),
        [
            Note::Member {
                room: rc("#r"),
                drop: Some(me.nick.clone()),
                set: None
            },
            Note::Unsubscribe(rc("#r"))
        ]
    );
    assert!(!core.room_exists("#r"), "nobody here is in it");
    // With it: joined, told the topic, listed with the members of the other nodes.
    out.clear();
    let request = ask(&mut core, &mut out, A, "#r", Some("sesame"));
    core.joined(request, Some(answer()), 0, &mut out);
    assert!(cluster_errors(&out).is_empty());
    assert!(
        out.iter()
            .any(|(e, to)| matches!(e, Event::TopicIs { topic: Some(t), .. }
        if &*t.text == "shared")
                && to == [A])
    );
    assert_eq!(
        listed(&core, "#r"),
        ["amy".to_string(), me.nick.to_string(), "@zed".into()]
    );
    assert!(
        !core.status_in(core.room_keys["#r"], A).op,
        "not the creator"
    );
    assert_eq!(
        core.rooms[core.room_keys["#r"]].created_at, 4,
        "created when the cluster founded it"
    );
    // A second local joiner is joined at once, and counts with the others.
    out.clear();
    core.handle(
        B,
        Command::JoinWithKey {
            room: "#R".into(),
            key: "sesame".into(),
        },
        0,
        &mut out,
    );
    assert!(!core.holds_input(B));
    assert_eq!(listed(&core, "#r").len(), 4);
}

#[test]
fn a_join_the_cluster_could_not_answer_is_refused_and_one_nobody_waits_for_is_taken_back() {
    use cluster::{JoinAnswer, Note, RoomState};
    let (mut core, mut out) = cluster_core();
    let request = ask(&mut core, &mut out, A, "#x", None);
    core.joined(request, None, 0, &mut out);
    assert_eq!(
        cluster_errors(&out),
        [(Error::RoomClusterDown("#x".into()), vec![A])]
    );
    assert!(!core.room_exists("#x"));
    // The joiner leaves before the answer: the answer takes its entry back.
    out.clear();
    let request = ask(&mut core, &mut out, B, "#y", None);
    let b = core.source(B).unwrap().nick.clone();
    core.disconnect(B, "bye", 0, &mut out);
    assert!(!core.room_exists("#y"));
    out.drain_notes();
    let answer = JoinAnswer {
        created: true,
        members: Vec::new(),
        state: RoomState::default(),
    };
    out.clear();
    let who = request.who.clone();
    core.joined(request.clone(), Some(answer.clone()), 0, &mut out);
    assert!(out.is_empty());
    // It created the room, so other nodes' joiners listed it at once: they are told it left.
    assert_eq!(
        notes(&mut out),
        [
            Note::Member {
                room: rc("#y"),
                drop: Some(b.clone()),
                set: None
            },
            Note::Publish(cluster::Shared::Parted {
                room: rc("#y"),
                who,
                reason: None
            })
        ]
    );
    // One that did not create it was listed to nobody (`?`): taken back only.
    let answer = JoinAnswer {
        created: false,
        ..answer
    };
    core.joined(request, Some(answer), 0, &mut out);
    assert!(out.is_empty());
    assert_eq!(
        notes(&mut out),
        [Note::Member {
            room: rc("#y"),
            drop: Some(b),
            set: None
        }]
    );
    // While the link is down a room with no local member is refused at once.
    core.tell_cluster_link(false, &mut out);
    out.clear();
    core.handle(A, Command::Join("#z".into()), 0, &mut out);
    assert_eq!(
        cluster_errors(&out),
        [(Error::RoomClusterDown("#z".into()), vec![A])]
    );
    assert!(!out.has_notes() || notes(&mut out).is_empty());
}

#[test]
fn what_other_nodes_say_keeps_the_member_list_status_topic_and_kicks_in_step() {
    use cluster::{Note, Shared};
    let (mut core, mut out) = cluster_core();
    cluster_join(&mut core, &mut out, A, "#f", true);
    core.handle(B, Command::Join("#f".into()), 0, &mut out);
    let (a, b) = (
        core.source(A).unwrap().clone(),
        core.source(B).unwrap().clone(),
    );
    let zed = Source::new("zed", "u", "elsewhere", "Z");
    core.remote(
        Shared::Joined {
            room: rc("#F"),
            who: zed.clone(),
        },
        0,
        &mut out,
    );
    assert_eq!(
        listed(&core, "#f"),
        [format!("@{}", a.nick), b.nick.to_string(), "zed".into()]
    );
    core.remote(
        Shared::NickChanged {
            rooms: vec![rc("#f")],
            old: zed.clone(),
            new: rc("zorro"),
        },
        0,
        &mut out,
    );
    // zed (now zorro) makes B an operator: B's node writes B's entry.
    out.drain_notes();
    let plus_o = modes::Applied {
        set: true,
        letter: 'o',
        arg: Some(b.nick.clone()),
    };
    core.remote(
        Shared::Modes {
            room: rc("#f"),
            by: zed.clone(),
            changes: vec![plus_o],
        },
        0,
        &mut out,
    );
    let op = modes::Status {
        op: true,
        voice: false,
    };
    assert_eq!(
        notes(&mut out),
        [Note::Member {
            room: rc("#f"),
            drop: None,
            set: Some((b.clone(), op))
        }]
    );
    assert_eq!(
        listed(&core, "#f"),
        [
            format!("@{}", a.nick),
            format!("@{}", b.nick),
            "zorro".into()
        ]
    );
    // A topic from there.
    out.clear();
    core.remote(
        Shared::Topic {
            room: rc("#f"),
            by: zed.clone(),
            topic: Some(rc("far")),
            at: 9,
        },
        0,
        &mut out,
    );
    assert!(out.iter().any(
        |(e, to)| matches!(e, Event::TopicChanged { topic: Some(t), .. }
        if &**t == "far")
            && to == [A, B]
    ));
    // A kick of a local member from there: taken out here, its entry dropped here.
    out.clear();
    core.remote(
        Shared::Kicked {
            room: rc("#f"),
            by: zed,
            nick: b.nick.clone(),
            reason: rc("go"),
        },
        0,
        &mut out,
    );
    assert!(
        out.iter()
            .any(|(e, to)| matches!(e, Event::Kicked { .. }) && to == [A, B])
    );
    assert_eq!(
        notes(&mut out),
        [Note::Member {
            room: rc("#f"),
            drop: Some(b.nick.clone()),
            set: None
        }]
    );
    assert_eq!(
        listed(&core, "#f"),
        [format!("@{}", a.nick), "zorro".into()]
    );
    // A kick of the remote member from here: published, and it leaves the list.
    out.clear();
    let kick = Command::Kick {
        room: Some("#f".into()),
        nick: "ZORRO".into(),
        reason: None,
    };
    core.handle(A, kick, 0, &mut out);
    assert!(
        matches!(&notes(&mut out)[..], [cluster::Note::Publish(Shared::Kicked { nick, .. })] if &**nick == "zorro")
    );
    assert_eq!(listed(&core, "#f"), [format!("@{}", a.nick)]);
}

#[test]
fn when_the_cluster_link_is_back_each_room_with_local_members_is_synced() {
    use cluster::Note;
    let (mut core, mut out) = cluster_core();
    cluster_join(&mut core, &mut out, A, "#s", true);
    core.handle(B, Command::Join("#s".into()), 0, &mut out);
    core.tell_cluster_link(false, &mut out);
    core.handle(
        B,
        Command::Part {
            room: None,
            reason: None,
        },
        0,
        &mut out,
    );
    out.drain_notes();
    core.tell_cluster_link(true, &mut out);
    let a = core.source(A).unwrap().clone();
    let op = modes::Status {
        op: true,
        voice: false,
    };
    let synced: Vec<_> = notes(&mut out)
        .into_iter()
        .filter_map(|n| match n {
            Note::SyncRoom {
                room,
                members,
                state,
            } => Some((room, members, state)),
            _ => None,
        })
        .collect();
    // The lobby has nobody of this node (guests of a cluster core join nothing by themselves).
    assert_eq!(synced.len(), 1, "{synced:?}");
    let (room, members, state) = &synced[0];
    assert_eq!(&**room, "#s");
    assert_eq!(members, &[(a.clone(), op)], "B left meanwhile");
    let state = state.as_ref().unwrap();
    assert_eq!(state.founder, a.nick);
    assert!(state.fields.contains(&("modes", "+nt".to_string())));
}

#[test]
fn a_kill_of_a_nick_held_on_another_node_goes_to_its_channel_and_is_carried_out_there() {
    use cluster::{Note, Shared};
    let (mut core, mut out) = cluster_core();
    core.handle(A, Command::MakeOper, 0, &mut out);
    let a = core.source(A).unwrap().clone();
    out.clear();
    out.drain_notes();
    let kill = Command::Kill {
        nick: "far".into(),
        reason: Some("spam".into()),
    };
    core.handle(A, kill, 0, &mut out);
    assert!(out.is_empty(), "told later if nobody holds it");
    assert_eq!(
        notes(&mut out),
        [Note::Kill {
            by: (A, 0),
            nick: rc("far"),
            from: a.clone(),
            reason: rc("spam"),
        }]
    );
    // On the node holding the nick: its user is killed (closed by the driver).
    let b = core.nick(B).unwrap().clone();
    core.remote(
        Shared::Kill {
            nick: b.to_ascii_uppercase().into(),
            by: a,
            reason: rc("spam"),
        },
        0,
        &mut out,
    );
    let killed: Vec<_> = out
        .iter()
        .filter(|(e, _)| matches!(e, Event::Killed { reason, .. } if &**reason == "spam"))
        .map(|(_, to)| to.to_vec())
        .collect();
    assert_eq!(killed, [vec![B]]);
}

#[test]
fn an_invitation_from_another_node_lets_its_user_into_an_invitation_only_room_once() {
    use cluster::{JoinAnswer, Note, RoomState, Shared};
    let (mut core, mut out) = cluster_core();
    let zed = Source::new("zed", "u", "elsewhere", "Z");
    let b = core.nick(B).unwrap().clone();
    let invite = |keeps| Shared::Invite {
        room: rc("#I"),
        by: zed.clone(),
        nick: b.to_ascii_uppercase().into(),
        keeps,
    };
    // One given before +i by any member lets nobody in later.
    core.remote(invite(false), 0, &mut out);
    core.remote(invite(true), 0, &mut out);
    let told = out
        .iter()
        .filter(|(e, to)| matches!(e, Event::Invited { room, .. } if &**room == "#I") && *to == [B])
        .count();
    assert_eq!(told, 2);
    let answer = || JoinAnswer {
        created: false,
        members: vec![remote_member(3, "zed", true)],
        state: RoomState {
            modes: Some("+int".into()),
            ..RoomState::default()
        },
    };
    out.clear();
    let request = ask(&mut core, &mut out, B, "#i", None);
    core.joined(request, Some(answer()), 0, &mut out);
    assert!(
        cluster_errors(&out).is_empty(),
        "{:?}",
        cluster_errors(&out)
    );
    assert_eq!(listed(&core, "#i"), [b.to_string(), "@zed".into()]);
    // Used up: after a part, B needs another.
    core.handle(
        B,
        Command::Part {
            room: None,
            reason: None,
        },
        0,
        &mut out,
    );
    out.clear();
    let request = ask(&mut core, &mut out, B, "#i", None);
    core.joined(request, Some(answer()), 0, &mut out);
    assert_eq!(
        cluster_errors(&out),
        [(Error::InviteOnly("#i".into()), vec![B])]
    );
    // An invitation from here of a nick held elsewhere goes to its node.
    out.drain_notes();
    cluster_join(&mut core, &mut out, A, "#own", true);
    out.clear();
    let invite = Command::Invite {
        nick: "far".into(),
        room: Some("#own".into()),
    };
    core.handle(A, invite, 0, &mut out);
    assert!(
        out.iter().any(
            |(e, to)| matches!(e, Event::Inviting { nick, .. } if &**nick == "far") && to == [A]
        )
    );
    assert!(matches!(
        &notes(&mut out)[..],
        [Note::Invite {
            invite: Shared::Invite { keeps: false, .. },
            ..
        }]
    ));
}

#[test]
fn a_remote_quit_of_a_nick_a_local_user_holds_is_not_told() {
    // A node stalled past its heartbeats' lifetime was taken for dead: the reaper published
    // its users' quits ("node lost"), which reach this node too, where they are still here.
    let (mut core, mut out) = cluster_core();
    join_answered(&mut core, &mut out, A, "#r");
    core.handle(B, Command::Join("#r".into()), 0, &mut out);
    out.clear();
    out.drain_notes();
    let a = core.source(A).unwrap().clone();
    let quit = |who: Arc<Source>| cluster::Shared::Quit {
        rooms: vec![rc("#r")],
        who,
        reason: rc("node lost"),
    };
    core.remote(quit(a), 0, &mut out);
    assert!(out.is_empty(), "A is here: {:?}", out.iter().count());
    // Another node's user's quit is told.
    core.remote(quit(Source::new("far", "u", "h", "")), 0, &mut out);
    let got: Vec<_> = out.iter().map(|(e, to)| (e.clone(), to.to_vec())).collect();
    assert!(
        matches!(&got[..], [(Event::Quit { who, .. }, to)] if &*who.nick == "far" && to.len() == 2),
        "{got:?}"
    );
}

#[test]
fn when_the_cluster_link_is_back_a_room_learns_its_remote_members_again() {
    use cluster::{Answer, Note, RemoteMember, Shared};
    let (mut core, mut out) = cluster_core();
    cluster_join(&mut core, &mut out, A, "#s", true);
    let who = |nick: &str| Source::new(nick, "u", "h", "");
    let joined = |core: &mut Core, out: &mut Outbox, nick: &str| {
        let shared = Shared::Joined {
            room: rc("#s"),
            who: who(nick),
        };
        core.remote(shared, 0, out)
    };
    joined(&mut core, &mut out, "ghost");
    joined(&mut core, &mut out, "dave");
    core.tell_cluster_link(false, &mut out);
    // (ghost parts while this node is not listening.)
    core.tell_cluster_link(true, &mut out);
    assert!(
        notes(&mut out)
            .iter()
            .any(|n| matches!(n, Note::SyncRoom { room, state: Some(_), .. } if &**room == "#s"))
    );
    // Heard before the answer: carol joins, dave leaves.
    joined(&mut core, &mut out, "carol");
    let parted = Shared::Parted {
        room: rc("#s"),
        who: who("dave"),
        reason: None,
    };
    core.remote(parted, 0, &mut out);
    let member = |nick: &str, node| RemoteMember {
        node,
        source: who(nick),
        status: modes::Status::default(),
    };
    let mine = core.source(A).unwrap().nick.to_string();
    let members = ["dave", "erin", &mine].map(|n| member(n, 3));
    let answer = Answer::Synced {
        room: rc("#s"),
        members: Some(members.to_vec()),
    };
    core.answer(answer, 0, &mut out);
    for (nick, known) in [
        ("carol", true),
        ("erin", true),
        ("dave", false),
        ("ghost", false),
    ] {
        assert_eq!(core.remote_nick_known(nick), known, "{nick}");
    }
    assert!(!core.remote_nick_known(&mine), "a local user");
    // The last local member leaves while the answer is awaited: the room goes with it.
    core.tell_cluster_link(false, &mut out);
    core.tell_cluster_link(true, &mut out);
    core.handle(
        A,
        Command::Part {
            room: None,
            reason: None,
        },
        0,
        &mut out,
    );
    assert!(core.room_exists("#s"), "awaited");
    out.drain_notes();
    core.answer(
        Answer::Synced {
            room: rc("#s"),
            members: None,
        },
        0,
        &mut out,
    );
    assert!(!core.room_exists("#s"));
    assert_eq!(notes(&mut out), [Note::Unsubscribe(rc("#s"))]);
}

/// The rooms (name, members, topic) of every page of the room list `out` holds for `id`.
fn listed_rooms(core: &Core, out: &Outbox) -> Vec<(String, usize, Option<String>)> {
    let cursor = out
        .iter()
        .find_map(|(e, _)| match e {
            Event::Page(c) if matches!(c.of(), page::Paged::Rooms(_)) => Some(c.clone()),
            _ => None,
        })
        .expect("a room list");
    core.all_pages(cursor)
        .into_iter()
        .flat_map(|e| match e {
            Event::RoomList { rooms, .. } => rooms,
            _ => Vec::new(),
        })
        .map(|r| {
            (
                r.name.to_string(),
                r.members,
                r.topic.map(|t| t.to_string()),
            )
        })
        .collect()
}

#[test]
fn a_clustered_room_list_asks_the_cluster_and_merges_its_rooms_with_the_nodes_own() {
    use cluster::{Answer, Note, SharedRoom};
    let (mut core, mut out) = cluster_core();
    cluster_join(&mut core, &mut out, A, "#mine", true);
    out.clear();
    core.handle(B, Command::Rooms, 0, &mut out);
    assert!(out.is_empty(), "nothing told before the cluster answers");
    let by = match &notes(&mut out)[..] {
        [Note::Rooms { by }] => *by,
        other => panic!("expected a room list asked of the cluster, got {other:?}"),
    };
    assert!(core.holds_input(B), "its next lines wait for the answer");
    let room = |name: &str, members, topic: Option<&str>, secret| SharedRoom {
        name: name.into(),
        members,
        topic: topic.map(Into::into),
        secret,
    };
    let rooms = vec![
        room("#zed", 4, None, false),
        room("#MINE", 9, Some("theirs"), false),
        room("#Alpha", 2, Some("first"), false),
        room("#hush", 3, None, true),
        room("#alpha", 5, None, false),
    ];
    core.answer(
        Answer::Rooms {
            by,
            rooms: Some(rooms.clone()),
        },
        0,
        &mut out,
    );
    assert!(!core.holds_input(B));
    let got = listed_rooms(&core, &out);
    let names: Vec<&str> = got.iter().map(|r| &*r.0).collect();
    // Local knowledge wins for #mine; the secret room is not listed; one #alpha.
    assert_eq!(names, ["#Alpha", "#lobby", "#mine", "#zed"]);
    assert_eq!(got[0], ("#Alpha".into(), 2, Some("first".into())));
    assert_eq!(got[2], ("#mine".into(), 1, None));
    // An answer for nobody waiting (a user gone, or asked again) is dropped.
    out.clear();
    core.answer(
        Answer::Rooms {
            by,
            rooms: Some(rooms),
        },
        0,
        &mut out,
    );
    assert!(out.is_empty());
    // No answer from Redis: the node's own rooms.
    core.handle(B, Command::Rooms, 0, &mut out);
    let Some(Note::Rooms { by }) = notes(&mut out).pop() else {
        panic!("asked")
    };
    core.answer(Answer::Rooms { by, rooms: None }, 0, &mut out);
    let names: Vec<String> = listed_rooms(&core, &out).into_iter().map(|r| r.0).collect();
    assert_eq!(names, ["#lobby", "#mine"]);
    // The link down: the node's own rooms at once.
    out.clear();
    core.tell_cluster_link(false, &mut out);
    out.clear();
    out.drain_notes();
    core.handle(B, Command::Rooms, 0, &mut out);
    assert!(notes(&mut out).is_empty());
    assert_eq!(listed_rooms(&core, &out).len(), 2);
}

#[test]
fn a_clustered_room_list_pages_the_clusters_rooms_in_order_and_askers_share_one_copy() {
    use cluster::{Answer, Note, SharedRoom};
    let (mut core, mut out) = cluster_core();
    // 150 rooms elsewhere, interleaved by name with the lobby.
    let rooms: Vec<SharedRoom> = (0..150)
        .rev()
        .map(|i| SharedRoom {
            name: format!("#{}{i:03}", if i % 2 == 0 { "k" } else { "M" }).into(),
            members: i + 1,
            topic: None,
            secret: false,
        })
        .collect();
    let mut cursors = Vec::new();
    for id in [A, B] {
        out.clear();
        core.handle(id, Command::Rooms, 0, &mut out);
        let Some(Note::Rooms { by }) = notes(&mut out).pop() else {
            panic!("asked")
        };
        core.answer(
            Answer::Rooms {
                by,
                rooms: Some(rooms.clone()),
            },
            0,
            &mut out,
        );
        let got = listed_rooms(&core, &out);
        assert_eq!(got.len(), 151);
        let names: Vec<String> = got.iter().map(|r| r.0.to_lowercase()).collect();
        let mut sorted = names.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(names, sorted, "in folded order, each once, across pages");
        cursors.extend(out.iter().find_map(|(e, _)| match e {
            Event::Page(c) => Some(c.clone()),
            _ => None,
        }));
    }
    let [a, b] = &cursors[..] else { panic!() };
    let (page::Paged::Rooms(Some(x)), page::Paged::Rooms(Some(y))) = (a.of(), b.of()) else {
        panic!()
    };
    assert!(std::sync::Arc::ptr_eq(x, y), "one copy for both askers");
}

#[test]
fn the_lobbys_first_join_on_a_clustered_node_waits_for_the_answer_and_crowns_nobody() {
    use cluster::{JoinAnswer, Note, RemoteMember, RoomState};
    let (mut core, mut out) = cluster_core();
    core.handle(A, Command::Join(LOBBY.into()), 0, &mut out);
    assert!(core.holds_input(A), "its next lines wait for the answer");
    let request = match &notes(&mut out)[..] {
        [Note::Subscribe(_), Note::History { .. }, Note::Join(r)] => r.clone(),
        other => panic!("{other:?}"),
    };
    assert!(request.wait);
    assert!(out.is_empty(), "nothing told before the answer");
    let zed = RemoteMember {
        node: 3,
        source: Source::new("zed", "line", "elsewhere", "Zed"),
        status: Status::default(),
    };
    let answer = JoinAnswer {
        created: true, // (nobody was in it: still nobody's to operate)
        members: vec![zed],
        state: RoomState::default(),
    };
    core.joined(request, Some(answer), 0, &mut out);
    assert!(!core.holds_input(A));
    let lobby = core.room_keys[LOBBY];
    assert!(!core.status_in(lobby, A).op, "the lobby has no operator");
    assert!(core.rooms[lobby].remote.get("zed").is_some());
    assert!(
        notes(&mut out)
            .iter()
            .any(|n| matches!(n, Note::Member { set: Some((_, s)), .. } if !s.op)),
        "its entry is a member's"
    );
    // A second local joiner joins at once.
    core.handle(B, Command::Join(LOBBY.into()), 0, &mut out);
    assert!(!core.holds_input(B) && core.users[&B].is_in(lobby));
    // The node counts its members of other nodes across its rooms; a room let go gives its
    // share back.
    assert_eq!(core.remote_tally.count(), 1);
    for id in [A, B] {
        let part = Command::Part {
            room: None,
            reason: None,
        };
        core.handle(id, part, 0, &mut out);
    }
    assert_eq!(core.remote_tally.count(), 0);
}

#[test]
fn the_lobby_is_joined_at_once_while_the_link_is_down_and_if_its_answer_is_lost() {
    use cluster::Note;
    let (mut core, mut out) = cluster_core();
    core.tell_cluster_link(false, &mut out);
    out.clear();
    core.handle(A, Command::Join(LOBBY.into()), 0, &mut out);
    let lobby = core.room_keys[LOBBY];
    assert!(!core.holds_input(A) && core.users[&A].is_in(lobby));
    // Up again: a join whose answer is lost with the link joins all the same.
    core.tell_cluster_link(true, &mut out);
    core.handle(
        A,
        Command::Part {
            room: None,
            reason: None,
        },
        0,
        &mut out,
    );
    out.clear();
    notes(&mut out);
    core.handle(B, Command::Join(LOBBY.into()), 0, &mut out);
    let request = match &notes(&mut out)[..] {
        [Note::Subscribe(_), Note::History { .. }, Note::Join(r)] | [Note::Join(r)] => r.clone(),
        other => panic!("{other:?}"),
    };
    core.joined(request, None, 0, &mut out);
    assert!(!core.holds_input(B) && core.users[&B].is_in(lobby));
    assert!(
        !expand(&core, &out)
            .iter()
            .any(|(e, _)| matches!(e, Event::Error(_))),
        "no error"
    );
}

#[test]
fn the_lobby_with_no_member_here_is_listed_and_named_as_the_cluster_has_it() {
    use cluster::{Answer, Note, SharedMembers, SharedRoom};
    // Nobody here is in the lobby (IRC users, or line users who left it): other nodes' are.
    let (mut core, mut out) = cluster_core();
    core.handle(B, Command::Rooms, 0, &mut out);
    let Some(Note::Rooms { by }) = notes(&mut out).pop() else {
        panic!("asked")
    };
    let lobby = SharedRoom {
        name: LOBBY.into(),
        members: 5,
        topic: Some("hello".into()),
        secret: false,
    };
    let rooms = Some(vec![lobby]);
    core.answer(Answer::Rooms { by, rooms }, 0, &mut out);
    assert_eq!(
        listed_rooms(&core, &out),
        [(LOBBY.to_string(), 5, Some("hello".to_string()))],
        "the cluster's count, not the node's empty lobby"
    );
    // With nobody answering about it, the node's own (empty) lobby is still listed.
    out.clear();
    core.handle(B, Command::Rooms, 0, &mut out);
    let Some(Note::Rooms { by }) = notes(&mut out).pop() else {
        panic!("asked")
    };
    core.answer(Answer::Rooms { by, rooms: None }, 0, &mut out);
    assert_eq!(listed_rooms(&core, &out), [(LOBBY.to_string(), 0, None)]);
    // NAMES of it asks Redis, as of any room with no member here.
    out.clear();
    let names = Command::Who {
        target: Some(LOBBY.into()),
        listing: Listing::Names,
    };
    core.handle(B, names, 0, &mut out);
    let (by, room, listing) = match &notes(&mut out)[..] {
        [Note::Names { by, room, listing }] => (*by, room.clone(), *listing),
        other => panic!("expected NAMES asked of the cluster, got {other:?}"),
    };
    let members = Some(SharedMembers {
        name: Some(LOBBY.into()),
        members: vec![remote_member(3, "zed", false)],
        secret: false,
    });
    core.answer(
        Answer::Names {
            by,
            room,
            listing,
            members,
        },
        0,
        &mut out,
    );
    let cursor = out
        .iter()
        .find_map(|(e, _)| match e {
            Event::Page(c) => Some(c.clone()),
            _ => None,
        })
        .expect("a listing");
    let named: Vec<String> = core
        .all_pages(cursor)
        .into_iter()
        .flat_map(|e| match e {
            Event::Names { members, .. } => members,
            _ => Vec::new(),
        })
        .map(|m| m.source.nick.to_string())
        .collect();
    assert_eq!(named, ["zed"]);
}

#[test]
fn a_remote_rooms_names_answered_after_it_turned_secret_here_lists_nobody() {
    use cluster::{Answer, Note, SharedMembers};
    let (mut core, mut out) = cluster_core();
    // B asks NAMES of #x, which nobody here is in.
    let names = Command::Who {
        target: Some("#x".into()),
        listing: Listing::Names,
    };
    core.handle(B, names, 0, &mut out);
    let (by, room, listing) = match &notes(&mut out)[..] {
        [Note::Names { by, room, listing }] => (*by, room.clone(), *listing),
        other => panic!("expected NAMES asked of the cluster, got {other:?}"),
    };
    // Meanwhile A joins it here and makes it secret: B is not in it.
    cluster_join(&mut core, &mut out, A, "#x", true);
    let secret = Command::Mode {
        room: Some("#x".into()),
        changes: vec![ModeChange {
            set: true,
            mode: Mode::Flag('s'),
        }],
    };
    core.handle(A, secret, 0, &mut out);
    out.clear();
    // Redis's answer was read before: not secret, with a member.
    let members = Some(SharedMembers {
        name: Some("#x".into()),
        members: vec![remote_member(3, "zed", false)],
        secret: false,
    });
    core.answer(
        Answer::Names {
            by,
            room,
            listing,
            members,
        },
        0,
        &mut out,
    );
    let mut named = Vec::new();
    for (e, _) in out.iter() {
        match e {
            Event::Names {
                members, secret, ..
            } => {
                assert!(*secret);
                named.extend(members.iter().map(|m| m.source.nick.to_string()));
            }
            Event::Page(c) => {
                for e in core.all_pages(c.clone()) {
                    if let Event::Names { members, .. } = e {
                        named.extend(members.iter().map(|m| m.source.nick.to_string()));
                    }
                }
            }
            _ => {}
        }
    }
    assert!(
        named.is_empty(),
        "a secret room here lists nobody to B: {named:?}"
    );
}
