//! Channel authority: who operates a room, and the room's modes.
//!
//! The creator of a room is its first operator (`@`); operators give and take operator and
//! voice (`+`), set the room's modes, kick members, and invite. Both protocols reach the same
//! rules here (IRC's `MODE`/`KICK`/`INVITE`; the line protocol's `/op`, `/kick`, `/mode`...), so
//! a line user and an IRC user moderate each other. The modes, as IRC letters:
//!
//! - `t`: only operators set the topic (on for new rooms, as on most servers);
//! - `n`: no messages from outside the room (on for new rooms);
//! - `m`: moderated: only operators and voiced members speak;
//! - `i`: invite-only: joining needs an `INVITE` (from an operator);
//! - `s`: secret: hidden from LIST and WHOIS of non-members, and its members, topic and bans
//!   are not told to them;
//! - `k KEY`: joining needs the key; `l N`: at most N members;
//! - `b MASK`: nobody matching `nick!user@host` (`*`, `?`) joins or speaks, unless voiced or
//!   an operator. At most [`MAX_BANS`] masks a room.
//!
//! `#lobby` has no operators: every line client is put there on connecting, so whoever came
//! first would otherwise rule everyone who comes later. Its mode is `+n`, so its topic stays
//! open to everyone as it always was; server operators operate it (and every other room).
//!
//! Memory: a room keeps a small map of its privileged members only (most members have no
//! status), and its modes in a few words; ban and invite lists are bounded.

use std::collections::HashMap;
use std::sync::Arc;

use super::event::{ClientId, Error, Event, Millis, Source};
use super::names::{clip, fold};
use super::{Core, LOBBY};

/// Ban masks a room keeps at most (ISUPPORT `MAXLIST=b:64`).
pub const MAX_BANS: usize = 64;
/// Longest ban mask kept, in bytes.
pub const MASK_MAX: usize = 100;
/// Invitations a room remembers at most (the oldest forgotten first).
const MAX_INVITES: usize = 64;
/// Longest key, in bytes (as most servers).
pub const KEY_MAX: usize = 23;

/// A member's standing in a room.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Status {
    pub op: bool,
    pub voice: bool,
}

impl Status {
    /// IRC's prefix letters for it, highest first (`@`, `+`).
    pub fn prefixes(self) -> &'static str {
        match (self.op, self.voice) {
            (true, true) => "@+",
            (true, false) => "@",
            (false, true) => "+",
            (false, false) => "",
        }
    }
}

/// One ban.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ban {
    pub mask: Arc<str>,
    pub by: Arc<str>,
    pub at: Millis,
}

/// A room's modes and the standing of its privileged members.
#[derive(Debug, Default)]
pub struct RoomModes {
    pub topic_ops: bool,
    pub no_outside: bool,
    pub moderated: bool,
    pub invite_only: bool,
    pub secret: bool,
    pub key: Option<Arc<str>>,
    pub limit: Option<u32>,
    pub bans: Vec<Ban>,
    /// Invited and not yet joined, oldest first, with the user's serial: a later connection
    /// given the same id is not invited.
    invited: Vec<(ClientId, u32)>,
    /// Members with a status; the others have none.
    privileged: HashMap<ClientId, Status>,
}

impl RoomModes {
    /// A new room's modes: `+nt`.
    pub fn new() -> RoomModes {
        RoomModes {
            topic_ops: true,
            no_outside: true,
            ..RoomModes::default()
        }
    }

    pub fn status(&self, id: ClientId) -> Status {
        self.privileged.get(&id).copied().unwrap_or_default()
    }

    pub fn is_op(&self, id: ClientId) -> bool {
        self.status(id).op
    }

    fn set_status(&mut self, id: ClientId, status: Status) {
        if status == Status::default() {
            self.privileged.remove(&id);
        } else {
            self.privileged.insert(id, status);
        }
    }

    /// A member left: it has no standing and no invitation any more.
    pub fn forget(&mut self, id: ClientId) {
        self.privileged.remove(&id);
        self.invited.retain(|&(i, _)| i != id);
    }

