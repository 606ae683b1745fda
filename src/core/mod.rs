//! The chat core: users, rooms, private messages, presence and history, with no I/O at all.
//!
//! A driver tells the core "client X connected", "client X sent command Y at time T" and "client
//! X is gone", and the core appends to an [`Outbox`] what to deliver to whom. It reads no clock
//! and touches no socket, so it is unit-tested without either and shared by every driver (the mio
//! loop today; threaded variants and other protocols reuse it unchanged).
//!
//! Layout: [`event`] is the vocabulary (commands, events, errors, the outbox), [`names`] the
//! validation rules, [`room`] and [`user`] the two tables' rows.

pub mod event;
pub mod names;
pub mod room;
pub mod user;

use std::collections::HashMap;
use std::sync::Arc;

use slab::Slab;

pub use event::{ClientId, Command, Error, Event, Member, Millis, Outbox, RoomSummary, WhoisInfo};
use names::{check_nick, check_room, check_text, fold, label};
use room::{HistoryEntry, Room};
use user::User;

/// The room every line-protocol client starts in; it exists even when empty.
pub const LOBBY: &str = "#lobby";

/// Limits the core enforces itself.
#[derive(Clone, Copy, Debug)]
pub struct CoreLimits {
    /// Messages remembered per room.
    pub history: usize,
    /// Rooms one user may be in at once; bounds what one client can make the server keep.
    pub max_rooms: usize,
}

/// All chat state of one server.
#[derive(Debug)]
pub struct Core {
    limits: CoreLimits,
    users: HashMap<ClientId, User>,
    /// Folded nick → its owner: nicks are unique case-insensitively.
    nicks: HashMap<String, ClientId>,
    rooms: Slab<Room>,
    /// Folded room name → key in `rooms`.
    room_keys: HashMap<String, usize>,
    /// Number for the next guest nick.
    next_guest: u64,
}

impl Core {
    pub fn new(limits: CoreLimits) -> Core {
        Core {
            limits,
            users: HashMap::new(),
            nicks: HashMap::new(),
            rooms: Slab::new(),
            room_keys: HashMap::new(),
            next_guest: 1,
        }
    }

    /// Registers a new client under the next free guest nick, in no room yet, and returns the
    /// nick. The driver greets it and usually joins it to [`LOBBY`] next.
    pub fn connect(&mut self, id: ClientId, now: Millis) -> Arc<str> {
        let nick = loop {
            let candidate = format!("guest{}", self.next_guest);
            self.next_guest += 1;
            if !self.nicks.contains_key(&candidate) {
                break candidate;
            }
        };
        let nick: Arc<str> = nick.into();
        self.nicks.insert(fold(&nick), id);
        let user = User {
            nick: nick.clone(),
            rooms: Vec::new(),
            current: None,
            away: None,
            connected_at: now,
            last_active: now,
        };
        self.users.insert(id, user);
        nick
    }

    /// Removes a client, telling everyone who shared a room with it why it left.
    pub fn disconnect(&mut self, id: ClientId, reason: &str, out: &mut Outbox) {
        let neighbours = self.neighbours(id);
        let Some(user) = self.users.remove(&id) else {
            return;
        };
        self.nicks.remove(&fold(&user.nick));
        for &key in &user.rooms {
            self.rooms[key].remove_member(id);
            self.drop_if_empty(key);
        }
        let event = Event::Quit {
            nick: user.nick,
            reason: label(reason).into(),
        };
        out.send_many(neighbours.into_iter().filter(|&n| n != id), event);
    }

    /// Carries out one command. Errors go to the asker as [`Event::Error`] and change nothing.
    pub fn handle(&mut self, id: ClientId, command: Command, now: Millis, out: &mut Outbox) {
        if !self.users.contains_key(&id) {
            return;
        }
        if let Err(e) = self.apply(id, command, now, out) {
            out.send(id, Event::Error(e));
        }
    }

    pub fn nick(&self, id: ClientId) -> Option<&Arc<str>> {
        self.users.get(&id).map(|u| &u.nick)
    }

    pub fn user_count(&self) -> usize {
        self.users.len()
    }

    pub fn room_count(&self) -> usize {
        self.rooms.len()
    }

