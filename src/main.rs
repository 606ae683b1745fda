//! The `pollchat` command: `serve` runs the server, `connect` the terminal client, `bench` the
//! load generator.
//!
//! This file only turns flags into a [`Config`] and sets up logging; everything else lives in the
//! library (see `src/lib.rs` for the map).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::builder::TypedValueParser;
use clap::{Args, Parser, Subcommand};
use log::{LevelFilter, error, info, warn};

use pollchat::config::{Config, TlsFiles};
use pollchat::driver::{IoModel, Server};
use pollchat::session::oper::Oper;
use pollchat::{bench, client, limits};

#[derive(Parser)]
#[command(
    name = "pollchat",
    version,
    about = "A chat server on one mio::Poll loop, and its client"
)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run the chat server
    Serve(Box<ServeArgs>),
    /// Chat from this terminal: print what the server sends, send what is typed
    Connect {
        /// Server address [default: 127.0.0.1:9223, with --tls 127.0.0.1:9224]
        addr: Option<String>,
        /// Connect over TLS (trusting --ca, or with --insecure anything)
        #[arg(long)]
        tls: bool,
        /// PEM file of the certificates to trust: the server's own (a self-signed one from
        /// `pollchat cert`) or its CA's
        #[arg(
            long,
            value_name = "FILE",
            requires = "tls",
            conflicts_with = "insecure"
        )]
        ca: Option<PathBuf>,
        /// Accept any certificate: encrypted, but the server is not authenticated
        #[arg(long, requires = "tls")]
        insecure: bool,
    },
    /// Load generator: start (or target) a server, load it over loopback, report deliveries/s,
    /// latency percentiles, loss, and both sides' CPU and memory
    Bench(Box<bench::Opts>),
    /// Read a server operator's password on standard input and print its hash, for --oper
    /// NAME:HASH or a line `NAME HASH` of --oper-file
    HashPassword,
    /// Write a self-signed TLS certificate and key (DIR/cert.pem, DIR/key.pem) for trying the
    /// TLS doors locally: for testing only, no client trusts it unless told to
    Cert {
        /// Directory to write cert.pem and key.pem into (created if missing; existing files are
        /// not overwritten)
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
        /// A host name or IP address the certificate is for; repeat for several
        #[arg(long = "name", value_name = "HOST", default_values_t = ["localhost".to_string(), "127.0.0.1".to_string(), "::1".to_string()])]
        names: Vec<String>,
    },
}