    /// The mode string, as IRC's 324 shows it (`+ntk key` when `show_key`).
    pub fn describe(&self, show_key: bool) -> String {
        let mut letters = String::from("+");
        let mut args = Vec::new();
        for (on, c) in [
            (self.invite_only, 'i'),
            (self.moderated, 'm'),
            (self.no_outside, 'n'),
            (self.secret, 's'),
            (self.topic_ops, 't'),
        ] {
            if on {
                letters.push(c);
            }
        }
        if let Some(key) = &self.key {
            letters.push('k');
            args.push(if show_key {
                key.to_string()
            } else {
                "*".into()
            });
        }
        if let Some(limit) = self.limit {
            letters.push('l');
            args.push(limit.to_string());
        }
        std::iter::once(letters)
            .chain(args)
            .collect::<Vec<_>>()
            .join(" ")
    }

    /// Takes the flags, key and limit of a mode string as [`RoomModes::describe`] writes it
    /// (with the key): what the cluster keeps of a room. Anything it cannot read is left as
    /// it was.
    pub fn load(&mut self, modes: &str) {
        let mut words = modes.split(' ');
        let Some(letters) = words.next().and_then(|l| l.strip_prefix('+')) else {
            return;
        };
        let (mut key, mut limit) = (None, None);
        for c in letters.chars() {
            match c {
                'k' => key = words.next().filter(|k| valid_key(k)).map(Arc::from),
                'l' => limit = words.next().and_then(|n| n.parse().ok()).filter(|&n| n > 0),
                _ => {}
            }
        }
        self.invite_only = letters.contains('i');
        self.moderated = letters.contains('m');
        self.no_outside = letters.contains('n');
        self.secret = letters.contains('s');
        self.topic_ops = letters.contains('t');
        self.key = key;
        self.limit = limit;
    }

    /// A mode change made on another node ([`parse_applied`] checked it); `+o`/`+v` are
    /// for the caller (they name members). Bans past [`MAX_BANS`] are not kept.
    pub fn apply_remote(&mut self, a: &Applied, by: &Arc<str>, now: Millis) {
        let set = a.set;
        match (a.letter, &a.arg) {
            ('i', _) => {
                self.invite_only = set;
                if !set {
                    self.invited.clear();
                }
            }
            ('m', _) => self.moderated = set,
            ('n', _) => self.no_outside = set,
            ('s', _) => self.secret = set,
            ('t', _) => self.topic_ops = set,
            ('k', arg) => self.key = arg.clone().filter(|_| set),
            ('l', arg) => self.limit = arg.as_deref().and_then(|n| n.parse().ok()).filter(|_| set),
            ('b', Some(mask)) => {
                let at = self
                    .bans
                    .iter()
                    .position(|b| b.mask.eq_ignore_ascii_case(mask));
                match at {
                    None if set && self.bans.len() < MAX_BANS => self.bans.push(Ban {
                        mask: mask.clone(),
                        by: by.clone(),
                        at: now,
                    }),
                    Some(i) if !set => drop(self.bans.remove(i)),
                    _ => {}
                }
            }
            _ => {}
        }
    }

    /// Sets a member's status as another node told it.
    pub fn set_remote_status(&mut self, id: ClientId, status: Status) {
        self.set_status(id, status);
    }

    pub fn banned(&self, who: &Source) -> bool {
        if self.bans.is_empty() {
            return false;
        }
        let full = format!("{}!{}@{}", who.nick, who.user, who.host);
        self.bans.iter().any(|b| mask_matches(&b.mask, &full))
    }
}

/// Whether `mask` (with `*` for any run of characters and `?` for one) matches `text`, case
/// folded (the same glob as `WHO` masks, [`super::mask::glob`]).
pub fn mask_matches(mask: &str, text: &str) -> bool {
    super::mask::glob(fold(mask).as_bytes(), fold(text).as_bytes())
}

/// A ban mask as given, completed the way IRC servers do: `nick` → `nick!*@*`,
/// `user@host` → `*!user@host`.
pub fn normalize_mask(mask: &str) -> String {
    let mask = clip(mask, MASK_MAX);
    let (nick, rest) = match mask.split_once('!') {
        Some((n, r)) => (n, Some(r)),
        None if mask.contains('@') => ("*", Some(mask.as_str())),
        None => (mask.as_str(), None),
    };
    let (user, host) = match rest.map(|r| r.split_once('@').unwrap_or((r, ""))) {
        Some((u, h)) => (u, h),
        None => ("", ""),
    };
    // An empty part matches anything, as servers complete `nick!` to `nick!*@*`.
    let or_any = |p: &str| {
        if p.is_empty() {
            "*".to_string()
        } else {
            p.to_string()
        }
    };
    format!("{}!{}@{}", or_any(nick), or_any(user), or_any(host))
}

