//! Every limit and tunable of the server in one struct.
//!
//! The command line (`main.rs`) fills a [`Config`], taking every default from
//! [`Config::default`] (each default is written once, here); the drivers, the sessions (through
//! `session::Context`) and the chat core only read it.
//! Each field says what it bounds and why its default is what it is, so a reader can tell what a
//! limit protects against without hunting for where it is enforced.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// Settings of one server instance.
#[derive(Clone, Debug)]
pub struct Config {
    /// Addresses to accept line-protocol clients on. Loopback by default, so exposing the server
    /// to a network is a deliberate `--listen 0.0.0.0:9223`.
    pub listen: Vec<SocketAddr>,
    /// Addresses to accept IRC clients on (empty: no IRC).
    pub irc_listen: Vec<SocketAddr>,
    /// Bind every listener with SO_REUSEPORT (`--reuse-port`), so several processes on one host
    /// share the same addresses and the kernel spreads new connections among them: one loop per
    /// core, joined by a backplane. Off by default: a second server started by mistake on the
    /// same port should fail to bind, not silently take half the clients.
    pub reuse_port: bool,
    /// The cluster backplane (`--backplane redis://…`, `--node`, `--backplane-prefix`): with it,
    /// room messages cross to the other nodes through Redis pub/sub (`crate::backplane`).
    /// `None`: one process, no Redis needed. The event loop only.
    pub backplane: Option<crate::backplane::BackplaneConfig>,
    /// The certificate chain and private key of the TLS doors (`--tls-cert`, `--tls-key`), read
    /// when the server binds and again on SIGHUP (`None`: no TLS, and the TLS addresses below
    /// are not opened). A password or an operator's credential should never cross a network in
    /// clear; with these set, they are refused in clear from other hosts
    /// (`session::credentials_refused`).
    pub tls: Option<TlsFiles>,
    /// Addresses to accept line-protocol clients over TLS on (only with `tls`). Loopback by
    /// default, as the plain doors.
    pub tls_listen: Vec<SocketAddr>,
    /// Addresses to accept IRC clients over TLS on (only with `tls`); 6697 is where IRC clients
    /// look for it.
    pub irc_tls_listen: Vec<SocketAddr>,
    /// A TLS connection whose handshake is not complete by then is closed: until it is, the
    /// connection holds a slot (and counts against `max_per_ip`) without being anybody, and a
    /// peer that opens connections and never finishes their handshakes must not keep them.
    /// 10 s is ample for a handshake over the slowest link a person chats over.
    pub tls_handshake_timeout: Duration,
    /// IRCv3 strict transport security (`--sts-duration`): with TLS, IRC clients that ask for
    /// capability values (`CAP LS 302`) are told in clear where the TLS port is
    /// (`sts=port=6697`; they reconnect there), and over TLS for how long to keep using it
    /// (`sts=duration=…`), after which they never connect in clear again until it expires.
    /// `None`: not advertised. Opt-in, because it binds clients: a server that drops TLS
    /// within the duration is unreachable for them.
    pub sts_duration: Option<Duration>,
    /// The name the server gives itself in IRC (the source of numerics). No user may take it
    /// as a nick: a private message from it would look like one from the server.
    pub server_name: String,
    /// What IRC's LINKS says the server is (one line of text).
    pub server_description: String,
    /// Nicks no user may take, besides the server's name and the services' names every server
    /// refuses (`core::names::SERVICE_NICKS`): names an operator wants kept for a bot of
    /// theirs, or that users of a community would take for an official voice. Empty by
    /// default: the fixed list already covers what IRC users expect to be official.
    pub reserved_nicks: Vec<String>,
    /// Server operators (`--oper NAME:HASH`, `--oper-file`): names and Argon2id hashes of their
    /// passwords, never the passwords (see `session::oper`).
    pub opers: Vec<crate::session::oper::Oper>,
    /// A file of more server operators (`--oper-file`), read at start and again on SIGHUP.
    pub oper_file: Option<std::path::PathBuf>,
    /// Where server bans are kept (`--kline-file`): rewritten whenever they change.
    pub kline_file: Option<std::path::PathBuf>,
    /// The server bans in force at start (read from `kline_file`).
    pub server_bans: Vec<crate::core::kline::ServerBan>,
    /// Password IRC clients must send with PASS (`None`: PASS is accepted and ignored).
    pub irc_password: Option<String>,
    /// Message of the day for IRC clients, one entry per line (`None`: 422 "MOTD File is
    /// missing").
    pub motd: Option<Vec<String>>,
    /// An IRC client silent this long is sent a PING…
    pub irc_ping_after: Duration,
    /// …and one silent this long is closed with "ping timeout".
    pub irc_ping_timeout: Duration,
    /// An IRC client that has not completed NICK/USER by then is closed: an unregistered
    /// connection holds a slot without being anybody.
    pub irc_register_timeout: Duration,
    /// Longest accepted line in bytes, not counting the `\n` (or `\r\n`) that ends it. It also
    /// bounds what a client that never sends a newline can make the server hold for it.
    pub max_line: usize,
    /// Rooms with more members than this do not announce joins, parts, quits and nick changes
    /// to every member, and list at most this many names to a joiner (see `CoreLimits`).
    pub big_room: usize,
    /// How long the nick of a user who quit or changed nick while in a big room stays
    /// unclaimable by anyone else (zero: off). Big rooms do not announce departures and nick
    /// changes, so without it a stranger could take the nick at once and pass for its owner
    /// there. 30 s, as charybdis/solanum's nick delay: longer than a quick swap, shorter than
    /// the wait of someone reconnecting who wants the nick back. A user may take back a nick it
    /// changed away from; the held nicks are at most `core::nick_delay::MAX_HELD`.
    pub nick_delay: Duration,
    /// Rooms one user may be in at once: each room a client joins is state the server keeps
    /// (its history included), so one client must not be able to create rooms without end.
    pub max_rooms: usize,
    /// Messages each room remembers and replays to a client that joins it (0 = no history).
    pub history: usize,
    /// Bytes of history one room keeps at most, oldest dropped first. `--history` alone would
    /// let a room hold `--history` × `--max-line` bytes (200 KB at the defaults) and replay all
    /// of it to every joiner; 64 KiB is still 50 messages of over 1 KB each.
    pub room_history_bytes: usize,
    /// Bytes of history all rooms together keep at most, the server's oldest message dropped
    /// first whatever its room: without it, history memory grows with the number of rooms
    /// clients create. 8 MiB is what a Pi can spare, and thousands of active rooms' worth.
    pub history_bytes: usize,
    /// Rooms the server holds at once, the lobby included; creating one more is refused (every
    /// room is state the server keeps, and each client may otherwise create `--max-rooms`).
    pub max_total_rooms: usize,
    /// Token bucket size: how many lines a client may send back to back before the rate applies.
    pub flood_burst: u32,
    /// Lines per second a client may keep sending; 0 turns flood control off. Over the rate the
    /// server stops reading that socket until tokens refill, so TCP pushes back on the sender and
    /// nothing is dropped.
    pub flood_rate: f64,
    /// Bytes of output held for one client (queued, and waiting behind a long answer; each
    /// answer in progress after the first counts 1 KiB) above which it is disconnected as a slow
    /// consumer ("send queue exceeded"). 1 MiB lets a client that reads ride out a burst of a
    /// few thousand lines (a busy room, a netsplit's worth of joins) without being cut off;
    /// what it costs the server in the worst case is bounded by `max_output_total`, not by
    /// clients × 1 MiB, and long answers no longer fill it (they are produced a page at a time
    /// as the client reads, see `core::page`).
    pub max_sendq: usize,
    /// Bytes of output all clients' queues may hold together (0 = no limit; the event loop
    /// only). Past it the clients holding the most are disconnected first ("server output
    /// buffers full"), as Redis 7 does with `maxmemory-clients`. `--max-sendq` alone does not
    /// bound the server: a thousand clients each just under it hold a gigabyte. 64 MiB is what
    /// a Pi or a 512 MiB VPS can spare beside everything else; a busy broadcast costs its bytes
    /// once whatever the number of recipients (plus 16 bytes a queued reference), so healthy
    /// clients, who read, stay far below it.
    pub max_output_total: usize,
    /// The kernel's send buffer per client socket (SO_SNDBUF), or `None` for the kernel's
    /// autotuning. Output the kernel holds is memory too, outside the process: Linux grows a
    /// socket's buffer up to `tcp_wmem`'s maximum (4 MiB by default) for a client that reads
    /// slowly, so a few hundred of them can hold gigabytes of kernel memory that no limit of
    /// pollchat's sees. A small host can cap it; the default leaves the kernel in charge.
    pub send_buffer: Option<usize>,
    /// Connections served at once; further ones get one line saying why and are closed.
    pub max_clients: usize,
    /// Connections allowed from one IP address (0 = unlimited).
    pub max_per_ip: usize,
    /// Every per-address limit counts an IPv6 peer by its network of this many bits, not by its
    /// address: a host is usually given a whole /64 and can connect from a new address each
    /// time, so counting addresses would let one host pass any limit. 64 is the smallest
    /// network a host is normally given; a /48 or /56 site may be given smaller values. IPv4
    /// addresses are counted one by one.
    pub ipv6_prefix: u8,
    /// The phrase the key of cloaked hosts is derived from (`None`: a random key at each start).
    /// Others never see a user's address, only a keyed hash of it (`core::cloak`); with a
    /// random key the cloaks change whenever the server restarts, so a regular's host (and any
    /// note or ban about it) is forgotten with each restart. An operator who wants cloaks to
    /// stay gives a phrase, kept as secret as a password: whoever knows it can turn an IPv4
    /// cloak back into its address by trying all 2³² of them.
    pub cloak_key: Option<String>,
    /// Wrong IRC passwords one address may give within `rate_window` before its further IRC
    /// connections are refused until that window ends (0 = no limit). Each wrong guess already
    /// costs a connection; this bounds how fast one host can guess at all: 5 a minute lets a
    /// person mistype a few times and makes guessing even a short password take years.
    pub irc_password_tries: u32,
    /// Connections one address may open within `rate_window` (0 = no limit); more are refused
    /// with one line until that window ends. 60 a minute is far more than a household behind
    /// one NAT opens (people connect once and stay), and far less than a client stuck in a
    /// reconnect loop, which would otherwise make the server greet, join and announce it
    /// without end.
    pub max_connects_per_ip: u32,
    /// The window of the per-address rates (`irc_password_tries`, `max_connects_per_ip`): a minute, long enough to
    /// make a guesser or a reconnect loop wait, short enough that a person who mistyped is let
    /// back in soon. Each address's window starts with its first counted event.
    pub rate_window: Duration,
    /// Disconnect a line-protocol client that has sent nothing for this long (`None` = never).
    /// IRC clients are pinged instead.
    pub idle_timeout: Option<Duration>,
    /// Line protocol only: an unterminated line that has sat this long with no byte added is
    /// taken as complete (`None` = never). Clients that send each message with one `send()` and
    /// no newline (the Python sketch pollchat started from) are heard after this pause; a second
    /// is far longer than the gap between two reads of one line from a typing human or a
    /// program, and short enough to feel like a slow send. Never applied to IRC, whose clients
    /// always end their lines.
    pub line_complete_after: Option<Duration>,
    /// How long a shutdown waits for queued output to drain before closing what is left.
    pub shutdown_grace: Duration,
    /// `--io threads-direct` only, which has no send queue: how long writing one message into a
    /// recipient's socket may take in all (SO_SNDTIMEO, shortened after a partial write) before
    /// that recipient is disconnected as a slow consumer ("send queue exceeded"). Every other
    /// client waits as long: that model writes while holding the chat core's lock. In all, not
    /// per `write`: a reader taking a little now and then would otherwise restart it forever.
    pub write_timeout: Duration,
}

