-- Move a payment's state, only from the state the caller saw: two
-- replicas, a notify and a query racing each other make one transition.
-- KEYS[1] identity
-- ARGV[1] the state seen ('' when none)   ARGV[2] the new state
-- ARGV[3] the payment event's id          ARGV[4] the payment event (JSON)
-- ARGV[5] a trade_no learned ('' when none)
-- Returns 1 (moved), 0 (the state changed meanwhile: look again), -1 (no such identity).
local k = KEYS[1]
local h = redis.call('HMGET', k, 'st', 'ps')
if not h[1] then
  return -1
end
if (h[2] or '') ~= ARGV[1] then
  return 0
end
redis.call('HSET', k, 'ps', ARGV[2], 'pi', ARGV[3], 'pe', ARGV[4], 'pc', '0')
if ARGV[5] ~= '' and not redis.call('HGET', k, 'tn') then
  redis.call('HSET', k, 'tn', ARGV[5])
end
return 1
