-- The payment's fields (ARGV, as HMGET reads them), counting one verified
-- notify (`ns`) when the identity exists (its claim's `st`): HINCRBY alone
-- would create the key of a payment nobody placed.
local f = redis.call('HMGET', KEYS[1], unpack(ARGV))
if f[1] then
  local ns = redis.call('HINCRBY', KEYS[1], 'ns', 1)
  for i, name in ipairs(ARGV) do
    if name == 'ns' then f[i] = tostring(ns) end
  end
end
return f
