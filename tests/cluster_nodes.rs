//! Nodes alive and dead (`backplane::nodes`): a node killed with SIGKILL is found dead by the
//! others and its users announced as quitting once; a node restarted under the same name
//! cleans up after its earlier incarnation at once; after Redis comes back empty the nodes
//! claim their users' nicks again, and a user whose nick was taken meanwhile becomes a guest.
//!
//! A real `redis-server` on a free port (skipped with a notice without one on PATH, as in
//! tests/cluster.rs); nodes are `pollchat serve` processes where they must die or stop, and
//! in-process servers otherwise. Every wait has a deadline and waits for a condition.

mod common;

use std::process::{Child, Command, Stdio};
use std::time::Instant;

use common::redis::{Redis, free_port, register};
use common::{Client, LOCAL_CLOAK, TIMEOUT};
use redis_protocol::resp2::types::OwnedFrame;

const BIN: &str = env!("CARGO_BIN_EXE_pollchat");

/// A `pollchat serve` process, a node of `redis`'s cluster (default prefix `pollchat:`);
/// killed on drop.
struct Node {
    child: Child,
    addr: std::net::SocketAddr,
    /// Its log lines after the one saying it listens.
    log: std::sync::mpsc::Receiver<String>,
}

impl Node {
    /// Starts node `name` on a free port; returns once it listens (its log is drained on a
    /// thread: a full pipe would stall it).
    fn spawn(redis: &Redis, name: &str) -> Node {
        use std::io::BufRead;
        let port = free_port();
        let listen = format!("127.0.0.1:{port}");
        let url = format!("redis://{}", redis.addr());
        let mut child = Command::new(BIN)
            .args(["serve", "--listen", &listen, "--irc-listen", "127.0.0.1:0"])
            .args(["--max-connects-per-ip", "0"])
            .args(["--backplane", &url, "--node", name])
            .args(["--cloak-key", common::CLOAK_KEY])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn pollchat");
        let stderr = std::io::BufReader::new(child.stderr.take().unwrap());
        let (tx, rx) = std::sync::mpsc::channel();
        let node = Node {
            child,
            addr: listen.parse().unwrap(),
            log: rx,
        };
        std::thread::spawn(move || {
            for line in stderr.lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let mut log = Vec::new();
        loop {
            let Ok(line) = node.log.recv_timeout(TIMEOUT) else {
                panic!("pollchat serve --node {name} did not start: {log:#?}");
            };
            if line.contains("listening on ") {
                return node;
            }
            log.push(line);
        }
    }

    /// A line client that took `nick` and joined `room`.
    fn user(&self, nick: &str, room: &str) -> Client {
        let mut c = Client::connect(self.addr);
        let welcome = c.line();
        assert!(welcome.starts_with("WELCOME guest"), "{welcome}");
        c.expect_prefix("NAMES #lobby");
        c.send(&format!("/nick {nick}"));
        c.expect_prefix("NICK guest");
        c.send(&format!("/join {room}"));
        c.expect_prefix(&format!("NAMES {room}"));
        c
    }

    /// Its next log line containing `needle` (within the timeout).
    fn expect_log(&self, needle: &str) -> String {
        loop {
            let line = (self.log.recv_timeout(TIMEOUT))
                .unwrap_or_else(|_| panic!("no log line with {needle:?}"));
            if line.contains(needle) {
                return line;
            }
        }
    }

    /// SIGKILL, and wait until it is gone.
    fn kill(&mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A string reply (`None`: nil).
fn text(frame: OwnedFrame) -> Option<String> {
    match frame {
        OwnedFrame::BulkString(v) => Some(String::from_utf8(v).unwrap()),
        OwnedFrame::Null => None,
        other => panic!("unexpected reply {other:?}"),
    }
}

fn get(redis: &Redis, key: &str) -> Option<String> {
    text(redis.command(&["GET", key]))
}

fn hget(redis: &Redis, key: &str, field: &str) -> Option<String> {
    text(redis.command(&["HGET", key, field]))
}

/// The incarnation the registry gives node `name` (waits for it to be registered).
fn incarnation(redis: &Redis, name: &str) -> String {
    let deadline = Instant::now() + TIMEOUT;
    loop {
        if let OwnedFrame::Array(parts) = redis.command(&["HGETALL", "pollchat:nodes"]) {
            let parts: Vec<Option<String>> = parts.into_iter().map(text).collect();
            for pair in parts.chunks(2) {
                if pair[1].as_deref() == Some(name) {
                    return pair[0].clone().unwrap();
                }
            }
        }
        assert!(Instant::now() < deadline, "{name} never registered");
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
}

/// `c`'s lines up to `line`, which must come within the timeout; no line before it may be a
/// QUIT of `nick`.
fn expect_line(c: &mut Client, line: &str) {
    loop {
        let l = c.line();
        if l == line {
            return;
        }
        assert!(
            !l.starts_with(&format!("QUIT {}", line.split(' ').nth(1).unwrap())),
            "{l}"
        );
    }
}

#[test]
fn a_node_killed_with_sigkill_is_found_dead_and_its_users_quit_once_everywhere() {
    let Some(redis) = Redis::start() else {
        return;
    };
    // Two survivors, in this process, each with a member of #r.
    let (a, b) = (redis.node("a", "pollchat:"), redis.node("b", "pollchat:"));
    let mut x = a.join_as("x", &mut []);
    x.send("/join #r");
    x.expect_prefix("NAMES #r");
    let mut y = b.join_as("y", &mut []);
    y.send("/join #r");
    y.expect_prefix("NAMES #r");
    assert_eq!(x.expect_prefix("JOIN #r"), "JOIN #r y");
    redis.wait_for(|r| r.subscribers("pollchat:room:#r") == 2);

    // The node that dies: a process, with a user in #r and in a room of its own.
    let mut doomed = Node::spawn(&redis, "doomed");
    let mut v = doomed.user("victim", "#r");
    v.send("/join #alone");
    v.expect_prefix("NAMES #alone");
    for c in [&mut x, &mut y] {
        c.expect_prefix("JOIN #r victim");
    }
    let inc = incarnation(&redis, "doomed");
    let users = format!("pollchat:users:{inc}");
    // Its registry entry knows the user, its nick key's value and its rooms.
    redis.wait_for(|r| {
        hget(r, &users, "victim").is_some_and(|rec| {
            rec.ends_with(&format!(" victim!line@{LOCAL_CLOAK} #lobby #r #alone"))
        })
    });
    let value = get(&redis, "pollchat:nick:victim").expect("the nick is claimed");
    assert!(value.starts_with(&format!("doomed:{inc}:")), "{value}");
    assert!(
        hget(&redis, &users, "victim")
            .unwrap()
            .starts_with(&format!("{value} "))
    );

    let killed = Instant::now();
    doomed.kill();
    drop(v);
    // Each survivor's user is told once (one of the survivors cleans up, and both hand the
    // quit to their members), within the heartbeat window (the client's timeout).
    for c in [&mut x, &mut y] {
        expect_line(c, "QUIT victim node lost");
    }
    eprintln!("found dead after {:?}", killed.elapsed());
    // Nothing else: every copy was published (by one script) before either user saw the
    // first, so a second QUIT would come before what each says now.
    x.send("still here");
    assert_eq!(y.line(), "MSG #r <x> still here");
    y.send("me too");
    assert_eq!(x.line(), "MSG #r <y> me too");

    // Its keys are gone, and its nick is free for anyone.
    redis.wait_for(|r| {
        get(r, "pollchat:nick:victim").is_none()
            && hget(r, "pollchat:nodes", &inc).is_none()
            && matches!(r.command(&["EXISTS", &users]), OwnedFrame::Integer(0))
    });
    y.send("/nick victim");
    assert_eq!(y.expect_prefix("NICK y"), "NICK y victim");
}

#[test]
fn a_node_restarted_with_the_same_name_cleans_up_its_old_incarnation_at_once() {
    let Some(redis) = Redis::start() else {
        return;
    };
    let a = redis.node("a", "pollchat:");
    let mut x = a.join_as("x", &mut []);
    redis.line_join(&mut x, "pollchat:", "#r", 1);

    let mut first = Node::spawn(&redis, "phoenix");
    let _bird = first.user("bird", "#r");
    x.expect_prefix("JOIN #r bird");
    let old = incarnation(&redis, "phoenix");
    redis.wait_for(|r| hget(r, &format!("pollchat:users:{old}"), "bird").is_some());
    first.kill();
    // Its heartbeat made to last (as if it had died a moment ago): only a node that knows
    // the incarnation is its own earlier one may take it for dead now.
    let beat = format!("pollchat:node:{old}");
    redis.command(&["SET", &beat, "phoenix", "PX", "600000"]);

    let again = Node::spawn(&redis, "phoenix");
    expect_line(&mut x, "QUIT bird node lost");
    // The beating incarnation is logged, saying both what is harmless (a restart right after
    // a crash, as here) and what is not (two live processes sharing the name).
    let warning = again.expect_log("still had a heartbeat");
    assert!(
        warning.contains("a restart after a crash or kill -9: nothing to do")
            && warning.contains("the two do not hear each other"),
        "{warning}"
    );
    redis.wait_for(|r| {
        get(r, "pollchat:nick:bird").is_none()
            && hget(r, "pollchat:nodes", &old).is_none()
            && matches!(
                r.command(&["EXISTS", &format!("pollchat:users:{old}")]),
                OwnedFrame::Integer(0)
            )
    });
    // The new incarnation is registered, beating.
    let new = incarnation(&redis, "phoenix");
    assert_ne!(new, old);
    assert_eq!(
        get(&redis, &format!("pollchat:node:{new}")).as_deref(),
        Some("phoenix")
    );
    x.send("/nick bird");
    assert_eq!(x.expect_prefix("NICK x"), "NICK x bird");
}

#[test]
fn after_redis_returns_empty_users_keep_their_nicks_and_one_taken_meanwhile_makes_a_guest() {
    let Some(mut redis) = Redis::start() else {
        return;
    };
    let prefix = "r1:";
    let (a, b) = (redis.node("a", prefix), redis.node("b", prefix));
    let mut keep = a.join_as("keep", &mut []);
    let mut lose = a.join_as("lose", &mut [&mut keep]);
    redis.wait_for(|r| r.subscribers("r1:room:#lobby") == 1);
    let mut y = b.join_as("y", &mut []);
    for c in [&mut keep, &mut lose] {
        c.expect_prefix("NICK guest2-1 y");
    }
    redis.wait_for(|r| r.subscribers("r1:room:#lobby") == 2);
    // An IRC user loses its nick too.
    let mut ircl = register(&a, "ircl");
    let kept = get(&redis, "r1:nick:keep").expect("claimed");
    let held_by_y = get(&redis, "r1:nick:y").expect("claimed");

    // What "another node took lose meanwhile" leaves in Redis: a snapshot the new Redis
    // loads before it accepts anyone (so no node can claim first).
    let dir = std::env::temp_dir().join(format!("pollchat-nodes-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let dir_s = dir.to_str().unwrap().to_string();
    {
        let scratch = Redis::spawn_free(&["--dir", &dir_s, "--dbfilename", "taken.rdb"]);
        scratch.command(&["SET", "r1:nick:lose", "elsewhere:99:1:1"]);
        scratch.command(&["SET", "r1:nick:ircl", "elsewhere:99:2:1"]);
        assert_eq!(
            scratch.command(&["SAVE"]),
            OwnedFrame::SimpleString("OK".into())
        );
    }
    redis.child.kill().unwrap();
    redis.child.wait().unwrap();
    for c in [&mut keep, &mut lose, &mut y] {
        c.expect_prefix("NOTICE the link to the other servers of the cluster is down");
    }
    redis = Redis::spawn(redis.port, &["--dir", &dir_s, "--dbfilename", "taken.rdb"]);

    // The nodes come back: the nicks they still hold are theirs again, with the same values.
    redis.wait_for(|r| {
        get(r, "r1:nick:keep").as_ref() == Some(&kept)
            && get(r, "r1:nick:y").as_ref() == Some(&held_by_y)
    });
    // The loser becomes a guest of its node, told why; its rooms see a nick change.
    let renamed = lose.expect_prefix("NICK lose ");
    let guest = renamed.strip_prefix("NICK lose ").unwrap().to_string();
    assert!(guest.starts_with("guest1-"), "{renamed}");
    assert_eq!(
        lose.line(),
        format!(
            "NOTICE your nick lose was taken on another server of the cluster while the link \
             to it was down: you are {guest} now"
        )
    );
    let renamed_irc = ircl.expect_prefix(&format!(":ircl!ircl@{LOCAL_CLOAK} NICK :"));
    let irc_guest = renamed_irc.rsplit(':').next().unwrap().to_string();
    assert!(irc_guest.starts_with("guest1-"), "{renamed_irc}");
    assert_eq!(
        ircl.line(),
        format!(
            ":pollchat NOTICE {irc_guest} :*** Your nick ircl was taken on another server of \
             the cluster while the link to it was down: you are {irc_guest} now"
        )
    );
    assert_eq!(keep.expect_prefix("NICK lose"), renamed);
    // (Node b's users see it too if node b has subscribed again by then: the nodes come back
    // each after its own backoff, and pub/sub keeps nothing for a node not yet there.)
    assert_eq!(
        get(&redis, "r1:nick:lose").as_deref(),
        Some("elsewhere:99:1:1")
    );
    // The registry has both nodes again, and node a's users under their nicks now; a new
    // node gets a new incarnation (the counter came back too).
    redis.wait_for(|r| {
        hget(r, "r1:nodes", "1").as_deref() == Some("a")
            && hget(r, "r1:nodes", "2").as_deref() == Some("b")
            && hget(r, "r1:users:1", &guest).is_some()
            && hget(r, "r1:users:1", "keep").is_some()
            && hget(r, "r1:users:1", "lose").is_none()
    });
    let c = redis.node("c", prefix);
    let (_z, gz) = c.join();
    assert_eq!(gz, "guest3-1");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_node_taken_for_dead_while_stopped_comes_back_its_users_rejoin_and_a_lost_nick_makes_a_guest() {
    let Some(redis) = Redis::start() else {
        return;
    };
    let a = redis.node("a", "pollchat:");
    let mut x = a.join_as("x", &mut []);
    redis.line_join(&mut x, "pollchat:", "#r", 1);
    let sleepy = Node::spawn(&redis, "sleepy");
    let mut s = sleepy.user("sleeper", "#r");
    x.expect_prefix("JOIN #r sleeper");
    let inc = incarnation(&redis, "sleepy");
    redis.wait_for(|r| hget(r, &format!("pollchat:users:{inc}"), "sleeper").is_some());

    // Stopped (SIGSTOP) past its heartbeat: node a takes it for dead, tells x its user quit,
    // and frees the nick, which x takes.
    let pid = sleepy.child.id() as libc::pid_t;
    // SAFETY: signalling a child process of ours.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGSTOP) }, 0);
    expect_line(&mut x, "QUIT sleeper node lost");
    redis.wait_for(|r| get(r, "pollchat:nick:sleeper").is_none());
    x.send("/nick sleeper");
    assert_eq!(x.expect_prefix("NICK x"), "NICK x sleeper");

    // It goes on: its heartbeat finds it out of the registry; it registers again, its user
    // lost its nick (a guest now, told), and its joins are published again, under the guest
    // nick (no nick change of a user the others took for gone).
    // SAFETY: as above.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGCONT) }, 0);
    // (Its own quit, published by node a, is not told on its node: it is still there.)
    let renamed = loop {
        let l = s.line();
        assert!(!l.starts_with("QUIT sleeper"), "{l}");
        if l.starts_with("NICK sleeper ") {
            break l;
        }
    };
    let guest = renamed.strip_prefix("NICK sleeper ").unwrap().to_string();
    assert_eq!(guest, format!("guest{inc}-2"));
    assert_eq!(
        s.line(),
        format!(
            "NOTICE your nick sleeper was taken on another server of the cluster while the \
             link to it was down: you are {guest} now"
        )
    );
    let mut joins = vec![x.line(), x.line()];
    joins.sort();
    assert_eq!(
        joins,
        [format!("JOIN #lobby {guest}"), format!("JOIN #r {guest}")]
    );
    redis.wait_for(|r| {
        hget(r, "pollchat:nodes", &inc).as_deref() == Some("sleepy")
            && hget(r, &format!("pollchat:users:{inc}"), &guest).is_some()
            && get(r, &format!("pollchat:node:{inc}")).as_deref() == Some("sleepy")
    });
    // And they chat again.
    s.send("/join #r");
    s.send("back");
    assert_eq!(x.line(), format!("MSG #r <{guest}> back"));
}

/// The clean-up after a dead node goes in batches (250 users: three), announces each user's
/// quit once, and deletes only what is still the dead node's: a nick key someone else holds
/// now, another node's member entry, the state of a room that still has members stay.
#[test]
fn a_dead_nodes_users_are_cleaned_up_in_batches_and_only_what_is_still_theirs() {
    let Some(redis) = Redis::start() else {
        return;
    };
    let a = redis.node("a", "pollchat:");
    let mut x = a.join_as("x", &mut []);
    redis.line_join(&mut x, "pollchat:", "#r", 1);

    // What a dead node "ghost" (incarnation 99, no heartbeat) left in Redis.
    let users = 250;
    for i in 0..users {
        let rooms = if i == 2 { "#r #solo" } else { "#r" };
        let value = format!("ghost:99:{i}:0");
        let record = format!("{value} g{i}!u@h.ip {rooms}");
        redis.command(&["HSET", "pollchat:users:99", &format!("g{i}"), &record]);
        redis.command(&["SET", &format!("pollchat:nick:g{i}"), &value]);
    }
    // g0's nick was taken over by someone else since.
    redis.command(&["SET", "pollchat:nick:g0", "other:5:1:1"]);
    for (key, field, value) in [
        ("pollchat:members:#r", "g1", "99 g1!u@h.ip -"),
        ("pollchat:members:#r", "keeper", "5 keeper!u@h.ip @"),
        ("pollchat:members:#solo", "g2", "99 g2!u@h.ip -"),
        ("pollchat:roomstate:#r", "founded", "1"),
        ("pollchat:roomstate:#solo", "founded", "1"),
    ] {
        redis.command(&["HSET", key, field, value]);
    }
    // Registered last: node a's next search for dead nodes finds it complete.
    redis.command(&["HSET", "pollchat:nodes", "99", "ghost"]);

    let mut quits = std::collections::BTreeSet::new();
    while quits.len() < users {
        let l = x.expect_prefix("QUIT ");
        let nick = l
            .strip_prefix("QUIT ")
            .and_then(|l| l.strip_suffix(" node lost"))
            .unwrap_or_else(|| panic!("{l}"))
            .to_string();
        assert!(quits.insert(nick), "{l} told twice");
    }
    assert_eq!(quits.len(), users);
    x.sync();

    let exists = |r: &Redis, key: &str| r.command(&["EXISTS", key]) == OwnedFrame::Integer(1);
    redis
        .wait_for(|r| !exists(r, "pollchat:users:99") && hget(r, "pollchat:nodes", "99").is_none());
    assert!((1..users).all(|i| get(&redis, &format!("pollchat:nick:g{i}")).is_none()));
    assert_eq!(
        get(&redis, "pollchat:nick:g0").as_deref(),
        Some("other:5:1:1")
    );
    assert_eq!(hget(&redis, "pollchat:members:#r", "g1"), None);
    assert!(hget(&redis, "pollchat:members:#r", "keeper").is_some());
    assert!(
        exists(&redis, "pollchat:roomstate:#r"),
        "#r still has a member"
    );
    assert!(!exists(&redis, "pollchat:members:#solo"));
    assert!(!exists(&redis, "pollchat:roomstate:#solo"), "#solo emptied");
    assert_eq!(
        get(&redis, "pollchat:node:99").as_deref(),
        Some("taken for dead")
    );
}

#[test]
fn a_redis_that_may_evict_keys_or_refuses_config_is_logged_at_start() {
    let Some(plain) = Redis::start() else {
        return;
    };
    drop(plain);
    let lru = Redis::spawn_free(&["--maxmemory-policy", "allkeys-lru"]);
    let node = Node::spawn(&lru, "n");
    let warning = node.expect_log("maxmemory-policy");
    assert!(warning.contains("WARN"), "{warning}");
    assert!(
        warning.contains("maxmemory-policy is allkeys-lru, not noeviction"),
        "{warning}"
    );
    let hidden = Redis::spawn_free(&["--rename-command", "CONFIG", ""]);
    let node = Node::spawn(&hidden, "n");
    let warning = node.expect_log("maxmemory-policy");
    assert!(
        warning.contains("WARN") && warning.contains("could not check"),
        "{warning}"
    );
}

#[test]
fn a_node_stopped_gracefully_leaves_the_registry_and_nobody_has_to_find_it_dead() {
    let Some(redis) = Redis::start() else {
        return;
    };
    let (a, b) = (redis.node("a", "g1:"), redis.node("b", "g1:"));
    let _x = a.join_as("x", &mut []);
    redis.wait_for(|r| r.subscribers("g1:room:#lobby") == 1);
    let mut y = b.join_as("y", &mut []);
    redis.wait_for(|r| {
        hget(r, "g1:nodes", "1").as_deref() == Some("a")
            && hget(r, "g1:users:1", "x").is_some()
            && get(r, "g1:node:1").as_deref() == Some("a")
    });
    a.stop().unwrap();
    assert_eq!(y.line(), "QUIT x server shutting down");
    let gone = |r: &Redis, key: &str| r.command(&["EXISTS", key]) == OwnedFrame::Integer(0);
    redis.wait_for(|r| {
        hget(r, "g1:nodes", "1").is_none() && gone(r, "g1:users:1") && gone(r, "g1:node:1")
    });
    // No tombstone: it was not taken for dead, and y hears nothing more.
    y.sync();
}

/// The number of EVAL calls Redis has run (INFO commandstats).
fn evals(redis: &Redis) -> u64 {
    let OwnedFrame::BulkString(info) = redis.command(&["INFO", "commandstats"]) else {
        panic!("INFO answered something else");
    };
    let info = String::from_utf8(info).unwrap();
    info.lines()
        .find_map(|l| l.strip_prefix("cmdstat_eval:calls="))
        .and_then(|rest| rest.split(',').next())
        .map_or(0, |n| n.parse().unwrap())
}

/// Redis itself blocked past the heartbeats' time to live (a slow command): every heartbeat
/// expires at once, but no node takes another for dead, as its own heartbeat is as stale.
#[test]
fn a_redis_blocked_past_the_heartbeat_ttl_gets_nobody_taken_for_dead() {
    if Redis::start().is_none() {
        return;
    }
    let redis = Redis::spawn_free(&["--enable-debug-command", "yes"]);
    let (a, b) = (redis.node("a", "s1:"), redis.node("b", "s1:"));
    let mut x = a.join_as("x", &mut []);
    redis.wait_for(|r| r.subscribers("s1:room:#lobby") == 1);
    let mut y = b.join_as("y", &mut [&mut x]);
    redis.wait_for(|r| r.subscribers("s1:room:#lobby") == 2);
    assert_eq!(
        redis.command(&["DEBUG", "SLEEP", "6"]),
        OwnedFrame::SimpleString("OK".into())
    );
    // Each node searches for dead nodes and beats every second (two EVALs): a dozen more
    // calls after the block is every node's search at least twice.
    let after = evals(&redis);
    redis.wait_for(|r| evals(r) >= after + 12);
    for inc in ["1", "2"] {
        assert!(
            hget(&redis, "s1:nodes", inc).is_some(),
            "{inc} taken for dead"
        );
    }
    x.send("nobody left");
    assert_eq!(y.line(), "MSG #lobby <x> nobody left");
    y.send("indeed");
    assert_eq!(x.line(), "MSG #lobby <y> indeed");
}

/// A dead node whose users were in many rooms (`--max-rooms` 500, long names): a hundred of
/// its users hash's records weigh more than one reply may (2 MiB). The clean-up takes fewer
/// at a time, without losing the link to Redis (which would lose the batch: its records
/// were taken out of the hash, their nicks never freed).
#[test]
fn a_dead_node_with_users_in_many_rooms_is_cleaned_up_without_losing_the_link() {
    let Some(redis) = Redis::start() else {
        return;
    };
    let a = redis.node("a", "pollchat:");
    let mut x = a.join_as("x", &mut []);
    redis.line_join(&mut x, "pollchat:", "#r", 1);

    let users = 150;
    let rooms: Vec<String> = (0..500)
        .map(|i| format!("#a-room-with-a-rather-long-name-number-{i:05}"))
        .collect();
    let rooms = rooms.join(" ");
    for i in 0..users {
        let value = format!("ghost:97:{i}:0");
        let record = format!("{value} m{i}!u@h.ip #r {rooms}");
        redis.command(&["HSET", "pollchat:users:97", &format!("m{i}"), &record]);
        redis.command(&["SET", &format!("pollchat:nick:m{i}"), &value]);
    }
    redis.command(&["HSET", "pollchat:nodes", "97", "ghost"]);

    let mut quits = std::collections::BTreeSet::new();
    while quits.len() < users {
        let l = x.line();
        assert!(
            !l.starts_with("NOTICE the link to the other servers"),
            "{l}"
        );
        if let Some(nick) = l
            .strip_prefix("QUIT ")
            .and_then(|l| l.strip_suffix(" node lost"))
        {
            assert!(quits.insert(nick.to_string()), "{l} told twice");
        }
    }
    x.sync();
    redis.wait_for(|r| r.command(&["EXISTS", "pollchat:users:97"]) == OwnedFrame::Integer(0));
    assert!((0..users).all(|i| get(&redis, &format!("pollchat:nick:m{i}")).is_none()));
}

/// The incarnation counter overwritten by something else with what is not a number: a node
/// that registers again (here: taken out of the registry) still does, and sets the counter
/// back (the register script failed on it, and the node resynchronised every second).
#[test]
fn a_counter_that_is_not_a_number_does_not_keep_a_node_out_of_the_registry() {
    let Some(redis) = Redis::start() else {
        return;
    };
    let a = redis.node("a", "pollchat:");
    let _x = a.join_as("x", &mut []);
    let inc = incarnation(&redis, "a");
    redis.command(&["SET", "pollchat:incarnation", "not a number"]);
    redis.command(&["HDEL", "pollchat:nodes", &inc]);
    redis.wait_for(|r| hget(r, "pollchat:nodes", &inc).as_deref() == Some("a"));
    assert_eq!(get(&redis, "pollchat:incarnation"), Some(inc));
}

/// The `ROOM` lines of a line client's `/rooms`, read up to its count.
fn rooms(c: &mut Client) -> Vec<String> {
    c.send("/rooms");
    let mut all = Vec::new();
    loop {
        let l = c.line();
        if l.starts_with("NOTICE ") && (l.ends_with(" rooms") || l.ends_with(" room")) {
            return all;
        }
        if l.starts_with("ROOM ") {
            all.push(l);
        }
    }
}

#[test]
fn a_room_whose_last_member_was_on_a_dead_node_leaves_the_room_lists() {
    let Some(redis) = Redis::start() else {
        return;
    };
    let a = redis.node("a", "pollchat:");
    let mut x = a.join_as("x", &mut []);
    let mut doomed = Node::spawn(&redis, "doomed");
    let _v = doomed.user("victim", "#alone");
    // Node a has no member in #alone: it lists it from Redis's index of rooms.
    assert!(rooms(&mut x).contains(&"ROOM #alone 1".to_string()));
    doomed.kill();
    // The reaper takes its user out (and the room's state with it)…
    redis.wait_for(|r| {
        matches!(
            r.command(&["EXISTS", "pollchat:members:#alone"]),
            OwnedFrame::Integer(0)
        )
    });
    // …and the next room list anywhere forgets the room.
    let got = rooms(&mut x);
    assert!(!got.iter().any(|r| r.starts_with("ROOM #alone")), "{got:?}");
    assert_eq!(
        redis.command(&["HEXISTS", "pollchat:rooms", "#alone"]),
        OwnedFrame::Integer(0)
    );
}
