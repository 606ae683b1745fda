//! The `pollchat` binary as a user runs it: signals, bind errors, descriptor exhaustion, and the
//! terminal client.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::SocketAddr;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;

use common::{Client, IoModel, TIMEOUT, TestServer, for_each_io};

const BIN: &str = env!("CARGO_BIN_EXE_pollchat");

/// A `pollchat serve` child process on an ephemeral port; killed if the test fails.
struct ServeProcess {
    child: Child,
    addr: SocketAddr,
    /// The server's log lines, as they come.
    log: mpsc::Receiver<String>,
    /// The log lines up to and including the first "listening on".
    startup: Vec<String>,
}

impl ServeProcess {
    fn start(args: &[&str], nofile: Option<u64>) -> ServeProcess {
        let mut cmd = Command::new(BIN);
        cmd.args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--irc-listen",
            "127.0.0.1:0",
        ])
        .args(args);
        cmd.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        if let Some(n) = nofile {
            // SAFETY: only setrlimit, async-signal-safe, between fork and exec.
            unsafe {
                cmd.pre_exec(move || {
                    let lim = libc::rlimit {
                        rlim_cur: n,
                        rlim_max: n,
                    };
                    if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
        }
        let mut child = cmd.spawn().expect("spawn pollchat");
        let stderr = child.stderr.take().unwrap();
        let (tx, log) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut process = ServeProcess {
            child,
            addr: "0.0.0.0:0".parse().unwrap(),
            log,
            startup: Vec::new(),
        };
        let line = loop {
            let line = process.wait_log("");
            process.startup.push(line.clone());
            if line.contains("listening on ") {
                break line;
            }
        };
        process.addr = line.rsplit(' ').next().unwrap().parse().unwrap();
        process
    }

    /// Waits for a log line containing `needle` and returns it.
    fn wait_log(&mut self, needle: &str) -> String {
        loop {
            match self.log.recv_timeout(TIMEOUT) {
                Ok(line) if line.contains(needle) => return line,
                Ok(_) => {}
                Err(e) => panic!("no log line with {needle:?}: {e}"),
            }
        }
    }

    fn signal(&self, signal: i32) {
        // SAFETY: sending a signal to our own child.
        assert_eq!(unsafe { libc::kill(self.child.id() as i32, signal) }, 0);
    }

    /// Waits for the process to exit (reaped on a helper thread), failing the test if it
    /// takes longer than the timeout. Returns whether it exited with status 0.
    fn wait(&mut self) -> bool {
        let pid = self.child.id() as libc::pid_t;
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut status = 0;
            // SAFETY: waiting for our own child; `status` is a valid out-pointer.
            let r = unsafe { libc::waitpid(pid, &mut status, 0) };
            let _ = tx.send(r == pid && libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0);
        });
        rx.recv_timeout(TIMEOUT).expect("pollchat did not exit")
    }
}

impl Drop for ServeProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn join(addr: SocketAddr) -> Client {
    let mut c = Client::connect(addr);
    c.expect_prefix("NAMES #lobby");
    c
}

for_each_io!(sigterm_says_goodbye_and_exits_zero);
fn sigterm_says_goodbye_and_exits_zero(io: IoModel) {
    let mut server = ServeProcess::start(&["--io", io.name()], None);
    let model = format!("I/O model: {io}");
    assert!(
        server.startup.iter().any(|l| l.ends_with(&model)),
        "{:?}",
        server.startup
    );
    let mut a = join(server.addr);
    a.send("/who");
    a.expect_prefix("NAMES");
    server.signal(libc::SIGTERM);
    assert_eq!(a.expect_closed(), ["BYE server shutting down"]);
    assert!(server.wait());
    server.wait_log("server stopped");
}

for_each_io!(sigint_also_shuts_down_cleanly);
fn sigint_also_shuts_down_cleanly(io: IoModel) {
    let mut server = ServeProcess::start(&["--log-level", "debug", "--io", io.name()], None);
    let mut a = join(server.addr);
    server.signal(libc::SIGINT);
    assert_eq!(a.expect_closed(), ["BYE server shutting down"]);
    assert!(server.wait());
}

