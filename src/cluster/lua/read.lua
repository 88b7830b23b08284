-- Read session log KEYS[1] (meta KEYS[2]) after event ARGV[1]-ARGV[2] ('' epoch: from the
-- start), at most ARGV[3] events. Returns {epoch, last seq, reset (0/1), name, payload, ...}.
-- `since` past the last event is not a reset: those events are still being published.
local epoch = redis.call('HGET', KEYS[2], 'epoch') or ''
local last = redis.call('XREVRANGE', KEYS[1], '+', '-', 'COUNT', 1)
local first = redis.call('XRANGE', KEYS[1], '-', '+', 'COUNT', 1)
local lastSeq, firstSeq = 0, 0
if #last > 0 then lastSeq = tonumber(string.match(last[1][1], '^(%d+)')) end
if #first > 0 then firstSeq = tonumber(string.match(first[1][1], '^(%d+)')) end
local out = {epoch, lastSeq, 0}
local after = 0
if ARGV[1] ~= '' then
  local s = tonumber(ARGV[2])
  if ARGV[1] ~= epoch or lastSeq == 0 or s + 1 < firstSeq then
    out[3] = 1
    return out
  end
  after = s
end
local limit = tonumber(ARGV[3])
if limit > 0 and after < lastSeq then
  local entries = redis.call('XRANGE', KEYS[1], '(' .. after .. '-0', '+', 'COUNT', limit)
  for _, e in ipairs(entries) do
    out[#out + 1] = e[2][2]
    out[#out + 1] = e[2][4]
  end
end
return out
