//! Messages: PRIVMSG and NOTICE to channels and nicks, TAGMSG, and AWAY (what senders of
//! private messages are told).

use super::IrcSession;
use super::commands::Call;
use crate::core::{Command, MsgKind};
use crate::protocol::irc;
use crate::protocol::irc::numeric::*;
use crate::session::Reason;

pub(super) fn privmsg(s: &mut IrcSession, c: &mut Call<'_, '_>) -> Option<Reason> {
    message(s, c, false)
}

/// A NOTICE is never answered with an error (RFC 2812 3.3.2).
pub(super) fn notice(s: &mut IrcSession, c: &mut Call<'_, '_>) -> Option<Reason> {
    message(s, c, true)
}

/// PRIVMSG or NOTICE to each of a comma-separated list of channels and nicks.
fn message(s: &mut IrcSession, c: &mut Call<'_, '_>, notice: bool) -> Option<Reason> {
    let p = c.p;
    let Some(targets) = p.first().filter(|t| !t.is_empty()) else {
        if !notice {
            c.o.numeric_with(ERR_NORECIPIENT, &[], &[&"PRIVMSG"]);
        }
        return None;
    };
    let Some(text) = p.get(1).filter(|t| !t.is_empty()) else {
        if !notice {
            c.o.numeric(ERR_NOTEXTTOSEND, &[]);
        }
        return None;
    };
    let (text, kind) = irc::split_action(text);
    let kind = if notice { MsgKind::Notice } else { kind };
    let echo = s.caps.echo;
    let mark = c.out.mark();
    let targets = c.targets(targets, irc::MESSAGE_TARGETS, notice);
    // Each target after the first is one more fan-out.
    c.charge(targets.len().saturating_sub(1));
    for target in targets {
        let text = text.to_string();
        c.run(if target.starts_with('#') {
            Command::Say {
                room: Some(target.to_string()),
                text,
                kind,
                echo,
            }
        } else {
            Command::Private {
                to: target.to_string(),
                text,
                kind,
                echo,
            }
        });
    }
    if notice {
        c.out.drop_errors_since(mark);
    }
    None
}

/// Tag-only messages (typing notifications…): accepted, and, as no client tag is relayed,
/// delivered to nobody.
pub(super) fn tagmsg(_: &mut IrcSession, _: &mut Call<'_, '_>) -> Option<Reason> {
    None
}

/// `AWAY :message` marks the client away; `AWAY` alone, back.
pub(super) fn away(_: &mut IrcSession, c: &mut Call<'_, '_>) -> Option<Reason> {
    let message = c.p.first().filter(|m| !m.is_empty()).map(|m| m.to_string());
    c.run(Command::Away(message));
    None
}
