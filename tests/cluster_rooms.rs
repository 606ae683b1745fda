//! Rooms that are one room across nodes (`--backplane`): created once (one first operator),
//! one member list, and topics, modes, bans, kicks and kills across nodes. A real
//! `redis-server` on a free port and nodes in this process, as in `tests/cluster.rs`.
//!
//! Every wait has a deadline and waits for a condition (a line, or Redis's own answer).

mod common;

use std::time::Instant;

use common::redis::{Redis, register};
use common::{Client, LOCAL_CLOAK, TIMEOUT, TestServer};
use redis_protocol::resp2::types::OwnedFrame;

/// The names a NAMES of `room` lists (with their `@`/`+`), read up to its 366.
fn names(c: &mut Client, room: &str) -> Vec<String> {
    c.send(&format!("NAMES {room}\r"));
    let mut all = Vec::new();
    loop {
        let l = c.line();
        if l.contains(" 366 ") && l.contains(&format!(" {room} ")) {
            all.sort_by_key(|n: &String| n.trim_start_matches(['@', '+']).to_lowercase());
            return all;
        }
        if let Some((_, list)) = l.split_once(&format!(" {room} :"))
            && l.contains(" 353 ")
        {
            all.extend(list.split(' ').map(str::to_string));
        }
    }
}

/// NAMES of `room` again and again until it lists `expected` exactly (what another node did
/// crosses Redis on its own time), failing after [`TIMEOUT`].
fn names_become(c: &mut Client, room: &str, expected: &[&str]) {
    let deadline = Instant::now() + TIMEOUT;
    loop {
        let got = names(c, room);
        if got == expected {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "NAMES {room}: {got:?}, not {expected:?}"
        );
    }
}

/// Reads `c`'s join of `room` up to its 366; returns its names (from 353).
fn joined(c: &mut Client, room: &str) -> Vec<String> {
    let mut all = Vec::new();
    loop {
        let l = c.line();
        if l.contains(" 366 ") && l.contains(&format!(" {room} ")) {
            return all;
        }
        if let Some((_, list)) = l.split_once(&format!(" {room} :"))
            && l.contains(" 353 ")
        {
            all.extend(list.split(' ').map(str::to_string));
        }
    }
}

/// A node whose one server operator is `operuser` / `operpassword`.
fn oper_node(redis: &Redis, name: &str, prefix: &str) -> TestServer {
    let hash = pollchat::session::oper::hash_password("operpassword");
    let oper = pollchat::session::oper::Oper::parse(&format!("operuser:{hash}")).unwrap();
    redis.node_with(name, prefix, |c| c.opers = vec![oper])
}

/// The field/value pairs of hash `key` in Redis.
fn hash(redis: &Redis, key: &str) -> Vec<(String, String)> {
    match redis.command(&["HGETALL", key]) {
        OwnedFrame::Array(parts) => parts
            .chunks_exact(2)
            .map(|p| match (&p[0], &p[1]) {
                (OwnedFrame::BulkString(f), OwnedFrame::BulkString(v)) => (
                    String::from_utf8(f.clone()).unwrap(),
                    String::from_utf8(v.clone()).unwrap(),
                ),
                other => panic!("HGETALL answered {other:?}"),
            })
            .collect(),
        other => panic!("HGETALL answered {other:?}"),
    }
}

#[test]
fn of_two_first_joiners_on_two_nodes_at_once_exactly_one_is_operator() {
    let Some(redis) = Redis::start() else {
        return;
    };
    let (a, b) = (redis.node("a", "r1:"), redis.node("b", "r1:"));
    let mut x = register(&a, "x");
    let mut y = register(&b, "y");
    for i in 0..8 {
        let room = format!("#race{i}");
        // Both JOINs are sent before either answer is read.
        x.send(&format!("JOIN {room}\r"));
        y.send(&format!("JOIN {room}\r"));
        let (nx, ny) = (joined(&mut x, &room), joined(&mut y, &room));
        let x_op = nx.contains(&"@x".to_string());
        let y_op = ny.contains(&"@y".to_string());
        assert!(x_op != y_op, "{room}: exactly one operator: {nx:?} {ny:?}");
        // Both nodes list both members, with the same one operator.
        let expected: Vec<&str> = if x_op {
            vec!["@x", "y"]
        } else {
            vec!["x", "@y"]
        };
        names_become(&mut x, &room, &expected);
        names_become(&mut y, &room, &expected);
        // The shared list in Redis says so too.
        let members = hash(&redis, &format!("r1:members:{room}"));
        assert_eq!(members.len(), 2, "{members:?}");
        let ops = members.iter().filter(|(_, v)| v.contains(" @ ")).count();
        assert_eq!(ops, 1, "{members:?}");
    }
}

