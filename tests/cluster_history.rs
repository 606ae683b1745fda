//! Room history in Redis streams (`--backplane`): shared by every node, it outlives them all,
//! and it is what a node catches up from after its link to Redis was cut, so that a member who
//! stayed gets every message once. A real `redis-server` on a free port (skipped, with a
//! notice, when it is not on PATH: `.ci/run` installs it), nodes in this process.

mod common;

use common::redis::{Redis, register};
use common::{Client, LOCAL_CLOAK, TestServer, register_with};
use redis_protocol::resp2::types::OwnedFrame;

/// A node of the cluster on `redis` keeping `history` messages a room.
fn node(redis: &Redis, name: &str, prefix: &str, history: usize) -> TestServer {
    redis.node_with(name, prefix, |c| {
        c.history = history;
        // (The tests' users talk faster than people.)
        c.flood_rate = 0.0;
    })
}

/// `c` joins `room` (line protocol) and reads up to its names.
fn join_room(c: &mut Client, room: &str) {
    c.send(&format!("/join {room}"));
    c.expect_prefix(&format!("NAMES {room}"));
}

/// The text of a line client's `HISTORY room time <nick> text` line.
fn history_text(line: &str, room: &str) -> String {
    let rest = line
        .strip_prefix(&format!("HISTORY {room} "))
        .unwrap_or_else(|| panic!("not history: {line}"));
    // (time, then speaker and text)
    rest.split_once(' ').unwrap().1.to_string()
}

/// Whether `line` is the server telling of the cluster link (down or back).
fn link_notice(line: &str) -> bool {
    line.starts_with("NOTICE the link to the other servers of the cluster")
}

#[test]
fn history_outlives_every_node_and_is_replayed_to_a_joiner_of_a_new_one() {
    let Some(redis) = Redis::start() else {
        return;
    };
    let prefix = "h1:";
    let (a, b) = (node(&redis, "a", prefix, 50), node(&redis, "b", prefix, 50));
    let mut x = a.join_as("x", &mut []);
    join_room(&mut x, "#hist");
    redis.wait_for(|r| r.subscribers("h1:room:#hist") == 1);
    let mut y = b.join_as("y", &mut []);
    join_room(&mut y, "#Hist");
    // (after y's arrival in the lobby)
    x.expect_prefix("JOIN #hist y");
    redis.wait_for(|r| r.subscribers("h1:room:#hist") == 2);
    x.send("one");
    assert_eq!(y.line(), "MSG #Hist <x> one");
    y.send("two");
    assert_eq!(x.line(), "MSG #hist <y> two");
    x.send("/me three");
    assert_eq!(y.line(), "MSG #Hist * x three");
    drop((x, y));
    a.stop().unwrap();
    b.stop().unwrap();
    // The stream is in Redis, with an expiry, and no node is left.
    match redis.command(&["PTTL", "h1:history:#hist"]) {
        OwnedFrame::Integer(ms) => assert!(ms > 0, "{ms}"),
        other => panic!("PTTL answered {other:?}"),
    }
    redis.wait_for(|r| r.subscribers("h1:room:#hist") == 0);

    // A new node on the same Redis: a joiner of the room is replayed what was said, in order.
    let c = node(&redis, "c", prefix, 50);
    let mut z = c.join_as("z", &mut []);
    z.send("/join #HIST");
    z.expect_prefix("NAMES #HIST");
    let texts: Vec<String> = (0..3).map(|_| history_text(&z.line(), "#HIST")).collect();
    assert_eq!(texts, ["<x> one", "<y> two", "* x three"]);
    z.sync();
    // An IRC client that shows times (server-time) is replayed it too, as the server
    // replays history (here from the node's own copy: the room has a member).
    let mut ircer = register_with(&c, "ircer", "server-time");
    ircer.send("JOIN #hist");
    ircer.expect_prefix(":pollchat 366 ircer #HIST");
    for text in ["one", "two", "\u{1}ACTION three\u{1}"] {
        let l = ircer.line();
        assert!(l.starts_with("@time="), "{l}");
        assert!(l.ends_with(&format!(" PRIVMSG #HIST :{text}")), "{l}");
    }
    assert_eq!(z.line(), "JOIN #HIST ircer");
    // And so is the first member of a room on a node (from Redis: the node has none of it).
    let d = node(&redis, "d", prefix, 2);
    let mut first = register_with(&d, "first", "server-time");
    first.send("JOIN #hist");
    first.expect_prefix(":pollchat 366 first #hist");
    // (--history 2 on this node: the newest two.)
    let l = first.line();
    assert!(
        l.starts_with("@time=")
            && l.ends_with(&format!(":y!line@{LOCAL_CLOAK} PRIVMSG #hist :two")),
        "{l}"
    );
    assert!(
        first
            .line()
            .ends_with(" PRIVMSG #hist :\u{1}ACTION three\u{1}")
    );
    first.send("PRIVMSG #hist :five");
    // (after first's arrival)
    assert_eq!(z.expect_prefix("MSG"), "MSG #HIST <first> five");
    assert!(ircer.expect_prefix("@").ends_with(" PRIVMSG #HIST :five"));
    // A client without server-time is not replayed history (it could not tell it from now).
    let mut plain = register(&d, "plain");
    plain.send("JOIN #hist");
    plain.expect_prefix(":pollchat 366 plain #hist");
    first.send("PRIVMSG #hist :six");
    assert_eq!(
        plain.line(),
        format!(":first!first@{LOCAL_CLOAK} PRIVMSG #hist :six")
    );
}

