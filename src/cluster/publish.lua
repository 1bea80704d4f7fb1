-- roomcast: one publication of a room, atomically (see src/cluster/mod.rs).
--
-- KEYS[1]  the room's meta hash: `epoch` (names an unbroken run of offsets) and `offset` (the last given)
-- KEYS[2]  the room's stream: the newest HISTORY_SIZE publications, entry id `<offset>-0`, field `p`
-- KEYS[3]  where a client id is remembered (only read or written when ARGV[5] is not empty)
-- ARGV[1]  the room's channel
-- ARGV[2]  the text            ARGV[3] who published        ARGV[4] "1" when that is a signed-in user
-- ARGV[5]  the client's id for the message, or ""
-- ARGV[6]  HISTORY_SIZE (0: no stream, offsets only)
-- ARGV[7]  HISTORY_TTL_SEC in milliseconds (0: no expiry; ids are then kept for a day)
-- ARGV[8]  an epoch to use if the room has none (random, from the publishing node)
-- ARGV[9]  "1" to publish on a sharded channel (SPUBLISH, Redis Cluster), else PUBLISH
--
-- The stream entry's `p` is the publication as JSON ({text, from, ts, user, id}); the channel's message is
-- the same object with its `offset` and `epoch`.
--
-- Returns {offset, epoch, duplicate (0 or 1)}. Per room, publications are numbered, kept and published in
-- one order: the order this script runs in.

local meta, stream, id_key = KEYS[1], KEYS[2], KEYS[3]
local channel, text, from, by_user, id = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5]
local size, ttl, fresh_epoch, sharded = tonumber(ARGV[6]), tonumber(ARGV[7]), ARGV[8], ARGV[9]

local epoch = redis.call('HGET', meta, 'epoch')
if not epoch then
  epoch = fresh_epoch
  redis.call('HSET', meta, 'epoch', epoch, 'offset', 0)
  -- A stream left from an epoch that is gone would refuse this epoch's first ids.
  redis.call('DEL', stream)
end

if id ~= '' then
  local seen = redis.call('GET', id_key)
  if seen then
    return {tonumber(seen), epoch, 1}
  end
end

local offset = redis.call('HINCRBY', meta, 'offset', 1)
local now = redis.call('TIME')
local ts = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
local record = {text = text, from = from, ts = ts, user = (by_user == '1')}
if id ~= '' then
  record.id = id
end
local encoded = cjson.encode(record)

if size > 0 then
  redis.call('XADD', stream, 'MAXLEN', size, offset .. '-0', 'p', encoded)
end
if ttl > 0 then
  redis.call('PEXPIRE', meta, ttl)
  if size > 0 then
    redis.call('PEXPIRE', stream, ttl)
  end
end
if id ~= '' then
  local keep = ttl
  if keep == 0 then
    keep = 86400000
  end
  redis.call('SET', id_key, offset, 'PX', keep)
end

record.offset = offset
record.epoch = epoch
local message = cjson.encode(record)
if sharded == '1' then
  redis.call('SPUBLISH', channel, message)
else
  redis.call('PUBLISH', channel, message)
end
return {offset, epoch, 0}
