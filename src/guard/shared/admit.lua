-- cardguard's shared admission: one call decides (and records) the new series of one request,
-- grouped by owner, and refreshes the slices of series first seen again in this slice. Atomic,
-- so two replicas racing for an owner's last slot never both win.
--
-- Every limit is a sorted set of members scored by the slice they were last seen in; members
-- older than the window are removed before a set is read, and every set expires on its own
-- (PEXPIRE) when no replica writes it for a window. Keys are built from the prefix: a single
-- Redis node (not Cluster).
--
-- ARGV: prefix, now (slice), oldest live slice, ttl (ms), then owner groups:
--   demand key suffix (empty: none), series count, then per series:
--     id (8 bytes), mode (0 decide, 1 decide but record even if refused: action warn,
--     2 refresh: record at slice `score`), score, entry count, entries of
--     (key suffix, member, limit, reason code); the owner's own set comes first.
-- Returns one integer per series: 0 admitted (new), -1 admitted (already), reason code of
-- the first limit hit (refused, or recorded anyway for mode 1), -2 refreshed.
local prefix = ARGV[1]
local now = tonumber(ARGV[2])
local oldest = tonumber(ARGV[3])
local ttl = tonumber(ARGV[4])
local touched = {}
local function key(suffix)
  local k = prefix .. suffix
  if not touched[k] then
    touched[k] = true
    redis.call('ZREMRANGEBYSCORE', k, '-inf', '(' .. oldest)
  end
  return k
end

local out = {}
local i = 5
while i <= #ARGV do
  local demand = prefix .. ARGV[i]
  local n = tonumber(ARGV[i + 1])
  i = i + 2
  local ids = {}
  for _ = 1, n do
    local id, mode, score, m = ARGV[i], ARGV[i + 1], tonumber(ARGV[i + 2]), tonumber(ARGV[i + 3])
    i = i + 4
    ids[#ids + 1] = id
    local entries = {}
    for e = 1, m do
      entries[e] = { key(ARGV[i]), ARGV[i + 1], tonumber(ARGV[i + 2]), tonumber(ARGV[i + 3]) }
      i = i + 4
    end
    local verdict
    if mode == '2' then
      for _, e in ipairs(entries) do
        redis.call('ZADD', e[1], 'GT', score, e[2])
      end
      verdict = -2
    elseif redis.call('ZSCORE', entries[1][1], entries[1][2]) then
      for _, e in ipairs(entries) do
        redis.call('ZADD', e[1], 'GT', now, e[2])
      end
      verdict = -1
    else
      verdict = 0
      for _, e in ipairs(entries) do
        if not redis.call('ZSCORE', e[1], e[2]) and redis.call('ZCARD', e[1]) >= e[3] then
          verdict = e[4]
          break
        end
      end
      if verdict == 0 or mode == '1' then
        for _, e in ipairs(entries) do
          redis.call('ZADD', e[1], 'GT', now, e[2])
        end
      end
    end
    out[#out + 1] = verdict
  end
  if #ids > 0 and demand ~= prefix then
    -- unpack() is bounded by Lua's C stack: in chunks.
    for c = 1, #ids, 1000 do
      redis.call('PFADD', demand, unpack(ids, c, math.min(c + 999, #ids)))
    end
    redis.call('PEXPIRE', demand, ttl)
  end
end
for k, _ in pairs(touched) do
  redis.call('PEXPIRE', k, ttl)
end
return out