#[test]
fn a_member_gets_every_message_once_in_order_across_cuts_of_its_nodes_subscriptions() {
    let Some(redis) = Redis::start() else {
        return;
    };
    let prefix = "h2:";
    let (a, b) = (
        node(&redis, "a", prefix, 1000),
        node(&redis, "b", prefix, 1000),
    );
    let mut x = a.join_as("x", &mut []);
    join_room(&mut x, "#cut");
    redis.wait_for(|r| r.subscribers("h2:room:#cut") == 1);
    let mut y = b.join_as("y", &mut []);
    join_room(&mut y, "#cut");
    x.expect_prefix("JOIN #cut y");
    redis.wait_for(|r| r.subscribers("h2:room:#cut") == 2);
    let total = 300;
    let mut cuts = 0;
    for i in 1..=total {
        x.send(&format!("n{i}"));
        if i % 100 == 50 {
            redis.wait_for(|r| r.subscribers("h2:room:#cut") == 2);
            // Redis cuts node b's subscriptions connection (as it cuts a subscriber that reads
            // too slowly): node b reconnects and catches up while x goes on talking.
            let id = redis
                .client_id("pollchat-b-subscriptions")
                .expect("b is subscribed");
            let killed = redis.command(&["CLIENT", "KILL", "TYPE", "pubsub", "ID", &id]);
            assert_eq!(killed, OwnedFrame::Integer(1));
            cuts += 1;
        }
        if i % 10 == 0 {
            // (Paced by the sender's node, not by time.)
            x.sync();
        }
    }
    x.send("end");
    let mut got = Vec::new();
    loop {
        let l = y.line();
        if link_notice(&l) {
            continue;
        }
        let text = l
            .strip_prefix("MSG #cut <x> ")
            .unwrap_or_else(|| panic!("unexpected: {l}"))
            .to_string();
        if text == "end" {
            break;
        }
        got.push(text);
    }
    let want: Vec<String> = (1..=total).map(|i| format!("n{i}")).collect();
    assert_eq!(cuts, 3);
    assert_eq!(got, want, "every message once, in order");
    y.sync();
}

#[test]
fn after_redis_restarts_empty_cluster_chat_resumes_without_doubles() {
    let Some(mut redis) = Redis::start() else {
        return;
    };
    let prefix = "h3:";
    let (a, b) = (node(&redis, "a", prefix, 50), node(&redis, "b", prefix, 50));
    let mut x = a.join_as("x", &mut []);
    let mut x2 = a.join_as("x2", &mut [&mut x]);
    for c in [&mut x, &mut x2] {
        join_room(c, "#r");
    }
    assert_eq!(x.line(), "JOIN #r x2");
    redis.wait_for(|r| r.subscribers("h3:room:#r") == 1);
    let mut y = b.join_as("y", &mut []);
    join_room(&mut y, "#r");
    x.expect_prefix("JOIN #r y");
    x2.expect_prefix("JOIN #r y");
    redis.wait_for(|r| r.subscribers("h3:room:#r") == 2);
    for i in 0..5 {
        x.send(&format!("before {i}"));
        assert_eq!(y.line(), format!("MSG #r <x> before {i}"));
        assert_eq!(x2.line(), format!("MSG #r <x> before {i}"));
    }
    let link = "NOTICE the link to the other servers of the cluster";
    redis.restart_after(|| {
        for c in [&mut x, &mut x2, &mut y] {
            assert!(c.line().starts_with(&format!("{link} is down")));
        }
        // Local chat goes on.
        x.send("local only");
        assert_eq!(x2.line(), "MSG #r <x> local only");
        y.send("alone");
        y.sync();
    });
    for c in [&mut x, &mut x2, &mut y] {
        assert!(c.line().starts_with(&format!("{link} is back")));
    }
    redis.wait_for(|r| r.subscribers("h3:room:#r") == 2);
    // Nothing said before is delivered again (the new Redis has a new, empty stream), and
    // what is said now crosses once.
    x.send("after");
    for i in 0..5 {
        x.send(&format!("again {i}"));
    }
    let want: Vec<String> = std::iter::once("MSG #r <x> after".to_string())
        .chain((0..5).map(|i| format!("MSG #r <x> again {i}")))
        .collect();
    for c in [&mut y, &mut x2] {
        let got: Vec<String> = (0..want.len()).map(|_| c.line()).collect();
        assert_eq!(got, want);
    }
    y.sync();
    y.send("and back");
    assert_eq!(x.line(), "MSG #r <y> and back");
    assert_eq!(x2.line(), "MSG #r <y> and back");
    for c in [&mut x, &mut x2, &mut y] {
        c.sync();
    }
}

