//! Nodes joined through Redis (`--backplane`): a real `redis-server` on a free port and two
//! pollchat nodes in this process, users of both protocols on different nodes.
//!
//! `redis-server` is looked for on PATH; without it the tests that need it print a notice and
//! return (`.ci/run` installs Debian's `redis-server`, so CI always runs them). Every wait has a
//! deadline and waits for a condition: for a SUBSCRIBE to take effect, Redis itself is asked
//! (`PUBSUB NUMSUB`) over a plain connection.

mod common;

use std::io::Read;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use common::redis::{Redis, free_port, register};
use common::{Client, IoModel, LOCAL_CLOAK, TIMEOUT, TestServer, register_with};
use pollchat::backplane::BackplaneConfig;
use redis_protocol::resp2::types::OwnedFrame;

const BIN: &str = env!("CARGO_BIN_EXE_pollchat");

#[test]
fn a_line_user_and_an_irc_user_on_two_nodes_chat_both_ways_without_doubles() {
    let Some(redis) = Redis::start() else {
        return;
    };
    let prefix = "t1:";
    let (a, b) = (redis.node("a", prefix), redis.node("b", prefix));
    let mut liner = a.join_as("liner", &mut []);
    liner.send("/join #Chat");
    liner.expect_prefix("NAMES #Chat");
    let mut other = a.join_as("other", &mut [&mut liner]);
    other.send("/join #chat");
    assert_eq!(liner.line(), "JOIN #Chat other");
    other.expect_prefix("NAMES #Chat");
    // Each node subscribes once however many local members the room has.
    redis.wait_for(|r| r.subscribers("t1:room:#chat") == 1);
    let mut ircer = register(&b, "ircer");
    ircer.send("JOIN #chat");
    ircer.expect_prefix(":pollchat 366 ircer #chat");
    // Node a is subscribed: it hears of the join.
    assert_eq!(liner.line(), "JOIN #Chat ircer");
    assert_eq!(other.line(), "JOIN #Chat ircer");
    redis.wait_for(|r| r.subscribers("t1:room:#chat") == 2);

    // Line to IRC: the IRC user sees it as a local message, in its node's spelling of the room.
    liner.send("hello from a");
    assert_eq!(
        ircer.line(),
        format!(":liner!line@{LOCAL_CLOAK} PRIVMSG #chat :hello from a")
    );
    assert_eq!(other.line(), "MSG #Chat <liner> hello from a");
    liner.send("/me waves");
    assert_eq!(
        ircer.line(),
        format!(":liner!line@{LOCAL_CLOAK} PRIVMSG #chat :\u{1}ACTION waves\u{1}")
    );
    assert_eq!(other.line(), "MSG #Chat * liner waves");

    // IRC to line, to both members on the other node.
    ircer.send("PRIVMSG #chat :hello from b");
    assert_eq!(liner.line(), "MSG #Chat <ircer> hello from b");
    assert_eq!(other.line(), "MSG #Chat <ircer> hello from b");
    ircer.send("NOTICE #chat :a notice");
    assert_eq!(liner.line(), "MSG #Chat -ircer- a notice");
    assert_eq!(other.line(), "MSG #Chat -ircer- a notice");

    // Redis sends node a its own messages back: they are ignored, not delivered again. Node
    // a's subscription gets them in publish order, so if "mine" came back doubled it would
    // come before "yours".
    other.send("mine");
    assert_eq!(liner.line(), "MSG #Chat <other> mine");
    assert_eq!(
        ircer.line(),
        format!(":other!line@{LOCAL_CLOAK} PRIVMSG #chat :mine")
    );
    ircer.send("PRIVMSG #chat :yours");
    assert_eq!(liner.line(), "MSG #Chat <ircer> yours");
    assert_eq!(other.line(), "MSG #Chat <ircer> yours");
    liner.sync();
    other.sync();

    // A remote message is remembered like a local one: a later joiner on node a replays it.
    let mut late = a.join_as("late", &mut [&mut liner, &mut other]);
    late.send("/join #chat");
    late.expect_prefix("NAMES #Chat");
    assert_eq!(ircer.line(), format!(":late!line@{LOCAL_CLOAK} JOIN #chat"));
    loop {
        let replay = late.line();
        assert!(replay.starts_with("HISTORY #Chat "), "{replay}");
        if replay.ends_with(" <ircer> hello from b") {
            break;
        }
    }

    // The last local member leaves: the node unsubscribes.
    for c in [&mut liner, &mut other, &mut late] {
        c.send("/part #chat");
    }
    redis.wait_for(|r| r.subscribers("t1:room:#chat") == 1);
}

