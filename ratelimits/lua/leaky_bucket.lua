-- Leaky bucket as a queue, atomically: requests leave one every `interval` seconds, in arrival
-- order. The key holds the time the queue drains (the next free slot); a request takes the slot,
-- waiting for it when that is within `max_wait`.
--
-- KEYS[1]  the bucket: the next free slot, seconds since the epoch (Redis's clock)
-- ARGV     interval, cost (1 to take, 0 to look), max_wait
-- Returns  {allowed, wait, retry_after, drains_in} as strings (Lua replies truncate floats).
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local interval, cost, max_wait = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])

local slot = math.max(now, tonumber(redis.call('GET', KEYS[1])) or now)
local wait = slot - now
if cost == 0 then
  return {'1', '0', '0', tostring(wait)}
end
if wait > max_wait then
  return {'0', '0', tostring(wait), tostring(wait)}
end
local drains = slot + interval * cost
redis.call('SET', KEYS[1], tostring(drains), 'PX', math.ceil((drains - now) * 1000) + 1000)
return {'1', tostring(wait), '0', tostring(drains - now)}