/// Reads `c`'s lines until the one ending with `end`; returns its msgid.
fn msgid_of(c: &mut Client, end: &str) -> String {
    loop {
        let l = c.line();
        if l.ends_with(end) {
            let tags = l.split(' ').next().unwrap();
            let msgid = tags
                .trim_start_matches('@')
                .split(';')
                .find_map(|t| t.strip_prefix("msgid="));
            return msgid.unwrap_or_else(|| panic!("no msgid: {l}")).to_string();
        }
    }
}

#[test]
fn a_message_has_one_msgid_on_every_node() {
    let Some(redis) = Redis::start() else {
        return;
    };
    let prefix = "h4:";
    let (a, b) = (node(&redis, "a", prefix, 50), node(&redis, "b", prefix, 50));
    let mut sender = register_with(&a, "sender", "message-tags echo-message");
    sender.send("JOIN #m");
    sender.expect_prefix(":pollchat 366 sender #m");
    let mut near = register_with(&a, "near", "message-tags");
    near.send("JOIN #m");
    near.expect_prefix(":pollchat 366 near #m");
    redis.wait_for(|r| r.subscribers("h4:room:#m") == 1);
    let mut far = register_with(&b, "far", "message-tags");
    far.send("JOIN #m");
    far.expect_prefix(":pollchat 366 far #m");
    redis.wait_for(|r| r.subscribers("h4:room:#m") == 2);
    let mut ids = Vec::new();
    for text in ["hello", "again"] {
        sender.send(&format!("PRIVMSG #m :{text}"));
        let end = format!(" PRIVMSG #m :{text}");
        let seen: Vec<String> = [&mut sender, &mut near, &mut far]
            .into_iter()
            .map(|c| msgid_of(c, &end))
            .collect();
        assert!(
            seen.iter().all(|id| *id == seen[0]),
            "the echo, a member on the same node and one on another: {seen:?}"
        );
        ids.push(seen[0].clone());
    }
    assert_ne!(ids[0], ids[1], "one msgid per message");
    // From the other node too.
    far.send("PRIVMSG #m :back");
    let end = " PRIVMSG #m :back";
    assert_eq!(msgid_of(&mut near, end), msgid_of(&mut sender, end));
    // A TAGMSG to the room, and a private message to a user of the other node.
    sender.send("@+typing=active TAGMSG #m");
    let end = " TAGMSG #m";
    let seen: Vec<String> = [&mut sender, &mut near, &mut far]
        .into_iter()
        .map(|c| msgid_of(c, end))
        .collect();
    assert!(seen.iter().all(|id| *id == seen[0]), "{seen:?}");
    sender.send("PRIVMSG far :psst");
    let end = " PRIVMSG far :psst";
    assert_eq!(msgid_of(&mut sender, end), msgid_of(&mut far, end));
}

#[test]
fn an_oversized_entry_another_client_wrote_into_a_stream_does_not_cut_the_link_again_and_again() {
    let Some(redis) = Redis::start() else {
        return;
    };
    let prefix = "h5:";
    // Written by another Redis client: bigger than any reply a node reads (2 MiB).
    let huge = "x".repeat(3 << 20);
    let added = redis.command(&["XADD", "h5:history:#big", "*", "e", &huge]);
    assert!(matches!(added, OwnedFrame::BulkString(_)), "{added:?}");
    let (a, b) = (node(&redis, "a", prefix, 50), node(&redis, "b", prefix, 50));
    // The room's first member on each node: its stream is read.
    let mut x = a.join_as("x", &mut []);
    join_room(&mut x, "#big");
    redis.wait_for(|r| r.subscribers("h5:room:#big") == 1);
    let mut y = b.join_as("y", &mut []);
    join_room(&mut y, "#big");
    redis.wait_for(|r| r.subscribers("h5:room:#big") == 2);
    // Neither node lost its link over it, and chat crosses.
    loop {
        let l = x.line();
        assert!(!link_notice(&l), "{l}");
        if l == "JOIN #big y" {
            break;
        }
    }
    y.send("hello");
    assert_eq!(x.line(), "MSG #big <y> hello");
    x.send("hi");
    assert_eq!(y.line(), "MSG #big <x> hi");
    x.sync();
    y.sync();
}