#[test]
fn names_who_and_line_who_list_the_members_of_other_nodes_and_follow_them() {
    let Some(redis) = Redis::start() else {
        return;
    };
    let (a, b) = (redis.node("a", "r2:"), redis.node("b", "r2:"));
    let mut bob = register(&b, "bob");
    bob.send("JOIN #s\r");
    assert_eq!(joined(&mut bob, "#s"), ["@bob"]);
    // A joiner on node a is told of bob at once: the cluster answered its join.
    let mut alice = register(&a, "alice");
    alice.send("JOIN #s\r");
    let mut got = joined(&mut alice, "#s");
    got.sort();
    assert_eq!(got, ["@bob", "alice"]);
    assert_eq!(bob.line(), format!(":alice!alice@{LOCAL_CLOAK} JOIN #s"));
    // A line user on node a: `/who`.
    let mut liner = a.join_as("liner", &mut []);
    liner.send("/join #s");
    assert_eq!(liner.expect_prefix("NAMES #s"), "NAMES #s alice @bob liner");
    liner.send("/who #s");
    assert_eq!(liner.expect_prefix("NAMES #s"), "NAMES #s alice @bob liner");
    // WHO on node a: bob, an operator on node b, with his user and host.
    alice.send("WHO #s\r");
    let mut who = Vec::new();
    loop {
        let l = alice.line();
        if l.contains(" 315 ") {
            break;
        }
        if l.contains(" 352 ") {
            who.push(l);
        }
    }
    assert_eq!(who.len(), 3, "{who:?}");
    assert!(
        who.iter().any(|l| l.contains(&format!(
            " 352 alice #s bob {LOCAL_CLOAK} pollchat bob H@ :0 The bob"
        ))),
        "{who:?}"
    );
    // WHOIS of a user of node b answers from what node a knows.
    alice.send("WHOIS bob\r");
    assert_eq!(
        alice.expect_prefix(":pollchat 311 "),
        format!(":pollchat 311 alice bob bob {LOCAL_CLOAK} * :The bob")
    );
    assert_eq!(alice.line(), ":pollchat 312 alice bob pollchat :pollchat");
    assert_eq!(alice.line(), ":pollchat 319 alice bob :@#s");
    alice.expect_prefix(":pollchat 318 alice bob ");
    // LIST on node a counts every member.
    alice.send("LIST\r");
    assert!(
        alice
            .expect_prefix(":pollchat 322 alice #s ")
            .starts_with(":pollchat 322 alice #s 3 ")
    );

    // Joins, nick changes, parts and quits on node b are followed.
    let mut carol = register(&b, "carol");
    carol.send("JOIN #s\r");
    joined(&mut carol, "#s");
    names_become(&mut alice, "#s", &["alice", "@bob", "carol", "liner"]);
    carol.send("NICK caroline\r");
    names_become(&mut alice, "#s", &["alice", "@bob", "caroline", "liner"]);
    liner.send("/who #s");
    assert_eq!(
        liner.expect_prefix("NAMES #s"),
        "NAMES #s alice @bob caroline liner"
    );
    carol.send("PART #s\r");
    names_become(&mut alice, "#s", &["alice", "@bob", "liner"]);
    bob.send("QUIT\r");
    bob.expect_closed();
    names_become(&mut alice, "#s", &["alice", "liner"]);
    // And a part on node a is followed on node b.
    carol.send("JOIN #s\r");
    assert_eq!(joined(&mut carol, "#s").len(), 3);
    liner.send("/part #s");
    names_become(&mut carol, "#s", &["alice", "caroline"]);
}

#[test]
fn a_topic_crosses_nodes_and_a_later_joiner_anywhere_learns_it() {
    let Some(redis) = Redis::start() else {
        return;
    };
    let (a, b, c) = (
        redis.node("a", "r3:"),
        redis.node("b", "r3:"),
        redis.node("c", "r3:"),
    );
    let mut alice = register(&a, "alice");
    alice.send("JOIN #t\r");
    joined(&mut alice, "#t");
    let mut bob = register(&b, "bob");
    bob.send("JOIN #t\r");
    joined(&mut bob, "#t");
    alice.expect_prefix(":bob!");
    alice.send("TOPIC #t :shared words\r");
    assert_eq!(
        bob.line(),
        format!(":alice!alice@{LOCAL_CLOAK} TOPIC #t :shared words")
    );
    // A joiner on a third node, which had nobody in #t, is told it.
    let mut carol = register(&c, "carol");
    carol.send("JOIN #t\r");
    carol.expect_prefix(":carol!");
    assert_eq!(carol.line(), ":pollchat 332 carol #t :shared words");
    assert!(carol.line().starts_with(":pollchat 333 carol #t alice "));
    // Node b empties, and a new joiner there learns it again from the cluster.
    bob.send("PART #t\r");
    bob.expect_prefix(":bob!bob@");
    bob.send("JOIN #t\r");
    bob.expect_prefix(":bob!");
    assert_eq!(bob.line(), ":pollchat 332 bob #t :shared words");
    // Cleared on node c (a member may: alice gives carol operator status first).
    alice.send("MODE #t +o carol\r");
    carol.expect_prefix(":alice!alice@");
    carol.send("TOPIC #t :\r");
    bob.expect_prefix(&format!(":carol!carol@{LOCAL_CLOAK} TOPIC #t :"));
    // Everybody leaves: the room's shared state goes with its last member.
    for (who, c) in [
        ("alice", &mut alice),
        ("bob", &mut bob),
        ("carol", &mut carol),
    ] {
        c.send("PART #t\r");
        c.expect_prefix(&format!(":{who}!"));
    }
    redis
        .wait_for(|r| hash(r, "r3:roomstate:#t").is_empty() && hash(r, "r3:members:#t").is_empty());
    // And a new first joiner creates it anew: operator, no topic.
    carol.send("JOIN #t\r");
    assert_eq!(joined(&mut carol, "#t"), ["@carol"]);
}

