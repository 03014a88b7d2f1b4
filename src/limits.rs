//! Bounds on what clients and publishers may send, checked before anything changes.

use crate::{error::Error, filter::Filter};

/// Size and count limits. Every refusal names the limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Encoded payload bytes of one event.
    pub max_payload_bytes: usize,
    /// Bytes of a channel name.
    pub max_channel_bytes: usize,
    /// Tags on a token or an event.
    pub max_tags: usize,
    /// Bytes of one tag.
    pub max_tag_bytes: usize,
    /// Bytes of a token.
    pub max_token_bytes: usize,
    /// Session ids in an event's `targets` or `exclude`.
    pub max_session_list: usize,
    /// Lifetime of a minted token, in seconds.
    pub max_token_ttl_secs: u64,
    /// Events in one `PublishBatch` call.
    pub max_batch_events: usize,
    /// Bytes of a publish's idempotency key.
    pub max_idempotency_key_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_payload_bytes: 64 * 1024,
            max_channel_bytes: 255,
            max_tags: 64,
            max_tag_bytes: 255,
            max_token_bytes: 8 * 1024,
            max_session_list: 1_000,
            // A year: long-lived tokens are refreshed, not minted for ever (and `exp` stays far
            // below 2^53, which JavaScript verifiers of oRPC tokens need).
            max_token_ttl_secs: 366 * 86_400,
            max_batch_events: 10_000,
            max_idempotency_key_bytes: 128,
        }
    }
}

impl Limits {
    /// Checks everything a publish carries, whoever publishes (the admin API or a channel
    /// object): the channel name, the encoded payload's size, the filter's tags and session
    /// lists, the idempotency key.
    pub(crate) fn check_publish(
        &self,
        channel: &str,
        payload: &[u8],
        filter: &Filter,
        idempotency_key: Option<&str>,
    ) -> Result<(), Error> {
        self.check_channel(channel)?;
        self.check_payload(payload.len())?;
        if let Some(key) = idempotency_key
            && key.len() > self.max_idempotency_key_bytes
        {
            return Err(invalid(format!(
                "idempotency key is {} bytes, the limit is {}",
                key.len(),
                self.max_idempotency_key_bytes
            )));
        }
        if let Some(tags) = &filter.tags {
            self.check_tags(tags)?;
        }
        if let Some(targets) = &filter.targets {
            self.check_session_list("targets", targets)?;
        }
        self.check_session_list("exclude", &filter.exclude)
    }

    /// A channel name: any UTF-8 string of 1 to `max_channel_bytes` bytes without control
    /// characters, as oRPC allows (so a token oRPC minted for `café` or `a b` works here).
    pub fn check_channel(&self, channel: &str) -> Result<(), Error> {
        if channel.is_empty() {
            return Err(invalid("channel name is empty"));
        }
        if channel.len() > self.max_channel_bytes {
            return Err(invalid(format!(
                "channel name is {} bytes, the limit is {}",
                channel.len(),
                self.max_channel_bytes
            )));
        }
        if let Some(bad) = channel.chars().find(|c| c.is_control()) {
            return Err(invalid(format!(
                "channel name has the control character {bad:?}"
            )));
        }
        Ok(())
    }

    /// A list of tags: at most `max_tags`, each 1 to `max_tag_bytes` long.
    pub fn check_tags(&self, tags: &[String]) -> Result<(), Error> {
        if tags.len() > self.max_tags {
            return Err(invalid(format!(
                "{} tags, the limit is {}",
                tags.len(),
                self.max_tags
            )));
        }
        if let Some(tag) = tags
            .iter()
            .find(|t| t.is_empty() || t.len() > self.max_tag_bytes)
        {
            return Err(invalid(format!(
                "tag of {} bytes: tags are 1 to {} bytes",
                tag.len(),
                self.max_tag_bytes
            )));
        }
        Ok(())
    }

    /// An encoded payload.
    pub fn check_payload(&self, bytes: usize) -> Result<(), Error> {
        if bytes > self.max_payload_bytes {
            return Err(invalid(format!(
                "payload is {bytes} bytes, the limit is {}",
                self.max_payload_bytes
            )));
        }
        Ok(())
    }

    /// A token, before its signature is checked.
    pub fn check_token(&self, token: &str) -> Result<(), Error> {
        if token.len() > self.max_token_bytes {
            return Err(invalid(format!(
                "token is {} bytes, the limit is {}",
                token.len(),
                self.max_token_bytes
            )));
        }
        Ok(())
    }

    /// The lifetime asked of a minted token.
    pub fn check_token_ttl(&self, ttl_secs: u64) -> Result<(), Error> {
        if ttl_secs > self.max_token_ttl_secs {
            return Err(invalid(format!(
                "token lifetime is {ttl_secs} s, the limit is {} s",
                self.max_token_ttl_secs
            )));
        }
        Ok(())
    }

    /// A `targets` or `exclude` list.
    pub fn check_session_list(&self, what: &str, ids: &[String]) -> Result<(), Error> {
        if ids.len() > self.max_session_list {
            return Err(invalid(format!(
                "{what} has {} session ids, the limit is {}",
                ids.len(),
                self.max_session_list
            )));
        }
        Ok(())
    }
}

/// The length of a page asked for by a server API listing: 0 is the default; more than
/// [`crate::channel::MAX_PAGE`] is refused.
pub(crate) fn page_limit(requested: u32) -> Result<usize, Error> {
    use crate::channel::{DEFAULT_PAGE, MAX_PAGE};
    match requested as usize {
        0 => Ok(DEFAULT_PAGE),
        limit if limit > MAX_PAGE => Err(invalid(format!(
            "limit is {limit}, pages hold at most {MAX_PAGE}"
        ))),
        limit => Ok(limit),
    }
}

fn invalid(message: impl Into<String>) -> Error {
    Error::InvalidArgument(message.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn channel_names() {
        let limits = Limits::default();
        let good = [
            "lobby",
            "chat:room-42",
            "a.b_c/d@e=f+g~h",
            "a b",
            "café",
            "chat:*",
            "房间 🙂",
            &"x".repeat(255),
            &"é".repeat(127),
        ];
        for good in good {
            assert!(limits.check_channel(good).is_ok(), "{good}");
        }
        let bad = [
            "",
            "a\nb",
            "tab\there",
            "nul\0",
            "del\u{7f}",
            &"x".repeat(256),
            &"é".repeat(128),
        ];
        for bad in bad {
            assert!(limits.check_channel(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn tags_and_sizes() {
        let limits = Limits::default();
        assert!(limits.check_tags(&vec!["t".into(); 64]).is_ok());
        assert!(limits.check_tags(&vec!["t".into(); 65]).is_err());
        assert!(limits.check_tags(&["".into()]).is_err());
        assert!(limits.check_payload(64 * 1024).is_ok());
        assert!(limits.check_payload(64 * 1024 + 1).is_err());
        assert!(limits.check_token(&"x".repeat(8 * 1024 + 1)).is_err());
        assert!(limits.check_token_ttl(366 * 86_400).is_ok());
        assert!(limits.check_token_ttl(366 * 86_400 + 1).is_err());
        let everyone = Filter::everyone();
        let key = |len: usize| "k".repeat(len);
        assert!(
            limits
                .check_publish("c", b"", &everyone, Some(&key(128)))
                .is_ok()
        );
        assert!(
            limits
                .check_publish("c", b"", &everyone, Some(&key(129)))
                .is_err()
        );
    }
}
