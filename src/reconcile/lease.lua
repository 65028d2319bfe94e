-- Take or renew the identity's lease for a check: its claim lease (the
-- `own` and `exp` fields, free once the outcome is stored), so two checks
-- never query one payment at once (contract §12).
-- KEYS[1] identity; ARGV[1] token; ARGV[2] lease ms
-- Returns {'ok'} | {'busy', ms left} | {'pending', ms} (the intent itself
-- holds the claim) | {'gone'} (no such identity)
local k = KEYS[1]
local h = redis.call('HMGET', k, 'st', 'own', 'exp')
if not h[1] then
  return {'gone'}
end
if h[1] ~= 'd' then
  return {'pending', ARGV[2]}
end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local exp = tonumber(h[3]) or 0
if h[2] ~= ARGV[1] and exp > now then
  return {'busy', tostring(exp - now)}
end
redis.call('HSET', k, 'own', ARGV[1], 'exp', now + tonumber(ARGV[2]))
return {'ok'}
