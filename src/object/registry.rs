//! Which object serves which channel, and the instances, one per channel.

use std::{
    collections::HashMap,
    fmt,
    sync::{Arc, Mutex},
};

use super::{
    Call, Caller, ChannelHandle, ChannelObject, Router, SessionInfo,
    bound::{Bound, BoundObject},
    proxy::{MethodProxy, ProxyConfig},
    relay::Relay,
};
use crate::{
    channel::{Channels, ResumeOutcome},
    error::Error,
    limits::Limits,
};

/// A channel name (`lobby`), or a prefix ending in `*` (`chat:*`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChannelPattern {
    /// This channel.
    Exact(String),
    /// Every channel whose name starts with this.
    Prefix(String),
}

impl ChannelPattern {
    /// Parses `pattern`: a channel name, or a prefix of one followed by `*` (no other `*`, no
    /// control characters).
    pub fn parse(pattern: &str) -> Result<Self, String> {
        let (stem, prefix) = match pattern.strip_suffix('*') {
            Some(stem) => (stem, true),
            None => (pattern, false),
        };
        if let Some(bad) = stem.chars().find(|c| c.is_control() || *c == '*') {
            return Err(format!(
                "channel pattern {pattern:?} has {bad:?}: use channel-name characters and one \
                 trailing *"
            ));
        }
        match (prefix, stem.is_empty()) {
            (false, true) => Err("channel pattern is empty".into()),
            (true, _) => Ok(Self::Prefix(stem.to_owned())),
            (false, false) => Ok(Self::Exact(stem.to_owned())),
        }
    }

    /// How well `channel` matches: `None` not at all; a longer match is more specific, and an
    /// exact name beats every prefix.
    fn specificity(&self, channel: &str) -> Option<usize> {
        match self {
            Self::Exact(name) => (name == channel).then_some(usize::MAX),
            Self::Prefix(prefix) => channel.starts_with(prefix.as_str()).then_some(prefix.len()),
        }
    }
}

/// Makes the object of one channel.
pub(crate) type Factory = Arc<dyn Fn(ChannelHandle) -> Arc<dyn BoundObject> + Send + Sync>;

/// The channel objects a server runs: registrations by channel pattern, and what serves the
/// channels that match none (the [`Relay`] unless told otherwise).
#[derive(Clone)]
pub struct ObjectRegistry {
    entries: Vec<(ChannelPattern, Factory)>,
    fallback: Factory,
}

impl fmt::Debug for ObjectRegistry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let patterns: Vec<_> = self.entries.iter().map(|(pattern, _)| pattern).collect();
        f.debug_struct("ObjectRegistry")
            .field("patterns", &patterns)
            .finish()
    }
}

impl Default for ObjectRegistry {
    fn default() -> Self {
        Self::new()
    }
}

fn factory_of<T: ChannelObject>(
    make: impl Fn(ChannelHandle) -> T + Send + Sync + 'static,
) -> Factory {
    let mut router = Router::default();
    T::methods(&mut router);
    let router = Arc::new(router);
    Arc::new(move |channel| {
        Arc::new(Bound {
            object: Arc::new(make(channel)),
            router: router.clone(),
        })
    })
}

impl ObjectRegistry {
    /// No registrations; unmatched channels get the relay.
    pub fn new() -> Self {
        Self {
            entries: Vec::new(),
            fallback: factory_of(|_| Relay),
        }
    }

    /// Serves channels matching `pattern` (`lobby`, or `chat:*`) with objects that `make`
    /// creates, one per channel, on first use. When patterns overlap, an exact name wins, then
    /// the longest prefix.
    ///
    /// # Panics
    /// When `pattern` is not a channel name or a prefix ending in `*`: a programming error.
    pub fn register<T: ChannelObject>(
        &mut self,
        pattern: &str,
        make: impl Fn(ChannelHandle) -> T + Send + Sync + 'static,
    ) -> &mut Self {
        let pattern = ChannelPattern::parse(pattern).unwrap_or_else(|e| panic!("{e}"));
        self.entries.push((pattern, factory_of(make)));
        self
    }

    /// Forwards the method calls of channels that match no registration to an HTTP endpoint
    /// (see [`ProxyConfig`]), instead of serving them with the relay.
    pub fn proxy_unregistered(&mut self, config: ProxyConfig) -> &mut Self {
        let proxy = MethodProxy::new(config);
        self.fallback = Arc::new(move |_| Arc::new(proxy.clone()));
        self
    }