#[test]
fn operator_status_modes_and_bans_are_shared() {
    let Some(redis) = Redis::start() else {
        return;
    };
    let (a, b, c) = (
        redis.node("a", "r4:"),
        redis.node("b", "r4:"),
        redis.node("c", "r4:"),
    );
    let mut alice = register(&a, "alice");
    alice.send("JOIN #m\r");
    joined(&mut alice, "#m");
    let mut bob = register(&b, "bob");
    bob.send("JOIN #m\r");
    joined(&mut bob, "#m");
    alice.expect_prefix(":bob!");
    // +o on node a for a member on node b: both nodes list it, and it works on node b.
    alice.send("MODE #m +o bob\r");
    assert_eq!(
        bob.line(),
        format!(":alice!alice@{LOCAL_CLOAK} MODE #m +o bob")
    );
    names_become(&mut bob, "#m", &["@alice", "@bob"]);
    names_become(&mut alice, "#m", &["@alice", "@bob"]);
    bob.send("MODE #m +mk sesame\r");
    assert_eq!(
        alice.line(),
        format!(":bob!bob@{LOCAL_CLOAK} MODE #m +mk sesame")
    );
    alice.send("MODE #m +b carol\r");
    assert_eq!(
        bob.expect_prefix(":alice!"),
        format!(":alice!alice@{LOCAL_CLOAK} MODE #m +b carol!*@*")
    );
    // A joiner on node c knows the key, the ban and the modes from the cluster.
    let mut carol = register(&c, "carol");
    carol.send("JOIN #m sesame\r");
    assert_eq!(
        carol.line(),
        ":pollchat 474 carol #m :Cannot join channel (+b)"
    );
    let mut dave = register(&c, "dave");
    dave.send("JOIN #m\r");
    assert_eq!(
        dave.line(),
        ":pollchat 475 dave #m :Cannot join channel (+k)"
    );
    dave.send("JOIN #m sesame\r");
    assert_eq!(joined(&mut dave, "#m").len(), 3);
    dave.send("MODE #m\r");
    assert_eq!(dave.line(), ":pollchat 324 dave #m +mntk sesame");
    // Moderated, from node b's change: dave (not voiced) cannot speak on node c.
    dave.send("PRIVMSG #m :hi\r");
    dave.expect_prefix(":pollchat 404 dave #m ");
    // No member list keeps carol's failed join.
    let members = hash(&redis, "r4:members:#m");
    assert_eq!(members.len(), 3, "{members:?}");
    assert!(members.iter().all(|(n, _)| n != "carol"));
}

#[test]
fn a_kick_of_a_member_on_another_node_reaches_its_node() {
    let Some(redis) = Redis::start() else {
        return;
    };
    let (a, b) = (redis.node("a", "r5:"), redis.node("b", "r5:"));
    let mut alice = register(&a, "alice");
    alice.send("JOIN #k\r");
    joined(&mut alice, "#k");
    let mut bob = register(&b, "bob");
    bob.send("JOIN #k\r");
    joined(&mut bob, "#k");
    let mut carol = register(&b, "carol");
    carol.send("JOIN #k\r");
    joined(&mut carol, "#k");
    alice.expect_prefix(":carol!");
    alice.send("KICK #k bob :out\r");
    let kick = format!(":alice!alice@{LOCAL_CLOAK} KICK #k bob :out");
    assert_eq!(alice.line(), kick);
    assert_eq!(bob.expect_prefix(":alice!"), kick);
    assert_eq!(carol.expect_prefix(":alice!"), kick);
    // bob is out of #k on its node, and on every list.
    bob.send("PRIVMSG #k :still here?\r");
    assert!(bob.line().starts_with(":pollchat 404 bob #k "));
    names_become(&mut carol, "#k", &["@alice", "carol"]);
    names_become(&mut alice, "#k", &["@alice", "carol"]);
    redis.wait_for(|r| hash(r, "r5:members:#k").len() == 2);
}

