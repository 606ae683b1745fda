//! Users found by a mask, for IRC's `WHO nick*`: glob matching (`*` any run, `?` one
//! character, case-insensitive as nicks are) over nicks, or over `nick!user@host` (the cloaked
//! host) when the mask names a user or host part.

use super::{ClientId, Core, Event, Listing, Outbox, Part, fold};

impl Core {
    /// Sends `id` the users matching `mask` as one WHO answer (`Event::Names` with
    /// `Listing::Who`, named after the mask), at most `max` of them in case-folded nick order:
    /// a bounded answer rather than a paged one, so a mask as wide as `*` on a big server costs
    /// what a page does. Returns how many users were looked at, for the caller to charge.
    pub fn who_mask(&self, id: ClientId, mask: &str, max: usize, out: &mut Outbox) -> usize {
        let pattern = fold(mask);
        let whole = mask.contains(['!', '@']);
        let asker_oper = self.users.get(&id).is_some_and(|u| u.oper);
        let mut found: Vec<(String, ClientId)> = self
            .users
            .iter()
            // An invisible user (`+i`) is found by a mask only by itself, by operators and
            // by users it shares a room with.
            .filter(|&(&c, u)| !u.invisible || c == id || asker_oper || self.share_room(id, u))
            .filter(|(_, u)| {
                let s = &u.source;
                if whole {
                    glob(
                        pattern.as_bytes(),
                        fold(&format!("{}!{}@{}", s.nick, s.user, s.host)).as_bytes(),
                    )
                } else {
                    glob(pattern.as_bytes(), fold(&s.nick).as_bytes())
                }
            })
            .map(|(&c, u)| (fold(&u.source.nick), c))
            .collect();
        found.sort_unstable();
        found.truncate(max);
        let members: Vec<_> = found.iter().map(|&(_, c)| self.member(c)).collect();
        out.send(
            id,
            Event::Names {
                room: mask.into(),
                total: members.len(),
                members,
                listing: Listing::Who,
                part: Part::WHOLE,
                secret: false,
            },
        );
        self.users.len()
    }
}

impl Core {
    /// Whether `id` is in one of `user`'s rooms (O(rooms of each), a few dozen at most).
    fn share_room(&self, id: ClientId, user: &super::User) -> bool {
        self.users
            .get(&id)
            .is_some_and(|me| me.room_keys().any(|k| user.is_in(k)))
    }
}

/// Whether `text` matches `pattern`, where `*` matches any run of bytes and `?` any one byte.
/// Linear backtracking to the last `*`: O(pattern × text) at worst, never exponential.
pub fn glob(pattern: &[u8], text: &[u8]) -> bool {
    let (mut p, mut t) = (0, 0);
    // Where the last `*` was, and the text position it is currently taken to end at.
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        match pattern.get(p) {
            Some(b'*') => {
                star = Some((p, t));
                p += 1;
            }
            Some(&c) if c == b'?' || c == text[t] => {
                p += 1;
                t += 1;
            }
            _ => match star {
                Some((sp, st)) => {
                    // Let the last `*` take one more byte and try again after it.
                    star = Some((sp, st + 1));
                    p = sp + 1;
                    t = st + 1;
                }
                None => return false,
            },
        }
    }
    pattern[p..].iter().all(|&c| c == b'*')
}

#[cfg(test)]
mod tests {
    use super::glob;

    #[test]
    fn globs() {
        let m = |p: &str, t: &str| glob(p.as_bytes(), t.as_bytes());
        assert!(m("*", ""));
        assert!(m("*", "alice"));
        assert!(m("ali*", "alice"));
        assert!(m("a?ice", "alice"));
        assert!(m("*ic*", "alice"));
        assert!(m("a*e", "alice"));
        assert!(m("a**e", "ae"));
        assert!(!m("a*e", "alicx"));
        assert!(!m("alice?", "alice"));
        assert!(!m("bob", "alice"));
        assert!(!m("", "alice"));
        assert!(m("*!*@*.ip", "alice!al@f1c0136b.a16b454c.ip"));
        // Many stars over a long text stay fast.
        assert!(!m(&"*a".repeat(30), &"a".repeat(29)));
    }
}
