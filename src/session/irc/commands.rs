//! The IRC command table, after ngircd's `parse.c`: per command its name, the fewest parameters
//! it needs, when it is allowed, its flood cost and its handler. [`dispatch`] is the one place
//! that refuses a command before any handler runs: 421 for an unknown command, 451 for one that
//! needs registration, 462 for one that only registration takes, 461 for too few parameters.
//! Handlers check only their own special rules (NICK without a nick is 431, not 461…).

use std::net::IpAddr;

use super::{Context, IrcSession, channel, messages, operator, query, registration};
use crate::core::{ClientId, Command, Core, Millis, Outbox};
use crate::protocol::irc::numeric::*;
use crate::protocol::irc::{self, Out};
use crate::session::Reason;

/// When a command may be sent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Allowed {
    /// Before and after registration.
    Always,
    /// After registration only; before it: 451.
    Registered,
    /// Before registration only; after it: 462.
    Unregistered,
}

/// What a handler works with besides the session itself.
pub(super) struct Call<'c, 'a> {
    /// The message's parameters, at least the command's `min_params` of them.
    pub p: &'c [&'c str],
    /// The message's tag section as sent (without `@`; empty if none).
    pub tags: &'c str,
    /// Replies to this client only.
    pub o: &'c mut Out<'a>,
    pub core: &'c mut Core,
    pub id: ClientId,
    /// The client's address, given to the core at registration (others see its cloak).
    pub host: IpAddr,
    pub ctx: &'c Context,
    pub now: Millis,
    /// The core's events, rendered by the driver.
    pub out: &'c mut Outbox,
    /// Flood tokens the command costs beyond one line's (see `Step::extra_cost`).
    pub extra_cost: u32,
}

impl Call<'_, '_> {
    /// Runs a core command for this client; its events go to the outbox.
    pub fn run(&mut self, command: Command) {
        self.core.handle(self.id, command, self.now, self.out);
    }

    /// The work of `n` more lines, charged to this line's flood cost (the bucket bounds how
    /// long any charge can throttle: `TokenBucket::charge`).
    pub fn charge(&mut self, n: usize) {
        let n = u32::try_from(n).unwrap_or(u32::MAX);
        self.extra_cost = self.extra_cost.saturating_add(n);
    }

    /// The distinct targets of a comma-separated `list` (compared case-insensitively, as nicks
    /// and rooms are), at most `max` of them. The first target past `max` is answered 407
    /// (unless `quiet`: NOTICE is never answered with an error) and the rest are ignored. The
    /// caller charges the work they cause.
    pub fn targets<'t>(&mut self, list: &'t str, max: usize, quiet: bool) -> Vec<&'t str> {
        let mut kept: Vec<&'t str> = Vec::new();
        for target in list.split(',').filter(|t| !t.is_empty()) {
            if kept.iter().any(|k| k.eq_ignore_ascii_case(target)) {
                continue;
            }
            if kept.len() == max {
                if !quiet {
                    self.o.numeric(ERR_TOOMANYTARGETS, &[&irc::safe(target)]);
                }
                break;
            }
            kept.push(target);
        }
        kept
    }
}

/// A command's handler. `Some` ends the connection.
pub(super) type Handler = fn(&mut IrcSession, &mut Call<'_, '_>) -> Option<Reason>;

/// One command of the table.
pub(super) struct Entry {
    /// Upper case, as [`irc::parse`] returns commands.
    pub name: &'static str,
    /// Fewer parameters get 461. 0 for commands that answer a missing parameter their own way.
    pub min_params: usize,
    pub allowed: Allowed,
    /// Flood-control tokens the command costs at least (one line). Handlers charge more for
    /// the work a command causes beyond that, by its targets or its size ([`Call::charge`]),
    /// as ngircd's penalties do.
    pub cost: u32,
    pub handler: Handler,
    /// One line of usage for HELP.
    pub help: &'static str,
}

const fn entry(
    name: &'static str,
    min_params: usize,
    allowed: Allowed,
    cost: u32,
    handler: Handler,
    help: &'static str,
) -> Entry {
    Entry {
        name,
        min_params,
        allowed,
        cost,
        handler,
        help,
    }
}

use Allowed::{Always, Registered, Unregistered};

