-- Take a lease on a route target: one request in flight until it is released or its lease expires
-- (so a web process that dies mid-request does not leave the count high for ever).
--
-- KEYS[1]  the target's leases: sorted set, lease id → expiry time
-- KEYS[2]  the target's stats hash
-- ARGV     lease id, lease lifetime in seconds
-- Returns  the requests in flight, this one included.
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local lifetime = tonumber(ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
redis.call('ZADD', KEYS[1], tostring(now + lifetime), ARGV[1])
redis.call('EXPIRE', KEYS[1], math.ceil(lifetime) + 60)
redis.call('HINCRBY', KEYS[2], 'requests', 1)
return redis.call('ZCARD', KEYS[1])