#[test]
fn a_stream_rolled_back_is_not_delivered_again_after_a_reconnect() {
    let Some(redis) = Redis::start() else {
        return;
    };
    let prefix = "h6:";
    let (a, b) = (node(&redis, "a", prefix, 50), node(&redis, "b", prefix, 50));
    let mut x = a.join_as("x", &mut []);
    join_room(&mut x, "#rb");
    redis.wait_for(|r| r.subscribers("h6:room:#rb") == 1);
    let mut y = b.join_as("y", &mut []);
    join_room(&mut y, "#rb");
    x.expect_prefix("JOIN #rb y");
    redis.wait_for(|r| r.subscribers("h6:room:#rb") == 2);
    for i in 0..5 {
        x.send(&format!("r{i}"));
        assert_eq!(y.line(), format!("MSG #rb <x> r{i}"));
    }
    // The newest two entries go (as in a Redis restarted from a snapshot older than its last
    // writes), and node b's subscriptions are cut: it catches up from a stream whose newest
    // entry is older than the last it saw, all of whose entries it saw.
    let newest = redis.command(&["XREVRANGE", "h6:history:#rb", "+", "-", "COUNT", "2"]);
    let OwnedFrame::Array(entries) = newest else {
        panic!("{newest:?}");
    };
    for entry in entries {
        let OwnedFrame::Array(parts) = entry else {
            panic!("{entry:?}");
        };
        let OwnedFrame::BulkString(id) = &parts[0] else {
            panic!("{parts:?}");
        };
        let id = String::from_utf8(id.clone()).unwrap();
        assert_eq!(
            redis.command(&["XDEL", "h6:history:#rb", &id]),
            OwnedFrame::Integer(1)
        );
    }
    let id = redis
        .client_id("pollchat-b-subscriptions")
        .expect("b is subscribed");
    let killed = redis.command(&["CLIENT", "KILL", "TYPE", "pubsub", "ID", &id]);
    assert_eq!(killed, OwnedFrame::Integer(1));
    let back = "NOTICE the link to the other servers of the cluster is back";
    loop {
        let l = y.line();
        assert!(link_notice(&l), "nothing is delivered again: {l}");
        if l.starts_with(back) {
            break;
        }
    }
    redis.wait_for(|r| r.subscribers("h6:room:#rb") == 2);
    x.send("after");
    assert_eq!(y.line(), "MSG #rb <x> after");
    y.sync();
}

#[test]
fn a_message_published_by_another_client_under_a_future_id_does_not_silence_the_room() {
    let Some(redis) = Redis::start() else {
        return;
    };
    let prefix = "h7:";
    let (a, b) = (node(&redis, "a", prefix, 50), node(&redis, "b", prefix, 50));
    let mut x = a.join_as("x", &mut []);
    join_room(&mut x, "#fid");
    redis.wait_for(|r| r.subscribers("h7:room:#fid") == 1);
    let mut y = b.join_as("y", &mut []);
    join_room(&mut y, "#fid");
    x.expect_prefix("JOIN #fid y");
    redis.wait_for(|r| r.subscribers("h7:room:#fid") == 2);
    x.send("first");
    assert_eq!(y.line(), "MSG #fid <x> first");
    // Another Redis client publishes the stream's newest envelope again, under an id from the
    // year 5138: it is delivered (as anything published on the channel is)…
    let forged = redis.command(&[
        "EVAL",
        "local r = redis.call('XREVRANGE', KEYS[1], '+', '-', 'COUNT', 1) \
         return redis.call('PUBLISH', ARGV[1], '99999999999999-0 ' .. r[1][2][2])",
        "1",
        "h7:history:#fid",
        "h7:room:#fid",
    ]);
    assert_eq!(forged, OwnedFrame::Integer(2));
    assert_eq!(y.line(), "MSG #fid <x> first");
    // …but what is said next is not taken for seen.
    x.send("second");
    assert_eq!(y.line(), "MSG #fid <x> second");
    y.sync();
}
