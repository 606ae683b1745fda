//! Server bans (IRC's K-lines): `user@host` masks a server operator keeps off the whole server,
//! for a while or for good. A KILL is undone by a reconnect; a server ban is not. The masks
//! match a connecting user's user name (`line` for every line-protocol user) and either its
//! real address or its cloaked host, so an operator can ban what a WHOIS showed it. Bans are
//! checked when a client registers, and a new ban disconnects the users it matches.
//!
//! The core holds the list and keeps no file: when the list changes it marks itself changed,
//! and the driver writes [`ServerBans::render`] to `--kline-file` (the core does no I/O); at
//! start the file is read back with [`parse`].

use std::fmt::Write;
use std::net::IpAddr;
use std::sync::Arc;

use super::mask::glob;
use super::names::{fold, is_invisible, label};
use super::{ClientId, Error, Event, Millis, Outbox, names::clip};

/// The most server bans a server keeps: checking them is a scan per registration.
pub const MAX_SERVER_BANS: usize = 1000;
/// How cloaked hosts end (`core::cloak`, IPv6 then IPv4): a host of wildcards before one of
/// them names nobody.
const CLOAK_SUFFIXES: [&str; 2] = [".ip6", ".ip"];
/// The longest server ban: a year, in minutes.
pub const MAX_BAN_MINUTES: u64 = 365 * 24 * 60;
/// The longest mask, in bytes.
pub const SERVER_MASK_MAX: usize = 100;

/// One server ban.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServerBan {
    /// `user@host`, case-folded, with `*` and `?`.
    pub mask: Box<str>,
    /// When it ends (wall clock, ms); `None`: never.
    pub until: Option<Millis>,
    /// The operator who set it.
    pub by: Box<str>,
    pub reason: Box<str>,
}

/// The server's bans, and whether they changed since the driver last saved them.
#[derive(Debug, Default)]
pub struct ServerBans {
    list: Vec<ServerBan>,
    changed: bool,
}

/// A mask as an operator typed it, completed and checked: `host` becomes `*@host` (a host
/// alone must look like one, with a `.` or a `:`: a nick typed by mistake is refused); a mask
/// whose host is only wildcards, or wildcards and the cloaks' `.ip` ending (`*@*`, `x@*.*`,
/// `*@*.ip`), would ban everyone and is refused, as are spaces, commas and control characters.
/// `None` when refused.
pub fn server_mask(mask: &str) -> Option<String> {
    if mask.is_empty()
        || mask.len() > SERVER_MASK_MAX
        || mask.starts_with(':')
        || mask.contains('!')
        || mask
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || c == ',' || is_invisible(c))
    {
        return None;
    }
    let mask = if mask.contains('@') {
        mask.to_string()
    } else if mask.contains(['.', ':']) {
        format!("*@{mask}")
    } else {
        return None;
    };
    let (user, host) = mask.split_once('@')?;
    let wild = |c: char| matches!(c, '*' | '?' | '.' | ':');
    let lower = host.to_ascii_lowercase();
    let named = CLOAK_SUFFIXES
        .iter()
        .find_map(|s| lower.strip_suffix(s))
        .unwrap_or(&lower)
        .chars()
        .any(|c| !wild(c));
    if user.is_empty() || host.is_empty() || host.contains('@') || !named {
        return None;
    }
    Some(fold(&mask))
}

/// Reads a ban file: one ban a line, `MASK UNTIL BY REASON…` (UNTIL in Unix seconds, 0 for
/// never); blank lines and lines starting with `#` are skipped. An error names the line.
pub fn parse(text: &str) -> Result<Vec<ServerBan>, String> {
    let mut bans = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let bad = |why: &str| format!("line {}: {why}", n + 1);
        let mut words = line.splitn(4, ' ');
        let (Some(mask), Some(until), Some(by)) = (words.next(), words.next(), words.next()) else {
            return Err(bad("expected MASK UNTIL BY [REASON]"));
        };
        let mask = server_mask(mask).ok_or_else(|| bad("not a user@host mask"))?;
        let until: u64 = until
            .parse()
            .map_err(|_| bad("UNTIL is not a number of seconds"))?;
        if bans.len() == MAX_SERVER_BANS {
            return Err(bad(&format!("more than {MAX_SERVER_BANS} bans")));
        }
        bans.push(ServerBan {
            mask: mask.into(),
            until: (until > 0).then_some(until * 1000),
            by: clip(by, 32).into(),
            reason: label(words.next().unwrap_or("")).into(),
        });
    }
    Ok(bans)
}

