//! A connected user as the core sees it: who it is, its rooms and its presence.

use std::net::IpAddr;
use std::sync::Arc;

use super::event::{Millis, Source};
use super::room::Membership;

#[derive(Debug)]
pub struct User {
    /// Nick, user name, host and real name; replaced as a whole when the nick changes.
    pub source: Arc<Source>,
    /// The rooms this user is in (with its slot in each), in join order.
    pub rooms: Vec<Membership>,
    /// Where a message without a room goes (the line protocol's plain lines): a room's key,
    /// as 4 bytes (a server keeps far fewer than 2³² rooms) so the record stays small.
    pub current: Option<u32>,
    pub away: Option<Arc<str>>,
    pub connected_at: Millis,
    /// When the user last sent a message; whois shows the idle time from it.
    pub last_active: Millis,
    /// Where the user connects from. Others only ever see its cloak (`source.host`); this is
    /// kept for the user's own WHOIS (and later an operator's), as 17 bytes rather than a
    /// string.
    pub ip: IpAddr,
    /// Tells this user from a later one given the same `ClientId` (drivers reuse them): a nick
    /// it left is held for it alone (`core::nick_delay`). Wraps after 2³² connections, far
    /// apart in time from any one hold.
    pub serial: u32,
    /// A server operator (`OPER`): may operate every room, see secret ones and addresses, and
    /// KILL.
    pub oper: bool,
    /// Connected over TLS (WHOIS says so: IRC's 671).
    pub secure: bool,
    /// User mode `+i`: left out of the WHO mask searches of users who share no room with it.
    pub invisible: bool,
    /// User mode `+w`: receives operators' WALLOPS.
    pub wallops: bool,
    /// Its ignore and watch lists, boxed together: most users never ignore nor watch anyone,
    /// and every idle user pays 8 bytes for both, not 48.
    pub lists: Option<Box<Lists>>,
}

/// What few users have: whom they ignore and whom they watch.
#[derive(Debug, Default)]
pub struct Lists {
    /// Whom this user ignores (IRC's SILENCE): folded `nick!user@host` masks, at most
    /// [`SILENCE_MAX`].
    pub silence: Vec<Box<str>>,
    /// The nicks this user watches (IRC's MONITOR), as given.
    pub watching: Vec<Box<str>>,
}

/// The most masks one user's ignore list holds (ISUPPORT `SILENCE`).
pub const SILENCE_MAX: usize = 32;

impl User {
    /// The keys of the rooms this user is in, in join order.
    pub fn room_keys(&self) -> impl Iterator<Item = usize> + '_ {
        self.rooms.iter().map(|m| m.key())
    }

    pub fn is_in(&self, key: usize) -> bool {
        self.rooms.iter().any(|m| m.key() == key)
    }

    /// The user's modes as IRC writes them: `+` and the letters set (`+iwo`).
    pub fn modes(&self) -> Box<str> {
        let mut s = String::from("+");
        let letters = [
            (self.invisible, 'i'),
            (self.wallops, 'w'),
            (self.oper, 'o'),
            (self.secure, 'z'),
            (self.source.bot, 'B'),
        ];
        for (on, letter) in letters {
            if on {
                s.push(letter);
            }
        }
        s.into()
    }

    /// Forgets the lists once both are empty (the 8-byte `None` again).
    pub fn drop_empty_lists(&mut self) {
        if self
            .lists
            .as_ref()
            .is_some_and(|l| l.silence.is_empty() && l.watching.is_empty())
        {
            self.lists = None;
        }
    }

    /// Whether this user ignores `from` (its ignore list has a mask matching `from`).
    pub fn ignores(&self, from: &Source) -> bool {
        let Some(masks) = self
            .lists
            .as_ref()
            .map(|l| &l.silence)
            .filter(|s| !s.is_empty())
        else {
            return false;
        };
        let whole = super::fold(&format!("{}!{}@{}", from.nick, from.user, from.host));
        masks
            .iter()
            .any(|m| super::mask::glob(m.as_bytes(), whole.as_bytes()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every connected user costs one of these (in the core's map): a field added here is
    /// paid 10,000 times on a server with 10,000 clients, and the idle client's budget (1 KiB)
    /// has little room left.
    #[test]
    #[cfg(target_pointer_width = "64")]
    fn the_user_record_stays_small() {
        assert!(size_of::<User>() <= 112, "{}", size_of::<User>());
    }
}