#[test]
fn joins_parts_kicks_quits_and_nick_changes_cross_nodes_each_told_once() {
    let Some(redis) = Redis::start() else {
        return;
    };
    let (a, b) = (redis.node("a", "t2:"), redis.node("b", "t2:"));
    let mut liner = a.join_as("liner", &mut []);
    let mut dual = a.join_as("dual", &mut [&mut liner]);
    for room in ["#p", "#q"] {
        liner.send(&format!("/join {room}"));
        liner.expect_prefix(&format!("NAMES {room}"));
        dual.send(&format!("/join {room}"));
        assert_eq!(liner.line(), format!("JOIN {room} dual"));
        dual.expect_prefix(&format!("NAMES {room}"));
    }
    redis.wait_for(|r| r.subscribers("t2:room:#p") == 1 && r.subscribers("t2:room:#q") == 1);
    let mut ircer = register(&b, "ircer");
    ircer.send("JOIN #p,#q");
    for room in ["#p", "#q"] {
        assert_eq!(liner.line(), format!("JOIN {room} ircer"));
        assert_eq!(dual.line(), format!("JOIN {room} ircer"));
    }
    ircer.expect_prefix(":pollchat 366 ircer #q");
    redis.wait_for(|r| r.subscribers("t2:room:#p") == 2 && r.subscribers("t2:room:#q") == 2);

    // A part, with its reason, in IRC's terms on node b.
    liner.send("/part #q see you");
    assert_eq!(
        ircer.line(),
        format!(":liner!line@{LOCAL_CLOAK} PART #q :see you")
    );
    assert_eq!(dual.line(), "PART #q liner see you");
    // A kick (liner created #p, so operates it) is a kick on the other node too.
    liner.send("/kick #p dual enough");
    assert_eq!(liner.expect_prefix("KICK #p"), "KICK #p dual liner enough");
    assert_eq!(
        ircer.line(),
        format!(":liner!line@{LOCAL_CLOAK} KICK #p dual :enough")
    );
    dual.send("/join #p");
    assert_eq!(ircer.line(), format!(":dual!line@{LOCAL_CLOAK} JOIN #p"));

    // dual shares #p and #q with ircer: its quit is published on both channels, and node b
    // tells ircer once. Node a publishes in order, so a second QUIT would come before "after".
    dual.send("/quit off now");
    assert_eq!(
        ircer.line(),
        format!(":dual!line@{LOCAL_CLOAK} QUIT :quit: off now")
    );
    liner.expect_prefix("QUIT dual");
    liner.send("after");
    assert_eq!(
        ircer.line(),
        format!(":liner!line@{LOCAL_CLOAK} PRIVMSG #p :after")
    );

    // A nick change in two shared rooms (#p, #r) is told once, too.
    redis.line_join(&mut liner, "t2:", "#r", 1);
    ircer.send("JOIN #r");
    ircer.expect_prefix(":pollchat 366 ircer #r");
    assert_eq!(liner.line(), "JOIN #r ircer");
    redis.wait_for(|r| r.subscribers("t2:room:#r") == 2);
    ircer.send("NICK irc2");
    assert_eq!(
        ircer.line(),
        format!(":ircer!ircer@{LOCAL_CLOAK} NICK :irc2")
    );
    assert_eq!(liner.line(), "NICK ircer irc2");
    ircer.send("PRIVMSG #p :renamed");
    assert_eq!(liner.line(), "MSG #p <irc2> renamed");

    // And the other way: an IRC user's quit reaches the line user on node a.
    ircer.send("QUIT :bye");
    assert_eq!(ircer.expect_closed(), ["ERROR :Closing link: (quit: bye)"]);
    assert_eq!(liner.line(), "QUIT irc2 quit: bye");
    liner.sync();
}