#[derive(Args)]
struct ServeArgs {
    /// I/O model. poll: one mio::Poll loop on one thread (the server proper). threads: blocking
    /// sockets, a reader and a writer thread per client fed by a bounded queue, the chat core
    /// behind a lock. threads-direct: one thread per client writing straight into every
    /// recipient's socket while holding the lock; it exists to show head-of-line blocking (one
    /// client that stops reading stalls everyone for up to --write-timeout). The threaded models
    /// are baselines for benchmarks: same protocols (line and IRC), limits and logs
    #[arg(long, value_name = "MODEL", default_value = "poll",
          value_parser = clap::builder::PossibleValuesParser::new(IoModel::ALL.map(IoModel::name))
              .map(|s| s.parse::<IoModel>().expect("a listed model")))]
    io: IoModel,
    /// Address to accept line-protocol clients on; repeat for several (IPv4 or IPv6).
    /// Loopback only by default: use 0.0.0.0:9223 or [::]:9223 to accept others
    #[arg(long = "listen", value_name = "ADDR", default_values_t = defaults().listen, value_parser = address)]
    listen: Vec<SocketAddr>,
    /// Address to accept IRC clients on; repeat for several (IPv4 or IPv6)
    #[arg(long = "irc-listen", value_name = "ADDR", default_values_t = defaults().irc_listen, value_parser = address)]
    irc_listen: Vec<SocketAddr>,
    /// Do not accept IRC clients at all (neither in clear nor over TLS)
    #[arg(long)]
    no_irc: bool,
    /// Bind the listeners with SO_REUSEPORT, so several pollchat processes on this host share
    /// the same addresses (the kernel spreads new connections among them); with --backplane
    /// they act as one chat
    #[arg(long)]
    reuse_port: bool,
    /// Join a cluster of pollchat nodes through Redis at redis://HOST[:PORT]: room messages
    /// cross nodes, nicks are unique cluster-wide (see the README's "Cluster" section). Redis
    /// must be reachable at start, with maxmemory-policy noeviction. --io poll only
    #[arg(long, value_name = "URL")]
    backplane: Option<String>,
    /// This node's name in the cluster, 1-64 bytes without spaces [default: HOST-PID, unique
    /// per process]
    #[arg(long, value_name = "NAME", requires = "backplane")]
    node: Option<String>,
    /// File whose first line is Redis's password (AUTH on every connection to it; kept out of
    /// the command line, which other users of the host can read)
    #[arg(long, value_name = "FILE", requires = "backplane")]
    backplane_password_file: Option<PathBuf>,
    /// Starts every Redis channel (and key) of the cluster, so several clusters can share one
    /// Redis (pub/sub ignores database numbers)
    #[arg(long, value_name = "P", default_value = pollchat::backplane::BackplaneConfig::PREFIX, requires = "backplane")]
    backplane_prefix: String,
    /// Bytes the queue towards Redis may hold; past it, room messages are not sent to other
    /// nodes (local members still get them) until it drains, and the drop is logged
    #[arg(long, value_name = "BYTES", default_value_t = pollchat::backplane::BackplaneConfig::MAX_QUEUE as u64, requires = "backplane", value_parser = clap::value_parser!(u64).range(65_536..=(1 << 32)))]
    backplane_max_queue: u64,
    /// PEM file of the TLS certificate, followed by its chain; with --tls-key it opens the TLS
    /// listeners (--tls-listen, --irc-tls-listen). Read again on SIGHUP. `pollchat cert` makes
    /// a self-signed pair for trying it out
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// PEM file of the TLS private key (PKCS#8, PKCS#1 or SEC1). Read again on SIGHUP
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Address to accept line-protocol clients over TLS on (with --tls-cert); repeat for several
    #[arg(long = "tls-listen", value_name = "ADDR", default_values_t = defaults().tls_listen, value_parser = address)]
    tls_listen: Vec<SocketAddr>,
    /// Address to accept IRC clients over TLS on (with --tls-cert); repeat for several
    #[arg(long = "irc-tls-listen", value_name = "ADDR", default_values_t = defaults().irc_tls_listen, value_parser = address)]
    irc_tls_listen: Vec<SocketAddr>,
    /// Accept clients over TLS only: no --listen nor --irc-listen (needs --tls-cert)
    #[arg(long, requires = "tls_cert")]
    no_plain: bool,
    /// Advertise IRCv3 strict transport security: IRC clients (CAP 302) are told in clear to
    /// reconnect to the TLS port, and over TLS to keep using TLS for this many seconds (at
    /// most a year). Clients that honour it will not connect in clear again for that long:
    /// only with a TLS setup meant to stay (needs --tls-cert)
    #[arg(long, value_name = "SECS", requires = "tls_cert", value_parser = clap::value_parser!(u64).range(0..=31_536_000))]
    sts_duration: Option<u64>,
    /// Seconds a TLS client has to complete its handshake before it is closed (0.1 to 300)
    #[arg(long, value_name = "SECS", default_value_t = defaults().tls_handshake_timeout.as_secs_f64(), value_parser = handshake_timeout)]
    tls_handshake_timeout: f64,
    /// Password IRC clients must give with PASS (default: none; PASS is ignored)
    #[arg(long, value_name = "PASSWORD")]
    irc_password: Option<String>,
    /// Wrong passwords one address may give per minute; once they are used up, its IRC
    /// connections are refused until the minute is over (0 = no limit)
    #[arg(long, value_name = "N", default_value_t = defaults().irc_password_tries)]
    irc_password_tries: u32,
    /// File whose lines IRC clients get as the message of the day
    #[arg(long, value_name = "FILE")]
    motd: Option<std::path::PathBuf>,
    /// The name the server gives itself to IRC clients (no user may take it as a nick)
    #[arg(long, default_value_t = defaults().server_name)]
    server_name: String,
    /// What IRC's LINKS says this server is
    #[arg(long, default_value_t = defaults().server_description)]
    server_description: String,
    /// A nick no user may take, as NickServ, ChanServ, OperServ, MemoServ, HostServ, BotServ,
    /// Global and the server's name are refused (compared case-insensitively); repeat for
    /// several
    #[arg(long = "reserved-nick", value_name = "NICK", default_values_t = defaults().reserved_nicks, value_parser = reserved_nick)]
    reserved_nick: Vec<String>,
    /// A server operator: NAME:HASH, the hash from `pollchat hash-password` (repeatable; the
    /// password itself never goes on a command line)
    #[arg(long = "oper", value_name = "NAME:HASH", value_parser = oper_entry)]
    oper: Vec<Oper>,
    /// A file of server operators, one `NAME HASH` a line (# comments); read at start
    #[arg(long, value_name = "FILE")]
    oper_file: Option<std::path::PathBuf>,
    /// File of server bans (KLINE/UNKLINE): read at start (created if missing), rewritten at
    /// each change, so bans survive a restart. Without it, bans last until the server stops
    #[arg(long, value_name = "FILE")]
    kline_file: Option<std::path::PathBuf>,
    /// Longest line in bytes (16 to 1048576); longer ones get an error and are discarded
    #[arg(long, default_value_t = defaults().max_line as u32, value_parser = clap::value_parser!(u32).range(16..=1_048_576))]
    max_line: u32,
    /// Messages each room replays to a client that joins (0 = no history, at most 10000)
    #[arg(long, default_value_t = defaults().history as u16, value_parser = clap::value_parser!(u16).range(0..=10_000))]
    history: u16,
    /// Bytes of history one room keeps at most, its oldest messages dropped first
    #[arg(long, value_name = "BYTES", default_value_t = defaults().room_history_bytes as u64, value_parser = clap::value_parser!(u64).range(1024..))]
    room_history_bytes: u64,
    /// Bytes of history all rooms together keep at most; past it the server's oldest messages
    /// are dropped first, whatever their room
    #[arg(long, value_name = "BYTES", default_value_t = defaults().history_bytes as u64, value_parser = clap::value_parser!(u64).range(1024..))]
    history_bytes: u64,
    /// Rooms the server holds at once (the lobby included; at most 1000000000); creating one
    /// more is refused
    #[arg(long, value_name = "N", default_value_t = defaults().max_total_rooms as u64, value_parser = clap::value_parser!(u64).range(1..=1_000_000_000))]
    max_total_rooms: u64,
    /// Rooms with more members than this are "big": joins, parts, quits and nick changes in them
    /// are not announced to every member, and a joiner is sent at most this many names
    #[arg(long, value_name = "N", default_value_t = defaults().big_room as u64, value_parser = clap::value_parser!(u64).range(1..))]
    big_room: u64,
    /// Seconds the nick of a user who quit or changed nick while in a big room stays unclaimable
    /// by anyone else, since those rooms were not told it left (0 = off; at most 3600)
    #[arg(long, value_name = "SECS", default_value_t = defaults().nick_delay.as_secs(), value_parser = clap::value_parser!(u64).range(0..=3600))]
    nick_delay: u64,
    /// Rooms one client may be in at once (IRC's CHANLIMIT)
    #[arg(long, value_name = "N", default_value_t = defaults().max_rooms as u16, value_parser = clap::value_parser!(u16).range(1..))]
    max_rooms: u16,
    /// An IRC client silent for half this many seconds is sent a PING, and closed ("ping
    /// timeout") once silent for all of them
    #[arg(long, value_name = "SECS", default_value_t = defaults().irc_ping_timeout.as_secs(), value_parser = clap::value_parser!(u64).range(2..=86_400))]
    irc_ping_timeout: u64,
    /// Seconds an IRC client has to complete NICK/USER before it is closed
    #[arg(long, value_name = "SECS", default_value_t = defaults().irc_register_timeout.as_secs(), value_parser = clap::value_parser!(u64).range(1..=3600))]
    irc_register_timeout: u64,
    /// Lines a client may send back to back before the flood rate applies
    #[arg(long, default_value_t = defaults().flood_burst, value_parser = clap::value_parser!(u32).range(1..))]
    flood_burst: u32,
    /// Lines per second a client may keep sending; over it the server stops reading that
    /// client until it may go on (nothing is dropped). 0 turns flood control off; otherwise at
    /// least 0.01
    #[arg(long, default_value_t = defaults().flood_rate, value_parser = flood_rate)]
    flood_rate: f64,
    /// Bytes of output queued for one client, after the server has written what the client's
    /// socket takes, above which it is disconnected as a slow consumer (at least 4096;
    /// --io threads-direct queues nothing: see --write-timeout)
    #[arg(long, default_value_t = defaults().max_sendq as u64, value_parser = clap::value_parser!(u64).range(4096..))]
    max_sendq: u64,
    /// Bytes of output all clients' queues may hold together; past it the clients holding the
    /// most are disconnected first (0 = no limit) [default: 67108864; --io poll only: the
    /// threaded models refuse the flag]
    #[arg(long, value_name = "BYTES")]
    max_output_total: Option<u64>,
    /// The kernel's send buffer per client socket (SO_SNDBUF; the kernel doubles it) [default:
    /// the kernel's autotuning, up to tcp_wmem's maximum]. Kernel memory a slow reader holds
    /// is outside every other limit: a small host may cap it
    #[arg(long, value_name = "BYTES", value_parser = clap::value_parser!(u64).range(1024..=(1 << 30)))]
    send_buffer: Option<u64>,
    /// Clients served at once [default: what RLIMIT_NOFILE allows, after raising the soft
    /// limit to the hard one]
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    max_clients: Option<u64>,
    /// Connections allowed from one IP address (0 = unlimited)
    #[arg(long, default_value_t = defaults().max_per_ip)]
    max_per_ip: usize,
    /// Connections one IP address may open per minute; more are refused until the minute is
    /// over (0 = no limit)
    #[arg(long, value_name = "N", default_value_t = defaults().max_connects_per_ip)]
    max_connects_per_ip: u32,
    /// Per-address limits (--max-per-ip and the others) count an IPv6 client by its network of
    /// this many bits, so a host cannot pass them by using a new address of its /64 each time
    /// (16 to 128). IPv4 addresses count one by one
    #[arg(long, value_name = "BITS", default_value_t = defaults().ipv6_prefix, value_parser = clap::value_parser!(u8).range(16..=128))]
    ipv6_prefix: u8,
    /// Secret phrase (at least 16 characters) the key of cloaked hosts is derived from, so that
    /// users' cloaks stay the same across restarts [default: a random key at each start]. Others
    /// never see a user's address, only its cloak; keep the phrase secret
    #[arg(long, value_name = "KEY", value_parser = cloak_key)]
    cloak_key: Option<String>,
    /// Disconnect line-protocol clients silent for this many seconds (0 = never; at most a
    /// year). IRC clients are pinged instead
    #[arg(long, value_name = "SECS", default_value_t = defaults().idle_timeout.map_or(0, |d| d.as_secs()), value_parser = clap::value_parser!(u64).range(0..=31_536_000))]
    idle_timeout: u64,
    /// Line protocol: an unterminated line that has sat this many milliseconds with no byte
    /// added is taken as complete, so clients that send without a newline are heard (0 = never;
    /// at most 60000). Never applied to IRC
    #[arg(long, value_name = "MS", default_value_t = defaults().line_complete_after.map_or(0, |d| d.as_millis() as u64), value_parser = clap::value_parser!(u64).range(0..=60_000))]
    line_complete_after: u64,
    /// --io threads-direct only (it has no send queue): seconds writing one message into a
    /// client's socket may take in all before that client is disconnected as a slow consumer;
    /// every other client waits as long (0.001 to 3600)
    #[arg(long, value_name = "SECS", default_value_t = defaults().write_timeout.as_secs_f64(), value_parser = write_timeout)]
    write_timeout: f64,
    /// Log level: error, warn, info, debug or trace
    #[arg(long, default_value = "info", conflicts_with_all = ["verbose", "quiet"])]
    log_level: LevelFilter,
    /// Log more: -v for debug, -vv for trace (every message)
    #[arg(short, long, action = clap::ArgAction::Count)]
    verbose: u8,
    /// Log only warnings and errors
    #[arg(short, long, conflicts_with = "verbose")]
    quiet: bool,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Cmd::Serve(args) => serve(*args),
        Cmd::Connect {
            addr,
            tls,
            ca,
            insecure,
        } => {
            init_logging(LevelFilter::Warn);
            let trust = match (tls, ca, insecure) {
                (false, ..) => None,
                (true, Some(ca), _) => Some(client::Trust::Ca(ca)),
                (true, None, true) => Some(client::Trust::Insecure),
                (true, None, false) => {
                    eprintln!(
                        "pollchat: --tls needs --ca FILE (the server's certificate or its CA's) \
                         or --insecure"
                    );
                    return ExitCode::FAILURE;
                }
            };
            let default = if tls {
                defaults().tls_listen[0]
            } else {
                defaults().listen[0]
            };
            let addr = addr.unwrap_or_else(|| default.to_string());
            match client::run(&addr, trust) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("pollchat: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Cmd::Bench(opts) => run_bench(&opts),
        Cmd::Cert { out, names } => match write_cert(&out, &names) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("pollchat cert: {e}");
                ExitCode::FAILURE
            }
        },
        Cmd::HashPassword => {
            let mut password = String::new();
            if let Err(e) = std::io::stdin().read_line(&mut password) {
                eprintln!("pollchat: cannot read the password: {e}");
                return ExitCode::FAILURE;
            }
            let password = password.trim_end_matches(['\r', '\n']);
            if password.is_empty() {
                eprintln!("pollchat: give the password on standard input");
                return ExitCode::FAILURE;
            }
            println!("{}", pollchat::session::oper::hash_password(password));
            ExitCode::SUCCESS
        }
    }
}