/// A mode to set (`set`) or unset.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ModeChange {
    pub set: bool,
    pub mode: Mode,
}

/// What a mode change is about.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Mode {
    Op(String),
    Voice(String),
    /// One of the flags `i`, `m`, `n`, `s`, `t`.
    Flag(char),
    /// `k`: the key to set (unsetting takes none).
    Key(Option<String>),
    /// `l`: the limit to set (unsetting takes none).
    Limit(Option<u32>),
    Ban(String),
}

/// A mode change as applied, for the event every member sees: `+o alice`, `-m`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Applied {
    pub set: bool,
    pub letter: char,
    pub arg: Option<Arc<str>>,
}

/// A mode change as another node sent it (`+o alice`, `-m`, `+k key`, `+l 10`, `+b mask`),
/// checked as a local one is; `None` for anything else.
pub fn parse_applied(field: &str) -> Option<Applied> {
    let (head, arg) = match field.split_once(' ') {
        Some((h, a)) => (h, Some(a)),
        None => (field, None),
    };
    let mut chars = head.chars();
    let set = match chars.next()? {
        '+' => true,
        '-' => false,
        _ => return None,
    };
    let letter = chars.next()?;
    if chars.next().is_some() {
        return None;
    }
    let ok = match (letter, set, arg) {
        ('o' | 'v', _, Some(nick)) => super::names::check_nick(nick).is_ok(),
        ('i' | 'm' | 'n' | 's' | 't', _, None) => true,
        ('k', true, Some(k)) => valid_key(k),
        ('k', false, Some("*")) => true,
        ('l', true, Some(n)) => n.parse::<u32>().is_ok_and(|n| n > 0),
        ('l', false, None) => true,
        ('b', _, Some(mask)) => valid_mask(mask) && mask.len() <= MASK_MAX + 2,
        _ => false,
    };
    ok.then(|| Applied {
        set,
        letter,
        arg: arg.map(Arc::from),
    })
}

/// Applied mode changes as one argument list, as IRC's MODE writes them: `+ov-m alice bob`.
pub fn mode_string(changes: &[Applied]) -> String {
    let mut letters = String::new();
    let mut args = Vec::new();
    let mut sign = None;
    for c in changes {
        if sign != Some(c.set) {
            letters.push(if c.set { '+' } else { '-' });
            sign = Some(c.set);
        }
        letters.push(c.letter);
        if let Some(arg) = &c.arg {
            args.push(&**arg);
        }
    }
    std::iter::once(letters.as_str())
        .chain(args)
        .collect::<Vec<_>>()
        .join(" ")
}

impl Core {
    /// The standing of `id` in the room `key`.
    pub(super) fn status_in(&self, key: usize, id: ClientId) -> Status {
        self.rooms[key].modes.status(id)
    }

    /// Checks a join of `id` to the room `key` against its modes (an invitation lets it past
    /// `+i`, and is used up).
    pub(super) fn may_join(
        &mut self,
        id: ClientId,
        key: usize,
        given: Option<&str>,
    ) -> Result<(), Error> {
        let room = &self.rooms[key];
        let name = room.name.to_string();
        let m = &room.modes;
        let serial = self.users[&id].serial;
        // (In a cluster, an operator of another node may have invited it.)
        let remote = m.invite_only && self.has_remote_invite(id, &fold(&name));
        let invited = m.invited.contains(&(id, serial)) || remote;
        if m.invite_only && !invited {
            return Err(Error::InviteOnly(name));
        }
        if let Some(k) = &m.key
            && given != Some(&**k)
        {
            return Err(Error::BadKey(name));
        }
        if let Some(limit) = m.limit
            && room.size() >= limit as usize
        {
            return Err(Error::RoomFull(name));
        }
        if m.banned(&self.users[&id].source) {
            return Err(Error::Banned(name));
        }
        self.rooms[key].modes.invited.retain(|&(i, _)| i != id);
        if remote {
            self.take_remote_invite(id, &fold(&name));
        }
        Ok(())
    }