/// Every IRC command pollchat knows, with one line of usage for HELP.
#[rustfmt::skip]
pub(super) static COMMANDS: &[Entry] = &[
    // Registration and the connection (registration.rs).
    entry("CAP", 0, Always, 1, registration::cap,
          "CAP LS|REQ|LIST|END: negotiate capabilities"), // no subcommand: 410
    entry("PASS", 1, Unregistered, 1, registration::pass,
          "PASS password: the server password, before NICK and USER"),
    entry("NICK", 0, Always, 1, registration::nick,
          "NICK nick: choose or change your nick"), // no nick: 431
    entry("USER", 4, Unregistered, 1, registration::user,
          "USER user 0 * :real name: register"),
    entry("PING", 0, Always, 1, registration::ping,
          "PING token: the server answers PONG token"), // no token: 409
    entry("PONG", 0, Always, 1, registration::pong,
          "PONG token: answer a PING"),
    entry("QUIT", 0, Always, 1, registration::quit,
          "QUIT [:reason]: leave the server"),
    // Channels (channel.rs).
    entry("JOIN", 1, Registered, 1, channel::join,
          "JOIN #room[,#room] [key[,key]]: join rooms; JOIN 0 leaves them all"),
    entry("PART", 1, Registered, 1, channel::part,
          "PART #room[,#room] [:reason]: leave rooms"),
    entry("TOPIC", 1, Registered, 1, channel::topic,
          "TOPIC #room [:text]: show or set a topic (operators, under +t)"),
    entry("NAMES", 0, Registered, 1, channel::names,
          "NAMES #room: who is in a room"), // no channel: just 366
    entry("LIST", 0, Registered, 1, channel::list,
          "LIST: the rooms, their sizes and topics"),
    entry("MODE", 1, Registered, 1, channel::mode,
          "MODE #room [+imnst|+k key|+l n|+b mask|+o/+v nick]; MODE nick [+iw-o]"),
    entry("KICK", 2, Registered, 1, channel::kick,
          "KICK #room nick [:reason]: remove a member (operators)"),
    entry("INVITE", 2, Registered, 1, channel::invite,
          "INVITE nick #room: let a user into an invite-only room"),
    // Messages (messages.rs).
    entry("PRIVMSG", 0, Registered, 1, messages::privmsg,
          "PRIVMSG target[,target] :text: talk to rooms and nicks"), // 411, 412
    entry("NOTICE", 0, Registered, 1, messages::notice,
          "NOTICE target :text: like PRIVMSG, never answered automatically"), // never answered with an error
    entry("TAGMSG", 0, Registered, 1, messages::tagmsg,
          "TAGMSG target: a message of tags only (message-tags)"), // as NOTICE: no error replies
    entry("AWAY", 0, Registered, 1, messages::away,
          "AWAY [:message]: mark yourself away, or back"),
    // Queries (query.rs).
    entry("WHO", 0, Registered, 1, query::who,
          "WHO #room|mask: members and users with their flags"), // no mask: just 315
    entry("WHOIS", 0, Registered, 1, query::whois,
          "WHOIS nick: who a user is"), // no nick: 431
    entry("WHOWAS", 0, Registered, 1, query::whowas,
          "WHOWAS nick [count]: who had a nick lately"), // no nick: 431, 369
    entry("MOTD", 0, Registered, 1, query::motd,
          "MOTD: the message of the day"),
    entry("LUSERS", 0, Registered, 1, query::lusers,
          "LUSERS: how many users, operators and rooms"),
    entry("ISON", 1, Registered, 1, query::ison,
          "ISON nick...: which of these nicks are online"),
    entry("MONITOR", 1, Registered, 1, query::monitor,
          "MONITOR +|- nick[,nick] | C | L | S: be told when nicks come and go"),
    entry("SILENCE", 0, Registered, 1, query::silence,
          "SILENCE [+mask|-mask]: show or change your ignore list"),
    entry("LINKS", 0, Registered, 1, query::links,
          "LINKS: the servers of this network (this one)"),
    entry("HELP", 0, Registered, 1, query::help,
          "HELP [command]: this list, or one command"),
    entry("HELPOP", 0, Registered, 1, query::help,
          "HELPOP [command]: the same as HELP"),
    entry("USERHOST", 1, Registered, 1, query::userhost,
          "USERHOST nick...: nicks with their hosts"),
    // Server operators (operator.rs). OPER checks a password hash: ten lines' worth of tokens.
    entry("OPER", 2, Registered, 10, operator::oper,
          "OPER name password: become a server operator"),
    entry("KILL", 1, Registered, 1, operator::kill,
          "KILL nick [:reason]: disconnect a user (server operators)"),
    entry("WALLOPS", 1, Registered, 1, operator::wallops,
          "WALLOPS :text: to every user with +w (server operators)"),
    entry("KLINE", 1, Registered, 1, operator::kline,
          "KLINE [minutes] user@host [:reason]: ban from the server (server operators)"),
    entry("UNKLINE", 1, Registered, 1, operator::unkline,
          "UNKLINE user@host: lift a server ban (server operators)"),
    entry("STATS", 1, Registered, 1, operator::stats,
          "STATS k: the server bans (server operators)"),
    // About the server (query.rs).
    entry("TIME", 0, Registered, 1, query::time,
          "TIME: the time on the server"),
    entry("VERSION", 0, Registered, 1, query::version,
          "VERSION: the version of the server, and its features"),
    entry("ADMIN", 0, Registered, 1, query::admin,
          "ADMIN: who runs the server"),
    entry("INFO", 0, Registered, 1, query::info,
          "INFO: about the software"),
];

pub(super) fn find(command: &str) -> Option<&'static Entry> {
    COMMANDS
        .iter()
        .find(|e| e.name.eq_ignore_ascii_case(command))
}

/// Runs one parsed command: refuses it here if the table says so, else calls its handler.
pub(super) fn dispatch(
    s: &mut IrcSession,
    command: &str,
    call: &mut Call<'_, '_>,
) -> Option<Reason> {
    let o = &mut *call.o;
    let Some(entry) = find(command) else {
        // Before registration, an unknown command is one more thing not allowed yet.
        if s.registered {
            o.numeric(ERR_UNKNOWNCOMMAND, &[&irc::safe(command)]);
        } else {
            o.numeric(ERR_NOTREGISTERED, &[]);
        }
        return None;
    };
    match (entry.allowed, s.registered) {
        (Allowed::Registered, false) => o.numeric(ERR_NOTREGISTERED, &[]),
        (Allowed::Unregistered, true) => o.numeric(ERR_ALREADYREGISTERED, &[]),
        _ if call.p.len() < entry.min_params => o.numeric(ERR_NEEDMOREPARAMS, &[&entry.name]),
        _ => {
            call.charge(entry.cost.saturating_sub(1) as usize);
            return (entry.handler)(s, call);
        }
    }
    None
}
