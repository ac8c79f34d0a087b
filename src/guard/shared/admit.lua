-- cardguard's shared admission: one call decides (and records) the new series of one request,
-- grouped by owner, and refreshes the slices of series first seen again in this slice. Atomic,
-- so two replicas racing for an owner's last slot never both win.
--
-- Every limit is a sorted set of members scored by the slice they were last seen in; members
-- older than the window are removed before a set is first read, and every set expires on its
-- own (PEXPIRE) when no replica writes it for a window. Keys are built from the prefix: a
-- single Redis node (not Cluster).
--
-- ARGV: prefix, now (slice), oldest live slice, ttl (ms), then records, each opened by a tag:
--   'o', demand key suffix (empty: none), owner set suffix, owner budget, global cap (empty:
--     none): the owner of the series records that follow;
--   a series: its mode ('d' decide; 'w' decide, but record even if refused: action warn;
--     'r<slice>' refresh: record at that slice; 'v<slice>' refresh its other limits only: a
--     label value held on a rejoin), id (8 bytes), its member of the global set (empty: no
--     global cap), the count of its other limits, then per limit its set suffix ('m…' a
--     metric, 'l…' a label), member and limit.
-- The owner's own set is checked first, then the global cap, then the others in order.
-- Returns one integer per series decided ('d' or 'w'), in call order: 0 admitted (new), -1
-- admitted (already), or the reason code of the first limit hit (refused, or recorded anyway
-- for 'w'): 1 owner budget, 2 metric, 3 label, 4 global. Refreshes answer nothing: nobody
-- waits for them, and a reply per series was a third of what a slice's refresh cost cardguard.
local prefix = ARGV[1]
local now = tonumber(ARGV[2])
local oldest = '(' .. ARGV[3]
local ttl = tonumber(ARGV[4])

-- Full key by suffix, each trimmed to the window on first use; cardinalities cached and kept
-- up to date by `add`.
local keys, cards = {}, {}
local function key(suffix)
  local k = keys[suffix]
  if not k then
    k = prefix .. suffix
    keys[suffix] = k
    redis.call('ZREMRANGEBYSCORE', k, '-inf', oldest)
  end
  return k
end
local function card(k)
  local c = cards[k]
  if not c then
    c = redis.call('ZCARD', k)
    cards[k] = c
  end
  return c
end
local function add(k, score, member)
  if redis.call('ZADD', k, 'GT', score, member) == 1 and cards[k] then
    cards[k] = cards[k] + 1
  end
end
local function full(k, member, limit)
  return not redis.call('ZSCORE', k, member) and card(k) >= limit
end

local out = {}
local demand, ids = nil, {}
local function flush()
  if demand and #ids > 0 then
    -- unpack() is bounded by Lua's C stack: in chunks.
    for c = 1, #ids, 1000 do
      redis.call('PFADD', demand, unpack(ids, c, math.min(c + 999, #ids)))
    end
    redis.call('PEXPIRE', demand, ttl)
  end
  ids = {}
end

local owner, budget, global, cap
local others = {}
local i = 5
local n = #ARGV
while i <= n do
  local tag = ARGV[i]
  if tag == 'o' then
    flush()
    demand = ARGV[i + 1] ~= '' and prefix .. ARGV[i + 1] or nil
    owner = key(ARGV[i + 2])
    budget = tonumber(ARGV[i + 3])
    cap = tonumber(ARGV[i + 4])
    if cap then
      global = key('g')
    end
    i = i + 5
  else
    local kind = string.sub(tag, 1, 1)
    local id, gid, m = ARGV[i + 1], ARGV[i + 2], tonumber(ARGV[i + 3])
    i = i + 4
    for e = 1, m do
      others[e] = { key(ARGV[i]), ARGV[i + 1], tonumber(ARGV[i + 2]),
        string.sub(ARGV[i], 1, 1) == 'm' and 2 or 3 }
      i = i + 3
    end
    for e = m + 1, #others do
      others[e] = nil
    end
    local verdict
    if kind == 'r' or kind == 'v' then
      local score = tonumber(string.sub(tag, 2))
      if kind == 'r' then
        add(owner, score, id)
        if gid ~= '' then
          add(global, score, gid)
        end
      end
      for _, e in ipairs(others) do
        add(e[1], score, e[2])
      end
    else
      if redis.call('ZSCORE', owner, id) then
        verdict = -1
      elseif card(owner) >= budget then
        verdict = 1
      elseif gid ~= '' and full(global, gid, cap) then
        verdict = 4
      else
        verdict = 0
        for _, e in ipairs(others) do
          if full(e[1], e[2], e[3]) then
            verdict = e[4]
            break
          end
        end
      end
      if verdict <= 0 or kind == 'w' then
        add(owner, now, id)
        if gid ~= '' then
          add(global, now, gid)
        end
        for _, e in ipairs(others) do
          add(e[1], now, e[2])
        end
      end
    end
    ids[#ids + 1] = id
    if verdict then
      out[#out + 1] = verdict
    end
  end
end
flush()
for _, k in pairs(keys) do
  redis.call('PEXPIRE', k, ttl)
end
return out