    /// Whether `id` may speak in the room `key` (a member, or anyone under `-n`).
    pub(super) fn may_speak(&self, id: ClientId, key: usize) -> Result<(), Error> {
        let room = &self.rooms[key];
        let m = &room.modes;
        let status = m.status(id);
        let member = self.users[&id].is_in(key);
        let cannot = || Error::CannotSend(room.name.to_string());
        if !member && m.no_outside {
            return Err(cannot());
        }
        if status.op || status.voice {
            return Ok(());
        }
        if m.moderated || m.banned(&self.users[&id].source) {
            return Err(Error::Muted(room.name.to_string()));
        }
        Ok(())
    }

    /// Makes the creator of a new room its operator (not the lobby's: see the module doc).
    pub(super) fn crown(&mut self, key: usize, id: ClientId) {
        let room = &mut self.rooms[key];
        if !room.name.eq_ignore_ascii_case(LOBBY) {
            room.modes.set_status(
                id,
                Status {
                    op: true,
                    voice: false,
                },
            );
        }
    }

    /// The room `name` for an operator's command by `id`: it exists, and `id` operates it.
    fn operated(&self, id: ClientId, name: Option<&str>) -> Result<usize, Error> {
        let key = self.target_room(id, name, false)?;
        let user = &self.users[&id];
        // A server operator operates every room, #lobby included.
        if user.oper {
            return Ok(key);
        }
        let room = self.rooms[key].name.to_string();
        if !user.is_in(key) {
            return Err(Error::NotInRoom(room));
        }
        if !self.rooms[key].modes.is_op(id) {
            return Err(Error::NotOperator(room));
        }
        Ok(key)
    }

    /// Whether the room `key` is secret (`+s`) to `id`: not a member, not a server operator.
    /// What is in a secret room (its members, topic, bans) is not told to those outside it.
    pub(super) fn hidden_from(&self, id: ClientId, key: usize) -> bool {
        let user = &self.users[&id];
        self.rooms[key].modes.secret && !user.oper && !user.is_in(key)
    }

    /// The member of room `key` called `nick`.
    fn member_named(&self, key: usize, nick: &str) -> Result<ClientId, Error> {
        let target = self.find_nick(nick)?;
        if !self.users[&target].is_in(key) {
            return Err(Error::UserNotInRoom {
                nick: self.users[&target].source.nick.to_string(),
                room: self.rooms[key].name.to_string(),
            });
        }
        Ok(target)
    }

    /// `MODE #room changes...`: applies what the operator `id` may, in order; the first
    /// change that fails stops there (what was applied before it stays and is announced).
    pub(super) fn change_modes(
        &mut self,
        id: ClientId,
        name: Option<&str>,
        changes: Vec<ModeChange>,
        now: Millis,
        out: &mut super::Outbox,
    ) -> Result<(), Error> {
        let key = self.operated(id, name)?;
        let mut applied = Vec::new();
        let mut result = Ok(());
        for change in changes {
            match self.apply_mode(key, id, change, now) {
                Ok(Some(a)) => applied.push(a),
                Ok(None) => {}
                Err(e) => {
                    result = Err(e);
                    break;
                }
            }
        }
        if !applied.is_empty() {
            let by = self.users[&id].source.clone();
            if self.cluster {
                self.share_modes(key, &by, &applied, out);
            }
            let room = &self.rooms[key];
            let event = Event::ModeChanged {
                room: room.name.clone(),
                by,
                changes: applied,
            };
            // A server operator outside the room is told too.
            let outside = (!self.users[&id].is_in(key)).then_some(id);
            out.send_many(room.members.iter().copied().chain(outside), event);
        }
        result
    }