impl ServerBans {
    pub fn new(list: Vec<ServerBan>) -> ServerBans {
        ServerBans {
            list,
            changed: false,
        }
    }

    /// The file's text: a header, then one ban a line (see [`parse`]).
    pub fn render(&self) -> String {
        let mut s = String::from(
            "# pollchat server bans (KLINE/UNKLINE): MASK UNTIL(unix seconds, 0: never) BY REASON\n",
        );
        for b in &self.list {
            let until = b.until.map_or(0, |u| u.div_ceil(1000));
            let _ = writeln!(s, "{} {until} {} {}", b.mask, b.by, b.reason);
        }
        s
    }

    /// Forgets the bans that ended before `now`.
    fn expire(&mut self, now: Millis) {
        let before = self.list.len();
        self.list.retain(|b| b.until.is_none_or(|u| u > now));
        self.changed |= self.list.len() != before;
    }

    /// The ban matching `user` from any of `hosts` at `now`, if any.
    pub fn find(&mut self, user: &str, hosts: &[&str], now: Millis) -> Option<&ServerBan> {
        self.expire(now);
        let whole: Vec<String> = hosts.iter().map(|h| fold(&format!("{user}@{h}"))).collect();
        self.list
            .iter()
            .find(|b| whole.iter().any(|w| glob(b.mask.as_bytes(), w.as_bytes())))
    }

    /// Adds `ban` (replacing one with the same mask). `false` if the list is full.
    pub fn add(&mut self, ban: ServerBan, now: Millis) -> bool {
        self.expire(now);
        if let Some(old) = self.list.iter_mut().find(|b| b.mask == ban.mask) {
            *old = ban;
        } else if self.list.len() >= MAX_SERVER_BANS {
            return false;
        } else {
            self.list.push(ban);
        }
        self.changed = true;
        true
    }

    /// Removes the ban with exactly this (folded) mask; `false` if there is none.
    pub fn remove(&mut self, mask: &str, now: Millis) -> bool {
        self.expire(now);
        let before = self.list.len();
        self.list.retain(|b| *b.mask != *mask);
        let removed = self.list.len() != before;
        self.changed |= removed;
        removed
    }

    /// The bans in force at `now`, oldest first.
    pub fn list(&mut self, now: Millis) -> &[ServerBan] {
        self.expire(now);
        &self.list
    }

    /// The file's new text if the list changed since the last call.
    pub fn take_changes(&mut self) -> Option<String> {
        std::mem::take(&mut self.changed).then(|| self.render())
    }
}

impl super::Core {
    /// Replaces the server bans (at start, from `--kline-file`).
    pub fn set_server_bans(&mut self, bans: Vec<ServerBan>) {
        self.server_bans = ServerBans::new(bans);
    }

    /// Why a client with user name `user` connecting from `ip` may not register at `now`, if
    /// a server ban matches its address or its cloaked host.
    pub fn server_banned(&mut self, user: &str, ip: IpAddr, now: Millis) -> Option<Box<str>> {
        let (addr, cloak) = (ip.to_canonical().to_string(), self.cloak.host(ip));
        self.server_bans
            .find(user, &[&addr, &cloak], now)
            .map(|b| b.reason.clone())
    }

    /// The ban file's new text if the bans changed since the last call (the driver saves it).
    pub fn take_server_ban_changes(&mut self) -> Option<String> {
        self.server_bans.take_changes()
    }

