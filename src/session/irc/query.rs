//! Queries: WHO, WHOIS, MOTD, LUSERS, ISON, USERHOST. Each ends its list even when what was
//! asked about does not exist, so clients waiting for the end are never left hanging.

use super::commands::Call;
use super::{Context, IrcSession};
use crate::core::{Command, Listing};
use crate::protocol::irc::numeric::*;
use crate::protocol::irc::{self, Out};
use crate::session::Reason;

/// Without a mask (or with `*`/`0`), or for a mask that matches nothing: just the end of the list.
pub(super) fn who(_: &mut IrcSession, c: &mut Call<'_, '_>) -> Option<Reason> {
    match c.p.first().filter(|m| !matches!(**m, "" | "*" | "0")) {
        None => c.o.numeric(RPL_ENDOFWHO, &[&"*"]),
        Some(mask) if !c.core.room_exists(mask) && !c.core.nick_in_use(mask) => {
            c.o.numeric(RPL_ENDOFWHO, &[&irc::safe(mask)])
        }
        Some(mask) => c.run(Command::Who {
            target: Some(mask.to_string()),
            listing: Listing::Who,
        }),
    }
    None
}

/// `WHOIS [server] nick`: one nick (TARGMAX); a second is answered 407. Without one, 431.
pub(super) fn whois(_: &mut IrcSession, c: &mut Call<'_, '_>) -> Option<Reason> {
    let Some(nicks) = c.p.last() else {
        c.o.numeric(ERR_NONICKNAMEGIVEN, &[]);
        return None;
    };
    let nicks = c.targets(nicks, irc::WHOIS_TARGETS, false);
    let nick = nicks.first().copied().unwrap_or("");
    if c.core.nick_in_use(nick) {
        c.run(Command::Whois(nick.to_string()));
    } else {
        let nick = irc::safe(nick);
        c.o.numeric(ERR_NOSUCHNICK, &[&nick]);
        c.o.numeric(RPL_ENDOFWHOIS, &[&nick]);
    }
    None
}

pub(super) fn motd(_: &mut IrcSession, c: &mut Call<'_, '_>) -> Option<Reason> {
    send_motd(c.o, c.ctx);
    None
}

pub(super) fn lusers(_: &mut IrcSession, c: &mut Call<'_, '_>) -> Option<Reason> {
    irc::lusers(c.o, c.core.user_count(), c.core.room_count());
    None
}

/// `ISON nick nick…`: which are online.
pub(super) fn ison(_: &mut IrcSession, c: &mut Call<'_, '_>) -> Option<Reason> {
    let nicks = words(c.p).map(String::from).collect();
    c.run(Command::Lookup {
        nicks,
        listing: Listing::Ison,
    });
    None
}

/// `USERHOST nick…`: at most five.
pub(super) fn userhost(_: &mut IrcSession, c: &mut Call<'_, '_>) -> Option<Reason> {
    let nicks = words(c.p).take(5).map(String::from).collect();
    c.run(Command::Lookup {
        nicks,
        listing: Listing::Userhost,
    });
    None
}

/// The nicks of ISON and USERHOST, whether sent as parameters or as one trailing list.
fn words<'p>(p: &'p [&'p str]) -> impl Iterator<Item = &'p str> {
    p.iter()
        .flat_map(|w| w.split(' '))
        .filter(|n| !n.is_empty())
}

/// The message of the day (375, 372…, 376), or 422 when there is none. Also the end of the
/// welcome burst.
pub(super) fn send_motd(o: &mut Out<'_>, ctx: &Context) {
    match ctx.motd.as_deref() {
        Some(lines) => {
            o.numeric_with(RPL_MOTDSTART, &[], &[&ctx.server]);
            for line in lines {
                o.numeric_with(RPL_MOTD, &[], &[line]);
            }
            o.numeric(RPL_ENDOFMOTD, &[]);
        }
        None => o.numeric(ERR_NOMOTD, &[]),
    }
}