#[test]
fn nodes_keep_serving_their_users_while_redis_is_down_and_chat_across_again_after() {
    let Some(mut redis) = Redis::start() else {
        return;
    };
    let (a, b) = (redis.node("a", "t3:"), redis.node("b", "t3:"));
    let mut x = a.join_as("x", &mut []);
    let mut x2 = a.join_as("x2", &mut [&mut x]);
    redis.wait_for(|r| r.subscribers("t3:room:#lobby") == 1);
    let mut y = b.join_as("y", &mut []);
    // Its join and its nick change cross.
    for c in [&mut x, &mut x2] {
        // (Node b is the second node of this cluster to start: its guests are guest2-N.)
        assert_eq!(c.line(), "JOIN #lobby guest2-1");
        assert_eq!(c.line(), "NICK guest2-1 y");
    }
    redis.wait_for(|r| r.subscribers("t3:room:#lobby") == 2);
    x.send("before");
    assert_eq!(y.line(), "MSG #lobby <x> before");
    assert_eq!(x2.line(), "MSG #lobby <x> before");

    // Redis dies (SIGKILL): every user is told, and each node goes on serving its own.
    let down = "NOTICE the link to the other servers of the cluster is down: messages reach \
                this server's users only until it is back";
    // ("here": what the other nodes' users said meanwhile is caught up from the streams.)
    let back = "NOTICE the link to the other servers of the cluster is back: messages reach \
                them again (what was said here meanwhile did not)";
    let mut w = register(&b, "w");
    let irc = |what: &str| {
        format!(":pollchat NOTICE w :*** The link to the other servers of the cluster {what}")
    };
    redis.restart_after(|| {
        for c in [&mut x, &mut x2, &mut y] {
            assert_eq!(c.line(), down);
        }
        assert_eq!(
            w.line(),
            irc("is down: messages reach this server's users only until it is back")
        );
        x.send("local only");
        assert_eq!(x2.line(), "MSG #lobby <x> local only");
        // A new nick needs the cluster: refused at once, saying why.
        x.send("/nick zed");
        assert_eq!(
            x.line(),
            "ERROR cluster-down cluster link down: the nick zed cannot be claimed now, try \
             again later"
        );
        w.send("NICK zed");
        assert_eq!(
            w.line(),
            ":pollchat 437 w zed :Nick is temporarily unavailable: cluster link down"
        );
        y.send("alone too");
        y.sync();
    });
    // The new Redis is empty: the nodes reconnect (within their backoff), say so, and
    // subscribe again.
    for c in [&mut x, &mut x2, &mut y] {
        assert_eq!(c.line(), back);
    }
    assert_eq!(
        w.line(),
        irc("is back: messages reach them again (what was said here meanwhile did not)")
    );
    redis.wait_for(|r| r.subscribers("t3:room:#lobby") == 2);
    y.send("after");
    assert_eq!(x.line(), "MSG #lobby <y> after");
    assert_eq!(x2.line(), "MSG #lobby <y> after");
    x.send("and back");
    assert_eq!(y.line(), "MSG #lobby <x> and back");
}

/// The value of `key` in Redis (`None`: no such key).
fn get(redis: &Redis, key: &str) -> Option<String> {
    match redis.command(&["GET", key]) {
        OwnedFrame::BulkString(v) => Some(String::from_utf8(v).unwrap()),
        OwnedFrame::Null => None,
        other => panic!("GET answered {other:?}"),
    }
}

/// Reads `c`'s lines until its own claim of `nick` (it was `guest`) is decided; returns whether
/// it won. The other claimant's nick change may come first (it is skipped).
fn claim_outcome(c: &mut Client, guest: &str, nick: &str) -> bool {
    loop {
        let l = c.line();
        if l == format!("NICK {guest} {nick}") {
            return true;
        }
        if l.starts_with("ERROR nick-in-use") {
            assert_eq!(
                l,
                format!("ERROR nick-in-use the nick {nick} is already taken")
            );
            return false;
        }
        assert!(l.starts_with("NICK guest"), "unexpected: {l}");
    }
}

