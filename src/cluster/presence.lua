-- roomcast: a room's presence across nodes (see src/cluster/mod.rs), on Redis's clock so that nodes whose
-- clocks differ agree on who has expired.
--
-- KEYS[1]  the room's presence: a sorted set of members (JSON {node, session, user}), each scored by the
--          millisecond its node's last refresh runs out
-- ARGV[1]  the mode:
--   "join"     ARGV[2] CLUSTER_PRESENCE_TTL_MS, ARGV[3] the member; ARGV[4] the room's channel, ARGV[5]
--              the notice to publish there ("" for none: PRESENCE_EVENTS off), ARGV[6] "1" to publish it
--              on a sharded channel (SPUBLISH, Redis Cluster)
--   "leave"    ARGV[2] unused, ARGV[3] the member, ARGV[4..6] as for "join"
--   "refresh"  ARGV[2] CLUSTER_PRESENCE_TTL_MS, ARGV[3..] the members one node has in the room: they get a
--              new expiry, and members whose expiry passed (their node stopped refreshing: it died) are
--              removed
--   "read"     returns the members whose expiry has not passed
--
-- A join or leave and its notice are one script, so that a node's changes to a room reach Redis and the
-- other nodes in the order the node made them. The set expires with the last expiry in it, whatever the
-- TTL of the node that wrote last.

local key, mode = KEYS[1], ARGV[1]
local now = redis.call('TIME')
local now_ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)

if mode == 'read' then
  return redis.call('ZRANGEBYSCORE', key, '(' .. now_ms, '+inf')
end

local function expire_with_last()
  local last = redis.call('ZRANGE', key, -1, -1, 'WITHSCORES')
  if last[2] then
    redis.call('PEXPIREAT', key, last[2])
  end
end

local function notify(channel, notice, sharded)
  if notice == '' then
    return
  end
  if sharded == '1' then
    redis.call('SPUBLISH', channel, notice)
  else
    redis.call('PUBLISH', channel, notice)
  end
end

if mode == 'join' then
  redis.call('ZADD', key, now_ms + tonumber(ARGV[2]), ARGV[3])
  expire_with_last()
  notify(ARGV[4], ARGV[5], ARGV[6])
  return nil
end

if mode == 'leave' then
  redis.call('ZREM', key, ARGV[3])
  notify(ARGV[4], ARGV[5], ARGV[6])
  return nil
end

-- "refresh". ZADD takes score/member pairs; a room with very many members on one node is added in slices,
-- so that no call grows Lua's stack past its limit.
local expires = now_ms + tonumber(ARGV[2])
local batch = {}
for i = 3, #ARGV do
  batch[#batch + 1] = expires
  batch[#batch + 1] = ARGV[i]
  if #batch >= 1000 then
    redis.call('ZADD', key, unpack(batch))
    batch = {}
  end
end
if #batch > 0 then
  redis.call('ZADD', key, unpack(batch))
end
redis.call('ZREMRANGEBYSCORE', key, '-inf', now_ms)
expire_with_last()
return nil
