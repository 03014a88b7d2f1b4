//! The Lua scripts that make each append one atomic step in Redis, and the announcement an
//! append publishes.
//!
//! An append assigns the channel's next sequence numbers, adds the events to the channel's
//! stream, trims what is past retention and publishes the stored batch to the channel's topic
//! in one script: Redis runs a script alone, so an event is never stored without being
//! announced, nor announced without being stored, and two nodes appending to one channel get
//! consecutive, distinct sequence numbers.

use redis::Script;

/// Stream entries are `0-<seq>`: the id is the sequence number, so a range of sequence
/// numbers is a range of ids. Fields: `t` published_at_ms, `f` filter JSON (empty: everyone),
/// `p` the encoded payload, and `k` the idempotency key if the event has one.
///
/// KEYS: epoch, heads (hash channel → last seq), stream, channels (sorted set, by name), topic,
/// keys (hash idempotency key → `<seq> <published_at>`).
/// ARGV: expected epoch, channel, retention_ms, trim_before_ms (events published before it
/// are expired), then `published_at, filter, payload, key` per event (key: `-` for none, else
/// `+` and the key).
/// Returns the first sequence number assigned, then `place, seq` for each event left out as a
/// duplicate (place counts from 0); or an error `EPOCH <found>` when the history in Redis is
/// not the one this node opened (flushed or replaced).
const APPEND: &str = r#"
local epoch = redis.call('GET', KEYS[1])
if epoch ~= ARGV[1] then
  return redis.error_reply('EPOCH ' .. tostring(epoch))
end
local channel = ARGV[2]
local retention = tonumber(ARGV[3])
local last = tonumber(redis.call('HGET', KEYS[2], channel) or '0')
local n = (#ARGV - 4) / 4
local first = last + 1
local seq = last
local answer = { string.format('%.0f', first) }
local announced = {}
for i = 0, n - 1 do
  local at, filter, payload, key = ARGV[5 + 4 * i], ARGV[6 + 4 * i], ARGV[7 + 4 * i], ARGV[8 + 4 * i]
  local duplicate_of = nil
  if retention > 0 and key ~= '-' then
    local earlier = redis.call('HGET', KEYS[6], string.sub(key, 2))
    if earlier then
      local earlier_seq, earlier_at = string.match(earlier, '^(%d+) (%d+)$')
      if tonumber(earlier_at) + retention > tonumber(at) then
        duplicate_of = earlier_seq
      end
    end
  end
  if duplicate_of then
    answer[#answer + 1] = tostring(i)
    answer[#answer + 1] = duplicate_of
  else
    seq = seq + 1
    local id = string.format('%.0f', seq)
    if retention > 0 then
      if key == '-' then
        redis.call('XADD', KEYS[3], '0-' .. id, 't', at, 'f', filter, 'p', payload)
      else
        redis.call('XADD', KEYS[3], '0-' .. id, 't', at, 'f', filter, 'p', payload,
          'k', string.sub(key, 2))
        redis.call('HSET', KEYS[6], string.sub(key, 2), id .. ' ' .. at)
      end
    end
    announced[#announced + 1] = struct.pack('>I4', #at) .. at
      .. struct.pack('>I4', #filter) .. filter .. struct.pack('>I4', #payload) .. payload
  end
end
if seq > last then
  redis.call('HSET', KEYS[2], channel, string.format('%.0f', seq))
  if retention > 0 then
    redis.call('ZADD', KEYS[4], 0, channel)
  end
  redis.call('PUBLISH', KEYS[5],
    string.format('%.0f %d\n', first, #announced) .. table.concat(announced))
end
return answer
"#;

/// Deletes the oldest entries of one stream published before a time, up to a count; a stream
/// left empty leaves the set of channels with retained events (an append puts it back).
///
/// The idempotency keys of deleted entries go with them (unless a later event took the key).
///
/// KEYS: stream, channels (sorted set), keys (hash). ARGV: trim_before_ms, at most this many
/// entries, channel.
/// Returns `{deleted, more}`: more is 1 when the count stopped it.
const TRIM: &str = r#"
local before = tonumber(ARGV[1])
local budget = tonumber(ARGV[2])
local entries = redis.call('XRANGE', KEYS[1], '-', '+', 'COUNT', budget + 1)
local keep = nil
local seen = 0
for _, entry in ipairs(entries) do
  local fields = entry[2]
  local at, key = nil, nil
  for j = 1, #fields, 2 do
    if fields[j] == 't' then at = tonumber(fields[j + 1]) end
    if fields[j] == 'k' then key = fields[j + 1] end
  end
  if seen == budget or (at ~= nil and at >= before) then
    keep = entry[1]
    break
  end
  if key then
    local held = redis.call('HGET', KEYS[3], key)
    if held and string.match(held, '^(%d+) ') == string.sub(entry[1], 3) then
      redis.call('HDEL', KEYS[3], key)
    end
  end
  seen = seen + 1
end
if seen == 0 then return { 0, 0 } end
local deleted
if keep == nil then
  deleted = redis.call('XTRIM', KEYS[1], 'MAXLEN', 0)
else
  deleted = redis.call('XTRIM', KEYS[1], 'MINID', keep)
end
if redis.call('XLEN', KEYS[1]) == 0 then
  redis.call('ZREM', KEYS[2], ARGV[3])
end
local more = 0
if seen == budget then more = 1 end
return { deleted, more }
"#;

/// The scripts, loaded once (redis-rs sends a script's body only when Redis does not know it).
pub(super) struct Scripts {
    pub(super) append: Script,
    pub(super) trim: Script,
}

impl Default for Scripts {
    fn default() -> Self {
        Self {
            append: Script::new(APPEND),
            trim: Script::new(TRIM),
        }
    }
}