#[test]
fn nicks_are_unique_across_nodes_and_guests_never_collide() {
    let Some(redis) = Redis::start() else {
        return;
    };
    let (a, b) = (redis.node("a", "n1:"), redis.node("b", "n1:"));
    // Guests: each node hands out its own (node a started first: incarnation 1).
    let (mut x, gx) = a.join();
    redis.wait_for(|r| r.subscribers("n1:room:#lobby") == 1);
    let (mut y, gy) = b.join();
    assert_eq!((gx.as_str(), gy.as_str()), ("guest1-1", "guest2-1"));
    assert_eq!(x.line(), format!("JOIN #lobby {gy}"));
    redis.wait_for(|r| r.subscribers("n1:room:#lobby") == 2);
    // Nobody takes a node's guest nick by hand, even one not handed out yet.
    x.send("/nick guest2-7");
    x.expect_prefix("ERROR reserved-nick");

    // Both ask for the same nick at once: exactly one wins, the other gets the usual error.
    x.send("/nick same");
    y.send("/nick same");
    let (x_won, y_won) = (
        claim_outcome(&mut x, &gx, "same"),
        claim_outcome(&mut y, &gy, "same"),
    );
    assert!(x_won != y_won, "exactly one wins (x: {x_won}, y: {y_won})");
    let ((mut winner, node), (mut loser, gl)) = if x_won {
        ((x, "a"), (y, gy))
    } else {
        ((y, "b"), (x, gx))
    };
    // (The loser's lobby hears of the winner's change, before or after its error: the
    // expect_prefix calls below skip it.)
    let value = get(&redis, "n1:nick:same").expect("the claim is in Redis");
    assert!(value.starts_with(&format!("{node}:")), "{value}");

    // Freed by a nick change on the winner's node: claimable on the other.
    winner.send("/nick other");
    winner.expect_prefix("NICK same other");
    redis.wait_for(|r| get(r, "n1:nick:same").is_none());
    loser.send("/nick same");
    loser.expect_prefix(&format!("NICK {gl} same"));
    // Freed by a quit: claimable too.
    winner.send("/quit");
    redis.wait_for(|r| get(r, "n1:nick:other").is_none());
    loser.send("/nick other");
    loser.expect_prefix("NICK same other");
    // Case-insensitive across nodes too.
    let mut z = if node == "a" { a.join().0 } else { b.join().0 };
    z.send("/nick OTHER");
    z.expect_prefix("ERROR nick-in-use");
}

#[test]
fn an_irc_registration_with_a_nick_held_on_the_other_node_gets_433() {
    let Some(redis) = Redis::start() else {
        return;
    };
    let (a, b) = (redis.node("a", "n2:"), redis.node("b", "n2:"));
    let _held = a.join_as("held", &mut []);
    let _ircer = register(&a, "ircer");
    let mut c = Client::connect(b.irc_addr.expect("IRC listener"));
    c.send("NICK Held\r");
    c.send("USER u 0 * :U\r");
    assert_eq!(c.line(), ":pollchat 433 * Held :Nickname is already in use");
    c.send("NICK ircer\r");
    assert_eq!(
        c.line(),
        ":pollchat 433 * ircer :Nickname is already in use"
    );
    c.send("NICK free\r");
    assert!(c.line().starts_with(":pollchat 001 free "));
    c.expect_prefix(":pollchat 422 ");
    assert_eq!(
        get(&redis, "n2:nick:free").unwrap().split(':').next(),
        Some("b")
    );
    // After registration, NICK is claimed too.
    c.send("NICK held\r");
    assert_eq!(
        c.line(),
        ":pollchat 433 free held :Nickname is already in use"
    );
    c.send("NICK freer\r");
    assert_eq!(c.line(), format!(":free!u@{LOCAL_CLOAK} NICK :freer"));
    redis.wait_for(|r| get(r, "n2:nick:free").is_none());
    c.send("QUIT\r");
    c.expect_closed();
    redis.wait_for(|r| get(r, "n2:nick:freer").is_none());
}

#[test]
fn private_messages_go_to_the_node_holding_the_nick() {
    let Some(redis) = Redis::start() else {
        return;
    };
    let (a, b) = (redis.node("a", "n3:"), redis.node("b", "n3:"));
    let mut x = a.join_as("x", &mut []);
    redis.wait_for(|r| r.subscribers("n3:room:#lobby") == 1);
    // (x hears of y's arrival and nick change in #lobby.)
    let mut y = b.join_as("y", &mut [&mut x]);
    let mut ircer = register(&b, "ircer");
    // Each node subscribes to its users' nicks (the guest nicks were let go).
    redis.wait_for(|r| {
        ["n3:user:x", "n3:user:y", "n3:user:ircer"]
            .iter()
            .all(|c| r.subscribers(c) == 1)
            && r.subscribers("n3:user:guest1-1") == 0
    });
    x.send("/msg Y psst");
    assert_eq!(y.line(), "PRIV <x> psst");
    x.send("/msg ircer hello irc");
    assert_eq!(
        ircer.line(),
        format!(":x!line@{LOCAL_CLOAK} PRIVMSG ircer :hello irc")
    );
    ircer.send("PRIVMSG x :back at you");
    assert_eq!(x.line(), "PRIV <ircer> back at you");
    // Nobody holds it on any node: told as on one node.
    x.send("/msg nobody hi");
    assert_eq!(x.line(), "ERROR no-such-nick no user is called nobody");
    // A nick changed on node b: its new channel is b's.
    y.send("/nick yy");
    y.expect_prefix("NICK y yy");
    redis.wait_for(|r| r.subscribers("n3:user:yy") == 1 && r.subscribers("n3:user:y") == 0);
    x.send("/msg yy again");
    assert_eq!(y.line(), "PRIV <x> again");
}

