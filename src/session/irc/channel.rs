//! Channel commands: JOIN (with keys), PART, TOPIC, NAMES, LIST, MODE (a room's modes and its
//! members' standing; the user mode query, since users have no modes), KICK and INVITE. The
//! rules are the core's (`core::modes`); here they are only parsed and answered.

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
        // Keys pair with the rooms as written: `JOIN #a,#b keyA,keyB` (a room named twice is
        // joined once, and its second key is skipped with it).
        let keys: Vec<&str> = p.get(1).map(|k| k.split(',').collect()).unwrap_or_default();
        let mut seen: Vec<&str> = Vec::new();
        let rooms = p[0].split(',').enumerate().filter(|(_, r)| !r.is_empty());
        for (i, room) in rooms {
            if seen.iter().any(|s| s.eq_ignore_ascii_case(room)) {
                continue;
            }
            seen.push(room);
            let room = room.to_string();
            match keys.get(i).filter(|k| !k.is_empty()) {
                Some(key) => c.run(Command::JoinWithKey {
                    room,
                    key: key.to_string(),
                }),
                None => c.run(Command::Join(room)),
            }
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

/// Without a channel, or for one that does not exist, just the end of the list (in a
/// cluster, a room only other nodes have is asked of Redis: `core::roomlist`).
pub(super) fn names(_: &mut IrcSession, c: &mut Call<'_, '_>) -> Option<Reason> {
    let Some(rooms) = c.p.first() else {
        c.o.numeric(RPL_ENDOFNAMES, &[&"*"]);
        return None;
    };
    for room in c.targets(rooms, irc::NAMES_TARGETS, false) {
        if c.core.room_exists(room) || c.core.room_elsewhere(room) {
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

/// `MODE #room` shows its modes; `MODE #room +b` its ban list; `MODE #room +o-v alice bob`
/// changes them (operators only). `MODE mynick [+iw-o]` shows or changes one's own user modes.
pub(super) fn mode(_: &mut IrcSession, c: &mut Call<'_, '_>) -> Option<Reason> {
    let p = c.p;
    let target = p[0];
    if target.starts_with('#') {
        let room = Some(target.to_string());
        match p.get(1).copied() {
            None => c.run(Command::RoomInfo(room)),
            Some("b" | "+b") if p.len() == 2 => c.run(Command::Bans(room)),
            // Exception and invite-exception lists do not exist: they are empty.
            Some("e" | "+e" | "I" | "+I") if p.len() == 2 => {
                c.o.numeric(RPL_ENDOFBANLIST, &[&irc::safe(target)])
            }
            Some(modes) => {
                let changes = irc::parse_modes(modes, &p[2..]);
                if irc::lacks_parameter(modes, &changes) {
                    // `+k` or `+l` without its parameter: said, not dropped in silence.
                    c.o.numeric(ERR_NEEDMOREPARAMS, &[&"MODE"]);
                    return None;
                }
                c.charge(changes.len().saturating_sub(1));
                c.run(Command::Mode { room, changes });
            }
        }
    } else if c
        .core
        .nick(c.id)
        .is_some_and(|me| me.eq_ignore_ascii_case(target))
    {
        let changes = p.get(1).map_or_else(Vec::new, |m| irc::parse_user_modes(m));
        c.run(Command::UserMode(changes));
    } else if c.core.nick_in_use(target) {
        c.o.numeric(ERR_USERSDONTMATCH, &[]);
    } else {
        c.o.numeric(ERR_NOSUCHNICK, &[&irc::safe(target)]);
    }
    None
}

/// `KICK #room nick[,nick] [:reason]` (operators only), or `KICK #a,#b alice,bob` in pairs.
pub(super) fn kick(_: &mut IrcSession, c: &mut Call<'_, '_>) -> Option<Reason> {
    let p = c.p;
    let reason = p.get(2).filter(|r| !r.is_empty()).map(|r| r.to_string());
    let rooms: Vec<&str> = p[0].split(',').filter(|r| !r.is_empty()).collect();
    let nicks = c.targets(p[1], irc::MESSAGE_TARGETS, false);
    c.charge(nicks.len().saturating_sub(1));
    for (i, nick) in nicks.iter().enumerate() {
        let room = if rooms.len() == 1 {
            rooms[0]
        } else {
            rooms.get(i)?
        };
        c.run(Command::Kick {
            room: Some(room.to_string()),
            nick: nick.to_string(),
            reason: reason.clone(),
        });
    }
    None
}

/// `INVITE nick #room`: 341 to the inviter, an INVITE line to the invited.
pub(super) fn invite(_: &mut IrcSession, c: &mut Call<'_, '_>) -> Option<Reason> {
    let p = c.p;
    c.run(Command::Invite {
        nick: p[0].to_string(),
        room: Some(p[1].to_string()),
    });
    None
}
