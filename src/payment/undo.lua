-- Take back a transition whose event the broker did not confirm, so that
-- nothing changed and the sender (gateway, check) tries again. Only if it is
-- still the latest and nobody has confirmed it meanwhile.
-- KEYS[1] identity; ARGV[1] event id; ARGV[2] the state before ('' for none).
local h = redis.call('HMGET', KEYS[1], 'pi', 'pc')
if h[1] ~= ARGV[1] or h[2] == '1' then
  return 0
end
if ARGV[2] == '' then
  redis.call('HDEL', KEYS[1], 'ps', 'pi', 'pe', 'pc')
else
  redis.call('HSET', KEYS[1], 'ps', ARGV[2])
  redis.call('HDEL', KEYS[1], 'pi', 'pe', 'pc')
end
return 1
