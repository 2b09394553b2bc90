-- Settle a request on one budget: its hold (if still held) gives its reservation back, and what it
-- actually used is spent. Releasing is settling with 0 used.
-- KEYS: the budget period's state hash, holds' expiries (zset), holds' amounts (hash).
-- ARGV: hold id, amount used.
local state, expiry, amounts = KEYS[1], KEYS[2], KEYS[3]
local hold, used = ARGV[1], tonumber(ARGV[2])
local held = redis.call("HGET", amounts, hold)
if held then
  redis.call("HINCRBYFLOAT", state, "reserved", -tonumber(held))
  redis.call("HDEL", amounts, hold)
  redis.call("ZREM", expiry, hold)
end
if used > 0 then
  redis.call("HINCRBYFLOAT", state, "spent", used)
end
return 1