    /// One mode change; `None` when it changes nothing (setting what is set already).
    fn apply_mode(
        &mut self,
        key: usize,
        by: ClientId,
        change: ModeChange,
        now: Millis,
    ) -> Result<Option<Applied>, Error> {
        let set = change.set;
        let applied = |letter, arg: Option<Arc<str>>| Ok(Some(Applied { set, letter, arg }));
        match change.mode {
            Mode::Op(ref nick) | Mode::Voice(ref nick) if self.is_remote_member(key, nick) => {
                // A member on another node: its node is told (`share_modes`) and writes it.
                let letter = if matches!(change.mode, Mode::Op(_)) {
                    'o'
                } else {
                    'v'
                };
                let r = self.rooms[key].remote.get_mut(nick).expect("checked");
                let flag = if letter == 'o' {
                    &mut r.status.op
                } else {
                    &mut r.status.voice
                };
                if *flag == set {
                    return Ok(None);
                }
                *flag = set;
                let nick = r.source.nick.clone();
                applied(letter, Some(nick))
            }
            Mode::Op(nick) => {
                let target = self.member_named(key, &nick)?;
                let m = &mut self.rooms[key].modes;
                let mut status = m.status(target);
                if status.op == set {
                    return Ok(None);
                }
                status.op = set;
                m.set_status(target, status);
                applied('o', Some(self.users[&target].source.nick.clone()))
            }
            Mode::Voice(nick) => {
                let target = self.member_named(key, &nick)?;
                let m = &mut self.rooms[key].modes;
                let mut status = m.status(target);
                if status.voice == set {
                    return Ok(None);
                }
                status.voice = set;
                m.set_status(target, status);
                applied('v', Some(self.users[&target].source.nick.clone()))
            }
            Mode::Flag(c) => {
                let m = &mut self.rooms[key].modes;
                let flag = match c {
                    'i' => &mut m.invite_only,
                    'm' => &mut m.moderated,
                    'n' => &mut m.no_outside,
                    's' => &mut m.secret,
                    't' => &mut m.topic_ops,
                    other => return Err(Error::UnknownMode(other)),
                };
                if *flag == set {
                    return Ok(None);
                }
                *flag = set;
                if c == 'i' && !set {
                    m.invited.clear();
                }
                applied(c, None)
            }
            Mode::Key(k) => {
                let room = &mut self.rooms[key];
                let m = &mut room.modes;
                if set {
                    let invalid = || Error::InvalidKey(room.name.to_string());
                    let k = k.filter(|k| valid_key(k)).ok_or_else(invalid)?;
                    let k: Arc<str> = k.into();
                    m.key = Some(k.clone());
                    applied('k', Some(k))
                } else if m.key.take().is_some() {
                    applied('k', Some("*".into()))
                } else {
                    Ok(None)
                }
            }
            Mode::Limit(n) => {
                let room = &mut self.rooms[key];
                let m = &mut room.modes;
                if set {
                    let invalid = || Error::InvalidLimit(room.name.to_string());
                    let n = n.filter(|&n| n > 0).ok_or_else(invalid)?;
                    m.limit = Some(n);
                    applied('l', Some(n.to_string().into()))
                } else if m.limit.take().is_some() {
                    applied('l', None)
                } else {
                    Ok(None)
                }
            }
            Mode::Ban(mask) => {
                if !valid_mask(&mask) {
                    return Err(Error::InvalidMask(self.rooms[key].name.to_string()));
                }
                let mask = normalize_mask(&mask);
                let by_nick = self.users[&by].source.nick.clone();
                let room = &mut self.rooms[key];
                let m = &mut room.modes;
                let at = m
                    .bans
                    .iter()
                    .position(|b| b.mask.eq_ignore_ascii_case(&mask));
                match (set, at) {
                    (true, Some(_)) | (false, None) => Ok(None),
                    (true, None) if m.bans.len() >= MAX_BANS => {
                        Err(Error::BanListFull(room.name.to_string()))
                    }
                    (true, None) => {
                        let mask: Arc<str> = mask.into();
                        m.bans.push(Ban {
                            mask: mask.clone(),
                            by: by_nick,
                            at: now,
                        });
                        applied('b', Some(mask))
                    }
                    (false, Some(i)) => {
                        let ban = m.bans.remove(i);
                        applied('b', Some(ban.mask))
                    }
                }
            }
        }
    }

    /// `KICK #room nick reason` by the operator `id`.
    pub(super) fn kick(
        &mut self,
        id: ClientId,
        name: Option<&str>,
        nick: &str,
        reason: Option<String>,
        out: &mut super::Outbox,
    ) -> Result<(), Error> {
        let key = self.operated(id, name)?;
        if self.is_remote_member(key, nick) {
            return self.kick_remote(id, key, nick, reason, out);
        }
        let target = self.member_named(key, nick)?;
        let by = self.users[&id].source.clone();
        let room = &self.rooms[key];
        let event = Event::Kicked {
            room: room.name.clone(),
            by: by.clone(),
            nick: self.users[&target].source.nick.clone(),
            reason: super::names::label(reason.as_deref().unwrap_or(&by.nick)).into(),
        };
        if self.cluster
            && let Event::Kicked {
                room, by, reason, ..
            } = &event
        {
            out.note(super::cluster::Note::Publish(
                super::cluster::Shared::Kicked {
                    room: room.clone(),
                    by: by.clone(),
                    nick: self.users[&target].source.nick.clone(),
                    reason: reason.clone(),
                },
            ));
        }
        if room.size() > self.limits.big_room {
            let both = if target == id {
                vec![id]
            } else {
                vec![id, target]
            };
            out.send_many(both, event);
        } else {
            let outside = (!self.users[&id].is_in(key)).then_some(id);
            out.send_many(room.members.iter().copied().chain(outside), event);
        }
        self.remove_from(target, key, out);
        Ok(())
    }

