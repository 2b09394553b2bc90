-- Reserve a request's worst case on every budget it counts against, all or none.
-- KEYS: per budget, three keys: its period's state hash (spent, reserved), its holds' expiries (zset),
--       its holds' amounts (hash).
-- ARGV: hold id, now (epoch s), hold expiry (epoch s), then per budget: limit, amount.
-- Returns {0, remaining...} when reserved (each budget's room left after it), or {index} (1-based) of
-- the first budget without room. Holds that expired (their request's web process died before it was
-- settled) give their amount back first.
local hold, now, expires = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local count = #KEYS / 3
local remaining = {}
for i = 1, count do
  local state, expiry, amounts = KEYS[3 * i - 2], KEYS[3 * i - 1], KEYS[3 * i]
  local stale = redis.call("ZRANGEBYSCORE", expiry, "-inf", now)
  for _, old in ipairs(stale) do
    local amount = tonumber(redis.call("HGET", amounts, old) or "0")
    redis.call("HINCRBYFLOAT", state, "reserved", -amount)
    redis.call("HDEL", amounts, old)
    redis.call("ZREM", expiry, old)
  end
  local limit, amount = tonumber(ARGV[2 + 2 * i]), tonumber(ARGV[3 + 2 * i])
  local spent = tonumber(redis.call("HGET", state, "spent") or "0")
  local reserved = tonumber(redis.call("HGET", state, "reserved") or "0")
  if spent + reserved + amount > limit then
    return {i}
  end
  remaining[i] = limit - spent - reserved - amount
end
local reply = {0}
for i = 1, count do
  local state, expiry, amounts = KEYS[3 * i - 2], KEYS[3 * i - 1], KEYS[3 * i]
  redis.call("HINCRBYFLOAT", state, "reserved", tonumber(ARGV[3 + 2 * i]))
  redis.call("ZADD", expiry, expires, hold)
  redis.call("HSET", amounts, hold, ARGV[3 + 2 * i])
  reply[i + 1] = tostring(remaining[i])
end
return reply