/// `pollchat cert`: a self-signed pair into `dir`, the key readable by its owner only.
fn write_cert(dir: &std::path::Path, names: &[String]) -> Result<(), String> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let (cert, key) = pollchat::net::tls::self_signed(names)?;
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    // Neither is written if either exists: never half a new pair beside half an old one.
    for name in ["cert.pem", "key.pem"] {
        let path = dir.join(name);
        if path.exists() {
            return Err(format!("{} exists: not overwritten", path.display()));
        }
    }
    for (name, pem, mode) in [("cert.pem", &cert, 0o644), ("key.pem", &key, 0o600)] {
        let path = dir.join(name);
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&path)
            .and_then(|mut f| f.write_all(pem.as_bytes()))
            .map_err(|e| format!("{}: {e}", path.display()))?;
    }
    println!(
        "wrote {0}/cert.pem and {0}/key.pem (self-signed for {1}; for testing only)\n\
         serve with: pollchat serve --tls-cert {0}/cert.pem --tls-key {0}/key.pem",
        dir.display(),
        names.join(", ")
    );
    Ok(())
}

fn run_bench(opts: &bench::Opts) -> ExitCode {
    match bench::run(opts) {
        Ok(report) if opts.json => {
            println!("{}", bench::report::json(&report));
            ExitCode::SUCCESS
        }
        Ok(report) => {
            print!("{}", bench::report::human(&report));
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("pollchat bench: {e}");
            ExitCode::FAILURE
        }
    }
}

