//! Registration and the connection itself: CAP negotiation, PASS, NICK, USER, the welcome burst
//! that completes registration, and PING, PONG and QUIT (the commands ngircd keeps in
//! `irc-login.c`).

use super::commands::Call;
use super::{CAPS, IrcSession, query};
use crate::core::{Command, Core, Registration};
use crate::protocol::irc::numeric::*;
use crate::protocol::irc::{self, Out};
use crate::session::Context;
use crate::session::{Protocol, Reason, credentials_refused};
use log::warn;

/// CAP LS, LIST, REQ, END; END may complete registration.
pub(super) fn cap(s: &mut IrcSession, c: &mut Call<'_, '_>) -> Option<Reason> {
    let p = c.p;
    let sub = p
        .first()
        .map(|s| s.to_ascii_uppercase())
        .unwrap_or_default();
    let o = &mut *c.o;
    let (server, me) = (o.server, o.me);
    match sub.as_str() {
        "LS" => {
            s.cap_pause |= !s.registered;
            // Capability values (here sts's) only for clients that speak CAP 302.
            let version = p.get(1).and_then(|v| v.parse::<u32>().ok()).unwrap_or(0);
            match sts(c.ctx, s.secure).filter(|_| version >= 302) {
                Some(sts) => o.raw(format_args!(":{server} CAP {me} LS :{CAPS} {sts}")),
                None => o.raw(format_args!(":{server} CAP {me} LS :{CAPS}")),
            }
        }
        "LIST" => o.raw(format_args!(":{server} CAP {me} LIST :{}", s.caps.list())),
        "REQ" => {
            s.cap_pause |= !s.registered;
            let asked = p.get(1).copied().unwrap_or("");
            let mut caps = s.caps;
            let ok =
                asked
                    .split(' ')
                    .filter(|c| !c.is_empty())
                    .all(|c| match c.strip_prefix('-') {
                        Some(off) => caps.set(off, false),
                        None => caps.set(c, true),
                    });
            let verdict = if ok { "ACK" } else { "NAK" };
            if ok {
                s.caps = caps;
            }
            o.raw(format_args!(":{server} CAP {me} {verdict} :{asked}"));
        }
        "END" => {
            s.cap_pause = false;
            return try_register(s, c);
        }
        _ => o.numeric(ERR_INVALIDCAPCMD, &[&irc::safe(&sub)]),
    }
    None
}

/// IRCv3 `sts` as this connection is told it (`--sts-duration`, with an IRC TLS door): in
/// clear, where to go (`sts=port=6697`); over TLS, for how long to keep coming that way.
fn sts(ctx: &crate::session::Context, secure: bool) -> Option<String> {
    let duration = ctx.sts_duration?;
    let port = ctx.tls?.irc?;
    Some(if secure {
        format!("sts=duration={duration}")
    } else {
        format!("sts=port={port}")
    })
}

pub(super) fn pass(s: &mut IrcSession, c: &mut Call<'_, '_>) -> Option<Reason> {
    if let Some(hint) = credentials_refused(c.ctx, s.secure, s.peer.ip(), Protocol::Irc) {
        warn!("{}: PASS sent in clear, refused", s.peer);
        c.o.fail(FAIL_TLS_REQUIRED, "PASS", &[&hint]);
        return None;
    }
    s.pass = Some(c.p[0].to_string());
    None
}

/// Before registration: checks the nick and keeps it; after: a nick change for the core.
pub(super) fn nick(s: &mut IrcSession, c: &mut Call<'_, '_>) -> Option<Reason> {
    let Some(nick) = c.p.first().copied().filter(|n| !n.is_empty()) else {
        c.o.numeric(ERR_NONICKNAMEGIVEN, &[]);
        return None;
    };
    if s.registered {
        c.run(Command::Nick(nick.to_string()));
    } else if s.claiming {
        // The nick asked for first is being claimed in the cluster: one claim at a time.
        irc::error(c.o, &crate::core::Error::NickPending(nick.to_string()));
    } else if let Err(e) = c.core.check_new_nick(None, nick, c.now) {
        // 432 for a malformed or reserved nick, 433 for a taken one.
        irc::error(c.o, &e);
    } else {
        s.nick = Some(nick.to_string());
        return try_register(s, c);
    }
    None
}

/// `USER name mode unused :real name`; an empty user name or real name is 461
/// (modern.ircdocs.horse: "even an empty parameter").
pub(super) fn user(s: &mut IrcSession, c: &mut Call<'_, '_>) -> Option<Reason> {
    if c.p[0].is_empty() || c.p[3].is_empty() {
        c.o.numeric(ERR_NEEDMOREPARAMS, &[&"USER"]);
        return None;
    }
    s.user = Some((user_name(c.p[0]), c.p[3].to_string()));
    try_register(s, c)
}

pub(super) fn ping(_: &mut IrcSession, c: &mut Call<'_, '_>) -> Option<Reason> {
    match c.p.first() {
        Some(token) => {
            let token: String = token.chars().filter(|c| !c.is_control()).collect();
            c.o.raw(format_args!(":{0} PONG {0} :{token}", c.ctx.server))
        }
        None => c.o.numeric(ERR_NOORIGIN, &[]),
    }
    None
}

