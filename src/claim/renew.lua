-- Extend the lease, only for its owner. KEYS[1] identity; ARGV[1] token, ARGV[2] lease ms.
local h = redis.call('HMGET', KEYS[1], 'own', 'st')
if h[1] ~= ARGV[1] or h[2] ~= 'c' then
  return 0
end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('HSET', KEYS[1], 'exp', now + tonumber(ARGV[2]))
return 1
