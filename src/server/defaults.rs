//! The defaults of the server, declared once: [`ServerConfig::new`](super::ServerConfig::new)
//! and `durable-iterator serve --help` take them from here, and a test checks that the README's
//! configuration table says the same.

use std::time::Duration;

/// Where `serve` listens.
pub const LISTEN: &str = "127.0.0.1:50051";
/// Where the on-disk store keeps its file.
pub const DATA_DIR: &str = "durable-iterator-data";
/// How long events are kept for resume, in seconds.
pub const RETENTION_SECONDS: u64 = 300;
/// A heartbeat is sent after this long without another message.
pub const HEARTBEAT: Duration = Duration::from_secs(15);
/// `TokenExpiring` is sent this long before a token expires.
pub const EXPIRY_NOTICE: Duration = Duration::from_secs(30);
/// Events queued per subscriber before its stream ends as a slow consumer.
pub const SUBSCRIBER_QUEUE: usize = 4_096;
/// Most events a channel appends to the store in one batch (concurrent publishes share it).
pub const MAX_BATCH: usize = 1_024;
/// Bytes of events a resume reads from the store at once (it holds one page at a time).
pub const REPLAY_PAGE_BYTES: usize = 128 << 10;
/// Resumes replaying from the store at once; more wait their turn. With [`REPLAY_PAGE_BYTES`],
/// it bounds the memory of replays read from the store (64 × at most 4 MiB); replays from a
/// channel's recent events share buffers the channel keeps anyway ([`RECENT_BYTES`]).
pub const MAX_CONCURRENT_REPLAYS: usize = 64;
/// Bytes of a channel's latest events kept in memory for resumes: a gap they hold is replayed
/// from them, without a store read (about 1,300 events of 100 bytes, with their records).
pub const RECENT_BYTES_PER_CHANNEL: usize = 256 << 10;
/// The same, across every channel.
pub const RECENT_BYTES: usize = 64 << 20;
/// How long a channel with no subscribers keeps its latest events for the sessions that lost
/// their connections (a network blip, a load balancer's restart) and come back.
pub const RECENT_KEPT_IDLE: Duration = Duration::from_secs(30);
/// A replay whose client reads nothing for this long gives its slot to the next resume.
pub const REPLAY_STALL: Duration = Duration::from_secs(10);
/// HTTP/2 streams per connection (many sessions can share one connection).
pub const MAX_CONCURRENT_STREAMS: u32 = 10_000;
/// Longest a call forwarded to the HTTP method proxy may take.
pub const METHOD_PROXY_TIMEOUT: Duration = Duration::from_secs(10);
/// On shutdown, how long open calls may take to finish.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);