#[test]
fn a_node_that_stops_gracefully_tells_the_others_its_users_quit() {
    let Some(redis) = Redis::start() else {
        return;
    };
    let (a, b) = (redis.node("a", "t4:"), redis.node("b", "t4:"));
    let _x = a.join_as("x", &mut []);
    redis.wait_for(|r| r.subscribers("t4:room:#lobby") == 1);
    let mut y = b.join_as("y", &mut []);
    redis.wait_for(|r| r.subscribers("t4:room:#lobby") == 2);
    a.stop().unwrap();
    assert_eq!(y.line(), "QUIT x server shutting down");
    y.sync();
}

#[test]
fn a_tagmsg_to_a_room_reaches_message_tags_clients_on_the_other_node_only() {
    let Some(redis) = Redis::start() else {
        return;
    };
    let (a, b) = (redis.node("a", "t5:"), redis.node("b", "t5:"));
    let mut typist = register_with(&a, "typist", "message-tags");
    typist.send("JOIN #t");
    typist.expect_prefix(":pollchat 366 typist #t");
    redis.wait_for(|r| r.subscribers("t5:room:#t") == 1);
    let mut tagged = register_with(&b, "tagged", "message-tags");
    let mut plain = register(&b, "plain");
    for c in [&mut tagged, &mut plain] {
        c.send("JOIN #t");
    }
    tagged.expect_prefix(":pollchat 366 tagged #t");
    plain.expect_prefix(":pollchat 366 plain #t");
    for who in ["tagged", "plain"] {
        assert!(typist.line().ends_with(" JOIN #t"), "{who}");
    }
    redis.wait_for(|r| r.subscribers("t5:room:#t") == 2);
    typist.send("@+typing=active TAGMSG #t");
    typist.send("PRIVMSG #t :done typing");
    // Each line is a whole message, with the msgid its sender's node gave it.
    let got = tagged.expect_prefix("@");
    let tags = got.split(' ').next().unwrap();
    assert!(tags.starts_with("@msgid="), "{got}");
    assert!(tags.ends_with(";+typing=active"), "{got}");
    assert!(
        got.ends_with(&format!(" :typist!typist@{LOCAL_CLOAK} TAGMSG #t")),
        "{got}"
    );
    assert!(tagged.line().ends_with(" PRIVMSG #t :done typing"));
    // A client without message-tags gets the message and nothing of the TAGMSG.
    assert_eq!(
        plain.line(),
        format!(":typist!typist@{LOCAL_CLOAK} PRIVMSG #t :done typing")
    );
}

#[test]
fn clusters_with_different_prefixes_do_not_hear_each_other() {
    let Some(redis) = Redis::start() else {
        return;
    };
    let (a, b) = (redis.node("a", "one:"), redis.node("b", "two:"));
    let mut x = a.join_as("x", &mut []);
    let mut y = b.join_as("y", &mut []);
    redis.wait_for(|r| {
        r.subscribers("one:room:#lobby") == 1 && r.subscribers("two:room:#lobby") == 1
    });
    x.send("only for cluster one");
    y.send("only for cluster two");
    // Each node's lobby has its one user: neither hears the other cluster (nothing before the
    // sync's answer).
    x.sync();
    y.sync();
}

#[test]
fn the_threaded_models_refuse_a_backplane() {
    for io in [IoModel::Threads, IoModel::ThreadsDirect] {
        let config = pollchat::config::Config {
            listen: vec!["127.0.0.1:0".parse().unwrap()],
            irc_listen: vec![],
            backplane: Some(BackplaneConfig {
                addr: "127.0.0.1:1".into(),
                node: "n".into(),
                prefix: "p:".into(),
                max_queue: BackplaneConfig::MAX_QUEUE,
                password: None,
            }),
            ..Default::default()
        };
        let e = match pollchat::driver::spawn(io, config) {
            Ok(_) => panic!("--io {io} accepted --backplane"),
            Err(e) => e.to_string(),
        };
        assert!(e.contains("--backplane needs --io poll"), "{e}");
    }
}

