//! Presence: users watch nicks and are told when they come online and go offline (IRC's
//! MONITOR, the line protocol's /watch). The core keeps, per folded nick, who watches it, so a
//! registration, a departure or a nick change costs one map look-up, not a scan of watchers;
//! each user watches at most [`WATCH_MAX`] nicks.

use std::sync::Arc;

use super::names::{check_nick, fold};
use super::{ClientId, Core, Error, Event, Outbox, Source};

/// The most nicks one user watches (ISUPPORT `MONITOR`).
pub const WATCH_MAX: usize = 100;

/// What a `Watch` command does.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Watch {
    /// Watch these nicks; the asker is told at once which are online.
    Add(Vec<String>),
    /// Stop watching these.
    Remove(Vec<String>),
    /// Stop watching every nick.
    Clear,
    /// The nicks watched.
    List,
    /// Which watched nicks are online and which offline.
    Status,
}

impl Core {
    pub(super) fn watch(
        &mut self,
        id: ClientId,
        watch: Watch,
        out: &mut Outbox,
    ) -> Result<(), Error> {
        match watch {
            Watch::Add(nicks) => {
                let mut online = Vec::new();
                let mut offline = Vec::new();
                for (i, nick) in nicks.iter().enumerate() {
                    let nick = nick.clone();
                    // A malformed nick is refused on its own; the rest of the list goes on.
                    if check_nick(&nick).is_err() {
                        out.send(id, Event::Error(Error::InvalidNick(nick)));
                        continue;
                    }
                    let key = fold(&nick);
                    let list = self
                        .users
                        .get_mut(&id)
                        .expect("asker")
                        .lists
                        .get_or_insert_default();
                    let list = &mut list.watching;
                    if !list.iter().any(|n| fold(n) == key) {
                        if list.len() >= WATCH_MAX {
                            self.tell_status(id, online, offline, out);
                            let rest: Vec<&str> = nicks[i..]
                                .iter()
                                .filter(|n| check_nick(n).is_ok())
                                .map(String::as_str)
                                .collect();
                            return Err(Error::WatchListFull(rest.join(",")));
                        }
                        list.push(nick.as_str().into());
                        self.watchers.entry(key.clone()).or_default().push(id);
                    }
                    match self.nicks.get(&key) {
                        Some(owner) => online.push(self.users[owner].source.clone()),
                        None => offline.push(nick.into()),
                    }
                }
                self.tell_status(id, online, offline, out);
            }
            Watch::Remove(nicks) => {
                for nick in nicks {
                    self.unwatch(id, &fold(&nick));
                }
            }
            Watch::Clear => {
                let user = self.users.get_mut(&id).expect("asker");
                let all = user.lists.as_mut().map(|l| std::mem::take(&mut l.watching));
                user.drop_empty_lists();
                self.forget_watches(id, all);
            }
            Watch::List => {
                let nicks = self.users[&id]
                    .lists
                    .as_ref()
                    .map(|l| l.watching.clone())
                    .unwrap_or_default();
                out.send(id, Event::WatchList { nicks });
            }
            Watch::Status => {
                let (mut online, mut offline) = (Vec::new(), Vec::new());
                for nick in self.users[&id].lists.iter().flat_map(|l| l.watching.iter()) {
                    match self.nicks.get(&fold(nick)) {
                        Some(owner) => online.push(self.users[owner].source.clone()),
                        None => offline.push(nick.clone()),
                    }
                }
                self.tell_status(id, online, offline, out);
            }
        }
        Ok(())
    }

    fn tell_status(
        &self,
        id: ClientId,
        online: Vec<Arc<Source>>,
        offline: Vec<Box<str>>,
        out: &mut Outbox,
    ) {
        if !online.is_empty() {
            out.send(id, Event::Online { who: online });
        }
        if !offline.is_empty() {
            out.send(id, Event::Offline { nicks: offline });
        }
    }

    /// `id` stops watching the folded nick `key`.
    fn unwatch(&mut self, id: ClientId, key: &str) {
        let Some(user) = self.users.get_mut(&id) else {
            return;
        };
        if let Some(lists) = &mut user.lists {
            lists.watching.retain(|n| fold(n) != key);
        }
        user.drop_empty_lists();
        self.forget_watcher(id, key);
    }

    fn forget_watcher(&mut self, id: ClientId, key: &str) {
        if let Some(ids) = self.watchers.get_mut(key) {
            ids.retain(|&w| w != id);
            if ids.is_empty() {
                self.watchers.remove(key);
            }
        }
    }

    /// Tells the watchers of `source`'s nick that it is online.
    pub(super) fn announce_online(&self, source: &Arc<Source>, out: &mut Outbox) {
        if let Some(ids) = self.watchers.get(&fold(&source.nick)) {
            out.send_many(
                ids.iter().copied(),
                Event::Online {
                    who: vec![source.clone()],
                },
            );
        }
    }

    /// Tells the watchers of `nick` that it went offline.
    pub(super) fn announce_offline(&self, nick: &str, out: &mut Outbox) {
        if let Some(ids) = self.watchers.get(&fold(nick)) {
            out.send_many(
                ids.iter().copied(),
                Event::Offline {
                    nicks: vec![nick.into()],
                },
            );
        }
    }

    /// A departing user's watches are forgotten.
    pub(super) fn forget_watches(&mut self, id: ClientId, watching: Option<Vec<Box<str>>>) {
        for nick in watching.unwrap_or_default() {
            self.forget_watcher(id, &fold(&nick));
        }
    }
}

#[cfg(test)]
mod tests {
    use std::net::{IpAddr, Ipv4Addr};

    use super::*;
    use crate::core::{Command, CoreLimits};

    const IP: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

    #[test]
    fn watchers_are_told_and_forgotten_with_their_users() {
        let mut core = Core::new(CoreLimits::counts(10, 8, 1000), 0);
        let mut out = Outbox::default();
        let (a, b) = (ClientId(1), ClientId(2));
        core.register(a, "alice", "a", "A", IP, 0, &mut out)
            .unwrap();
        core.handle(
            a,
            Command::Watch(Watch::Add(vec!["Bob".into()])),
            0,
            &mut out,
        );
        assert_eq!(
            out.iter().map(|(e, _)| e.clone()).collect::<Vec<_>>(),
            [Event::Offline {
                nicks: vec!["Bob".into()]
            }]
        );
        out.clear();
        core.register(b, "bob", "b", "B", IP, 0, &mut out).unwrap();
        let (event, to) = out.iter().next().unwrap();
        assert!(matches!(event, Event::Online { who } if &*who[0].nick == "bob"));
        assert_eq!(to, [a]);
        out.clear();
        // Too many: the rest are refused, the list stays bounded.
        let many: Vec<String> = (0..WATCH_MAX + 5).map(|i| format!("n{i}")).collect();
        core.handle(a, Command::Watch(Watch::Add(many)), 0, &mut out);
        assert_eq!(
            core.users[&a].lists.as_ref().unwrap().watching.len(),
            WATCH_MAX
        );
        out.clear();
        core.disconnect(a, "bye", 0, &mut out);
        assert!(core.watchers.is_empty(), "{:?}", core.watchers.len());
        core.disconnect(b, "bye", 0, &mut out);
    }
}
