-- Store the decided outcome, only for the claim's owner: a stalled worker
-- whose lease was taken over cannot overwrite the new owner's outcome.
-- KEYS[1] identity; ARGV[1] token, ARGV[2] event JSON, ARGV[3] retention seconds,
-- ARGV[4] "1" if the payment is followed (contract §10): its state starts
-- `open`, unless a notify already moved it; ARGV[5] the gateway's trade_no ('' if none).
local h = redis.call('HMGET', KEYS[1], 'own', 'st')
if h[1] == ARGV[1] and h[2] == 'd' then
  -- Stored already by this owner: a retry (a lost reply, or a write too few
  -- replicas confirmed in time) stores nothing twice.
  return 1
end
if h[1] ~= ARGV[1] or h[2] ~= 'c' then
  return 0
end
redis.call('HSET', KEYS[1], 'st', 'd', 'ev', ARGV[2])
if ARGV[4] == '1' then
  redis.call('HSETNX', KEYS[1], 'ps', 'open')
end
if ARGV[5] ~= '' then
  redis.call('HSETNX', KEYS[1], 'tn', ARGV[5])
end
redis.call('HDEL', KEYS[1], 'exp')
redis.call('EXPIRE', KEYS[1], ARGV[3])
return 1