    fn apply(
        &mut self,
        id: ClientId,
        command: Command,
        now: Millis,
        out: &mut Outbox,
    ) -> Result<(), Error> {
        match command {
            Command::Say { room, text, action } => self.say(id, room, text, action, now, out),
            Command::Private { to, text, action } => self.private(id, &to, text, action, now, out),
            Command::Nick(nick) => self.change_nick(id, &nick, out),
            Command::Join(room) => self.join(id, &room, out),
            Command::Part { room, reason } => self.part(id, room, reason, out),
            Command::Rooms => {
                let mut list: Vec<RoomSummary> = self
                    .rooms
                    .iter()
                    .map(|(_, r)| RoomSummary {
                        name: r.name.clone(),
                        members: r.members.len(),
                        topic: r.topic.as_ref().map(|t| t.text.clone()),
                    })
                    .collect();
                list.sort_by(|a, b| a.name.cmp(&b.name));
                out.send(id, Event::RoomList(list));
                Ok(())
            }
            Command::Who(room) => {
                let key = self.target_room(id, room.as_deref(), false)?;
                out.send(id, self.names(key));
                Ok(())
            }
            Command::Topic { room, text } => self.topic(id, room, text, now, out),
            Command::Away(message) => {
                let user = self.user_mut(id);
                user.away = message.map(|m| label(&m).into());
                let away = user.away.is_some();
                out.send(id, Event::AwayIs { away });
                Ok(())
            }
            Command::Whois(nick) => {
                let target = self.find_nick(&nick)?;
                let user = &self.users[&target];
                let info = WhoisInfo {
                    nick: user.nick.clone(),
                    rooms: user
                        .rooms
                        .iter()
                        .map(|&k| self.rooms[k].name.clone())
                        .collect(),
                    away: user.away.clone(),
                    idle_secs: now.saturating_sub(user.last_active) / 1000,
                    connected_at: user.connected_at,
                };
                out.send(id, Event::Whois(info));
                Ok(())
            }
        }
    }

    fn say(
        &mut self,
        id: ClientId,
        room: Option<String>,
        text: String,
        action: bool,
        now: Millis,
        out: &mut Outbox,
    ) -> Result<(), Error> {
        check_text(&text)?;
        let key = self.target_room(id, room.as_deref(), true)?;
        let user = self.user_mut(id);
        user.last_active = now;
        let from = user.nick.clone();
        let text: Arc<str> = text.into();
        let room = &mut self.rooms[key];
        room.remember(HistoryEntry {
            at: now,
            from: from.clone(),
            text: text.clone(),
            action,
        });
        let event = Event::Message {
            room: room.name.clone(),
            from,
            text,
            action,
        };
        out.send_many(room.members.iter().copied().filter(|&m| m != id), event);
        Ok(())
    }

    fn private(
        &mut self,
        id: ClientId,
        to: &str,
        text: String,
        action: bool,
        now: Millis,
        out: &mut Outbox,
    ) -> Result<(), Error> {
        check_text(&text)?;
        let target = self.find_nick(to)?;
        let user = self.user_mut(id);
        user.last_active = now;
        let from = user.nick.clone();
        let target_user = &self.users[&target];
        if let Some(message) = &target_user.away {
            let nick = target_user.nick.clone();
            out.send(
                id,
                Event::TargetAway {
                    nick,
                    message: message.clone(),
                },
            );
        }
        let text = text.into();
        out.send(target, Event::Private { from, text, action });
        Ok(())
    }

    fn change_nick(&mut self, id: ClientId, nick: &str, out: &mut Outbox) -> Result<(), Error> {
        check_nick(nick)?;
        let key = fold(nick);
        match self.nicks.get(&key) {
            Some(&owner) if owner != id => return Err(Error::NickInUse(nick.to_string())),
            _ => {}
        }
        let old = self.users[&id].nick.clone();
        if *old == *nick {
            return Ok(());
        }
        self.nicks.remove(&fold(&old));
        self.nicks.insert(key, id);
        let new: Arc<str> = nick.into();
        self.user_mut(id).nick = new.clone();
        let mut to = self.neighbours(id);
        if !to.contains(&id) {
            to.push(id);
        }
        out.send_many(to, Event::NickChanged { old, new });
        Ok(())
    }

    fn join(&mut self, id: ClientId, name: &str, out: &mut Outbox) -> Result<(), Error> {
        check_room(name)?;
        let folded = fold(name);
        if let Some(&key) = self.room_keys.get(&folded)
            && self.users[&id].rooms.contains(&key)
        {
            self.user_mut(id).current = Some(key);
            let room = Some(self.rooms[key].name.clone());
            out.send(id, Event::CurrentRoom { room });
            return Ok(());
        }
        if self.users[&id].rooms.len() >= self.limits.max_rooms {
            return Err(Error::TooManyRooms(self.limits.max_rooms));
        }
        let history = self.limits.history;
        let key = *self
            .room_keys
            .entry(folded)
            .or_insert_with(|| self.rooms.insert(Room::new(name, history)));
        let user = self
            .users
            .get_mut(&id)
            .expect("caller checked the user exists");
        user.rooms.push(key);
        user.current = Some(key);
        let nick = user.nick.clone();
        let room = &mut self.rooms[key];
        room.members.push(id);
        let name = room.name.clone();
        out.send_many(
            room.members.iter().copied(),
            Event::Joined {
                room: name.clone(),
                nick,
            },
        );
        if let Some(topic) = &room.topic {
            out.send(
                id,
                Event::TopicIs {
                    room: name.clone(),
                    topic: Some(topic.clone()),
                },
            );
        }
        out.send(id, self.names(key));
        for h in self.rooms[key].history() {
            let event = Event::History {
                room: name.clone(),
                from: h.from.clone(),
                text: h.text.clone(),
                action: h.action,
                at: h.at,
            };
            out.send(id, event);
        }
        Ok(())
    }

