//! Page tokens of the server API's listings: opaque to callers, the last name of the page
//! (a channel, a session id) inside.

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};

use crate::error::Error;

/// Marks tokens of this server, so that a name passed as a token is refused, not misread.
const PREFIX: &str = "p1.";

/// The token of the page after `last`.
pub(crate) fn after(last: &str) -> String {
    format!("{PREFIX}{}", URL_SAFE_NO_PAD.encode(last))
}

/// The name a page starts after; `None` for the first page (no token).
pub(crate) fn parse(token: &str) -> Result<Option<String>, Error> {
    if token.is_empty() {
        return Ok(None);
    }
    let malformed =
        || Error::InvalidArgument("malformed page_token: pass one a page answered".into());
    let encoded = token.strip_prefix(PREFIX).ok_or_else(malformed)?;
    let bytes = URL_SAFE_NO_PAD.decode(encoded).map_err(|_| malformed())?;
    String::from_utf8(bytes).map(Some).map_err(|_| malformed())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_round_trip_and_anything_else_is_refused() {
        for name in ["chat:room-42", "café 🙂", "a"] {
            assert_eq!(parse(&after(name)).unwrap().as_deref(), Some(name));
        }
        assert_eq!(parse("").unwrap(), None);
        for bad in ["chat:room", "p1.!!", "p1.__8"] {
            assert!(parse(bad).is_err(), "{bad}");
        }
    }
}
