//! A `redis-server` of the tests' own (for the cluster tests), and registering on a node.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use pollchat::backplane::BackplaneConfig;
use redis_protocol::resp2::decode::decode;
use redis_protocol::resp2::types::OwnedFrame;

use super::{Client, TIMEOUT, TestServer};

/// A port nobody listens on now (the kernel's pick, released).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A `redis-server` of our own on a free loopback port, without persistence; killed on drop.
pub struct Redis {
    pub child: Child,
    pub port: u16,
}

impl Redis {
    /// `None` (with a notice) when `redis-server` is not on PATH.
    pub fn start() -> Option<Redis> {
        let found = Command::new("redis-server")
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !found {
            eprintln!("SKIPPED: redis-server is not on PATH (.ci/run installs it)");
            return None;
        }
        Some(Redis::spawn_free(&[]))
    }

    /// A `redis-server` on `port`, answering.
    pub fn on(port: u16) -> Redis {
        Redis::spawn(port, &[])
    }

    /// A `redis-server` with more `args` on a free port, answering. A port found free may be
    /// taken by another test's listener before the server binds it (tests run in parallel):
    /// then another port is tried.
    pub fn spawn_free(args: &[&str]) -> Redis {
        for _ in 0..10 {
            if let Some(redis) = Redis::try_spawn(free_port(), args) {
                return redis;
            }
        }
        panic!("redis-server could not bind any of ten free ports");
    }

    /// A `redis-server` on `port` with more `args`, answering (if only that a password is
    /// needed).
    pub fn spawn(port: u16, args: &[&str]) -> Redis {
        Redis::try_spawn(port, args)
            .unwrap_or_else(|| panic!("redis-server on port {port} exited: the port was taken"))
    }

    /// [`Redis::spawn`], or `None` if the server exited before answering (its port was
    /// taken).
    fn try_spawn(port: u16, args: &[&str]) -> Option<Redis> {
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no", "--protected-mode", "no"])
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn redis-server");
        let mut redis = Redis { child, port };
        let deadline = Instant::now() + TIMEOUT;
        loop {
            // The answer must be this server's: if it exited, whatever answers is another
            // test's (and not a Redis, or not ours).
            if redis.child.try_wait().unwrap().is_some() {
                return None;
            }
            let ready = match redis.command(&["PING"]) {
                OwnedFrame::SimpleString(pong) => pong == b"PONG",
                OwnedFrame::Error(e) => e.starts_with("NOAUTH"),
                _ => false,
            };
            if ready && redis.child.try_wait().unwrap().is_none() {
                return Some(redis);
            }
            assert!(
                Instant::now() < deadline,
                "redis-server on port {port} did not answer within {TIMEOUT:?}"
            );
            // Polling a condition, not synchronising on time: Redis has no way to tell us.
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// SIGKILL, `meanwhile`, and a new empty `redis-server` on the same port.
    pub fn restart_after(&mut self, meanwhile: impl FnOnce()) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
        meanwhile();
        // The old one is gone for good before the new one binds (no orphaned server).
        *self = Redis::on(self.port);
    }

    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// One command over a new plain connection, and its reply (a refused or reset connection
    /// is an error reply, for [`Redis::wait_for`]: a server still starting may accept and then
    /// drop a connection).
    pub fn command(&self, args: &[&str]) -> OwnedFrame {
        let Ok(mut s) = TcpStream::connect(self.addr()) else {
            return OwnedFrame::Error("connection refused".into());
        };
        s.set_read_timeout(Some(TIMEOUT)).unwrap();
        let mut cmd = format!("*{}\r\n", args.len());
        for a in args {
            cmd += &format!("${}\r\n{a}\r\n", a.len());
        }
        if let Err(e) = s.write_all(cmd.as_bytes()) {
            return OwnedFrame::Error(format!("write: {e}"));
        }
        let mut buf = Vec::new();
        loop {
            match decode(&buf) {
                Ok(Some((frame, _))) => return frame,
                Ok(None) => {}
                // Not a Redis (another test's server took the port): an error reply.
                Err(e) => return OwnedFrame::Error(format!("not a Redis reply: {e}")),
            }
            let mut chunk = [0u8; 4096];
            match s.read(&mut chunk) {
                Ok(0) => return OwnedFrame::Error("redis closed the connection".into()),
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
                Err(e) => return OwnedFrame::Error(format!("read: {e}")),
            }
        }
    }

    /// The id of the connection named `name` (`CLIENT SETNAME`), from `CLIENT LIST`.
    pub fn client_id(&self, name: &str) -> Option<String> {
        let OwnedFrame::BulkString(list) = self.command(&["CLIENT", "LIST"]) else {
            panic!("CLIENT LIST");
        };
        let list = String::from_utf8(list).unwrap();
        list.lines().find_map(|l| {
            let field = |k: &str| {
                l.split(' ')
                    .find_map(|f| f.strip_prefix(k))
                    .map(str::to_string)
            };
            (field("name=").as_deref() == Some(name))
                .then(|| field("id="))
                .flatten()
        })
    }

    /// Line user `c` joins `room`; returns once `subscribers` connections (nodes) are
    /// subscribed to the room's channel `{prefix}room:{room}` (the join's name, lower case).
    pub fn line_join(&self, c: &mut Client, prefix: &str, room: &str, subscribers: i64) {
        c.send(&format!("/join {room}"));
        c.expect_prefix(&format!("NAMES {room}"));
        let channel = format!("{prefix}room:{}", room.to_lowercase());
        self.wait_for(|r| r.subscribers(&channel) == subscribers);
    }

    /// How many connections are subscribed to `channel`.
    pub fn subscribers(&self, channel: &str) -> i64 {
        match self.command(&["PUBSUB", "NUMSUB", channel]) {
            OwnedFrame::Array(parts) => match parts.get(1) {
                Some(OwnedFrame::Integer(n)) => *n,
                other => panic!("NUMSUB answered {other:?}"),
            },
            other => panic!("NUMSUB answered {other:?}"),
        }
    }

    /// Waits until `condition` holds, failing the test after [`TIMEOUT`].
    pub fn wait_for(&self, condition: impl Fn(&Redis) -> bool) {
        let deadline = Instant::now() + TIMEOUT;
        while !condition(self) {
            assert!(
                Instant::now() < deadline,
                "condition not met within {TIMEOUT:?}"
            );
            // Polling a condition, not synchronising on time: Redis has no way to tell us.
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// A node of the cluster whose channels start with `prefix`.
    pub fn node(&self, name: &str, prefix: &str) -> TestServer {
        self.node_with(name, prefix, |_| {})
    }

    /// [`Redis::node`] with more settings (`tweak` of its configuration).
    pub fn node_with(
        &self,
        name: &str,
        prefix: &str,
        tweak: impl FnOnce(&mut pollchat::config::Config),
    ) -> TestServer {
        let bp = BackplaneConfig {
            addr: self.addr(),
            node: name.into(),
            prefix: prefix.into(),
            max_queue: BackplaneConfig::MAX_QUEUE,
            password: None,
        };
        TestServer::with(|c| {
            c.backplane = Some(bp);
            tweak(c);
        })
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Connects to the IRC listener and registers as `nick`, reading the whole welcome burst.
pub fn register(server: &TestServer, nick: &str) -> Client {
    let mut c = Client::connect(server.irc_addr.expect("IRC listener"));
    c.send(&format!("NICK {nick}\r"));
    c.send(&format!("USER {nick} 0 * :The {nick}\r"));
    c.expect_prefix(":pollchat 422 ");
    c
}