fn serve(args: ServeArgs) -> ExitCode {
    let level = match (args.quiet, args.verbose) {
        (true, _) => LevelFilter::Warn,
        (false, 0) => args.log_level,
        (false, 1) => LevelFilter::Debug,
        (false, _) => LevelFilter::Trace,
    };
    init_logging(level);
    let write_timeout = Duration::from_secs_f64(args.write_timeout);
    let nofile = match limits::raise_nofile() {
        Ok(n) => n,
        Err(e) => {
            warn!("cannot read RLIMIT_NOFILE ({e}); assuming 1024");
            1024
        }
    };
    let fit = limits::clients_for(nofile);
    let max_clients = match args.max_clients {
        Some(n) if n as usize > fit => {
            warn!(
                "--max-clients {n} is more than RLIMIT_NOFILE {nofile} allows ({fit}); accepts will hit EMFILE"
            );
            n as usize
        }
        Some(n) => n as usize,
        None => fit,
    };
    // The file is read again by the server at start and on SIGHUP; a file that does not read
    // stops the start here, with one line.
    if let Some(path) = &args.oper_file
        && let Err(e) = pollchat::session::oper::read_file(path)
    {
        error!("--oper-file {}: {e}", path.display());
        return ExitCode::FAILURE;
    }
    let opers = args.oper.clone();
    let server_bans = match &args.kline_file {
        None => Vec::new(),
        Some(path) => match server_bans(path) {
            Ok(bans) => bans,
            Err(e) => {
                error!("--kline-file {}: {e}", path.display());
                return ExitCode::FAILURE;
            }
        },
    };
    let motd = match &args.motd {
        None => None,
        Some(path) => match std::fs::read_to_string(path) {
            Ok(text) => Some(
                text.lines()
                    .map(|l| l.chars().filter(|c| !c.is_control()).collect())
                    .collect(),
            ),
            Err(e) => {
                error!("cannot read --motd {}: {e}", path.display());
                return ExitCode::FAILURE;
            }
        },
    };
    // At most 63 bytes (a host name label's limit): the name is the source of every numeric,
    // and IRC lines must fit in 512 bytes with it.
    if args.server_name.is_empty()
        || args.server_name.len() > 63
        || args
            .server_name
            .contains(|c: char| c.is_whitespace() || c.is_control() || c == ':')
    {
        error!("--server-name must be one word of at most 63 bytes, without ':'");
        return ExitCode::FAILURE;
    }
    let backplane = match backplane(&args) {
        Ok(b) => b,
        Err(e) => {
            error!("{e}");
            return ExitCode::FAILURE;
        }
    };
    let tls = args
        .tls_cert
        .zip(args.tls_key)
        .map(|(cert, key)| TlsFiles { cert, key });
    let config = Config {
        listen: if args.no_plain {
            Vec::new()
        } else {
            args.listen
        },
        irc_listen: if args.no_irc || args.no_plain {
            Vec::new()
        } else {
            args.irc_listen
        },
        reuse_port: args.reuse_port,
        backplane,
        tls,
        tls_listen: args.tls_listen,
        irc_tls_listen: if args.no_irc {
            Vec::new()
        } else {
            args.irc_tls_listen
        },
        tls_handshake_timeout: Duration::from_secs_f64(args.tls_handshake_timeout),
        sts_duration: args.sts_duration.map(Duration::from_secs),
        irc_password: args.irc_password,
        irc_password_tries: args.irc_password_tries,
        motd,
        server_name: args.server_name,
        server_description: pollchat::core::names::label(&args.server_description),
        reserved_nicks: args.reserved_nick,
        opers,
        oper_file: args.oper_file.clone(),
        kline_file: args.kline_file,
        server_bans,
        max_line: args.max_line as usize,
        history: usize::from(args.history),
        room_history_bytes: usize::try_from(args.room_history_bytes).unwrap_or(usize::MAX),
        history_bytes: usize::try_from(args.history_bytes).unwrap_or(usize::MAX),
        max_total_rooms: usize::try_from(args.max_total_rooms).unwrap_or(usize::MAX),
        max_rooms: usize::from(args.max_rooms),
        irc_ping_after: Duration::from_secs(args.irc_ping_timeout / 2),
        irc_ping_timeout: Duration::from_secs(args.irc_ping_timeout),
        irc_register_timeout: Duration::from_secs(args.irc_register_timeout),
        big_room: usize::try_from(args.big_room).unwrap_or(usize::MAX),
        nick_delay: Duration::from_secs(args.nick_delay),
        flood_burst: args.flood_burst,
        flood_rate: args.flood_rate,
        max_sendq: args.max_sendq as usize,
        max_clients,
        max_per_ip: args.max_per_ip,
        ipv6_prefix: args.ipv6_prefix,
        cloak_key: args.cloak_key,
        max_connects_per_ip: args.max_connects_per_ip,
        idle_timeout: (args.idle_timeout > 0).then(|| Duration::from_secs(args.idle_timeout)),
        line_complete_after: (args.line_complete_after > 0)
            .then(|| Duration::from_millis(args.line_complete_after)),
        write_timeout,
        send_buffer: args.send_buffer.map(|n| n as usize),
        ..Config::default()
    };
    let config = match (args.max_output_total, args.io) {
        (None, IoModel::Poll) => config,
        (None, _) => Config {
            max_output_total: 0,
            ..config
        },
        (Some(n), IoModel::Poll) => Config {
            max_output_total: usize::try_from(n).unwrap_or(usize::MAX),
            ..config
        },
        (Some(_), io) => {
            error!(
                "--max-output-total needs --io poll: --io {} keeps no count of all output held",
                io.name()
            );
            return ExitCode::FAILURE;
        }
    };
    let mut server = match Server::bind(args.io, config) {
        Ok(s) => s,
        Err(e) => {
            error!("{e}");
            return ExitCode::FAILURE;
        }
    };
    info!(
        "max clients {max_clients} (RLIMIT_NOFILE {nofile}); I/O model: {}",
        args.io
    );
    if let Err(e) = server.handle_signals() {
        error!("cannot install signal handlers: {e}");
        return ExitCode::FAILURE;
    }
    match server.run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            error!("server failed: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The cluster flags, checked: `None` without `--backplane`; an error names the flag.
fn backplane(args: &ServeArgs) -> Result<Option<pollchat::backplane::BackplaneConfig>, String> {
    use pollchat::backplane::{BackplaneConfig, check_word, default_node, parse_url};
    let Some(url) = &args.backplane else {
        return Ok(None);
    };
    let addr = parse_url(url).map_err(|e| format!("--backplane {e}"))?;
    let node = args.node.clone().unwrap_or_else(default_node);
    check_word("--node", &node)?;
    check_word("--backplane-prefix", &args.backplane_prefix)?;
    let password = match &args.backplane_password_file {
        Some(path) => Some(pollchat::backplane::read_password_file(path)?),
        None => None,
    };
    Ok(Some(BackplaneConfig {
        addr,
        node,
        prefix: args.backplane_prefix.clone(),
        max_queue: usize::try_from(args.backplane_max_queue).unwrap_or(usize::MAX),
        password,
    }))
}

/// Every default of the command line comes from here, so each is written once (in `Config`).
fn defaults() -> Config {
    Config::default()
}

/// `HOST:PORT` for `--listen`: an IP address, or a name resolved once at start (never in the
/// loop), e.g. `localhost:9223`.
fn address(s: &str) -> Result<SocketAddr, String> {
    if let Ok(addr) = s.parse() {
        return Ok(addr);
    }
    std::net::ToSocketAddrs::to_socket_addrs(s)
        .map_err(|e| format!("{s}: {e}"))?
        .next()
        .ok_or_else(|| format!("{s}: no address"))
}

/// `--reserved-nick`: a valid nick, since one nobody could take needs no reserving (a typo
/// would otherwise protect nothing, silently).
fn oper_entry(s: &str) -> Result<Oper, String> {
    Oper::parse(s).map_err(|e| e.to_string())
}

fn reserved_nick(s: &str) -> Result<String, String> {
    pollchat::core::names::check_nick(s)
        .map(|()| s.to_string())
        .map_err(|e| e.to_string())
}

/// Never 0: without a timeout a stuck write under the lock would wait forever, shutdown too.
fn write_timeout(s: &str) -> Result<f64, String> {
    let secs: f64 = s.parse().map_err(|e| format!("{e}"))?;
    if (0.001..=3600.0).contains(&secs) {
        Ok(secs)
    } else {
        Err("must be between 0.001 and 3600 seconds".into())
    }
}

fn handshake_timeout(s: &str) -> Result<f64, String> {
    let secs: f64 = s.parse().map_err(|e| format!("{e}"))?;
    if (0.1..=300.0).contains(&secs) {
        Ok(secs)
    } else {
        Err("must be between 0.1 and 300 seconds".into())
    }
}

fn flood_rate(s: &str) -> Result<f64, String> {
    let rate: f64 = s.parse().map_err(|e| format!("{e}"))?;
    if rate == 0.0 || (0.01..=1e6).contains(&rate) {
        Ok(rate)
    } else {
        Err("must be 0 (off) or between 0.01 and 1000000 lines per second".into())
    }
}

fn init_logging(level: LevelFilter) {
    let _ = simple_logger::SimpleLogger::new()
        .with_level(level)
        .with_utc_timestamps()
        .init();
}

/// `--cloak-key`: at least 16 characters. Whoever knows the phrase can undo IPv4 cloaks by
/// trying every address, so a short one (guessable by trying phrases) protects nothing.
fn cloak_key(s: &str) -> Result<String, String> {
    if s.chars().count() >= 16 {
        Ok(s.to_string())
    } else {
        Err("must be at least 16 characters (a long random phrase, kept secret)".into())
    }
}

/// The server bans in `path`; a missing file is created (empty), so a path the server cannot
/// write is found now rather than at the first KLINE.
fn server_bans(path: &std::path::Path) -> Result<Vec<pollchat::core::kline::ServerBan>, String> {
    use pollchat::core::kline;
    match std::fs::read_to_string(path) {
        Ok(text) => kline::parse(&text),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            std::fs::write(path, kline::ServerBans::default().render())
                .map_err(|e| format!("cannot create it: {e}"))?;
            Ok(Vec::new())
        }
        Err(e) => Err(e.to_string()),
    }
}