    /// `ServerBan`: adds the ban and disconnects the users it matches (server operators
    /// excepted: one could lift it).
    pub(super) fn server_ban(
        &mut self,
        id: ClientId,
        mask: &str,
        minutes: u64,
        reason: Option<String>,
        now: Millis,
        out: &mut Outbox,
    ) -> Result<(), Error> {
        self.need_oper(id)?;
        let mask = server_mask(mask).ok_or_else(|| Error::InvalidServerMask(label(mask)))?;
        let by = self.users[&id].source.clone();
        let reason: Box<str> = label(reason.as_deref().unwrap_or("no reason given")).into();
        let minutes = minutes.min(MAX_BAN_MINUTES);
        let until = (minutes > 0).then(|| now.saturating_add(minutes * 60_000));
        let ban = ServerBan {
            mask: mask.clone().into(),
            until,
            by: by.nick.as_ref().into(),
            reason: reason.clone(),
        };
        if !self.server_bans.add(ban, now) {
            return Err(Error::ServerBansFull);
        }
        let hit: Vec<ClientId> = self
            .users
            .iter()
            .filter(|(_, u)| !u.oper)
            .filter(|(_, u)| {
                let user = &u.source.user;
                [u.ip.to_canonical().to_string(), u.source.host.to_string()]
                    .iter()
                    .any(|h| glob(mask.as_bytes(), fold(&format!("{user}@{h}")).as_bytes()))
            })
            .map(|(&c, _)| c)
            .collect();
        let disconnected = hit.len();
        log::info!(
            "{} banned {mask} from the server {}: {reason} ({disconnected} disconnected)",
            by.nick,
            match minutes {
                0 => "for good".to_string(),
                m => format!("for {m} min"),
            }
        );
        let why: Arc<str> = format!("banned from this server: {reason}").into();
        for c in hit {
            out.send(
                c,
                Event::Killed {
                    by: by.clone(),
                    reason: why.clone(),
                },
            );
        }
        out.send(
            id,
            Event::ServerBanSet {
                mask: mask.into(),
                until,
                reason,
                disconnected,
            },
        );
        Ok(())
    }

    /// `Ok` if `id` is a server operator.
    pub(super) fn need_oper(&self, id: ClientId) -> Result<(), Error> {
        match self.users.get(&id) {
            Some(u) if u.oper => Ok(()),
            _ => Err(Error::NotServerOperator),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks_are_completed_and_everyone_masks_refused() {
        assert_eq!(server_mask("1.2.3.4").as_deref(), Some("*@1.2.3.4"));
        assert_eq!(server_mask("Line@AB*.IP").as_deref(), Some("line@ab*.ip"));
        assert_eq!(server_mask("u@localhost").as_deref(), Some("u@localhost"));
        assert_eq!(server_mask("*@ab*.ip").as_deref(), Some("*@ab*.ip"));
        for bad in [
            "*@*",
            "*",
            "x@*.*",
            "a b@c",
            "a,b@c",
            "n!u@h",
            "",
            "@h",
            "u@",
            "*@*.ip",
            "*@?.IP6",
            "alice",
            "2",
            "-1",
            "line@*.ip",
        ] {
            assert_eq!(server_mask(bad), None, "{bad}");
        }
    }

    #[test]
    fn bans_match_user_and_any_host_until_they_expire() {
        let mut bans = ServerBans::default();
        let ban = |mask: &str, until| ServerBan {
            mask: server_mask(mask).unwrap().into(),
            until,
            by: "op".into(),
            reason: "spam".into(),
        };
        assert!(bans.add(ban("*@10.0.0.*", None), 0));
        assert!(bans.add(ban("line@abc.ip", Some(5_000)), 0));
        assert!(bans.find("alice", &["10.0.0.7", "x.ip"], 0).is_some());
        assert!(bans.find("alice", &["10.0.1.7", "abc.ip"], 0).is_none());
        assert!(bans.find("line", &["10.0.1.7", "ABC.ip"], 4_999).is_some());
        // Expired: gone, and the file changes.
        assert!(bans.take_changes().is_some());
        assert!(bans.find("line", &["10.0.1.7", "abc.ip"], 5_000).is_none());
        assert!(bans.take_changes().is_some());
        assert!(bans.take_changes().is_none());
        assert!(bans.remove("*@10.0.0.*", 6_000));
        assert!(!bans.remove("*@10.0.0.*", 6_000));
    }

    #[test]
    fn the_file_reads_back_what_was_written() {
        let mut bans = ServerBans::default();
        for (mask, until) in [
            ("*@1.2.3.4", None),
            ("bot*@*.example", Some(1_700_000_000_000)),
        ] {
            bans.add(
                ServerBan {
                    mask: mask.into(),
                    until,
                    by: "root".into(),
                    reason: "flood, twice".into(),
                },
                0,
            );
        }
        let text = bans.render();
        assert_eq!(parse(&text).unwrap(), bans.list(0));
        assert_eq!(
            parse("# c\n\n*@* 0 x y").unwrap_err(),
            "line 3: not a user@host mask"
        );
        assert_eq!(
            parse("*@h soon x").unwrap_err(),
            "line 1: UNTIL is not a number of seconds"
        );
        assert_eq!(
            parse("*@h").unwrap_err(),
            "line 1: expected MASK UNTIL BY [REASON]"
        );
    }
}
