//! pollchat: a chat server whose whole network side is one `mio::Poll` loop on one thread,
//! speaking a telnet-friendly line protocol and IRC in the same rooms, and two threaded variants
//! of it to measure the loop against.
//!
//! # Layout
//!
//! Data flows one way: socket → (TLS) → byte transform → framer → session (protocol parse) → core →
//! events → render (once per render class) → shared buffers → output queues → one vectored
//! write per connection per turn. Drivers move bytes and time; every protocol decision is a
//! session's.
//!
//! - [`config`]: every limit and tunable in one struct, each with its reason and its one
//!   default.
//! - [`framer`]: cuts a byte stream into lines, holding at most one unfinished line per client;
//!   over-long lines are reported and skipped without being buffered.
//! - [`core`]: the chat itself (users, rooms, private messages, presence, history, and
//!   identity: cloaked hosts and the nick delay; users found by a mask) with no I/O and no
//!   clock: commands in, protocol-neutral events with their recipients out. Long answers (room
//!   and member lists, history replay) come out as cursors that [`core::page`] turns into pages
//!   on demand; [`core::modes`] is channel authority (operators, modes, kick, invite, bans) for
//!   both doors.
//! - [`protocol`]: front doors, parsing and rendering only. [`protocol::line`] parses what
//!   `nc`/`telnet` users type and renders core events as lines whose first token says what they
//!   are; [`protocol::irc`] does the same for IRC, with the code and text of every numeric in
//!   [`protocol::irc::numeric`] and the client tags a line relays (`message-tags`) read in
//!   [`protocol::irc::tags`]; [`protocol::text`] is the NUL/length/UTF-8 check both make on
//!   a line; [`protocol::telnet`] strips and refuses telnet option negotiation.
//! - [`session`]: one sans-IO [`session::Session`] per connection (after quinn-proto's
//!   `Connection`), owning all of that connection's protocol state and deadlines: the driver
//!   passes frames and time in (`on_frame`, `on_deadline`) and gets back what to send and
//!   whether to close (`Step`, `Wake`), when to wake it (`next_deadline`), how to render events
//!   for it (`render_class`) and its last line (`farewell`). [`session::line`] greets, times out
//!   idle clients and completes unframed lines; [`session::irc`] keeps registration, CAP and
//!   PING state and runs each command through one command table (after ngircd's `parse.c`) to
//!   handlers grouped by concern.
//! - [`net`]: the per-connection record, the byte [`net::transform`] between socket and framer
//!   (telnet stripping), [`net::tls`] below it for connections through a TLS door (a rustls
//!   connection that decrypts into the same path and encrypts a turn's output in one pass), its
//!   output queue of shared chunks written with `writev` (and
//!   what waits behind a paged answer), the loop's [`net::meter`] of all output held, its
//!   flood-control token bucket, and the byte-bounded channel that feeds a writer thread in the
//!   threaded driver.
//! - [`driver`]: the I/O models, each driving the same sessions and core, and [`driver::spawn`]
//!   to start any of them in-process. [`driver::listen`] binds, accepts (EMFILE reserve,
//!   per-turn budget) and admits for every driver. [`driver::poll`] is the event loop and its
//!   timers: reading until `WouldBlock` within a budget, deferred flushing, closing after each
//!   pass, shutdown. [`driver::threads`] holds the threaded baselines: a reader and a writer
//!   thread per connection with the core behind a `Mutex` (`--io threads`), or one thread per
//!   connection writing into its recipients' sockets under that lock (`--io threads-direct`,
//!   which exists to show head-of-line blocking). Both serve the line protocol and IRC.
//! - [`backplane`]: pollchat nodes joined through Redis pub/sub: two non-blocking Redis
//!   connections in the event loop's poll (RESP2 through `redis-protocol`), subscribing to the
//!   rooms with local members, publishing each local room message once, handing what other
//!   nodes said to the core, claiming nicks (`SET … NX`) and joining rooms shared by the
//!   nodes (one atomic script: created once, one member list: [`backplane::rooms`]) for it,
//!   answering later ([`core::cluster`] and [`core::remote`] are the core's sans-IO side of
//!   it); `backplane::history` keeps room history in Redis streams and delivers each room
//!   message once across reconnects; [`backplane::nodes`] keeps the heartbeats and the
//!   registry of live nodes and their users, cleans up after a dead node, and resynchronises
//!   after Redis comes back.
//! - [`client`]: `pollchat connect`, a terminal client that is itself one mio loop over stdin
//!   and the socket (over TLS with `--tls`).
//! - [`limits`]: raising RLIMIT_NOFILE and deriving `--max-clients` from it.
//! - [`bench`]: `pollchat bench`, the load generator (itself one mio loop on one thread): payloads
//!   and line parsing, delivery and latency accounting, the step search, the server process and
//!   `/proc`, hostile clients (`--attack`), churn and mass departures, the report and the SVG
//!   chart drawn by `cargo bench`.

pub mod backplane;
pub mod bench;
pub mod client;
pub mod config;
pub mod core;
pub mod driver;
pub mod framer;
pub mod limits;
pub mod net;
pub mod protocol;
pub mod session;
