-- End a check's lease, only its own. KEYS[1] identity; ARGV[1] token.
if redis.call('HGET', KEYS[1], 'own') == ARGV[1] then
  redis.call('HDEL', KEYS[1], 'exp')
  return 1
end
return 0
