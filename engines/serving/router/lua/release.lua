-- Release a lease and fold the request's outcome into the target's averages, atomically (two
-- processes releasing at once must not lose an update of the moving averages).
--
-- KEYS[1]  the target's leases: sorted set, lease id → expiry time
-- KEYS[2]  the target's stats hash {requests, completed, errors, latency, error_rate}
-- KEYS[3]  the target's recent successful latencies, newest first
-- ARGV     lease id ('' releases the oldest lease), latency in seconds, ok (1 or 0),
--          smoothing factor alpha of the moving averages, how many latencies to keep
-- Returns  the leases still held.
local lease, latency, ok = ARGV[1], tonumber(ARGV[2]), ARGV[3] == '1'
local alpha, keep = tonumber(ARGV[4]), tonumber(ARGV[5])
if lease ~= '' then
  redis.call('ZREM', KEYS[1], lease)
else
  redis.call('ZPOPMIN', KEYS[1])
end

local state = redis.call('HMGET', KEYS[2], 'latency', 'error_rate')
local failed = 1
if ok then failed = 0 end
local error_rate = tonumber(state[2])
if error_rate == nil then error_rate = failed else error_rate = alpha * failed + (1 - alpha) * error_rate end
redis.call('HSET', KEYS[2], 'error_rate', tostring(error_rate))
redis.call('HINCRBY', KEYS[2], 'completed', 1)
if ok then
  -- Only successes time the target: a failure's duration (a refusal in a millisecond, a timeout)
  -- says nothing about how fast it serves; failures count in the error rate instead.
  local ewma = tonumber(state[1])
  if ewma == nil then ewma = latency else ewma = alpha * latency + (1 - alpha) * ewma end
  redis.call('HSET', KEYS[2], 'latency', tostring(ewma))
  redis.call('LPUSH', KEYS[3], tostring(latency))
  redis.call('LTRIM', KEYS[3], 0, keep - 1)
else
  redis.call('HINCRBY', KEYS[2], 'errors', 1)
end
return redis.call('ZCARD', KEYS[1])
