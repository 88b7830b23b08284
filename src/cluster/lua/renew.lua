-- Renew leases: ARGV[1] = TTL ms, then (lease key, fence key, token) triples. A lease still
-- ours is extended. A missing one (expired while Redis or this node was away) is taken back
-- only if nobody took the session since (the fence counter is still ours, or Redis lost it
-- all in a restart). Returns 1 (held) or 0 (lost) per lease.
local out = {}
for i = 2, #ARGV, 3 do
  local lease, fence, token = ARGV[i], ARGV[i + 1], ARGV[i + 2]
  local v = redis.call('GET', lease)
  local held = 0
  if v == token then
    redis.call('PEXPIRE', lease, ARGV[1])
    held = 1
  elseif not v then
    local n = string.match(token, '/(%d+)$')
    local f = redis.call('GET', fence)
    if (not f) or f == n then
      redis.call('SET', lease, token, 'PX', ARGV[1])
      if not f then redis.call('SET', fence, n, 'EX', 604800) end
      held = 1
    end
  end
  out[#out + 1] = held
end
return out