#[test]
fn a_busy_port_is_one_clear_error_and_a_failing_exit() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let out = Command::new(BIN)
        .args(["serve", "--listen", &addr, "--no-irc"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    let errors: Vec<&str> = stderr.lines().filter(|l| l.contains("ERROR")).collect();
    assert_eq!(errors.len(), 1, "{stderr}");
    assert!(
        errors[0].contains(&format!("cannot listen on {addr}")),
        "{stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
}

/// Runs `pollchat serve ARGS` (plain doors on ephemeral ports) expecting it to refuse to start
/// with one ERROR line; returns that line.
fn one_error_line(args: &[&str]) -> String {
    let out = Command::new(BIN)
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--irc-listen",
            "127.0.0.1:0",
        ])
        .args([
            "--tls-listen",
            "127.0.0.1:0",
            "--irc-tls-listen",
            "127.0.0.1:0",
        ])
        .args(args)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    let errors: Vec<&str> = stderr.lines().filter(|l| l.contains("ERROR")).collect();
    assert_eq!(errors.len(), 1, "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    errors[0].to_string()
}

#[test]
fn a_missing_bad_or_mismatched_certificate_is_one_clear_error() {
    let cert = common::tls::Cert::new();
    let other = common::tls::Cert::new();
    let (c, k) = (
        cert.files.cert.to_str().unwrap(),
        cert.files.key.to_str().unwrap(),
    );
    let missing = format!("{c}.gone");
    let e = one_error_line(&["--tls-cert", &missing, "--tls-key", k]);
    assert!(
        e.contains(&format!("--tls-cert {missing}: No such file")),
        "{e}"
    );
    // The key where the certificate should be, and the other way round.
    let e = one_error_line(&["--tls-cert", k, "--tls-key", k]);
    assert!(e.contains("no certificate in it"), "{e}");
    let e = one_error_line(&["--tls-cert", c, "--tls-key", c]);
    assert!(
        e.contains(&format!("--tls-key {c}: no PEM private key")),
        "{e}"
    );
    // A key that is not the certificate's.
    let wrong = other.files.key.to_str().unwrap();
    let e = one_error_line(&["--tls-cert", c, "--tls-key", wrong]);
    assert!(
        e.contains(&format!("--tls-cert {c} with --tls-key {wrong}")),
        "{e}"
    );
    // The threaded models do not speak TLS.
    let e = one_error_line(&["--tls-cert", c, "--tls-key", k, "--io", "threads"]);
    assert!(
        e.contains("TLS (--tls-cert, --tls-key) needs --io poll"),
        "{e}"
    );
}

#[test]
fn bad_flags_are_refused_with_usage() {
    let out = Command::new(BIN)
        .args(["serve", "--max-line", "abc"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--max-line"));
    let help = Command::new(BIN)
        .args(["serve", "--help"])
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&help.stdout);
    for flag in [
        "--listen",
        "--max-line",
        "--history",
        "--flood-burst",
        "--flood-rate",
        "--max-sendq",
        "--max-clients",
        "--max-per-ip",
        "--idle-timeout",
        "--io",
        "--write-timeout",
        "--log-level",
        "--verbose",
        "--quiet",
        "--big-room",
        "--max-rooms",
        "--irc-ping-timeout",
        "--irc-register-timeout",
        "--irc-listen",
        "--no-irc",
        "--irc-password",
        "--motd",
        "--server-name",
        "--reserved-nick",
        "--max-output-total",
        "--send-buffer",
        "--kline-file",
        "--server-description",
    ] {
        assert!(help.contains(flag), "--help lacks {flag}");
    }
    for model in ["poll", "threads", "threads-direct"] {
        assert!(help.contains(model), "--help lacks the I/O model {model}");
    }
    assert!(
        help.contains("head-of-line blocking"),
        "--help says what threads-direct is for"
    );
    let out = Command::new(BIN)
        .args(["serve", "--io", "fibers"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("threads-direct"));
    // A reserved nick nobody could take anyway is a typo, said so before anything binds.
    let out = Command::new(BIN)
        .args(["serve", "--reserved-nick", "9bot"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--reserved-nick") && err.contains("invalid nick"),
        "{err}"
    );
    // A bound only the loop keeps is refused by the threaded models, in one clear line.
    let out = Command::new(BIN)
        .args(["serve", "--io", "threads", "--max-output-total", "1000000"])
        .args(["--listen", "127.0.0.1:0", "--no-irc"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--max-output-total needs --io poll"), "{err}");
    // A server ban file that does not read is one error line naming the file and the line.
    let file = std::env::temp_dir().join(format!("pollchat-bad-klines-{}", std::process::id()));
    std::fs::write(&file, "# bans\n*@* 0 root everyone\n").unwrap();
    let out = Command::new(BIN)
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--no-irc",
            "--kline-file",
        ])
        .arg(&file)
        .output()
        .unwrap();
    let _ = std::fs::remove_file(&file);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    let errors: Vec<&str> = err.lines().filter(|l| l.contains("ERROR")).collect();
    assert_eq!(errors.len(), 1, "{err}");
    assert!(
        errors[0].contains("--kline-file") && errors[0].ends_with("line 2: not a user@host mask"),
        "{err}"
    );
}

for_each_io!(running_out_of_descriptors_refuses_newcomers_and_serves_the_rest);
fn running_out_of_descriptors_refuses_newcomers_and_serves_the_rest(io: IoModel) {
    // 48 descriptors and a --max-clients far above that: accept() will hit EMFILE. (The threaded
    // models use one descriptor per client too: reader and writer share the socket.)
    let args = [
        "--max-clients",
        "1000",
        "--flood-rate",
        "0",
        "--max-connects-per-ip",
        "0",
        "--io",
        io.name(),
    ];
    let mut server = ServeProcess::start(&args, Some(48));
    let mut admitted = Vec::new();
    let mut refused = 0;
    for _ in 0..80 {
        let mut c = Client::connect(server.addr);
        let first = c.line();
        if first.starts_with("WELCOME") {
            c.expect_prefix("NAMES #lobby");
            admitted.push(c);
        } else {
            assert_eq!(first, "BYE server full");
            assert!(c.try_line().is_none(), "a refused client is closed");
            refused += 1;
        }
    }
    assert!(admitted.len() >= 20, "only {} admitted", admitted.len());
    assert!(refused >= 20, "only {refused} refused");
    server.wait_log("out of file descriptors");
    // Everyone admitted is still served.
    let last = admitted.len() - 1;
    admitted[last].send("/who");
    admitted[last].expect_prefix("NAMES #lobby");
    // Freed descriptors are used again. The leavers close their sending side and read to the
    // end, so the server has closed them before the next connects: under the threaded models a
    // descriptor is released by the connection's own threads, not in the accept thread's turn.
    for mut leaver in admitted.drain(5..) {
        leaver.shutdown_write();
        let said = leaver.expect_closed();
        assert_eq!(
            said.last().map(String::as_str),
            Some("BYE connection closed")
        );
    }
    let mut fresh = None;
    for _ in 0..100 {
        let mut c = Client::connect(server.addr);
        if c.line().starts_with("WELCOME") {
            fresh = Some(c);
            break;
        }
    }
    let mut fresh = fresh.expect("a freed slot is reused");
    fresh.expect_prefix("NAMES #lobby");
    server.signal(libc::SIGTERM);
    assert!(server.wait());
}

/// Runs `pollchat connect` with `input` on its stdin (kept open if `hold_stdin`).
fn run_client(addr: SocketAddr, input: &[u8], hold_stdin: bool) -> Child {
    let mut child = Command::new(BIN)
        .args(["connect", &addr.to_string()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(input).unwrap();
    if hold_stdin {
        std::mem::forget(stdin);
    }
    child
}

fn finish(mut child: Child) -> (bool, String) {
    let mut out = String::new();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    let ok = child.wait().unwrap().success();
    (ok, out)
}

#[test]
fn the_client_sends_what_is_typed_and_prints_what_arrives() {
    let server = TestServer::start();
    let mut watcher = server.join_as("watcher", &mut []);
    let child = run_client(
        server.addr,
        b"/nick typist\nhello from the client\n/quit done\n",
        false,
    );
    assert_eq!(watcher.line(), "JOIN #lobby guest2");
    assert_eq!(watcher.line(), "NICK guest2 typist");
    assert_eq!(watcher.line(), "MSG #lobby <typist> hello from the client");
    assert_eq!(watcher.line(), "QUIT typist quit: done");
    let (ok, out) = finish(child);
    assert!(ok);
    let lines: Vec<&str> = out.lines().collect();
    assert!(lines[0].starts_with("WELCOME guest2 #lobby"), "{out}");
    assert_eq!(lines.last(), Some(&"BYE quit: done"));
    assert!(!out.contains('\r'), "the client prints plain lines");
}

/// `pollchat connect --tls --ca FILE`: the same conversation over TLS, trusting the server's
/// self-signed certificate; without --ca or --insecure it refuses to guess whom to trust.
#[test]
fn the_client_speaks_tls_trusting_the_certificate_given() {
    let cert = common::tls::Cert::new();
    let server = TestServer::with_tls(&cert, |_| {});
    let mut watcher = server.join_as("watcher", &mut []);
    let tls_addr = server.tls_addr.unwrap().to_string();
    let ca = cert.files.cert.to_str().unwrap();
    let mut child = Command::new(BIN)
        .args(["connect", "--tls", "--ca", ca, &tls_addr])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    stdin
        .write_all(b"/nick typist\nhello over TLS\n/quit done\n")
        .unwrap();
    drop(stdin);
    assert_eq!(watcher.line(), "JOIN #lobby guest2");
    assert_eq!(watcher.line(), "NICK guest2 typist");
    assert_eq!(watcher.line(), "MSG #lobby <typist> hello over TLS");
    assert_eq!(watcher.line(), "QUIT typist quit: done");
    let mut err = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    let (ok, out) = finish(child);
    assert!(ok, "{err}");
    assert!(out.starts_with("WELCOME guest2 #lobby"), "{out}");
    assert!(out.ends_with("BYE quit: done\n"), "{out}");

    let out = Command::new(BIN)
        .args(["connect", "--tls", &tls_addr])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("--tls needs --ca FILE"),
        "{out:?}"
    );
}

#[test]
fn the_client_exits_on_end_of_input_after_the_answers() {
    let server = TestServer::start();
    let (ok, out) = finish(run_client(server.addr, b"/who\n", false));
    assert!(ok);
    assert!(out.contains("NAMES #lobby guest1\n"), "{out}");
    assert!(out.ends_with("BYE connection closed\n"), "{out}");
}

#[test]
fn the_client_exits_when_the_server_goes_away() {
    let server = TestServer::start();
    let mut watcher = server.join_as("watcher", &mut []);
    let child = run_client(server.addr, b"", true);
    assert_eq!(watcher.line(), "JOIN #lobby guest2");
    server.stop().unwrap();
    let (ok, out) = finish(child);
    assert!(ok);
    assert!(out.ends_with("BYE server shutting down\n"), "{out}");
}

#[test]
fn the_client_reports_a_refused_connection() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let out = Command::new(BIN)
        .args(["connect", &port.to_string()])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains(&format!("cannot connect to {port}")));
}

for_each_io!(clients_that_come_and_go_leave_no_descriptor_behind);
/// A churn of 500 clients connecting, joining, talking and leaving (half with `/quit`, half by
/// dropping the socket): once the server has seen them all go, its process holds as many file
/// descriptors as before they came. A leak here is what kills a long-running server. (A child
/// process, so that the count is the server's alone.)
fn clients_that_come_and_go_leave_no_descriptor_behind(io: IoModel) {
    // 500 connects from one address in a few seconds: lift the per-address connect rate.
    let args = [
        "--io",
        io.name(),
        "--flood-rate",
        "0",
        "--big-room",
        "10",
        "--max-connects-per-ip",
        "0",
    ];
    let server = ServeProcess::start(&args, None);
    let fds =
        || std::fs::read_dir(format!("/proc/{}/fd", server.child.id())).map_or(0, |d| d.count());
    let mut watcher = join(server.addr);
    let baseline = fds();
    for round in 0..10 {
        let mut clients: Vec<Client> = (0..50).map(|_| Client::connect(server.addr)).collect();
        for (i, c) in clients.iter_mut().enumerate() {
            c.expect_prefix("WELCOME guest");
            c.send(&format!("/join #churn{}", i % 5));
            c.send(&format!("hello from round {round}"));
            if i % 2 == 0 {
                c.send("/quit bye");
            }
        }
        drop(clients);
    }
    // The lobby is a big room here, whose departures are not announced: ask until the watcher
    // is alone (every close applied) and the descriptors are back.
    let deadline = std::time::Instant::now() + TIMEOUT;
    loop {
        watcher.send("/who #lobby");
        let names = watcher.expect_prefix("NAMES #lobby");
        if names.split(' ').count() == 3 && fds() <= baseline {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{names}; descriptors {} > {baseline}",
            fds()
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// SIGHUP reads the certificate and key again: connections made before keep theirs and go on
/// chatting, a new one is shown the new certificate; a bad new pair is refused with a log line
/// and the one in use kept.
#[test]
fn sighup_reloads_the_certificate_without_dropping_anyone() {
    use common::tls::{Cert, TlsClient};
    let mut cert = Cert::new();
    let (c, k) = (
        cert.files.cert.to_str().unwrap().to_string(),
        cert.files.key.to_str().unwrap().to_string(),
    );
    let mut server = ServeProcess::start(
        &[
            "--tls-cert",
            &c,
            "--tls-key",
            &k,
            "--tls-listen",
            "127.0.0.1:0",
            "--irc-tls-listen",
            "127.0.0.1:0",
        ],
        None,
    );
    let line = server.wait_log("listening over TLS on ");
    let tls_addr: SocketAddr = line.rsplit(' ').next().unwrap().parse().unwrap();
    let old = cert.der.clone();
    let mut before = TlsClient::connect(tls_addr, &old);
    before.expect_prefix("NAMES #lobby");
    assert_eq!(before.server_certificate(), old);
    let mut plain = join(server.addr);
    before.expect_prefix("JOIN #lobby");

    let new = cert.renew();
    server.signal(libc::SIGHUP);
    server.wait_log("SIGHUP: TLS certificate");
    let mut after = TlsClient::connect(tls_addr, &new);
    assert_eq!(after.server_certificate(), new);
    after.expect_prefix("NAMES #lobby");
    // The connection from before the reload is still there, and still talks.
    before.send("made before the reload");
    assert!(
        plain
            .expect_prefix("MSG #lobby")
            .ends_with("made before the reload")
    );
    assert!(
        after
            .expect_prefix("MSG #lobby")
            .ends_with("made before the reload")
    );

    // A broken pair is refused, and the one in use kept.
    std::fs::write(&cert.files.key, "not a key").unwrap();
    server.signal(libc::SIGHUP);
    let refused = server.wait_log("SIGHUP: --tls-key");
    assert!(
        refused.contains("keeping the certificate and key in use"),
        "{refused}"
    );
    let mut again = TlsClient::connect(tls_addr, &new);
    assert_eq!(again.server_certificate(), new);
    again.expect_prefix("NAMES #lobby");
    server.signal(libc::SIGTERM);
    assert!(server.wait());
}

for_each_io!(sighup_reads_the_operator_file_again);
/// SIGHUP reads `--oper-file` again under every I/O model: an operator added to the file can
/// OPER at once, one removed no longer can (those already operators stay so); a file that no
/// longer reads is logged and the operators in force kept.
fn sighup_reads_the_operator_file_again(io: IoModel) {
    let file = std::env::temp_dir().join(format!(
        "pollchat-opers-{}-{}",
        std::process::id(),
        io.name()
    ));
    let hash = |p: &str| pollchat::session::oper::hash_password(p);
    std::fs::write(&file, format!("# operators\nann {}\n", hash("first-pass"))).unwrap();
    let path = file.to_str().unwrap().to_string();
    let mut server = ServeProcess::start(&["--io", io.name(), "--oper-file", &path], None);
    let mut c = join(server.addr);
    c.send("/oper ann first-pass");
    c.expect_prefix("NOTICE you are now a server operator");

    std::fs::write(&file, format!("bob {}\n", hash("second-pass"))).unwrap();
    server.signal(libc::SIGHUP);
    server.wait_log("SIGHUP: 1 server operators");
    let mut d = join(server.addr);
    d.send("/oper ann first-pass");
    assert_eq!(
        d.line(),
        "ERROR bad-oper-login wrong operator name or password"
    );
    d.send("/oper bob second-pass");
    d.expect_prefix("NOTICE you are now a server operator");

    std::fs::write(&file, "bob not-a-hash\n").unwrap();
    server.signal(libc::SIGHUP);
    let kept = server.wait_log("SIGHUP: --oper-file");
    assert!(kept.contains("keeping the operators in force"), "{kept}");
    let mut e = join(server.addr);
    e.send("/oper bob second-pass");
    e.expect_prefix("NOTICE you are now a server operator");
    server.signal(libc::SIGTERM);
    assert!(server.wait());
    let _ = std::fs::remove_file(&file);
}
