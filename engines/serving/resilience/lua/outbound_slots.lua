-- A remote host's concurrency slots, atomically: a semaphore whose holders have leases, and a line of
-- waiters served in the order they came. Times are Redis's own, so that hosts with skewed clocks agree.
--
-- KEYS[1]  the slots held: sorted set, lease id → when the lease expires
-- KEYS[2]  the line: sorted set, waiter (the lease id it will hold) → when it joined
-- KEYS[3]  the line's liveness: sorted set, waiter → when it stops counting unless it asks again
-- ARGV     op ("acquire" or "renew"), lease id, limit, lease_seconds, stale_seconds
-- Returns  acquire: {1, 0} when the slot is now the caller's, else {0, waiters ahead of it};
--          renew: 1 when the lease was still held (and now runs lease_seconds from now), else 0.
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local op, lease = ARGV[1], ARGV[2]
local limit, lease_seconds, stale_seconds = tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])
local keep_ms = math.ceil((lease_seconds + stale_seconds) * 1000)

if op == 'renew' then
  if not redis.call('ZSCORE', KEYS[1], lease) then
    return 0
  end
  redis.call('ZADD', KEYS[1], now + lease_seconds, lease)
  redis.call('PEXPIRE', KEYS[1], keep_ms)
  return 1
end

redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)  -- the leases of holders that died
local gone = redis.call('ZRANGEBYSCORE', KEYS[3], '-inf', now)  -- waiters that stopped asking
if #gone > 0 then
  redis.call('ZREM', KEYS[2], unpack(gone))
  redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', now)
end
redis.call('ZADD', KEYS[2], 'NX', now, lease)
local ahead = redis.call('ZRANK', KEYS[2], lease)
if ahead < limit - redis.call('ZCARD', KEYS[1]) then
  redis.call('ZREM', KEYS[2], lease)
  redis.call('ZREM', KEYS[3], lease)
  redis.call('ZADD', KEYS[1], now + lease_seconds, lease)
  redis.call('PEXPIRE', KEYS[1], keep_ms)
  return {1, 0}
end
redis.call('ZADD', KEYS[3], now + stale_seconds, lease)
redis.call('PEXPIRE', KEYS[2], keep_ms)
redis.call('PEXPIRE', KEYS[3], keep_ms)
return {0, ahead}
