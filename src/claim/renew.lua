-- Extend the lease, only for its owner. KEYS[1] identity; ARGV[1] token, ARGV[2] lease ms.
-- The key's own TTL is kept well beyond the lease, so that a claim can never
-- vanish mid-call (a vanished claim would be claimed afresh with a new
-- pay_time: a different request for the same identity).
local h = redis.call('HMGET', KEYS[1], 'own', 'st')
if h[1] ~= ARGV[1] or h[2] ~= 'c' then
  return 0
end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local lease = tonumber(ARGV[2])
redis.call('HSET', KEYS[1], 'exp', now + lease)
local ttl = redis.call('PTTL', KEYS[1])
if ttl >= 0 and ttl < 4 * lease then
  redis.call('PEXPIRE', KEYS[1], 4 * lease)
end
return 1
