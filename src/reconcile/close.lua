-- The close pair of a payment (contract §12 "Closing"): stored before the
-- first closeorder call and reused by every later one, so every retry sends
-- the same close_trace_no and close_time.
-- KEYS[1] identity; ARGV[1] a new close_trace_no; ARGV[2] a new close_time
-- Returns {close_trace_no, close_time} as stored, or {} when the identity is gone.
local k = KEYS[1]
if redis.call('EXISTS', k) == 0 then
  return {}
end
redis.call('HSETNX', k, 'xt', ARGV[1])
redis.call('HSETNX', k, 'xc', ARGV[2])
return redis.call('HMGET', k, 'xt', 'xc')
