//! The Lua scripts of the session directory (see `directory.rs`): each one step in Redis, so
//! that two nodes taking the same session, or a node dying while another reads presence, never
//! leave a session listed twice or owned by two nodes.
//!
//! Keys, under the store's prefix `p`: `p:session:<id>` (hash: node, channel, claims, at,
//! resumes), `p:presence:<channel>` (the channel's present session ids, a sorted set listed by
//! id), `p:present-channels` (channels with present sessions, listed by name),
//! `p:node-sessions:<node>` (the ids a node holds, to clean up after it), `p:nodes` (node →
//! the end of its lease, Unix ms) and `p:revoked:<id>` (expires with the revocation). A node
//! is a decimal string. These scripts build key names from the prefix, so they run on one
//! Redis (a primary and its replicas), not on Redis Cluster.

use redis::Script;

/// Applies a node's directory changes in order. ARGV: prefix, node, then per change one of
/// - `open id channel claims at resumes`: the session is present here now; a node that held
///   it is told on `p:sessions` (its stream is superseded);
/// - `assert id channel claims at resumes`: the same, unless another node took the session
///   (a refresh, or a node that lost its changes saying again what it holds);
/// - `close id keep_ms`: the session's stream closed here; the session stays this node's for
///   `keep_ms`, unless another node took it;
/// - `end id`: the session's resume window lapsed here; it has ended if it is still this
///   node's, and is forgotten;
/// - `prune keep_ms id...` (the rest of ARGV): every session this node is listed as holding
///   but for these is closed, as `close` does.
///
/// Returns one number per change: 1 if it changed the directory (for `end`: the session ended
/// here), else 0.
const APPLY: &str = r#"
local p, node = ARGV[1], ARGV[2]
local function leave(channel, id)
  local key = p .. ':presence:' .. channel
  if redis.call('ZREM', key, id) == 1 and redis.call('EXISTS', key) == 0 then
    redis.call('ZREM', p .. ':present-channels', channel)
  end
end
local held_by = p .. ':node-sessions:' .. node
local done = {}
local i = 3
while i <= #ARGV do
  local op, id = ARGV[i], ARGV[i + 1]
  local key = p .. ':session:' .. tostring(id)
  local changed = 0
  if op == 'prune' then
    local live = {}
    for j = i + 2, #ARGV do live[ARGV[j]] = true end
    for _, held in ipairs(redis.call('SMEMBERS', held_by)) do
      if not live[held] then
        local session = p .. ':session:' .. held
        local owner = redis.call('HMGET', session, 'node', 'channel')
        if owner[1] == node then
          leave(owner[2], held)
          redis.call('PEXPIRE', session, ARGV[i + 1])
        end
        redis.call('SREM', held_by, held)
        changed = changed + 1
      end
    end
    i = #ARGV + 1
  else
    local held = redis.call('HMGET', key, 'node', 'channel')
    if op == 'close' then
      if held[1] == node then
        leave(held[2], id)
        redis.call('SREM', held_by, id)
        redis.call('PEXPIRE', key, ARGV[i + 2])
        changed = 1
      end
      i = i + 3
    elseif op == 'end' then
      if held[1] == node
        and not redis.call('ZSCORE', p .. ':presence:' .. held[2], id) then
        redis.call('DEL', key)
        changed = 1
      end
      i = i + 2
    else
      local channel = ARGV[i + 2]
      if op == 'open' or not held[1] or held[1] == node then
        if held[2] and held[2] ~= channel then leave(held[2], id) end
        if held[1] and held[1] ~= node then
          redis.call('SREM', p .. ':node-sessions:' .. held[1], id)
        end
        redis.call('DEL', key)
        redis.call('HSET', key, 'node', node, 'channel', channel, 'claims', ARGV[i + 3],
          'at', ARGV[i + 4], 'resumes', ARGV[i + 5])
        redis.call('ZADD', p .. ':presence:' .. channel, 0, id)
        redis.call('ZADD', p .. ':present-channels', 0, channel)
        redis.call('SADD', held_by, id)
        if op == 'open' then
          redis.call('PUBLISH', p .. ':sessions', node .. ' ' .. id)
        end
        changed = 1
      end
      i = i + 6
    end
  end
  done[#done + 1] = changed
end
return done
"#;

/// Renews this node's lease and cleans up after nodes whose lease lapsed: their sessions leave
/// the directory, at most `budget` of them per run. ARGV: prefix, node, lease end (ms), now
/// (ms), budget.
///
/// Returns 1 if this node was known, 0 if it was not (new, or taken for dead while it was cut
/// off: it must say again what it holds).
const HEARTBEAT: &str = r#"
local p, node = ARGV[1], ARGV[2]
local nodes = p .. ':nodes'
local known = redis.call('ZSCORE', nodes, node)
redis.call('ZADD', nodes, ARGV[3], node)
local budget = tonumber(ARGV[5])
local dead = redis.call('ZRANGEBYSCORE', nodes, '-inf', '(' .. ARGV[4], 'LIMIT', 0, 16)
for _, gone in ipairs(dead) do
  if budget <= 0 then break end
  local held_by = p .. ':node-sessions:' .. gone
  for _, id in ipairs(redis.call('SPOP', held_by, budget)) do
    local key = p .. ':session:' .. id
    local held = redis.call('HMGET', key, 'node', 'channel')
    if held[1] == gone then
      local presence = p .. ':presence:' .. held[2]
      if redis.call('ZREM', presence, id) == 1 and redis.call('EXISTS', presence) == 0 then
        redis.call('ZREM', p .. ':present-channels', held[2])
      end
      redis.call('DEL', key)
    end
    budget = budget - 1
  end
  if redis.call('EXISTS', held_by) == 0 then
    redis.call('ZREM', nodes, gone)
  end
end
if known then return 1 end
return 0
"#;

/// A page of a channel's present sessions. ARGV: prefix, channel, start (`-` or `(<id>`),
/// count, now (ms).
///
/// Returns the last id looked at (empty if none), how many were looked at, then `id, claims, at, resumes` for each
/// session of a node whose lease holds (a dead node's are left out until cleaned up).
const PRESENCE: &str = r#"
local p = ARGV[1]
local ids = redis.call('ZRANGEBYLEX', p .. ':presence:' .. ARGV[2], ARGV[3], '+',
  'LIMIT', 0, tonumber(ARGV[4]))
local now = tonumber(ARGV[5])
local leases = {}
local page = { ids[#ids] or '', tostring(#ids) }
for _, id in ipairs(ids) do
  local session = redis.call('HMGET', p .. ':session:' .. id, 'node', 'claims', 'at', 'resumes')
  if session[1] then
    local lease = leases[session[1]]
    if lease == nil then
      lease = tonumber(redis.call('ZSCORE', p .. ':nodes', session[1]) or '0')
      leases[session[1]] = lease
    end
    if lease >= now then
      page[#page + 1] = id
      page[#page + 1] = session[2]
      page[#page + 1] = session[3]
      page[#page + 1] = session[4]
    end
  end
end
return page
"#;

/// The scripts, loaded once (redis-rs sends a script's body only when Redis does not know it).
pub(super) struct DirectoryScripts {
    pub(super) apply: Script,
    pub(super) heartbeat: Script,
    pub(super) presence: Script,
}

impl Default for DirectoryScripts {
    fn default() -> Self {
        Self {
            apply: Script::new(APPLY),
            heartbeat: Script::new(HEARTBEAT),
            presence: Script::new(PRESENCE),
        }
    }
}
