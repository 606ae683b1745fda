//! A user's own settings: user modes (`+i` invisible, `+w` wallops, `+o` server operator, `+z`
//! connected over TLS, `+B` a bot) and its ignore list (IRC's SILENCE, the line protocol's /ignore).

use std::sync::Arc;

use super::modes::{normalize_mask, valid_mask};
use super::user::SILENCE_MAX;
use super::{ClientId, Core, Error, Event, Outbox, Stats, fold};

impl Core {
    /// `UserMode`: applies `changes` to `id`'s own modes in order and tells it its modes,
    /// with what changed. An unknown letter is refused (and the letters before it stay set,
    /// as IRC servers do); `+o` is ignored (only OPER makes an operator), `-o` drops it; `z`
    /// says how the user is connected, which no mode change alters.
    pub(super) fn user_mode(
        &mut self,
        id: ClientId,
        changes: Vec<(bool, char)>,
        out: &mut Outbox,
    ) -> Result<(), Error> {
        let user = self.users.get_mut(&id).expect("asker is a user");
        let mut changed = String::new();
        let mut sign = None;
        let mut unknown = None;
        for (set, letter) in changes {
            let slot = match letter {
                'i' => &mut user.invisible,
                'w' => &mut user.wallops,
                // In the source every message carries (see `Source::bot`): a new one, as for a
                // nick change, only when it changes.
                'B' if user.source.bot != set => &mut Arc::make_mut(&mut user.source).bot,
                'B' => continue,
                'o' if !set => &mut user.oper,
                'o' | 'z' => continue,
                // Refused at the end; the letters after it still apply.
                other => {
                    unknown.get_or_insert(other);
                    continue;
                }
            };
            if *slot == set {
                continue;
            }
            *slot = set;
            match (letter, set) {
                ('i', true) => self.invisible += 1,
                ('i', false) => self.invisible -= 1,
                ('o', false) => {
                    self.opers -= 1;
                    log::info!("{} is no longer a server operator", user.source.nick);
                }
                _ => {}
            }
            if sign != Some(set) {
                changed.push(if set { '+' } else { '-' });
                sign = Some(set);
            }
            changed.push(letter);
        }
        out.send(
            id,
            Event::UserModes {
                nick: user.source.nick.clone(),
                changed: (!changed.is_empty()).then(|| changed.into()),
                modes: user.modes(),
            },
        );
        match unknown {
            Some(letter) => Err(Error::UnknownUserMode(letter)),
            None => Ok(()),
        }
    }

    /// `Silence`: shows, extends or shrinks `id`'s ignore list.
    pub(super) fn silence(
        &mut self,
        id: ClientId,
        change: Option<(bool, String)>,
        out: &mut Outbox,
    ) -> Result<(), Error> {
        let user = self.users.get_mut(&id).expect("asker is a user");
        let Some((set, mask)) = change else {
            let masks = user
                .lists
                .as_ref()
                .map(|l| l.silence.clone())
                .unwrap_or_default();
            out.send(id, Event::SilenceList { masks });
            return Ok(());
        };
        if !valid_mask(&mask) {
            return Err(Error::InvalidIgnoreMask);
        }
        let mask: Box<str> = fold(&normalize_mask(&mask)).into();
        let list = &mut user.lists.get_or_insert_default().silence;
        let at = list.iter().position(|m| *m == mask);
        let changed = match (set, at) {
            (true, Some(_)) | (false, None) => false,
            (true, None) if list.len() >= SILENCE_MAX => {
                return Err(Error::SilenceFull(mask.into()));
            }
            (true, None) => {
                list.push(mask.clone());
                true
            }
            (false, Some(i)) => {
                list.remove(i);
                true
            }
        };
        user.drop_empty_lists();
        let nick = user.source.nick.clone();
        out.send(
            id,
            Event::Silenced {
                nick,
                set,
                mask,
                changed,
            },
        );
        Ok(())
    }

    /// The server's figures, for LUSERS.
    pub fn stats(&self) -> Stats {
        Stats {
            users: self.users.len(),
            invisible: self.invisible,
            opers: self.opers,
            rooms: self.rooms.len(),
            peak: self.peak_users,
        }
    }
}
