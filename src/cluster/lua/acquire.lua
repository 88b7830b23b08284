-- Take session lease KEYS[1] for node ARGV[1] (TTL ARGV[2] ms) unless another live holder has
-- it. The token is `<node>/<n>`, n from the session's fence counter KEYS[2]: every taking gets
-- a new one, so a node that lost the lease cannot take it back by renewing.
-- A lease left by an earlier process with this node's id (it died) counts as free.
-- Returns {1, token} or {0, holder}.
local v = redis.call('GET', KEYS[1])
if v and string.sub(v, 1, #ARGV[1] + 1) ~= ARGV[1] .. '/' then
  return {0, v}
end
local n = redis.call('INCR', KEYS[2])
-- The counter outlives any lease by far; a week idle, it goes (a new one starts at 1).
redis.call('EXPIRE', KEYS[2], 604800)
local token = ARGV[1] .. '/' .. n
redis.call('SET', KEYS[1], token, 'PX', ARGV[2])
return {1, token}