#[test]
fn a_kill_of_a_user_on_another_node_disconnects_it_there() {
    let Some(redis) = Redis::start() else {
        return;
    };
    let (a, b) = (oper_node(&redis, "a", "r9:"), redis.node("b", "r9:"));
    let mut alice = register(&a, "alice");
    alice.send("JOIN #k\r");
    joined(&mut alice, "#k");
    let mut carol = register(&b, "carol");
    carol.send("JOIN #k\r");
    joined(&mut carol, "#k");
    alice.expect_prefix(":carol!");
    alice.send("OPER operuser operpassword\r");
    alice.expect_prefix(":pollchat 381 ");
    alice.send("KILL carol :enough\r");
    let bye = carol.expect_closed();
    assert!(
        bye.last().unwrap().contains("killed by alice: enough"),
        "{bye:?}"
    );
    alice.expect_prefix(&format!(":carol!carol@{LOCAL_CLOAK} QUIT "));
    redis.wait_for(|r| hash(r, "r9:members:#k").len() == 1);
    // A nick nobody holds anywhere: 401, once Redis has answered.
    alice.send("KILL nobody\r");
    assert_eq!(
        alice.line(),
        ":pollchat 401 alice nobody :No such nick/channel"
    );
}

#[test]
fn a_join_pipelined_with_a_message_waits_for_the_cluster_then_both_go_through() {
    let Some(redis) = Redis::start() else {
        return;
    };
    let (a, b) = (redis.node("a", "r6:"), redis.node("b", "r6:"));
    let mut bob = register(&b, "bob");
    bob.send("JOIN #p\r");
    joined(&mut bob, "#p");
    let mut alice = register(&a, "alice");
    alice.send_raw(b"JOIN #p\r\nPRIVMSG #p :first\r\nJOIN #p2\r\nPRIVMSG #p2 :mine\r\n");
    assert_eq!(bob.line(), format!(":alice!alice@{LOCAL_CLOAK} JOIN #p"));
    assert_eq!(
        bob.line(),
        format!(":alice!alice@{LOCAL_CLOAK} PRIVMSG #p :first")
    );
    joined(&mut alice, "#p");
    // #p2 was new: alice created it (the message to it was not refused either).
    assert_eq!(joined(&mut alice, "#p2"), ["@alice"]);
    alice.send("PING :x\r");
    assert_eq!(alice.line(), ":pollchat PONG pollchat :x");
}

#[test]
fn while_redis_is_down_a_new_room_is_refused_and_rooms_with_local_members_work() {
    let Some(mut redis) = Redis::start() else {
        return;
    };
    let a = redis.node("a", "r7:");
    let mut alice = register(&a, "alice");
    alice.send("JOIN #here\r");
    joined(&mut alice, "#here");
    let mut liner = a.join_as("liner", &mut []);
    redis.restart_after(|| {
        alice.expect_prefix(":pollchat NOTICE alice :*** The link to the other servers");
        liner.expect_prefix("NOTICE the link to the other servers");
        alice.send("JOIN #new\r");
        assert_eq!(
            alice.line(),
            ":pollchat 437 alice #new :Channel is temporarily unavailable: cluster link down"
        );
        liner.send("/join #new");
        assert_eq!(
            liner.line(),
            "ERROR cluster-down cluster link down: the room #new has no member on this server \
             and cannot be joined now, try again later"
        );
        liner.send("/join #here");
        assert_eq!(
            liner.expect_prefix("NAMES #here"),
            "NAMES #here @alice liner"
        );
    });
}

#[test]
fn after_redis_restarted_empty_the_rooms_are_shared_again_as_they_are_now() {
    let Some(mut redis) = Redis::start() else {
        return;
    };
    let (a, b) = (redis.node("a", "r8:"), redis.node("b", "r8:"));
    let mut alice = register(&a, "alice");
    alice.send("JOIN #back\r");
    joined(&mut alice, "#back");
    alice.send("TOPIC #back :kept\r");
    alice.expect_prefix(":alice!alice@");
    let mut liner = a.join_as("liner", &mut []);
    liner.send("/join #back");
    liner.expect_prefix("NAMES #back");
    alice.expect_prefix(":liner!");
    redis.restart_after(|| {
        alice.expect_prefix(":pollchat NOTICE alice :*** The link to the other servers");
        liner.expect_prefix("NOTICE the link to the other servers");
        // Said while Redis is away: only its own node knows.
        liner.send("/part #back");
        alice.expect_prefix(":liner!");
    });
    alice.expect_prefix(":pollchat NOTICE alice :*** The link to the other servers");
    // Node a tells the new Redis who of it is in #back, and what #back is.
    redis.wait_for(|r| {
        let members = hash(r, "r8:members:#back");
        members.len() == 1 && members[0].0 == "alice" && members[0].1.contains(" @ ")
    });
    let state = hash(&redis, "r8:roomstate:#back");
    assert!(
        state.contains(&("topic".into(), "kept".into())),
        "{state:?}"
    );
    assert!(state.iter().any(|(f, _)| f == "founded"), "{state:?}");
    // So a joiner on node b is no second first operator, and learns the topic and alice.
    let mut bob = register(&b, "bob");
    bob.send("JOIN #back\r");
    bob.expect_prefix(":bob!");
    assert_eq!(bob.line(), ":pollchat 332 bob #back :kept");
    let mut names = joined(&mut bob, "#back");
    names.sort();
    assert_eq!(names, ["@alice", "bob"]);
}

