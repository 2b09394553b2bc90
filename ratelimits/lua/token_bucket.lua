-- Token bucket, atomically. Tokens refill at `rate` per second up to `capacity`; a request takes one.
-- With engine keys (the adaptive algorithm), rate and capacity first scale by engine health.
--
-- KEYS[1]      the bucket: hash {tokens, at}
-- KEYS[2]      adaptive only: the health sample, hash {seconds, batches, at, latency, error_rate}
-- KEYS[3..]    adaptive only: per engine, its outcomes list then its stats hash
-- ARGV         rate, capacity, cost (1 to take, 0 to look), max_wait,
--              adaptive only: target_latency, floor, sample_seconds
-- Returns      {allowed, tokens, capacity, wait, retry_after, factor} (numbers as strings: Lua
--              replies truncate floats). A request that must wait `wait` seconds has its token
--              reserved (tokens go below zero); a refused one could pass after `retry_after`.
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local rate, capacity = tonumber(ARGV[1]), tonumber(ARGV[2])
local cost, max_wait = tonumber(ARGV[3]), tonumber(ARGV[4])

local factor = 1
if #KEYS > 1 then
  local target, floor, sample_seconds = tonumber(ARGV[5]), tonumber(ARGV[6]), tonumber(ARGV[7])
  local failed, total, seconds, batches = 0, 0, 0, 0
  for i = 3, #KEYS, 2 do
    for _, outcome in ipairs(redis.call('LRANGE', KEYS[i], 0, -1)) do
      total = total + 1
      if outcome == '0' then failed = failed + 1 end
    end
    local stats = redis.call('HMGET', KEYS[i + 1], 'seconds', 'batches')
    seconds = seconds + (tonumber(stats[1]) or 0)
    batches = batches + (tonumber(stats[2]) or 0)
  end
  local error_rate = 0
  if total > 0 then error_rate = failed / total end
  local health = redis.call('HMGET', KEYS[2], 'seconds', 'batches', 'at', 'latency')
  local latency = tonumber(health[4]) or 0
  local sampled_at = tonumber(health[3])
  if sampled_at == nil or now - sampled_at >= sample_seconds then
    local previous_batches = tonumber(health[2]) or 0
    -- Mean latency of the batches since the last sample; a window without batches keeps the estimate.
    if sampled_at ~= nil and batches > previous_batches then
      latency = (seconds - (tonumber(health[1]) or 0)) / (batches - previous_batches)
    end
    redis.call('HSET', KEYS[2], 'seconds', seconds, 'batches', batches, 'at', now,
               'latency', latency, 'error_rate', error_rate)
    redis.call('EXPIRE', KEYS[2], 3600)
  end
  local speed = 1
  if latency > target then speed = target / latency end
  factor = math.max(floor, (1 - error_rate) * speed)
  rate = rate * factor
  capacity = math.max(1, capacity * factor)
end

local state = redis.call('HMGET', KEYS[1], 'tokens', 'at')
local tokens = tonumber(state[1]) or capacity
local at = tonumber(state[2]) or now
tokens = math.min(capacity, tokens + math.max(0, now - at) * rate)

local allowed, wait, retry_after = 0, 0, 0
if tokens >= cost then
  allowed = 1
else
  local needed = (cost - tokens) / rate
  if needed <= max_wait then
    allowed, wait = 1, needed
  else
    retry_after = needed
  end
end
if allowed == 1 and cost > 0 then
  tokens = tokens - cost
  redis.call('HSET', KEYS[1], 'tokens', tokens, 'at', now)
  redis.call('PEXPIRE', KEYS[1], math.ceil((capacity - tokens) / rate * 1000) + 1000)
end
return {allowed, tostring(tokens), tostring(capacity), tostring(wait), tostring(retry_after), tostring(factor)}
