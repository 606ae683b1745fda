//! Server operators' commands: OPER, KILL, WALLOPS, KLINE/UNKLINE and STATS k (see `session::oper` for the credentials).

use log::warn;

use super::IrcSession;
use super::commands::Call;
use crate::core::{Command, Error};
use crate::protocol::irc;
use crate::protocol::irc::numeric::{FAIL_TLS_REQUIRED, RPL_ENDOFSTATS};
use crate::session::{Protocol, Reason, credentials_refused};

/// `OPER name password`: 381 and a `MODE nick +o`, or 464 (a wrong name is answered as a wrong
/// password, in the same time) and a warning in the log. The command costs many flood tokens
/// (its table entry), and the server checks a few passwords a second at most
/// (`Core::may_check_password`): checking a password hash is meant to be slow.
pub(super) fn oper(s: &mut IrcSession, c: &mut Call<'_, '_>) -> Option<Reason> {
    let (name, password) = (c.p[0], c.p[1]);
    if let Some(hint) = credentials_refused(c.ctx, s.secure, s.peer.ip(), Protocol::Irc) {
        warn!("{}: OPER sent in clear, refused", s.peer);
        c.o.fail(FAIL_TLS_REQUIRED, "OPER", &[&hint]);
        return None;
    }
    if c.core.check_oper(name, password, c.now) {
        c.run(Command::MakeOper);
    } else {
        warn!(
            "{}: wrong OPER name or password (for {:?})",
            s.peer,
            irc::safe(name)
        );
        irc::error(c.o, &Error::BadOperLogin);
    }
    None
}

/// `KILL nick [:reason]`: a server operator disconnects a user (481 for anyone else).
pub(super) fn kill(_: &mut IrcSession, c: &mut Call<'_, '_>) -> Option<Reason> {
    c.run(Command::Kill {
        nick: c.p[0].to_string(),
        reason: c.p.get(1).filter(|r| !r.is_empty()).map(|r| r.to_string()),
    });
    None
}

/// `WALLOPS :text`: a server operator's message to every user with `+w` (481 for anyone else).
pub(super) fn wallops(_: &mut IrcSession, c: &mut Call<'_, '_>) -> Option<Reason> {
    c.run(Command::Wallops(c.p[0].to_string()));
    None
}

/// `KLINE [minutes] user@host [:reason]`: a server ban, for `minutes` or (without, or 0) for
/// good; the users it matches are disconnected.
pub(super) fn kline(_: &mut IrcSession, c: &mut Call<'_, '_>) -> Option<Reason> {
    let p = c.p;
    let (minutes, rest) = match p[0].parse::<u64>() {
        Ok(m) if p.len() > 1 => (m, &p[1..]),
        _ => (0, p),
    };
    c.run(Command::ServerBan {
        mask: rest[0].to_string(),
        minutes,
        reason: rest.get(1).filter(|r| !r.is_empty()).map(|r| r.to_string()),
    });
    None
}

/// `UNKLINE user@host`: lifts a server ban.
pub(super) fn unkline(_: &mut IrcSession, c: &mut Call<'_, '_>) -> Option<Reason> {
    c.run(Command::ServerUnban(c.p[0].to_string()));
    None
}

/// `STATS k` (or `K`): the server bans (216…, 219); any other letter: only 219, as servers
/// answer the statistics they do not keep.
pub(super) fn stats(_: &mut IrcSession, c: &mut Call<'_, '_>) -> Option<Reason> {
    match c.p[0] {
        "k" | "K" => c.run(Command::ServerBans),
        other => c.o.numeric(RPL_ENDOFSTATS, &[&irc::safe(other)]),
    }
    None
}