    /// Whether `nick` is no local member of room `key` but a member on another node.
    fn is_remote_member(&self, key: usize, nick: &str) -> bool {
        let local = self
            .nicks
            .get(&fold(nick))
            .is_some_and(|t| self.users[t].is_in(key));
        !local && self.remote_member(key, nick).is_some()
    }

    /// A kick of a member on another node: its node takes it out; here it leaves the list.
    fn kick_remote(
        &mut self,
        id: ClientId,
        key: usize,
        nick: &str,
        reason: Option<String>,
        out: &mut super::Outbox,
    ) -> Result<(), Error> {
        let by = self.users[&id].source.clone();
        let room = &mut self.rooms[key];
        let gone = room.remote.remove(nick).expect("a remote member");
        let reason: Arc<str> = super::names::label(reason.as_deref().unwrap_or(&by.nick)).into();
        out.note(super::cluster::Note::Publish(
            super::cluster::Shared::Kicked {
                room: room.name.clone(),
                by: by.clone(),
                nick: gone.source.nick.clone(),
                reason: reason.clone(),
            },
        ));
        let event = Event::Kicked {
            room: room.name.clone(),
            by,
            nick: gone.source.nick.clone(),
            reason,
        };
        let outside = (!self.users[&id].is_in(key)).then_some(id);
        if room.size() > self.limits.big_room {
            out.send(id, event);
        } else {
            out.send_many(room.members.iter().copied().chain(outside), event);
        }
        Ok(())
    }

    /// `INVITE nick #room` by `id`, a member (an operator of a `+i` room).
    pub(super) fn invite(
        &mut self,
        id: ClientId,
        nick: &str,
        name: Option<&str>,
        out: &mut super::Outbox,
    ) -> Result<(), Error> {
        let found = self.find_nick(nick);
        let oper = self.users[&id].oper;
        // A server operator invites into any room, from outside it too.
        let key = self.target_room(id, name, !oper)?;
        let room = &self.rooms[key];
        if room.modes.invite_only && !room.modes.is_op(id) && !oper {
            return Err(Error::NotOperator(room.name.to_string()));
        }
        let target = match found {
            // In a cluster, a nick held on another node: the invitation goes to its node.
            Err(Error::NoSuchNick(_)) if self.may_be_elsewhere(nick) => {
                return self.invite_remote(id, key, nick, out);
            }
            found => found?,
        };
        if self.users[&target].is_in(key) {
            return Err(Error::AlreadyInRoom {
                nick: self.users[&target].source.nick.to_string(),
                room: room.name.to_string(),
            });
        }
        let (room_name, to) = (room.name.clone(), self.users[&target].source.nick.clone());
        let entry = (target, self.users[&target].serial);
        let m = &mut self.rooms[key].modes;
        // Only an invite-only room keeps invitations (and only its operators give them): one
        // given before `+i` by any member must not open the room later.
        if m.invite_only && !m.invited.contains(&entry) {
            if m.invited.len() >= MAX_INVITES {
                m.invited.remove(0);
            }
            m.invited.push(entry);
        }
        // An ignored inviter is not told: the invitation stands, unannounced.
        let by = self.users[&id].source.clone();
        if !self.users[&target].ignores(&by) {
            out.send(
                target,
                Event::Invited {
                    room: room_name.clone(),
                    by,
                    nick: to.clone(),
                },
            );
        }
        out.send(
            id,
            Event::Inviting {
                room: room_name,
                nick: to,
            },
        );
        Ok(())
    }