#[test]
fn whois_of_a_user_on_another_node_in_no_shared_room_names_its_node() {
    let Some(redis) = Redis::start() else {
        return;
    };
    let (a, b) = (redis.node("a", "r10:"), redis.node("b", "r10:"));
    let mut alice = register(&a, "alice");
    let _bob = register(&b, "bob");
    alice.send("WHOIS Bob\r");
    assert_eq!(alice.line(), ":pollchat 311 alice Bob * * * :");
    assert_eq!(alice.line(), ":pollchat 312 alice Bob b :pollchat");
    assert_eq!(alice.line(), ":pollchat 318 alice Bob :End of /WHOIS list");
    let mut liner = a.join_as("liner", &mut []);
    liner.send("/whois bob");
    // (Not "is in: no room": bob's rooms are on node b, unknown to node a.)
    assert_eq!(
        liner.line(),
        "NOTICE bob is on server b; its rooms are not known here"
    );
    // Nobody holds it anywhere: told once Redis has answered.
    alice.send("WHOIS nobody\r");
    assert_eq!(
        alice.line(),
        ":pollchat 401 alice nobody :No such nick/channel"
    );
}

#[test]
fn an_invitation_crosses_nodes_into_an_invitation_only_room() {
    let Some(redis) = Redis::start() else {
        return;
    };
    let (a, b) = (redis.node("a", "r11:"), redis.node("b", "r11:"));
    let mut alice = register(&a, "alice");
    alice.send("JOIN #i\r");
    joined(&mut alice, "#i");
    alice.send("MODE #i +i\r");
    alice.expect_prefix(":alice!alice@");
    let mut bob = register(&b, "bob");
    bob.send("JOIN #i\r");
    assert_eq!(bob.line(), ":pollchat 473 bob #i :Cannot join channel (+i)");
    alice.send("INVITE bob #i\r");
    assert_eq!(alice.line(), ":pollchat 341 alice bob #i");
    assert_eq!(
        bob.line(),
        format!(":alice!alice@{LOCAL_CLOAK} INVITE bob #i")
    );
    bob.send("JOIN #i\r");
    let mut names = joined(&mut bob, "#i");
    names.sort();
    assert_eq!(names, ["@alice", "bob"]);
    // (Bob's join reaches alice on its own time: read first, so that it cannot fall between
    // the answers below.)
    alice.expect_prefix(&format!(":bob!bob@{LOCAL_CLOAK} JOIN #i"));
    // Nobody holds the nick anywhere: 401, once Redis has answered.
    alice.send("INVITE nobody #i\r");
    alice.expect_prefix(":pollchat 341 alice nobody #i");
    assert_eq!(
        alice.line(),
        ":pollchat 401 alice nobody :No such nick/channel"
    );
}

#[test]
fn a_join_redis_recorded_but_its_node_has_not_completed_is_not_listed_to_other_joiners() {
    let Some(redis) = Redis::start() else {
        return;
    };
    // #w has a member (of node 98), and another node's join to it, as its node asks it: Redis
    // has recorded it, and its node has not had the answer yet (it may still refuse it, for a
    // key, a ban, a limit, or its user left meanwhile: then it only takes the entry back, and
    // publishes no part).
    redis.command(&["HSET", "r12:roomstate:#w", "founded", "98 carol 1"]);
    redis.command(&[
        "HSET",
        "r12:members:#w",
        "carol",
        "98 carol!u@h @ The carol",
    ]);
    let script = std::str::from_utf8(pollchat::backplane::rooms::JOIN_SCRIPT).unwrap();
    let asked = redis.command(&[
        "EVAL",
        script,
        "2",
        "r12:members:#w",
        "r12:roomstate:#w",
        "ghost",
        "99 ghost!u@h",
        "The ghost",
        "99 ghost 1",
        "2048",
        "1",
    ]);
    assert!(matches!(asked, OwnedFrame::Array(_)), "{asked:?}");
    let b = redis.node("b", "r12:");
    let mut bob = register(&b, "bob");
    bob.send("JOIN #w\r");
    let mut got = joined(&mut bob, "#w");
    got.sort();
    assert_eq!(got, ["@carol", "bob"], "not the unanswered joiner");
    // Its node refused it: the entry goes, and bob's list has nothing to forget.
    let drop = std::str::from_utf8(pollchat::backplane::rooms::MEMBER_SCRIPT).unwrap();
    redis.command(&[
        "EVAL",
        drop,
        "2",
        "r12:members:#w",
        "r12:roomstate:#w",
        "ghost",
        "",
        "",
    ]);
    assert_eq!(names(&mut bob, "#w"), ["bob", "@carol"]);
    // A join completed is listed, with its status, to a later joiner of another node.
    let a = redis.node("a", "r12:");
    let mut alice = register(&a, "alice");
    alice.send("JOIN #v\r");
    assert_eq!(joined(&mut alice, "#v"), ["@alice"]);
    bob.send("JOIN #v\r");
    let mut got = joined(&mut bob, "#v");
    got.sort();
    assert_eq!(got, ["@alice", "bob"]);
    // Bob's join, completed, is a member's entry now (and listed to the next joiner).
    let entry = format!(" bob!bob@{LOCAL_CLOAK} - The bob");
    redis.wait_for(|r| {
        hash(r, "r12:members:#v")
            .iter()
            .any(|(f, v)| f == "bob" && v.ends_with(&entry))
    });
}

