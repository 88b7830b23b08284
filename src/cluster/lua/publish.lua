-- Publish a batch of events. ARGV: prefix, node, max events, max bytes, log TTL s, bus length,
-- lease TTL ms, then per event: session id ('' for sessions:changed), lease token, seq, epoch, name,
-- payload JSON, runtime ('' none, '-' unloaded, else the session's runtime JSON for the list).
-- A session event is kept in the session's log (stream id `<seq>-0`, bounded like the
-- in-memory log) and put on the bus only while the token still holds the session's lease:
-- the fence that keeps a node that lost a session from speaking for it. A lease that is missing
-- is taken back on the way if nobody took the session since (as renew.lua does): after Redis
-- lost its data, the holders' queued events must not read as fenced out.
-- Returns per event: 1 published, 0 fenced out, -1 refused by the log (seq not after its last).
local P, node = ARGV[1], ARGV[2]
local maxE, maxB, ttl, busMax, leaseTtl = tonumber(ARGV[3]), tonumber(ARGV[4]), ARGV[5], ARGV[6], ARGV[7]
local function holds(sid, token)
  local lease = P .. 'lease:' .. sid
  local v = redis.call('GET', lease)
  if v then return v == token end
  local n = string.match(token, '/(%d+)$')
  local f = redis.call('GET', P .. 'fence:' .. sid)
  if f and f ~= n then return false end
  redis.call('SET', lease, token, 'PX', leaseTtl)
  if not f then redis.call('SET', P .. 'fence:' .. sid, n, 'EX', 604800) end
  return true
end
local out = {}
for i = 8, #ARGV, 7 do
  local sid, token, seq, epoch, name, payload, rt =
    ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3], ARGV[i + 4], ARGV[i + 5], ARGV[i + 6]
  local ok = 1
  if sid ~= '' then
    if not holds(sid, token) then
      ok = 0
    else
      local stream, meta = P .. 'log:' .. sid, P .. 'logmeta:' .. sid
      local size = #payload + #name + 64
      local r = redis.pcall('XADD', stream, seq .. '-0', 'e', name, 'p', payload, 'n', size)
      if type(r) == 'table' and r.err then
        ok = -1
      else
        redis.call('HSET', meta, 'epoch', epoch)
        local bytes = redis.call('HINCRBY', meta, 'bytes', size)
        local n = redis.call('XLEN', stream)
        while n > 1 and (n > maxE or bytes > maxB) do
          local first = redis.call('XRANGE', stream, '-', '+', 'COUNT', 1)[1]
          redis.call('XDEL', stream, first[1])
          bytes = redis.call('HINCRBY', meta, 'bytes', -tonumber(first[2][6]))
          n = n - 1
        end
        redis.call('EXPIRE', stream, ttl)
        redis.call('EXPIRE', meta, ttl)
        if rt == '-' then
          redis.call('HDEL', P .. 'runtime', sid)
        elseif rt ~= '' then
          redis.call('HSET', P .. 'runtime', sid, rt)
        end
      end
    end
  end
  if ok == 1 then
    redis.call('XADD', P .. 'bus', 'MAXLEN', '~', busMax, '*', 'n', node, 's', sid, 'e', name, 'p', payload)
  end
  out[#out + 1] = ok
end
return out
