//! Session ids and signed session tickets.
//!
//! The server assigns every subscriber a session id and hands it a ticket: the id plus an HMAC
//! over (channel, id). Presenting the ticket on reconnect keeps the id, so publish filters that
//! name sessions (`targets`, `exclude`) stay true across reconnects and replay. The ticket is
//! bound to its channel: it cannot carry a session into another channel.

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use rand::RngCore;

use crate::keyring::Keyring;

/// Separates ticket MACs from token MACs made with the same keys (a token payload starts with
/// `{`, this does not).
const TICKET_CONTEXT: &[u8] = b"durable-iterator session ticket\n";

/// A new random session id: 128 bits, base64url (22 characters).
pub fn new_session_id() -> String {
    let mut bytes = [0u8; 16];
    rand::rng().fill_bytes(&mut bytes);
    URL_SAFE_NO_PAD.encode(bytes)
}

/// The ticket for session `session_id` on `channel`: `<session id>.<base64url MAC>`.
pub fn issue_ticket(keyring: &Keyring, channel: &str, session_id: &str) -> String {
    let mac = keyring.sign(&ticket_parts(channel, session_id, &channel_len(channel)));
    format!("{session_id}.{}", URL_SAFE_NO_PAD.encode(mac))
}

/// A ticket that was forged, altered, or issued for another channel.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid session ticket (forged, or issued for another channel)")]
pub struct InvalidTicket;

/// The session id a ticket carries, if it was issued by this server for `channel`.
pub fn verify_ticket(
    keyring: &Keyring,
    channel: &str,
    ticket: &str,
) -> Result<String, InvalidTicket> {
    let (session_id, mac) = ticket.rsplit_once('.').ok_or(InvalidTicket)?;
    let mac = URL_SAFE_NO_PAD.decode(mac).map_err(|_| InvalidTicket)?;
    let channel_len = channel_len(channel);
    let parts = ticket_parts(channel, session_id, &channel_len);
    if session_id.is_empty() || !keyring.verify(&parts, &mac) {
        return Err(InvalidTicket);
    }
    Ok(session_id.to_owned())
}

/// The session id part of a ticket, not yet verified: only for looking the session up.
pub(crate) fn unverified_session_id(ticket: &str) -> Option<&str> {
    ticket.rsplit_once('.').map(|(id, _)| id)
}

fn channel_len(channel: &str) -> [u8; 8] {
    (channel.len() as u64).to_be_bytes()
}

fn ticket_parts<'a>(
    channel: &'a str,
    session_id: &'a str,
    channel_len: &'a [u8; 8],
) -> [&'a [u8]; 4] {
    // The channel is length-prefixed so that no (channel, id) pair can pose as another.
    [
        TICKET_CONTEXT,
        channel_len,
        channel.as_bytes(),
        session_id.as_bytes(),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tickets_are_bound_to_key_channel_and_id() {
        let ring = Keyring::new(["k"]).unwrap();
        let id = new_session_id();
        assert_eq!(id.len(), 22);
        let ticket = issue_ticket(&ring, "room", &id);
        assert_eq!(verify_ticket(&ring, "room", &ticket), Ok(id.clone()));
        assert_eq!(verify_ticket(&ring, "other", &ticket), Err(InvalidTicket));
        let other_key = Keyring::new(["k2"]).unwrap();
        assert_eq!(
            verify_ticket(&other_key, "room", &ticket),
            Err(InvalidTicket)
        );
        let forged = ticket.replacen(&id[..1], if &id[..1] == "A" { "B" } else { "A" }, 1);
        assert_eq!(verify_ticket(&ring, "room", &forged), Err(InvalidTicket));
        for garbage in ["", ".", "abc", "abc.!!", ".AAAA"] {
            assert_eq!(verify_ticket(&ring, "room", garbage), Err(InvalidTicket));
        }
    }
}