    /// The factory of `channel`'s objects, and whether it is a registered one (the fallback's
    /// objects keep no state, so they need not be kept per channel).
    fn factory(&self, channel: &str) -> (&Factory, bool) {
        self.entries
            .iter()
            .filter_map(|(pattern, make)| Some((pattern.specificity(channel)?, make)))
            .max_by_key(|(specificity, _)| *specificity)
            .map_or((&self.fallback, false), |(_, make)| (make, true))
    }
}

/// The running objects of a server: one instance per channel of a registered object, made on
/// first use and kept while the server runs; the stateless fallback (relay or proxy) is not
/// kept, so channels without an object cost nothing here.
pub(crate) struct Objects {
    registry: ObjectRegistry,
    channels: Arc<Channels>,
    limits: Limits,
    instances: Mutex<HashMap<Arc<str>, Arc<dyn BoundObject>>>,
}

impl Objects {
    pub(crate) fn new(registry: ObjectRegistry, channels: Arc<Channels>, limits: Limits) -> Self {
        Self {
            registry,
            channels,
            limits,
            instances: Mutex::default(),
        }
    }

    /// The handle objects of `channel` publish through.
    pub(crate) fn channel(&self, channel: &str) -> ChannelHandle {
        ChannelHandle::new(channel.into(), self.channels.clone(), self.limits)
    }

    fn instance(&self, channel: &str) -> Arc<dyn BoundObject> {
        let (make, registered) = self.registry.factory(channel);
        if !registered {
            return make(self.channel(channel));
        }
        let mut instances = self.instances.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(object) = instances.get(channel) {
            return object.clone();
        }
        let object = make(self.channel(channel));
        instances.insert(channel.into(), object.clone());
        object
    }

    /// Calls the method at `path` of `channel`'s object for `caller`. The caller's right to
    /// call `path[0]` is checked before (the token's `rpc`).
    pub(crate) async fn invoke(
        &self,
        channel: &str,
        path: &[String],
        caller: Caller,
        input: serde_json::Value,
    ) -> Result<serde_json::Value, Error> {
        let call = Call {
            caller,
            channel: self.channel(channel),
        };
        let running = self
            .instance(channel)
            .invoke(path, call, input)
            .ok_or_else(|| Error::MethodNotFound {
                channel: channel.to_owned(),
                path: path.to_vec(),
            })?;
        Ok(running.await?)
    }

    /// Tells `channel`'s object that a session subscribed; does not wait for it.
    pub(crate) fn subscribed(&self, channel: &str, session: SessionInfo, resume: ResumeOutcome) {
        let object = self.instance(channel);
        tokio::spawn(async move { object.on_subscribed(&session, &resume).await });
    }

    /// Tells `channel`'s object that a session ended.
    pub(crate) async fn session_ended(&self, channel: &str, session_id: &str) {
        self.instance(channel).on_session_ended(session_id).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_parse_and_the_most_specific_wins() {
        assert_eq!(
            ChannelPattern::parse("chat:*"),
            Ok(ChannelPattern::Prefix("chat:".into()))
        );
        assert_eq!(
            ChannelPattern::parse("lobby"),
            Ok(ChannelPattern::Exact("lobby".into()))
        );
        assert_eq!(
            ChannelPattern::parse("*"),
            Ok(ChannelPattern::Prefix("".into()))
        );
        for bad in ["", "a*b", "a\nb*", "**"] {
            assert!(ChannelPattern::parse(bad).is_err(), "{bad:?}");
        }
        assert_eq!(
            ChannelPattern::parse("salle de café:*"),
            Ok(ChannelPattern::Prefix("salle de café:".into()))
        );
        let specificity = |pattern: &str, channel: &str| {
            ChannelPattern::parse(pattern).unwrap().specificity(channel)
        };
        assert_eq!(specificity("chat:*", "chat:1"), Some(5));
        assert_eq!(specificity("chat:*", "chatter"), None);
        assert_eq!(specificity("chat:1", "chat:1"), Some(usize::MAX));
        assert_eq!(specificity("chat:1", "chat:12"), None);
        assert!(specificity("chat:room:*", "chat:room:1") > specificity("chat:*", "chat:room:1"));
    }
}