/// Runs `pollchat serve` with `args` and expects it to stop at start: its status and the lines
/// it logged.
fn failed_start(args: &[&str]) -> (ExitStatus, Vec<String>) {
    let mut child = Command::new(BIN)
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--irc-listen",
            "127.0.0.1:0",
        ])
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn pollchat");
    let deadline = Instant::now() + TIMEOUT;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("pollchat serve {args:?} did not stop");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let mut log = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut log)
        .unwrap();
    (status, log.lines().map(String::from).collect())
}

/// One error line naming the problem, and a failure status.
fn assert_one_error(args: &[&str], expected: &str) {
    let (status, lines) = failed_start(args);
    assert!(!status.success(), "{args:?} started");
    let errors: Vec<&String> = lines.iter().filter(|l| l.contains("ERROR")).collect();
    assert_eq!(errors.len(), 1, "{lines:?}");
    assert!(errors[0].contains(expected), "{lines:?}");
    assert!(
        !lines.iter().any(|l| l.contains("listening on")),
        "{lines:?}"
    );
}

#[test]
fn a_bad_backplane_url_or_an_unreachable_redis_stops_the_start_with_one_line() {
    assert_one_error(
        &["--backplane", "http://127.0.0.1:6379"],
        "is not a redis://HOST:PORT URL",
    );
    assert_one_error(&["--backplane", "redis://127.0.0.1:99999"], "is not a port");
    let port = free_port().to_string();
    let url = format!("redis://127.0.0.1:{port}");
    assert_one_error(
        &["--backplane", &url],
        &format!("cannot use Redis at 127.0.0.1:{port}"),
    );
    assert_one_error(
        &["--io", "threads", "--backplane", &url],
        "--backplane needs --io poll",
    );
    assert_one_error(&["--backplane", &url, "--node", "two words"], "--node");
}

#[test]
fn reuse_port_lets_two_servers_share_one_address() {
    let first = TestServer::with(|c| c.reuse_port = true);
    let addr = first.addr;
    let second = TestServer::with(|c| {
        c.reuse_port = true;
        c.listen = vec![addr];
    });
    assert_eq!(second.addr, addr);
    // Whichever server the kernel picks, a client is welcomed.
    for _ in 0..4 {
        first.join();
    }
}

/// A `pollchat serve` process; killed on drop.
struct Node(Child);

