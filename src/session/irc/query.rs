//! Queries: WHO, WHOIS, MOTD, LUSERS, ISON, USERHOST, and about the server itself TIME,
//! VERSION, ADMIN, INFO. Each ends its list even when what was asked about does not exist, so
//! clients waiting for the end are never left hanging.

use super::commands::Call;
use super::{Context, IrcSession};
use crate::core::watch::Watch;
use crate::core::{Command, Listing};
use crate::protocol::irc::numeric::*;
use crate::protocol::irc::{self, Out};
use crate::session::Reason;

/// Users a `WHO` mask (`*`, `nick*`, `*!*@host`) lists at most, in nick order: a bounded answer
/// instead of a paged one (a room's members are paged: `WHO #room`).
pub const WHO_MASK_MAX: usize = 200;

/// `WHO #room`, `WHO nick`, or a mask (`0` is `*`: everyone) answered by `Core::who_mask`; a
/// mask's scan of all users costs one more line per thousand. Without a mask, or for a room or
/// nick that does not exist: just the end of the list.
pub(super) fn who(_: &mut IrcSession, c: &mut Call<'_, '_>) -> Option<Reason> {
    match c.p.first().filter(|m| !m.is_empty()) {
        None => c.o.numeric(RPL_ENDOFWHO, &[&"*"]),
        Some(mask) if *mask == "0" || (!mask.starts_with('#') && mask.contains(['*', '?'])) => {
            let mask = if *mask == "0" { "*" } else { mask };
            let scanned = c.core.who_mask(c.id, &irc::safe(mask), WHO_MASK_MAX, c.out);
            c.charge(scanned / 1000);
        }
        Some(mask)
            if !c.core.room_exists(mask)
                && !c.core.nick_in_use(mask)
                && !c.core.room_elsewhere(mask) =>
        {
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
    // (In a cluster, a user of another node is known too: from a room shared with this one,
    // or asked of the cluster, answered later.)
    if c.core.nick_in_use(nick) || c.core.remote_nick_known(nick) || c.core.may_be_elsewhere(nick) {
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
    let core = &c.core;
    irc::lusers(c.o, &core.stats(), true);
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

/// The version 002, 004 and 351 give.
pub(super) const VERSION: &str = concat!("pollchat-", env!("CARGO_PKG_VERSION"));

/// What INFO says (371 each).
const INFO: &[&str] = &[
    concat!(
        "pollchat ",
        env!("CARGO_PKG_VERSION"),
        ": ",
        env!("CARGO_PKG_DESCRIPTION")
    ),
    "Line-protocol users (nc, telnet) and IRC users share its rooms and nicks.",
    concat!("License: ", env!("CARGO_PKG_LICENSE")),
];

/// TIME, VERSION, ADMIN and INFO may name a server (or a nick, meaning that user's server):
/// whether `p`'s first parameter, if any, names this one. Answers 402 if not.
fn about_this_server(c: &mut Call<'_, '_>) -> bool {
    match c.p.first().filter(|t| !t.is_empty()) {
        None => true,
        Some(target)
            if target.eq_ignore_ascii_case(&c.ctx.server)
                || crate::core::mask::glob(
                    target.to_ascii_lowercase().as_bytes(),
                    c.ctx.server.to_ascii_lowercase().as_bytes(),
                )
                || c.core.nick_in_use(target) =>
        {
            true
        }
        Some(target) => {
            c.o.numeric(ERR_NOSUCHSERVER, &[&irc::safe(target)]);
            false
        }
    }
}

/// `TIME [server]`: the server's clock (391), in UTC.
pub(super) fn time(_: &mut IrcSession, c: &mut Call<'_, '_>) -> Option<Reason> {
    if about_this_server(c) {
        let now = crate::protocol::iso8601(c.now);
        c.o.numeric_with(RPL_TIME, &[&c.ctx.server], &[&now]);
    }
    None
}

/// `VERSION [server]`: 351, then the ISUPPORT tokens again (005), as modern.ircdocs.horse asks.
pub(super) fn version(_: &mut IrcSession, c: &mut Call<'_, '_>) -> Option<Reason> {
    if about_this_server(c) {
        let about = env!("CARGO_PKG_DESCRIPTION");
        c.o.numeric_with(RPL_VERSION, &[&VERSION, &c.ctx.server], &[&about]);
        for tokens in irc::isupport_lines(c.ctx.max_rooms) {
            c.o.numeric(RPL_ISUPPORT, &[&tokens]);
        }
    }
    None
}

/// `ADMIN [server]`: pollchat is configured with no administrator to name (423).
pub(super) fn admin(_: &mut IrcSession, c: &mut Call<'_, '_>) -> Option<Reason> {
    if about_this_server(c) {
        c.o.numeric(ERR_NOADMININFO, &[&c.ctx.server]);
    }
    None
}

/// `INFO [server]`: a few lines about the software (371…, 374).
pub(super) fn info(_: &mut IrcSession, c: &mut Call<'_, '_>) -> Option<Reason> {
    if about_this_server(c) {
        for line in INFO {
            c.o.numeric_with(RPL_INFO, &[], &[line]);
        }
        c.o.numeric(RPL_ENDOFINFO, &[]);
    }
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

/// `WHOWAS nick [count]` (wildcards allowed): the users who had a matching nick lately, newest
/// first; 406 if none; always ending with 369. Without a nick: 431, then 369.
pub(super) fn whowas(_: &mut IrcSession, c: &mut Call<'_, '_>) -> Option<Reason> {
    let Some(nick) = c.p.first().filter(|n| !n.is_empty()) else {
        c.o.numeric(ERR_NONICKNAMEGIVEN, &[]);
        c.o.numeric(RPL_ENDOFWHOWAS, &[&"*"]);
        return None;
    };
    // A count that is not a positive number means "all" (RFC 1459).
    let count =
        c.p.get(1)
            .and_then(|n| n.parse::<i64>().ok())
            .filter(|&n| n > 0)
            .map_or(0, |n| n as usize);
    c.run(Command::Whowas {
        nick: nick.to_string(),
        count,
    });
    None
}

/// `SILENCE`: the ignore list (271…, 272); `SILENCE +mask` / `-mask` (or a bare mask, which
/// adds) changes it.
pub(super) fn silence(_: &mut IrcSession, c: &mut Call<'_, '_>) -> Option<Reason> {
    let change = c.p.first().filter(|m| !m.is_empty()).map(|m| {
        match (m.strip_prefix('-'), m.strip_prefix('+')) {
            (Some(mask), _) => (false, mask.to_string()),
            (_, Some(mask)) => (true, mask.to_string()),
            _ => (true, m.to_string()),
        }
    });
    c.run(Command::Silence(change));
    None
}

/// `LINKS [[server] mask]`: the one server of this network if it matches the mask (364 with
/// hop count 0 and its description), then 365 naming the mask.
pub(super) fn links(_: &mut IrcSession, c: &mut Call<'_, '_>) -> Option<Reason> {
    let server = &c.ctx.server;
    let mask = c.p.last().filter(|m| !m.is_empty()).copied().unwrap_or("*");
    if crate::core::mask::glob(
        mask.to_ascii_lowercase().as_bytes(),
        server.to_ascii_lowercase().as_bytes(),
    ) {
        c.o.numeric_with(RPL_LINKS, &[&server, &server], &[&c.ctx.description]);
    }
    c.o.numeric(RPL_ENDOFLINKS, &[&irc::safe(mask)]);
    None
}

/// `HELP [command]` (and `HELPOP`): the commands, or one command's usage, from the command
/// table (704, 705…, 706); 524 for a subject that is no command.
pub(super) fn help(_: &mut IrcSession, c: &mut Call<'_, '_>) -> Option<Reason> {
    match c.p.first().filter(|t| !t.is_empty()) {
        None => {
            c.o.numeric_with(
                RPL_HELPSTART,
                &[&"*"],
                &[&"pollchat IRC commands (HELP command for one):"],
            );
            let names: Vec<&str> = super::commands::COMMANDS.iter().map(|e| e.name).collect();
            for chunk in names.chunks(10) {
                c.o.numeric_with(RPL_HELPTXT, &[&"*"], &[&chunk.join(" ")]);
            }
            c.o.numeric(RPL_ENDOFHELP, &[&"*"]);
        }
        Some(subject) => match super::commands::find(subject) {
            Some(entry) => {
                c.o.numeric_with(RPL_HELPSTART, &[&entry.name], &[&entry.help]);
                c.o.numeric(RPL_ENDOFHELP, &[&entry.name]);
            }
            None => c.o.numeric(ERR_HELPNOTFOUND, &[&irc::safe(subject)]),
        },
    }
    None
}

/// `MONITOR + nicks`, `- nicks`, `C` (clear), `L` (list: 732…, 733), `S` (status: 730/731).
/// Adding answers at once which nicks are online (730) and offline (731); later arrivals,
/// departures and nick changes are told as they happen. A full list is 734.
pub(super) fn monitor(_: &mut IrcSession, c: &mut Call<'_, '_>) -> Option<Reason> {
    let nicks = || -> Vec<String> {
        c.p.get(1)
            .map(|l| {
                l.split(',')
                    .filter(|n| !n.is_empty())
                    .map(String::from)
                    .collect()
            })
            .unwrap_or_default()
    };
    let watch = match c.p[0] {
        "+" => Watch::Add(nicks()),
        "-" => Watch::Remove(nicks()),
        "c" | "C" => Watch::Clear,
        "l" | "L" => Watch::List,
        "s" | "S" => Watch::Status,
        _ => return None,
    };
    if let Watch::Add(n) | Watch::Remove(n) = &watch {
        // A look-up per nick: one more line's tokens per ten.
        c.charge(n.len() / 10);
    }
    c.run(Command::Watch(watch));
    None
}
