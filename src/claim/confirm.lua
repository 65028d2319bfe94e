-- Mark the stored outcome's event as confirmed by the broker; later replays
-- say duplicate: true. KEYS[1] identity. Returns 1 if this call set it.
local h = redis.call('HMGET', KEYS[1], 'st', 'cf')
if h[1] ~= 'd' then
  return 0
end
if h[2] == '1' then
  return 0
end
redis.call('HSET', KEYS[1], 'cf', '1')
return 1