impl Node {
    /// `pollchat serve --reuse-port` on `port`, a node of `redis`'s cluster; returns once it
    /// listens. Its log is drained on a thread (a full pipe would stall it).
    fn spawn(redis: &Redis, port: u16, name: &str) -> Node {
        use std::io::BufRead;
        let listen = format!("127.0.0.1:{port}");
        let url = format!("redis://{}", redis.addr());
        let mut child = Command::new(BIN)
            .args(["serve", "--reuse-port", "--listen", &listen])
            .args(["--irc-listen", "127.0.0.1:0", "--max-connects-per-ip", "0"])
            .args(["--backplane", &url, "--node", name])
            .args(["--cloak-key", common::CLOAK_KEY])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn pollchat");
        let stderr = std::io::BufReader::new(child.stderr.take().unwrap());
        // Killed and reaped by its drop from here on, even if the start fails the test.
        let node = Node(child);
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in stderr.lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        loop {
            let line = rx.recv_timeout(TIMEOUT).expect("pollchat serve started");
            if line.contains("listening on ") {
                return node;
            }
        }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The README's recipe: two processes with --reuse-port on one port and one Redis are one
/// chat, whichever process the kernel gives each client to.
#[test]
fn two_processes_sharing_one_port_are_one_chat() {
    let Some(redis) = Redis::start() else {
        return;
    };
    let port = free_port();
    let _nodes = [
        Node::spawn(&redis, port, "one"),
        Node::spawn(&redis, port, "two"),
    ];
    let addr = format!("127.0.0.1:{port}").parse().unwrap();
    // Clients until both processes have some (each subscribes to the lobby then): the kernel
    // spreads connections by a hash, so a handful is enough; 64 bounds the loop.
    let mut clients = Vec::new();
    while redis.subscribers("pollchat:room:#lobby") < 2 {
        assert!(clients.len() < 64, "every client went to one process");
        let mut c = Client::connect(addr);
        c.expect_prefix("NAMES #lobby");
        // (A node writes its SUBSCRIBE before its greeting, so Redis counts it by now, or
        // at worst one client later.)
        clients.push(c);
    }
    let (first, rest) = clients.split_first_mut().unwrap();
    first.send("hi all");
    for c in rest {
        loop {
            let l = c.line();
            if l.ends_with("> hi all") {
                break;
            }
        }
    }
}

#[test]
fn a_password_protected_redis_takes_the_password_file_and_refuses_a_wrong_one() {
    if Redis::start().is_none() {
        return;
    }
    let redis = Redis::spawn_free(&["--requirepass", "s3cret pass"]);
    let dir = std::env::temp_dir().join(format!("pollchat-bp-pass-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (good, bad, empty) = (dir.join("good"), dir.join("bad"), dir.join("empty"));
    std::fs::write(&good, "s3cret pass\n").unwrap();
    std::fs::write(&bad, "guess\n").unwrap();
    std::fs::write(&empty, "").unwrap();
    let url = format!("redis://{}", redis.addr());

    // The right password: the node starts (in-process, as the tests' nodes do; a start
    // whose AUTH fails is an error, below).
    let password = pollchat::backplane::read_password_file(&good).unwrap();
    let bp = BackplaneConfig {
        addr: redis.addr(),
        node: "n".into(),
        prefix: "pw:".into(),
        max_queue: BackplaneConfig::MAX_QUEUE,
        password: Some(password),
    };
    assert!(!format!("{bp:?}").contains("s3cret"), "{{:?}} hides it");
    let node = TestServer::with(|c| c.backplane = Some(bp));
    let _user = node.join();

    // A wrong, missing or empty file stops the start with one line.
    let arg = |p: &std::path::Path| p.to_str().unwrap().to_string();
    for (file, expected) in [
        (arg(&bad), "cannot use Redis at"),
        (arg(&dir.join("missing")), "--backplane-password-file"),
        (arg(&empty), "the first line is empty"),
    ] {
        assert_one_error(
            &["--backplane", &url, "--backplane-password-file", &file],
            expected,
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// In a cluster the IRC registration
/// waits for the nick's claim; lines a client pipelines after NICK/USER (JOIN, PRIVMSG: what
/// bots commonly do) wait for it too (the loop holds the client's input meanwhile) instead of
/// getting 451, as a single node would run them at once.
#[test]
fn lines_pipelined_after_registration_are_not_lost_to_the_nick_claim() {
    let Some(redis) = Redis::start() else {
        return;
    };
    let a = redis.node("a", "n9:");
    let mut c = Client::connect(a.irc_addr.expect("IRC listener"));
    c.send_raw(b"NICK piper\r\nUSER u 0 * :U\r\nJOIN #pipe\r\n");
    assert!(c.line().starts_with(":pollchat 001 piper "), "no 451 first");
    c.expect_prefix(":pollchat 422 ");
    assert_eq!(c.line(), format!(":piper!u@{LOCAL_CLOAK} JOIN #pipe"));
}

/// What Redis delivers is checked like a client's line: a message longer than any line this
/// node accepts (published by something else than a node) is not relayed; one within is.
#[test]
fn a_remote_message_longer_than_a_line_is_not_relayed() {
    let Some(redis) = Redis::start() else {
        return;
    };
    let a = redis.node("a", "n10:");
    let mut x = a.join_as("x", &mut []);
    redis.wait_for(|r| r.subscribers("n10:room:#lobby") == 1);
    let envelope = |text: &str| {
        let parts = [
            "pollchat/1",
            "evil",
            "1",
            "msg",
            "#lobby",
            "normal",
            "bob",
            "u",
            "h",
            "B",
            "",
            text,
        ];
        let mut out = Vec::new();
        pollchat::backplane::envelope::encode_array(&mut out, &parts.map(str::as_bytes));
        String::from_utf8(out).unwrap()
    };
    redis.command(&[
        "PUBLISH",
        "n10:room:#lobby",
        &envelope(&"T".repeat(100_000)),
    ]);
    redis.command(&["PUBLISH", "n10:room:#lobby", &envelope("short")]);
    assert_eq!(x.line(), "MSG #lobby <bob> short");
}
