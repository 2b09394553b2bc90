-- Record one outcome for a target and derive its health, atomically across processes.
-- KEYS: health hash, outcomes list, checks list, targets set.
-- ARGV: now, ok (1|0), latency ('' when unknown), check JSON ('' for traffic), detail, alpha, window,
--       unhealthy_after, degraded_error_rate, degraded_latency, outcomes kept, checks kept, target.
-- Returns {previous state, state}.
local health_key, outcomes_key, checks_key, targets_key = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local now, ok, latency, check, detail = ARGV[1], ARGV[2] == '1', tonumber(ARGV[3]), ARGV[4], ARGV[5]
local alpha, window, unhealthy_after = tonumber(ARGV[6]), tonumber(ARGV[7]), tonumber(ARGV[8])
local degraded_error_rate, degraded_latency = tonumber(ARGV[9]), tonumber(ARGV[10])
local outcomes_kept, checks_kept, target = tonumber(ARGV[11]), tonumber(ARGV[12]), ARGV[13]

redis.call('SADD', targets_key, target)
redis.call('HSETNX', health_key, 'first_seen_at', now)
local previous = redis.call('HGET', health_key, 'state') or 'unknown'

redis.call('LPUSH', outcomes_key, (ok and '1:' or '0:') .. ARGV[3])
redis.call('LTRIM', outcomes_key, 0, outcomes_kept - 1)

local consecutive = 0
if ok then
  redis.call('HSET', health_key, 'consecutive_failures', 0, 'last_success_at', now)
  -- Only answers time the target: a refused connection is fast and says nothing about speed.
  if latency then
    local ewma = tonumber(redis.call('HGET', health_key, 'latency_ewma') or '')
    ewma = ewma and (alpha * latency + (1 - alpha) * ewma) or latency
    redis.call('HSET', health_key, 'latency_ewma', tostring(ewma))
  end
else
  consecutive = redis.call('HINCRBY', health_key, 'consecutive_failures', 1)
  redis.call('HSET', health_key, 'last_failure_at', now, 'last_error', detail)
end

if check ~= '' then
  redis.call('HINCRBY', health_key, 'checks', 1)
  if ok then
    redis.call('HINCRBY', health_key, 'checks_ok', 1)
  end
  redis.call('HSET', health_key, 'last_check_at', now)
  redis.call('LPUSH', checks_key, check)
  redis.call('LTRIM', checks_key, 0, checks_kept - 1)
end

local recent = redis.call('LRANGE', outcomes_key, 0, window - 1)
local failed = 0
for _, entry in ipairs(recent) do
  if string.sub(entry, 1, 1) == '0' then
    failed = failed + 1
  end
end
local ewma = tonumber(redis.call('HGET', health_key, 'latency_ewma') or '')

local state = 'healthy'
if consecutive >= unhealthy_after then
  state = 'unhealthy'
elseif failed / #recent > degraded_error_rate or (ewma and ewma > degraded_latency) then
  state = 'degraded'
end
if state ~= previous then
  redis.call('HSET', health_key, 'state', state, 'since', now)
end
return {previous, state}