/// Where the TLS doors' certificate chain and private key are (PEM files).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsFiles {
    /// The certificate, followed by its chain (intermediates), in PEM.
    pub cert: PathBuf,
    /// The private key (PKCS#8, PKCS#1 or SEC1), in PEM.
    pub key: PathBuf,
}

impl Config {
    /// Default port of the line protocol, the port of the sketch pollchat started from.
    pub const DEFAULT_PORT: u16 = 9223;
    /// IRC's usual port.
    pub const DEFAULT_IRC_PORT: u16 = 6667;
    /// The line protocol over TLS: the plain port plus one.
    pub const DEFAULT_TLS_PORT: u16 = 9224;
    /// IRC over TLS's usual port.
    pub const DEFAULT_IRC_TLS_PORT: u16 = 6697;
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: vec![SocketAddr::from(([127, 0, 0, 1], Self::DEFAULT_PORT))],
            irc_listen: vec![SocketAddr::from(([127, 0, 0, 1], Self::DEFAULT_IRC_PORT))],
            reuse_port: false,
            backplane: None,
            tls: None,
            tls_listen: vec![SocketAddr::from(([127, 0, 0, 1], Self::DEFAULT_TLS_PORT))],
            irc_tls_listen: vec![SocketAddr::from((
                [127, 0, 0, 1],
                Self::DEFAULT_IRC_TLS_PORT,
            ))],
            tls_handshake_timeout: Duration::from_secs(10),
            sts_duration: None,
            server_name: "pollchat".into(),
            server_description: "a pollchat chat server".into(),
            kline_file: None,
            oper_file: None,
            server_bans: Vec::new(),
            reserved_nicks: Vec::new(),
            opers: Vec::new(),
            irc_password: None,
            motd: None,
            irc_ping_after: Duration::from_secs(120),
            irc_ping_timeout: Duration::from_secs(240),
            irc_register_timeout: Duration::from_secs(60),
            max_line: 4096,
            history: 50,
            room_history_bytes: 64 << 10,
            history_bytes: 8 << 20,
            max_total_rooms: 10_000,
            max_rooms: 32,
            big_room: 1000,
            nick_delay: Duration::from_secs(30),
            flood_burst: 10,
            flood_rate: 5.0,
            max_sendq: 1 << 20,
            max_output_total: 64 << 20,
            send_buffer: None,
            // The command line replaces this with what RLIMIT_NOFILE allows.
            max_clients: 1024,
            max_per_ip: 0,
            ipv6_prefix: 64,
            cloak_key: None,
            irc_password_tries: 5,
            max_connects_per_ip: 60,
            rate_window: Duration::from_secs(60),
            idle_timeout: None,
            line_complete_after: Some(Duration::from_millis(1000)),
            shutdown_grace: Duration::from_secs(2),
            write_timeout: Duration::from_secs(5),
        }
    }
}
