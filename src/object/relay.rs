//! The object of every channel that has none registered: it lets clients publish to the
//! channel through `Invoke`, when their token's `rpc` lists `publish`. With it, the standalone
//! binary serves chat-like channels without any Rust code.
//!
//! ```text
//! Invoke { path: ["publish"], input: { "payload": <any JSON>, "tags": [..]?, "exclude_self": bool? } }
//!   -> { "id": "<event id>" }
//! ```

use serde::{Deserialize, Serialize};

use super::{ChannelObject, MethodError, PublishFilter, Router};
use crate::Method;

/// `publish`: publishes `payload` to the channel.
pub const PUBLISH: Method<RelayPublish, RelayPublished> = Method::new(&["publish"]);

/// The input of [`PUBLISH`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RelayPublish {
    /// The event, as subscribers receive it.
    pub payload: serde_json::Value,
    /// Deliver only to sessions whose token tags intersect these.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tags: Option<Vec<String>>,
    /// Do not deliver to the calling session (needs its session ticket on the call).
    #[serde(default)]
    pub exclude_self: bool,
}

/// The output of [`PUBLISH`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RelayPublished {
    /// The id the event was stored under.
    pub id: String,
}

/// The relay object.
#[derive(Debug, Default, Clone, Copy)]
pub struct Relay;

impl ChannelObject for Relay {
    fn methods(router: &mut Router<Self>) {
        router.method(PUBLISH, |_relay, call, input: RelayPublish| async move {
            let mut filter = PublishFilter::everyone();
            if let Some(tags) = input.tags {
                filter = filter.tags(tags);
            }
            if input.exclude_self {
                let Some(session_id) = call.caller.session_id else {
                    return Err(MethodError::invalid_argument(
                        "exclude_self needs the caller's session ticket on the call",
                    ));
                };
                filter = filter.exclude([session_id]);
            }
            let id = call.channel.publish(&input.payload, filter).await?;
            Ok(RelayPublished { id: id.to_string() })
        });
    }
}
