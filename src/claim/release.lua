-- Give up a claim whose gateway call this owner never started, so the next
-- delivery need not wait for the lease. KEYS[1] identity; ARGV[1] token;
-- ARGV[2] "1" to forget the identity (a fresh claim: nobody called the
-- gateway), "0" to keep its pay_time (a takeover: an earlier owner may
-- have called, so every later call must send the same request).
local h = redis.call('HMGET', KEYS[1], 'own', 'st')
if h[1] ~= ARGV[1] or h[2] ~= 'c' then
  return 0
end
if ARGV[2] == '1' then
  redis.call('DEL', KEYS[1])
else
  redis.call('HSET', KEYS[1], 'own', '', 'exp', 0)
end
return 1
