//! Channel commands: JOIN, PART, TOPIC, NAMES, LIST, and MODE (channel queries, and the user
//! mode query, since pollchat has no modes to change).

use super::IrcSession;
use super::commands::Call;
use crate::core::{Command, Listing};
use crate::protocol::irc;
use crate::protocol::irc::numeric::*;
use crate::session::Reason;

/// `JOIN #a,#b`, or `JOIN 0` to leave every channel. Each room joined or left costs a line's
/// flood tokens: each is a fan-out to its members. (No TARGMAX: `--max-rooms` bounds the list,
/// and clients join all their channels in one line when they reconnect.)
pub(super) fn join(_: &mut IrcSession, c: &mut Call<'_, '_>) -> Option<Reason> {
    let p = c.p;
    let before = c.core.rooms_of(c.id);
    if p[0] == "0" {
        c.run(Command::PartAll);
    } else {
        for room in c.targets(p[0], usize::MAX, false) {
            c.run(Command::Join(room.to_string()));
        }
    }
    // Charged by the rooms actually joined or left (a refused join costs no fan-out).
    let changed = c.core.rooms_of(c.id).abs_diff(before);
    c.charge(changed.saturating_sub(1));
    None
}

pub(super) fn part(_: &mut IrcSession, c: &mut Call<'_, '_>) -> Option<Reason> {
    let p = c.p;
    let reason = p.get(1).filter(|r| !r.is_empty()).map(|r| r.to_string());
    let before = c.core.rooms_of(c.id);
    for room in c.targets(p[0], usize::MAX, false) {
        c.run(Command::Part {
            room: Some(room.to_string()),
            reason: reason.clone(),
        });
    }
    c.charge(before.abs_diff(c.core.rooms_of(c.id)).saturating_sub(1));
    None
}

pub(super) fn topic(_: &mut IrcSession, c: &mut Call<'_, '_>) -> Option<Reason> {
    let p = c.p;
    c.run(Command::Topic {
        room: Some(p[0].to_string()),
        text: p.get(1).map(|t| t.to_string()),
    });
    None
}

/// Without a channel, or for one that does not exist, just the end of the list.
pub(super) fn names(_: &mut IrcSession, c: &mut Call<'_, '_>) -> Option<Reason> {
    let Some(rooms) = c.p.first() else {
        c.o.numeric(RPL_ENDOFNAMES, &[&"*"]);
        return None;
    };
    for room in c.targets(rooms, irc::NAMES_TARGETS, false) {
        if c.core.room_exists(room) {
            c.run(Command::Who {
                target: Some(room.to_string()),
                listing: Listing::Names,
            });
        } else {
            c.o.numeric(RPL_ENDOFNAMES, &[&irc::safe(room)]);
        }
    }
    None
}

/// Every room's line: a hundred of them cost one more line's flood tokens.
pub(super) fn list(_: &mut IrcSession, c: &mut Call<'_, '_>) -> Option<Reason> {
    c.charge(c.core.room_count() / 100);
    c.run(Command::Rooms);
    None
}

/// Channel modes are shown, never changed; a user may ask for its own (empty) modes.
pub(super) fn mode(_: &mut IrcSession, c: &mut Call<'_, '_>) -> Option<Reason> {
    let p = c.p;
    let target = p[0];
    if target.starts_with('#') {
        match p.get(1).copied() {
            None => c.run(Command::RoomInfo(target.to_string())),
            // The ban list (and its cousins) is asked for while a client syncs a channel.
            Some("b" | "+b" | "e" | "+e" | "I" | "+I") if p.len() == 2 => {
                c.o.numeric(RPL_ENDOFBANLIST, &[&target])
            }
            Some(_) => c.o.numeric(ERR_CHANOPRIVSNEEDED, &[&target]),
        }
    } else if c
        .core
        .nick(c.id)
        .is_some_and(|me| me.eq_ignore_ascii_case(target))
    {
        // No user modes exist; a client setting +i is told its (empty) modes.
        c.o.numeric(RPL_UMODEIS, &[]);
    } else if c.core.nick_in_use(target) {
        c.o.numeric(ERR_USERSDONTMATCH, &[]);
    } else {
        c.o.numeric(ERR_NOSUCHNICK, &[&irc::safe(target)]);
    }
    None
}