    /// The ban list of a room (anyone may see it).
    pub(super) fn ban_list(
        &self,
        id: ClientId,
        name: Option<&str>,
        out: &mut super::Outbox,
    ) -> Result<(), Error> {
        let key = self.target_room(id, name, false)?;
        if self.hidden_from(id, key) {
            return Err(Error::NotInRoom(self.rooms[key].name.to_string()));
        }
        let room = &self.rooms[key];
        out.send(
            id,
            Event::BanList {
                room: room.name.clone(),
                bans: room.modes.bans.clone(),
            },
        );
        Ok(())
    }
}

/// A ban mask as given: one word that reads as what it is, so that it cannot change the shape
/// of the MODE and 367 lines it goes into, nor reach a terminal as an escape: no whitespace,
/// control or invisible characters, no comma, no colon at the start.
pub(super) fn valid_mask(mask: &str) -> bool {
    !mask.is_empty()
        && !mask.starts_with(':')
        && !mask.chars().any(|c| {
            c.is_whitespace() || c.is_control() || c == ',' || super::names::is_invisible(c)
        })
}

/// A key: 1 to [`KEY_MAX`] printable ASCII bytes, no space, comma or colon at the start.
fn valid_key(k: &str) -> bool {
    !k.is_empty()
        && k.len() <= KEY_MAX
        && !k.starts_with(':')
        && k.bytes().all(|b| b.is_ascii_graphic() && b != b',')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks_match_with_stars_and_question_marks_case_folded() {
        assert!(mask_matches("*!*@*", "a!b@c"));
        assert!(mask_matches("Al*!*@*", "alice!line@h.ip"));
        assert!(!mask_matches("bob!*@*", "alice!line@h.ip"));
        assert!(mask_matches("a?ice!*@*.ip", "alice!line@x.y.ip"));
        assert!(!mask_matches("a?ice!*@*.ip", "alice!line@x.y.ip6"));
        assert!(mask_matches("**a**", "a"));
        // A hostile mask does not explode.
        let hostile = "*a".repeat(50) + "b";
        assert!(!mask_matches(&hostile, &"a".repeat(400)));
    }

    #[test]
    fn masks_are_completed_like_irc_servers_do() {
        assert_eq!(normalize_mask("bob"), "bob!*@*");
        assert_eq!(normalize_mask("*@h.ip"), "*!*@h.ip");
        assert_eq!(normalize_mask("bob!u"), "bob!u@*");
        assert_eq!(normalize_mask("b!u@h"), "b!u@h");
        assert_eq!(normalize_mask("bob!"), "bob!*@*");
        assert_eq!(normalize_mask("!u@"), "*!u@*");
        assert_eq!(normalize_mask("u@h"), "*!u@h");
    }

    #[test]
    fn modes_read_back_from_their_description_and_remote_changes_apply() {
        let mut m = RoomModes::new();
        m.load("+imsk sesame");
        assert!(m.invite_only && m.moderated && m.secret && !m.topic_ops && !m.no_outside);
        assert_eq!(m.key.as_deref(), Some("sesame"));
        let mut n = RoomModes::new();
        n.load(&m.describe(true));
        assert_eq!(n.describe(true), m.describe(true));
        n.load("+ntl 12");
        assert_eq!(n.describe(true), "+ntl 12");
        n.load("garbage");
        assert_eq!(n.describe(true), "+ntl 12", "left as it was");
        let by: Arc<str> = "op".into();
        for c in ["-t", "+k key", "+b bad!*@*", "+b bad!*@*", "-l"] {
            n.apply_remote(&parse_applied(c).unwrap(), &by, 3);
        }
        assert_eq!(n.describe(true), "+nk key");
        assert_eq!(n.bans.len(), 1, "a ban set twice is kept once");
        n.apply_remote(&parse_applied("-b bad!*@*").unwrap(), &by, 4);
        n.apply_remote(&parse_applied("-k *").unwrap(), &by, 4);
        assert!(n.bans.is_empty() && n.key.is_none());
        assert_eq!(parse_applied("+v bob").unwrap().letter, 'v');
        assert!(parse_applied("+vv bob").is_none());
        assert!(parse_applied("*o bob").is_none());
    }

    #[test]
    fn modes_describe_themselves_hiding_the_key_from_outsiders() {
        let mut m = RoomModes::new();
        assert_eq!(m.describe(true), "+nt");
        m.key = Some("sesame".into());
        m.limit = Some(10);
        m.moderated = true;
        assert_eq!(m.describe(true), "+mntkl sesame 10");
        assert_eq!(m.describe(false), "+mntkl * 10");
    }
}
