-- Pick up due checks: each member due by now is re-scored to now + lease,
-- so a replica that dies mid-check leaves it to be picked up again after
-- the lease (never lost, as a pop-then-push poller could).
-- KEYS[1] the checks sorted set; ARGV[1] lease ms; ARGV[2] how many at most
-- Returns {now ms, member, due ms, member, due ms, ...}
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'WITHSCORES', 'LIMIT', 0, tonumber(ARGV[2]))
local out = {tostring(now)}
for i = 1, #due, 2 do
  redis.call('ZADD', KEYS[1], now + tonumber(ARGV[1]), due[i])
  out[#out + 1] = due[i]
  out[#out + 1] = due[i + 1]
end
return out
