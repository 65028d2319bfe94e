-- Write fields of an existing identity only (HSET alone would create a key
-- without its TTL after the identity expired).
-- KEYS[1] identity; ARGV[1] 'nx' (only fields not set) or 'set'; then field, value pairs
if redis.call('EXISTS', KEYS[1]) == 0 then
  return 0
end
for i = 2, #ARGV, 2 do
  if ARGV[1] == 'nx' then
    redis.call('HSETNX', KEYS[1], ARGV[i], ARGV[i + 1])
  else
    redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1])
  end
end
return 1
