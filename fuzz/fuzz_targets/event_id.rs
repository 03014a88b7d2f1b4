//! Event ids (`last_event_id`, `Subscribed.position`): any text parses to the id it spells or is
//! refused, never a panic; every id reads back as itself and sorts as text in id order.
#![no_main]

use arbitrary::Arbitrary;
use durable_iterator::EventId;
use libfuzzer_sys::fuzz_target;

#[derive(Arbitrary, Debug)]
enum Input {
    /// An id as a client sends it.
    AsSent(String),
    /// Two ids the server writes.
    Written { a: (u32, u64), b: (u32, u64) },
}

fuzz_target!(|input: Input| match input {
    Input::AsSent(text) => match text.parse::<EventId>() {
        Ok(id) => assert_eq!(id.to_string(), text.to_ascii_lowercase()),
        // The refusal quotes the id, cut short: a huge id does not make a huge message.
        Err(refusal) => assert!(refusal.0.chars().count() <= 64),
    },
    Input::Written { a, b } => {
        let id = |(epoch, seq)| EventId { epoch, seq };
        let (a, b) = (id(a), id(b));
        let (text_a, text_b) = (a.to_string(), b.to_string());
        assert_eq!(text_a.parse::<EventId>(), Ok(a));
        assert_eq!(
            text_a.cmp(&text_b),
            (a.epoch, a.seq).cmp(&(b.epoch, b.seq)),
            "ids do not sort as text in id order"
        );
    }
});
