-- Mark a payment event confirmed by the broker, only if it is still the
-- identity's latest. KEYS[1] identity; ARGV[1] event id. Returns 1 if marked.
if redis.call('HGET', KEYS[1], 'pi') ~= ARGV[1] then
  return 0
end
redis.call('HSET', KEYS[1], 'pc', '1')
return 1
