//! Session tickets: whatever a client presents is a session of this channel signed by this
//! server, or refused, never a panic; a ticket the server issues holds only for its channel.
#![no_main]

use arbitrary::Arbitrary;
use durable_iterator::{
    Keyring,
    fuzz_support::unverified_session_id,
    session::{InvalidTicket, issue_ticket, verify_ticket},
};
use durable_iterator_fuzz::keyring;
use libfuzzer_sys::fuzz_target;

#[derive(Arbitrary, Debug)]
enum Input {
    /// A ticket as a client presents it.
    AsSent { channel: String, ticket: String },
    /// A ticket the server issued, presented on its channel and on another.
    Issued {
        channel: String,
        session_id: String,
        other_channel: String,
    },
}

fuzz_target!(|input: Input| match input {
    Input::AsSent { channel, ticket } => {
        let looked_up = unverified_session_id(&ticket);
        if let Ok(session_id) = verify_ticket(keyring(), &channel, &ticket) {
            assert!(!session_id.is_empty());
            assert_eq!(looked_up, Some(session_id.as_str()));
        }
    }
    Input::Issued {
        channel,
        session_id,
        other_channel,
    } => {
        let ticket = issue_ticket(keyring(), &channel, &session_id);
        let verified = verify_ticket(keyring(), &channel, &ticket);
        if session_id.is_empty() {
            assert_eq!(verified, Err(InvalidTicket));
        } else {
            assert_eq!(verified.as_deref(), Ok(session_id.as_str()));
            assert_eq!(unverified_session_id(&ticket), Some(session_id.as_str()));
        }
        if other_channel != channel {
            assert_eq!(
                verify_ticket(keyring(), &other_channel, &ticket),
                Err(InvalidTicket),
                "a ticket carried a session into another channel"
            );
        }
        let stranger = Keyring::new(["another server's key"]).expect("not empty");
        assert_eq!(
            verify_ticket(&stranger, &channel, &ticket),
            Err(InvalidTicket)
        );
    }
});
