//! Messages: PRIVMSG and NOTICE to channels and nicks, TAGMSG, and AWAY (what senders of
//! private messages are told).
//!
//! With `message-tags`, a sender's client-only tags (`+typing=active`) travel with its message
//! to the recipients that negotiated it too; the core numbers each message (its `msgid`), and
//! the renderer adds both once per class of recipients, never per recipient.

use super::IrcSession;
use super::commands::Call;
use crate::core::{ClientTags, Command, MsgKind, Target};
use crate::protocol::irc::{self, MAX_LINE, numeric::*};
use crate::session::Reason;

pub(super) fn privmsg(s: &mut IrcSession, c: &mut Call<'_, '_>) -> Option<Reason> {
    message(s, c, false)
}

/// A NOTICE is never answered with an error (RFC 2812 3.3.2).
pub(super) fn notice(s: &mut IrcSession, c: &mut Call<'_, '_>) -> Option<Reason> {
    message(s, c, true)
}

/// The client tags of the line to relay with it: none from a client that did not negotiate
/// `message-tags` (it cannot know what it sends), else its `+` tags, rebuilt once and shared by
/// every target and recipient.
fn client_tags(s: &IrcSession, c: &Call<'_, '_>) -> ClientTags {
    if !s.caps.tags || c.tags.is_empty() {
        return None;
    }
    irc::tags::client_tags(c.tags).map(Into::into)
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
    let tags = client_tags(s, c);
    let mark = c.out.mark();
    let targets = c.targets(targets, irc::MESSAGE_TARGETS, notice);
    // Tags belong to one message. A text that fits the sender's line but not the relayed one
    // (whose source, `nick!user@host`, is longer than the client's) would arrive as two
    // messages with the same tags, or cut: with tags, it is refused whole instead, before any
    // target has it.
    if tags.is_some()
        && targets
            .iter()
            .any(|t| relayed_len(c, t, text, kind) > MAX_LINE)
    {
        c.o.numeric(ERR_INPUTTOOLONG, &[]);
        return None;
    }
    // Each target after the first is one more fan-out.
    c.charge(targets.len().saturating_sub(1));
    for target in targets {
        let text = text.to_string();
        let tags = tags.clone();
        c.run(if target.starts_with('#') {
            Command::Say {
                room: Some(target.to_string()),
                text,
                kind,
                echo,
                tags,
            }
        } else {
            Command::Private {
                to: target.to_string(),
                text,
                kind,
                echo,
                tags,
            }
        });
    }
    if notice {
        c.out.drop_errors_since(mark);
    }
    None
}

/// The length of `:nick!user@host PRIVMSG target :text` as relayed, without tags and CRLF.
fn relayed_len(c: &Call<'_, '_>, target: &str, text: &str, kind: MsgKind) -> usize {
    let source = c.core.source(c.id).map_or(0, |s| irc::prefix(s).len());
    let verb = if kind == MsgKind::Notice {
        "NOTICE"
    } else {
        "PRIVMSG"
    };
    let wrap = if kind == MsgKind::Action {
        "\u{1}ACTION \u{1}".len()
    } else {
        0
    };
    format!(": {verb}  :").len() + source + target.len() + wrap + text.len()
}

/// Tag-only messages (typing notifications, reactions…) to each of a comma-separated list of
/// channels and nicks: delivered like PRIVMSG (same rules, same flood cost per target), but only
/// to recipients that negotiated `message-tags`. Like a NOTICE, never answered with an error:
/// clients send them unprompted (a typing notification to someone who just left), and an
/// error for each would be noise, or a loop between two automatic senders.
pub(super) fn tagmsg(s: &mut IrcSession, c: &mut Call<'_, '_>) -> Option<Reason> {
    let targets = c.p.first().copied().unwrap_or("");
    let echo = s.caps.echo;
    let tags = client_tags(s, c);
    let mark = c.out.mark();
    let targets = c.targets(targets, irc::MESSAGE_TARGETS, true);
    c.charge(targets.len().saturating_sub(1));
    for target in targets {
        let to = if target.starts_with('#') {
            Target::Room(target.to_string())
        } else {
            Target::Nick(target.to_string())
        };
        c.run(Command::TagMsg {
            to,
            tags: tags.clone(),
            echo,
        });
    }
    c.out.drop_errors_since(mark);
    None
}

/// `AWAY :message` marks the client away; `AWAY` alone, back.
pub(super) fn away(_: &mut IrcSession, c: &mut Call<'_, '_>) -> Option<Reason> {
    let message = c.p.first().filter(|m| !m.is_empty()).map(|m| m.to_string());
    c.run(Command::Away(message));
    None
}