#[test]
fn a_member_who_left_while_a_node_was_cut_off_is_not_listed_there_once_it_is_back() {
    let Some(redis) = Redis::start() else {
        return;
    };
    let (a, b) = (redis.node("a", "r13:"), redis.node("b", "r13:"));
    let mut alice = register(&a, "alice");
    alice.send("JOIN #cut\r");
    joined(&mut alice, "#cut");
    let (mut bob, mut carol) = (register(&b, "bob"), register(&b, "carol"));
    for c in [&mut bob, &mut carol] {
        c.send("JOIN #cut\r");
        joined(c, "#cut");
    }
    names_become(&mut alice, "#cut", &["@alice", "bob", "carol"]);
    let deadline = Instant::now() + TIMEOUT;
    loop {
        redis.wait_for(|r| r.subscribers("r13:room:#cut") == 2);
        // Redis cuts node a's subscriptions (as it cuts a slow subscriber): node a takes the
        // link down and reconnects a moment later; bob parts meanwhile.
        let id = redis
            .client_id("pollchat-a-subscriptions")
            .expect("a is subscribed");
        let killed = redis.command(&["CLIENT", "KILL", "TYPE", "pubsub", "ID", &id]);
        assert_eq!(killed, OwnedFrame::Integer(1));
        bob.send("PART #cut\r");
        bob.expect_prefix(":bob!bob@");
        redis.wait_for(|r| !hash(r, "r13:members:#cut").iter().any(|(f, _)| f == "bob"));
        if redis.subscribers("r13:room:#cut") == 1 {
            break; // node a was not listening when bob's part was published
        }
        // Node a was back already (and heard it): again.
        assert!(
            Instant::now() < deadline,
            "node a was never cut off long enough"
        );
        names_become(&mut alice, "#cut", &["@alice", "carol"]);
        bob.send("JOIN #cut\r");
        joined(&mut bob, "#cut");
        names_become(&mut alice, "#cut", &["@alice", "bob", "carol"]);
    }
    // Once node a is back, its list is the room's as Redis has it.
    names_become(&mut alice, "#cut", &["@alice", "carol"]);
    // And it follows the room again.
    carol.send("PART #cut\r");
    names_become(&mut alice, "#cut", &["@alice"]);
}

#[test]
fn a_node_taken_for_dead_and_back_writes_its_members_and_rooms_again() {
    let Some(redis) = Redis::start() else {
        return;
    };
    let b = redis.node("b", "r14:");
    let mut bob = register(&b, "bob");
    bob.send("JOIN #z\r");
    assert_eq!(joined(&mut bob, "#z"), ["@bob"]);
    bob.send("TOPIC #z :still here\r");
    bob.expect_prefix(":bob!bob@");
    redis.wait_for(|r| {
        hash(r, "r14:roomstate:#z")
            .iter()
            .any(|(f, _)| f == "topic")
    });
    let inc = hash(&redis, "r14:nodes")
        .into_iter()
        .find(|(_, name)| name == "b")
        .expect("b is registered")
        .0;
    // What a survivor does to a node it takes for dead (while the node was only stalled): out
    // of the registry, a tombstone for a heartbeat, its members' entries gone, and with them
    // the room's state (no member left).
    redis.command(&["HDEL", "r14:nodes", &inc]);
    redis.command(&["SET", &format!("r14:node:{inc}"), "taken for dead"]);
    redis.command(&["HDEL", "r14:members:#z", "bob"]);
    redis.command(&["DEL", "r14:roomstate:#z"]);
    // Node b finds out at its next heartbeat and comes back: its member and the room's state
    // are in Redis again, so a joiner elsewhere is not a second first operator.
    redis.wait_for(|r| {
        hash(r, "r14:members:#z")
            .iter()
            .any(|(f, v)| f == "bob" && v.contains(" @ "))
            && hash(r, "r14:roomstate:#z")
                .iter()
                .any(|(f, v)| f == "topic" && v == "still here")
    });
    let a = redis.node("a", "r14:");
    let mut alice = register(&a, "alice");
    alice.send("JOIN #z\r");
    alice.expect_prefix(":alice!alice@");
    alice.expect_prefix(":pollchat 332 alice #z :still here");
    let mut got = joined(&mut alice, "#z");
    got.sort();
    assert_eq!(got, ["@bob", "alice"]);
}