    fn part(
        &mut self,
        id: ClientId,
        room: Option<String>,
        reason: Option<String>,
        out: &mut Outbox,
    ) -> Result<(), Error> {
        let key = self.target_room(id, room.as_deref(), true)?;
        let room = &mut self.rooms[key];
        let event = Event::Parted {
            room: room.name.clone(),
            nick: self.users[&id].nick.clone(),
            reason: reason.map(|r| label(&r).into()),
        };
        out.send_many(room.members.iter().copied(), event);
        room.remove_member(id);
        self.drop_if_empty(key);
        let user = self.user_mut(id);
        user.rooms.retain(|&k| k != key);
        if user.current == Some(key) {
            user.current = user.rooms.last().copied();
            let room = user.current.map(|k| self.rooms[k].name.clone());
            out.send(id, Event::CurrentRoom { room });
        }
        Ok(())
    }

    fn topic(
        &mut self,
        id: ClientId,
        room: Option<String>,
        text: Option<String>,
        now: Millis,
        out: &mut Outbox,
    ) -> Result<(), Error> {
        let Some(text) = text else {
            let key = self.target_room(id, room.as_deref(), false)?;
            let room = &self.rooms[key];
            let event = Event::TopicIs {
                room: room.name.clone(),
                topic: room.topic.clone(),
            };
            out.send(id, event);
            return Ok(());
        };
        let key = self.target_room(id, room.as_deref(), true)?;
        let by = self.users[&id].nick.clone();
        let room = &mut self.rooms[key];
        let text: Option<Arc<str>> = Some(label(&text).into()).filter(|t: &Arc<str>| !t.is_empty());
        room.topic = text.clone().map(|text| event::Topic {
            text,
            by: by.clone(),
            at: now,
        });
        let event = Event::TopicChanged {
            room: room.name.clone(),
            by,
            topic: text,
        };
        out.send_many(room.members.iter().copied(), event);
        Ok(())
    }

    /// The room a command is about: the named one, or the current one. `member`: the asker must
    /// be in it.
    fn target_room(&self, id: ClientId, name: Option<&str>, member: bool) -> Result<usize, Error> {
        let user = &self.users[&id];
        let key = match name {
            None => user.current.ok_or(Error::NoCurrentRoom)?,
            Some(name) => {
                check_room(name)?;
                *self
                    .room_keys
                    .get(&fold(name))
                    .ok_or_else(|| Error::NoSuchRoom(name.to_string()))?
            }
        };
        if member && !user.rooms.contains(&key) {
            return Err(Error::NotInRoom(self.rooms[key].name.to_string()));
        }
        Ok(key)
    }

    fn find_nick(&self, nick: &str) -> Result<ClientId, Error> {
        self.nicks
            .get(&fold(nick))
            .copied()
            .ok_or_else(|| Error::NoSuchNick(names::clip(nick, names::NICK_MAX + 8)))
    }

    fn names(&self, key: usize) -> Event {
        let room = &self.rooms[key];
        let mut members: Vec<Member> = room
            .members
            .iter()
            .map(|m| {
                let u = &self.users[m];
                Member {
                    nick: u.nick.clone(),
                    away: u.away.is_some(),
                }
            })
            .collect();
        members.sort_by_cached_key(|m| fold(&m.nick));
        Event::Names {
            room: room.name.clone(),
            members,
        }
    }

    /// Everyone who shares at least one room with `id` (possibly `id` itself), each once.
    fn neighbours(&self, id: ClientId) -> Vec<ClientId> {
        let Some(user) = self.users.get(&id) else {
            return Vec::new();
        };
        let mut all: Vec<ClientId> = user
            .rooms
            .iter()
            .flat_map(|&k| self.rooms[k].members.iter().copied())
            .collect();
        all.sort_unstable();
        all.dedup();
        all
    }

    fn drop_if_empty(&mut self, key: usize) {
        let room = &self.rooms[key];
        if room.members.is_empty() && !room.name.eq_ignore_ascii_case(LOBBY) {
            self.room_keys.remove(&fold(&room.name));
            self.rooms.remove(key);
        }
    }

    fn user_mut(&mut self, id: ClientId) -> &mut User {
        self.users
            .get_mut(&id)
            .expect("caller checked the user exists")
    }
}

#[cfg(test)]
mod tests;