/// Any line clears the session's `pinged`; a PONG has nothing more to do.
pub(super) fn pong(_: &mut IrcSession, _: &mut Call<'_, '_>) -> Option<Reason> {
    None
}

pub(super) fn quit(_: &mut IrcSession, c: &mut Call<'_, '_>) -> Option<Reason> {
    Some(Reason::Quit(
        c.p.first().filter(|r| !r.is_empty()).map(|r| r.to_string()),
    ))
}

/// Completes registration once NICK and USER are in and CAP negotiation is over: checks the
/// password, registers with the core and sends the welcome burst (001–005, LUSERS, MOTD).
fn try_register(s: &mut IrcSession, c: &mut Call<'_, '_>) -> Option<Reason> {
    let (Some(nick), Some((user, realname))) = (&s.nick, &s.user) else {
        return None;
    };
    if s.registered || s.cap_pause || s.claiming {
        return None;
    }
    let ctx = c.ctx;
    if let Some(password) = ctx.password.as_deref()
        && !s
            .pass
            .as_deref()
            .is_some_and(|guess| same_secret(guess.as_bytes(), password.as_bytes()))
    {
        c.o.numeric(ERR_PASSWDMISMATCH, &[]);
        return Some(Reason::BadPassword);
    }
    if let Some(why) = c.core.server_banned(user, c.host, c.now) {
        c.o.numeric(ERR_YOUREBANNEDCREEP, &[]);
        return Some(Reason::Banned(why));
    }
    match c
        .core
        .register(c.id, nick, user, realname, c.host, c.now, c.out)
    {
        Err(e) => {
            irc::error(c.o, &e);
            s.nick = None;
        }
        Ok(Registration::Done) => c.o.buf.push_str(&welcome(s, ctx, c.core)),
        // In a cluster: the welcome (or 433) once the claim is decided (`Session::registration`).
        Ok(Registration::Pending) => s.claiming = true,
    }
    None
}

/// Marks the session registered and renders the welcome burst (001–005, LUSERS, MOTD).
pub(super) fn welcome(s: &mut IrcSession, ctx: &Context, core: &mut Core) -> String {
    s.registered = true;
    let (id, nick) = (s.id, s.nick.as_deref().unwrap_or("*"));
    if s.secure {
        core.set_secure(id);
    }
    let mut w = Out::new(&ctx.server, nick);
    let version = query::VERSION;
    // The prefix others see, cloaked host included (clients size their lines by it).
    let me = core.source(id).map(|s| irc::prefix(s)).unwrap_or_default();
    w.numeric_with(RPL_WELCOME, &[], &[&me]);
    w.numeric_with(RPL_YOURHOST, &[], &[&ctx.server, &version]);
    w.numeric_with(RPL_CREATED, &[], &[&crate::protocol::iso8601(ctx.started)]);
    w.numeric(RPL_MYINFO, &[&ctx.server, &version]);
    for tokens in irc::isupport_lines(ctx.max_rooms) {
        w.numeric(RPL_ISUPPORT, &[&tokens]);
    }
    irc::lusers(&mut w, &core.stats(), true);
    query::send_motd(&mut w, ctx);
    w.buf
}

/// USER's user name as shown in `nick!user@host`: letters, digits, `-_.`, at most 10.
fn user_name(raw: &str) -> String {
    let clean: String = raw
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || "-_.".contains(*c))
        .take(10)
        .collect();
    if clean.is_empty() {
        "user".into()
    } else {
        clean
    }
}

/// Whether `guess` is `secret`, in a time that depends only on the longer of the two lengths:
/// every byte position is compared (a missing byte counts as a difference) and the differences
/// are OR-ed together, so there is no early exit at the first wrong byte that would let a
/// client find the password one byte at a time by timing its rejections. Guesses are also
/// few: an address that gives `--irc-password-tries` wrong ones is refused for a while
/// (`driver::listen::Admission`).
fn same_secret(guess: &[u8], secret: &[u8]) -> bool {
    let n = guess.len().max(secret.len());
    let mut diff = u8::from(guess.len() != secret.len());
    for i in 0..n {
        let (a, b) = (guess.get(i).copied(), secret.get(i).copied());
        diff |= a.unwrap_or(0) ^ b.unwrap_or(0) | u8::from(a.is_none() || b.is_none());
    }
    // Keeps the optimiser from turning the loop back into a comparison that stops early.
    std::hint::black_box(diff) == 0
}

#[cfg(test)]
mod tests {
    use super::same_secret;

    #[test]
    fn secrets_match_only_when_equal_whatever_the_lengths() {
        assert!(same_secret(b"sesame", b"sesame"));
        assert!(!same_secret(b"sesamf", b"sesame"));
        assert!(!same_secret(b"Sesame", b"sesame"));
        // A prefix, an extension, the empty guess: a length difference is a difference even
        // where the padding byte (0) would equal the secret's.
        assert!(!same_secret(b"sesam", b"sesame"));
        assert!(!same_secret(b"sesame\0", b"sesame"));
        assert!(!same_secret(b"", b"sesame"));
        assert!(!same_secret(b"sesame", b""));
        assert!(same_secret(b"", b""));
    }
}