#[test]
fn a_join_whose_subscription_redis_never_confirms_is_refused_in_bounded_time() {
    let Some(redis) = Redis::start() else {
        return;
    };
    let a = redis.node("a", "r15:");
    let mut alice = register(&a, "alice");
    // Redis refuses this node the rooms' channels (an ACL that names only the users'): the
    // SUBSCRIBE of a new room is answered an error, never confirmed, so its join is never
    // asked. The joiner's input is held meanwhile: it must not be held for ever.
    let acl = redis.command(&["ACL", "SETUSER", "default", "resetchannels", "&r15:user:*"]);
    assert_eq!(acl, OwnedFrame::SimpleString(b"OK".to_vec()));
    alice.send("JOIN #acl\r");
    alice.send("PING :still there\r");
    // (Within the backplane's stall bound, 15 s: longer than the usual read timeout.)
    let wait = Some(TIMEOUT * 3);
    alice.stream().set_read_timeout(wait).unwrap();
    assert_eq!(
        alice.line(),
        ":pollchat 437 alice #acl :Channel is temporarily unavailable: cluster link down"
    );
    assert_eq!(alice.line(), ":pollchat PONG pollchat :still there");
}

/// The rooms an IRC LIST lists (name, members, topic), read up to its 323.
fn list(c: &mut Client) -> Vec<(String, usize, String)> {
    c.send("LIST\r");
    let mut all = Vec::new();
    loop {
        let l = c.line();
        if l.contains(" 323 ") {
            return all;
        }
        if let Some((_, rest)) = l.split_once(" 322 ") {
            // `{nick} {room} {members} :{topic}`
            let (head, topic) = rest.split_once(" :").unwrap_or((rest, ""));
            let words: Vec<&str> = head.split(' ').collect();
            all.push((
                words[1].to_string(),
                words[2].parse().unwrap(),
                topic.to_string(),
            ));
        }
    }
}

/// LIST again and again until `room` is listed (`true`) or not (`false`) as `listed`,
/// failing after [`TIMEOUT`]; returns the last list.
fn list_until(c: &mut Client, room: &str, listed: bool) -> Vec<(String, usize, String)> {
    let deadline = Instant::now() + TIMEOUT;
    loop {
        let got = list(c);
        if got.iter().any(|r| r.0 == room) == listed {
            return got;
        }
        assert!(Instant::now() < deadline, "LIST: {got:?}");
    }
}

fn in_index(redis: &Redis, prefix: &str, room: &str) -> bool {
    redis.command(&["HEXISTS", &format!("{prefix}rooms"), room]) == OwnedFrame::Integer(1)
}

#[test]
fn list_and_rooms_show_the_rooms_only_other_nodes_have_but_secret_ones() {
    let Some(redis) = Redis::start() else {
        return;
    };
    let (a, b) = (redis.node("a", "r20:"), redis.node("b", "r20:"));
    let mut bob = register(&b, "bob");
    let mut carol = register(&b, "carol");
    bob.send("JOIN #Far\r");
    assert_eq!(joined(&mut bob, "#Far"), ["@bob"]);
    carol.send("JOIN #Far\r");
    joined(&mut carol, "#Far");
    bob.send("TOPIC #far :far away\r");
    bob.expect_prefix(":bob!bob@");
    bob.send("JOIN #hush\r");
    joined(&mut bob, "#hush");
    bob.send("MODE #hush +s\r");
    bob.expect_prefix(":bob!bob@");
    redis.wait_for(|r| {
        hash(r, "r20:roomstate:#far")
            .iter()
            .any(|(f, _)| f == "topic")
            && hash(r, "r20:roomstate:#hush")
                .iter()
                .any(|(f, v)| f == "modes" && v.contains('s'))
            && hash(r, "r20:members:#far").len() == 2
    });
    // The index of rooms: folded name -> name as its founder spelled it.
    let mut index = hash(&redis, "r20:rooms");
    index.sort();
    assert_eq!(
        index,
        [
            ("#far".to_string(), "#Far".to_string()),
            ("#hush".to_string(), "#hush".to_string())
        ]
    );
    // Node a has no member in either: IRC's LIST shows #Far with its two members and topic,
    // not the secret room.
    let mut alice = register(&a, "alice");
    let got = list(&mut alice);
    assert!(
        got.contains(&("#Far".into(), 2, "far away".into())),
        "{got:?}"
    );
    assert!(!got.iter().any(|r| r.0 == "#hush"), "{got:?}");
    // The line protocol's /rooms too.
    let (mut line, _) = a.join();
    line.send("/rooms");
    let mut rooms = Vec::new();
    loop {
        let l = line.line();
        if l.starts_with("NOTICE ") && l.ends_with(" rooms") || l == "NOTICE 1 room" {
            break;
        }
        if l.starts_with("ROOM ") {
            rooms.push(l);
        }
    }
    assert!(
        rooms.contains(&"ROOM #Far 2 far away".to_string()),
        "{rooms:?}"
    );
    assert!(
        !rooms.iter().any(|r| r.starts_with("ROOM #hush")),
        "{rooms:?}"
    );
    // A room node a has a member in is listed as node a knows it (once).
    alice.send("JOIN #Far\r");
    joined(&mut alice, "#Far");
    let got = list(&mut alice);
    let far: Vec<_> = got
        .iter()
        .filter(|r| r.0.eq_ignore_ascii_case("#far"))
        .collect();
    assert_eq!(far.len(), 1, "{got:?}");
    assert_eq!(far[0].1, 3, "{got:?}");
    // A room that empties leaves the index, and the lists.
    for c in [&mut alice, &mut bob, &mut carol] {
        c.send("PART #Far\r");
    }
    redis.wait_for(|r| !in_index(r, "r20:", "#far"));
    let got = list_until(&mut alice, "#Far", false);
    assert!(
        !got.iter().any(|r| r.0.eq_ignore_ascii_case("#far")),
        "{got:?}"
    );
}

