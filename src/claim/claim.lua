-- Claim an intent identity, or report why not. One key: the identity's hash.
-- KEYS[1] identity key
-- ARGV[1] owner token   ARGV[2] parameter fingerprint   ARGV[3] candidate pay_time
-- ARGV[4] "1" if pay_time is explicit in the intent      ARGV[5] lease ms
-- ARGV[6] retention seconds   ARGV[7] "1" if the intent is too old to start
-- ARGV[8] what is sent (JSON: amount, type, notify_url, correlation, metadata),
--         stored with a new claim so that every retry and takeover sends the same
-- ARGV[9] "1" if this delivery's earlier attempt may have reached the gateway
--         (its claim vanished mid-call): stored as 'rg', and the claim is then
--         answered as a takeover, by this worker and any other (contract §5.6)
-- Returns {"claimed", pay_time, takeover, what was sent} | {"done", event, confirmed}
--       | {"conflict", stored pay_time} | {"wait", ms left on the lease} | {"expired"}
local k = KEYS[1]
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local h = redis.call('HMGET', k, 'fp', 'pt', 'st', 'own', 'exp', 'cf', 'ev', 'rq', 'rg')
if not h[3] then
  if ARGV[7] == '1' then
    return {'expired'}
  end
  redis.call('HSET', k, 'fp', ARGV[2], 'pt', ARGV[3], 'st', 'c', 'own', ARGV[1], 'exp', now + tonumber(ARGV[5]), 'rq', ARGV[8])
  if ARGV[9] == '1' then
    redis.call('HSET', k, 'rg', '1')
  end
  redis.call('EXPIRE', k, ARGV[6])
  return {'claimed', ARGV[3], ARGV[9], ARGV[8]}
end
if h[1] ~= ARGV[2] or (ARGV[4] == '1' and h[2] ~= ARGV[3]) then
  return {'conflict', h[2] or ''}
end
if h[3] == 'd' then
  return {'done', h[7] or '', h[6] or '0'}
end
local exp = tonumber(h[5]) or 0
if h[4] == ARGV[1] then
  -- Our own claim (a retried reply that was lost): not a takeover, unless
  -- an attempt may already have reached the gateway.
  redis.call('HSET', k, 'exp', now + tonumber(ARGV[5]))
  return {'claimed', h[2], h[9] or '0', h[8] or ''}
end
if exp > now then
  return {'wait', tostring(exp - now)}
end
redis.call('HSET', k, 'own', ARGV[1], 'exp', now + tonumber(ARGV[5]))
return {'claimed', h[2], '1', h[8] or ''}
