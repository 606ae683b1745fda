//! Who was here: the users that left or changed nick lately, for IRC's `WHOWAS` and the line
//! protocol's `/whowas`.
//!
//! A bounded ring of the last [`MAX_GONE`] identities left behind (on a quit, and the old name
//! on a nick change), newest last. Each entry is the user's shared `Source` (already held by
//! the events and history that mention it) and a time: a few dozen bytes apiece.

use std::collections::VecDeque;
use std::sync::Arc;

use super::event::{ClientId, Event, Millis, Source};
use super::mask::glob;
use super::names::fold;
use super::{Core, Outbox};

/// Identities remembered at most, oldest forgotten first: enough for "who was that a minute
/// ago" on a busy server, bounded whatever the churn.
pub const MAX_GONE: usize = 1000;
/// Entries one answer lists at most, however many match (a mask like `*` would list them all).
pub const MAX_ANSWER: usize = 10;

/// The ring of identities left behind.
#[derive(Debug, Default)]
pub struct Gone {
    ring: VecDeque<(Arc<Source>, Millis)>,
}

impl Gone {
    /// Remembers `who`, left at `at`.
    pub fn push(&mut self, who: Arc<Source>, at: Millis) {
        if self.ring.len() == MAX_GONE {
            self.ring.pop_front();
        }
        self.ring.push_back((who, at));
    }

    /// Gives back the memory of a ring that was bigger (the loop's quiet-time trim).
    pub fn shrink_to_fit(&mut self) {
        self.ring.shrink_to_fit();
    }
}

impl Core {
    /// Answers `WHOWAS mask [count]`: the matching identities, newest first, at most `count`
    /// (0: as many as [`MAX_ANSWER`]).
    pub(super) fn whowas(&self, id: ClientId, mask: &str, count: usize, out: &mut Outbox) {
        let pattern = fold(mask);
        let limit = if count == 0 {
            MAX_ANSWER
        } else {
            count.min(MAX_ANSWER)
        };
        let found: Vec<(Arc<Source>, Millis)> = self
            .gone
            .ring
            .iter()
            .rev()
            .filter(|(s, _)| glob(pattern.as_bytes(), fold(&s.nick).as_bytes()))
            .take(limit)
            .cloned()
            .collect();
        out.send(
            id,
            Event::WasHere {
                mask: super::names::clip(mask, super::names::NICK_MAX + 8).into(),
                found,
            },
        );
    }
}