#[test]
fn a_room_whose_members_were_reaped_leaves_the_index_at_the_next_list() {
    let Some(redis) = Redis::start() else {
        return;
    };
    let (a, b) = (redis.node("a", "r21:"), redis.node("b", "r21:"));
    let mut bob = register(&b, "bob");
    bob.send("JOIN #gone\r");
    joined(&mut bob, "#gone");
    let mut alice = register(&a, "alice");
    list_until(&mut alice, "#gone", true);
    // What the reaper of a dead node does to its last member of a room (its script,
    // `REAP_USER_SCRIPT`, computes no index key): the member's entry and the room's state go,
    // the index entry stays; the next LIST anywhere takes it out.
    redis.command(&["HDEL", "r21:members:#gone", "bob"]);
    redis.command(&["DEL", "r21:roomstate:#gone"]);
    assert!(in_index(&redis, "r21:", "#gone"));
    let got = list(&mut alice);
    assert!(!got.iter().any(|r| r.0 == "#gone"), "{got:?}");
    assert!(!in_index(&redis, "r21:", "#gone"));
}

#[test]
fn the_lobbys_first_member_on_a_node_is_sent_names_of_the_whole_cluster() {
    let Some(redis) = Redis::start() else {
        return;
    };
    let (a, b, c) = (
        redis.node("a", "r16:"),
        redis.node("b", "r16:"),
        redis.node("c", "r16:"),
    );
    let mut alice = register(&a, "alice");
    alice.send("JOIN #lobby\r");
    let names = joined(&mut alice, "#lobby");
    assert_eq!(names, ["alice"], "nobody's to operate");
    // Listed in Redis as a member (not `?`, a join not completed).
    redis.wait_for(|r| {
        hash(r, "r16:members:#lobby")
            .iter()
            .any(|(f, v)| f == "alice" && v.contains(" - "))
    });
    // A line user, the lobby's first member on node b: its greeting's NAMES lists alice.
    let mut liner = b.connect();
    let welcome = liner.line();
    assert!(welcome.starts_with("WELCOME guest"), "{welcome}");
    let nick = welcome.split(' ').nth(1).unwrap().to_string();
    assert_eq!(liner.line(), format!("JOIN #lobby {nick}"));
    let names = liner.line();
    assert!(names.starts_with("NAMES #lobby "), "{names}");
    assert!(names.split(' ').any(|n| n == "alice"), "{names}");
    alice.expect_prefix(&format!(":{nick}!"));
    // An IRC user whose JOIN #lobby is the lobby's first on node c.
    let mut ivy = register(&c, "ivy");
    ivy.send("JOIN #lobby\r");
    ivy.expect_prefix(":ivy!");
    let mut got = joined(&mut ivy, "#lobby");
    got.sort();
    let mut expected = vec!["alice".to_string(), "ivy".to_string(), nick.clone()];
    expected.sort();
    assert_eq!(got, expected);
    liner.expect_prefix("JOIN #lobby ivy");
}

#[test]
fn while_redis_is_down_a_line_user_still_lands_in_the_lobby_at_once() {
    let Some(mut redis) = Redis::start() else {
        return;
    };
    let a = redis.node("a", "r17:");
    let mut w = register(&a, "w");
    redis.restart_after(|| {
        w.expect_prefix(
            ":pollchat NOTICE w :*** The link to the other servers of the cluster is down",
        );
        // The lobby's first member here, with nobody to ask: joined at once.
        let (mut liner, _) = a.join();
        liner.sync();
    });
}

/// The creation time (IRC 329) `c`'s node gives `room`, in seconds.
fn creation_time(c: &mut Client, room: &str) -> u64 {
    c.send(&format!("MODE {room}\r"));
    let created = c.expect_prefix(":pollchat 329 ");
    created.rsplit(' ').next().unwrap().parse().unwrap()
}

#[test]
fn a_rooms_creation_time_is_the_same_on_every_node() {
    let Some(redis) = Redis::start() else {
        return;
    };
    let (a, b) = (redis.node("a", "r18:"), redis.node("b", "r18:"));
    let mut alice = register(&a, "alice");
    alice.send("JOIN #t\r");
    joined(&mut alice, "#t");
    let founded = creation_time(&mut alice, "#t");
    // Bob's join, on the other node, comes in a later second (waiting for the clock, not for
    // a server).
    let deadline = Instant::now() + TIMEOUT;
    while std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        <= founded
    {
        assert!(Instant::now() < deadline, "the clock stands still");
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    let mut bob = register(&b, "bob");
    bob.send("JOIN #t\r");
    joined(&mut bob, "#t");
    assert_eq!(creation_time(&mut bob, "#t"), founded);
}
