//! Unit tests of the chat core: commands in, events out, no sockets and no clock.

use super::*;

const A: ClientId = ClientId(1);
const B: ClientId = ClientId(2);
const C: ClientId = ClientId(3);

/// A core with three users, `alice` and `bob` in #lobby, `carol` nowhere yet.
struct World {
    core: Core,
    out: Outbox,
    now: Millis,
}

impl World {
    fn new(history: usize) -> World {
        let mut w = World {
            core: Core::new(CoreLimits {
                history,
                max_rooms: 3,
            }),
            out: Outbox::default(),
            now: 1_000_000,
        };
        for (id, nick) in [(A, "alice"), (B, "bob"), (C, "carol")] {
            w.core.connect(id, w.now);
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

    fn collect(&self) -> Vec<(Event, Vec<ClientId>)> {
        self.out
            .iter()
            .map(|(e, to)| (e.clone(), to.to_vec()))
            .collect()
    }

    fn say(&mut self, id: ClientId, text: &str) -> Vec<(Event, Vec<ClientId>)> {
        self.run(
            id,
            Command::Say {
                room: None,
                text: text.into(),
                action: false,
            },
        )
    }
}

fn rc(s: &str) -> Arc<str> {
    s.into()
}

#[test]
fn guests_get_distinct_nicks_skipping_taken_ones() {
    let mut core = Core::new(CoreLimits {
        history: 0,
        max_rooms: 3,
    });
    let mut out = Outbox::default();
    assert_eq!(&*core.connect(A, 0), "guest1");
    core.handle(A, Command::Nick("guest2".into()), 0, &mut out);
    assert_eq!(&*core.connect(B, 0), "guest3");
}

#[test]
fn a_room_message_goes_to_every_other_member_once() {
    let mut w = World::new(10);
    let events = w.say(A, "hello");
    let expected = Event::Message {
        room: rc("#lobby"),
        from: rc("alice"),
        text: rc("hello"),
        action: false,
    };
    assert_eq!(events, vec![(expected, vec![B])]);
}

#[test]
fn joining_tells_members_and_replays_history_marked_as_such() {
    let mut w = World::new(2);
    w.say(A, "one");
    w.say(B, "two");
    w.now += 5000;
    w.say(A, "three");
    let events = w.run(C, Command::Join("#LOBBY".into()));
    assert_eq!(
        events[0],
        (
            Event::Joined {
                room: rc("#lobby"),
                nick: rc("carol")
            },
            vec![A, B, C]
        )
    );
    let Event::Names { members, .. } = &events[1].0 else {
        panic!("{events:?}")
    };
    let nicks: Vec<&str> = members.iter().map(|m| &*m.nick).collect();
    assert_eq!(nicks, ["alice", "bob", "carol"]);
    let history: Vec<(&str, u64)> = events[2..]
        .iter()
        .map(|(e, to)| match e {
            Event::History { text, at, .. } if to == &[C] => (&**text, *at),
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(history, [("two", 1_000_000), ("three", 1_005_000)]);
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
    let events = w.run(A, Command::Nick("Alice".into()));
    assert_eq!(
        events,
        vec![(
            Event::NickChanged {
                old: rc("alice"),
                new: rc("Alice")
            },
            vec![A, B]
        )]
    );
    // The old nick is free again once changed.
    w.run(A, Command::Nick("ally".into()));
    assert!(w.run(C, Command::Nick("alice".into()))[0].1 == vec![C]);
    assert_eq!(&**w.core.nick(C).unwrap(), "alice");
}

#[test]
fn private_messages_and_away() {
    let mut w = World::new(0);
    let events = w.run(
        A,
        Command::Private {
            to: "CAROL".into(),
            text: "psst".into(),
            action: false,
        },
    );
    assert_eq!(
        events,
        vec![(
            Event::Private {
                from: rc("alice"),
                text: rc("psst"),
                action: false
            },
            vec![C]
        )]
    );
    assert_eq!(
        w.run(C, Command::Away(Some("lunch".into()))),
        vec![(Event::AwayIs { away: true }, vec![C])]
    );
    let events = w.run(
        A,
        Command::Private {
            to: "carol".into(),
            text: "hi".into(),
            action: true,
        },
    );
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
    assert_eq!(
        w.run(C, Command::Away(None)),
        vec![(Event::AwayIs { away: false }, vec![C])]
    );
    let err = w.run(
        A,
        Command::Private {
            to: "nobody".into(),
            text: "x".into(),
            action: false,
        },
    );
    assert_eq!(
        err,
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
    assert_eq!(
        events[0],
        (
            Event::Parted {
                room: rc("#rust"),
                nick: rc("alice"),
                reason: Some(rc("bye"))
            },
            vec![A]
        )
    );
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
        w.run(A, Command::Who(Some("#rust".into())))[0].0,
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
        Event::Error(Error::TooManyRooms(3))
    );
    let to_other = Command::Say {
        room: Some("#r2".into()),
        text: "x".into(),
        action: false,
    };
    assert_eq!(
        w.run(B, to_other)[0].0,
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
    w.core.disconnect(A, "send queue exceeded", &mut w.out);
    let events = w.collect();
    assert_eq!(
        events,
        vec![(
            Event::Quit {
                nick: rc("alice"),
                reason: rc("send queue exceeded")
            },
            vec![B]
        )]
    );
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
    assert_eq!(&*info.nick, "alice");
    assert_eq!(info.rooms, vec![rc("#lobby")]);
    assert_eq!(info.away.as_deref(), Some("brb"));
    assert_eq!(info.idle_secs, 61);
    assert_eq!(info.connected_at, 1_000_000);
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
    let Event::RoomList(list) = &events[0].0 else {
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
        matches!(&events[0].0, Event::TopicChanged { topic: Some(t), by, .. } if &**t == "rust talk" && &**by == "alice")
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
