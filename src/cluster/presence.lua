-- roomcast: a room's presence across nodes (see src/cluster/mod.rs), on Redis's clock so that nodes whose
-- clocks differ agree on who has expired.
--
-- KEYS[1]  the room's presence: a sorted set of members (JSON {node, session, user}), each scored by the
--          millisecond its node's last refresh runs out
-- ARGV[1]  "refresh": ARGV[2] is CLUSTER_PRESENCE_TTL_MS, ARGV[3..] the members one node has in the room;
--          they get a new expiry, members whose expiry passed (their node stopped refreshing: it died) are
--          removed, and the set expires with its last member. Returns nothing.
--          "read": returns the members whose expiry has not passed.

local key, mode = KEYS[1], ARGV[1]
local now = redis.call('TIME')
local now_ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)

if mode == 'read' then
  return redis.call('ZRANGEBYSCORE', key, '(' .. now_ms, '+inf')
end

local ttl = tonumber(ARGV[2])
local expires = now_ms + ttl
-- ZADD takes score/member pairs; a room with very many members on one node is added in slices, so that
-- no call grows Lua's stack past its limit.
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
if redis.call('EXISTS', key) == 1 then
  redis.call('PEXPIRE', key, ttl)
end
return nil
