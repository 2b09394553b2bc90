-- One circuit breaker step, atomic across every process that shares the breaker.
-- KEYS: state hash, window list, trials sorted set, transitions list, targets set.
-- ARGV: op (allow|success|failure|peek|reset), now, failure_threshold, failure_rate, window, min_calls,
--       reset_timeout, success_threshold, half_open_max_calls, trial id, transitions kept, target.
-- Returns {state, granted (1|0), retry_after, from1, to1, from2, to2, ...}; floats as strings
-- (Redis truncates Lua numbers to integers).
local state_key, window_key, trials_key, log_key, targets_key = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local op, now = ARGV[1], tonumber(ARGV[2])
local failure_threshold, failure_rate = tonumber(ARGV[3]), tonumber(ARGV[4])
local window, min_calls = tonumber(ARGV[5]), tonumber(ARGV[6])
local reset_timeout, success_threshold = tonumber(ARGV[7]), tonumber(ARGV[8])
local half_open_max, trial, log_keep, target = tonumber(ARGV[9]), ARGV[10], tonumber(ARGV[11]), ARGV[12]

redis.call('SADD', targets_key, target)
local state = redis.call('HGET', state_key, 'state') or 'closed'
local opened_at = tonumber(redis.call('HGET', state_key, 'opened_at') or '0')
local changes = {}
local live_since = '(' .. (now - reset_timeout)  -- trials granted after this still hold a slot

local function move(to, reason)
  table.insert(changes, state)
  table.insert(changes, to)
  redis.call('LPUSH', log_key, cjson.encode({at = now, from = state, to = to, reason = reason}))
  redis.call('LTRIM', log_key, 0, log_keep - 1)
  redis.call('DEL', window_key, trials_key)
  redis.call('HSET', state_key, 'state', to, 'failures', 0, 'successes', 0, 'window_failures', 0,
             'changed_at', ARGV[2])
  if to == 'open' then
    redis.call('HSET', state_key, 'opened_at', ARGV[2], 'probe_at', tostring(now + reset_timeout))
    opened_at = now
  end
  state = to
end

local function oldest_live_trial()
  local oldest = redis.call('ZRANGEBYSCORE', trials_key, live_since, '+inf', 'WITHSCORES', 'LIMIT', 0, 1)
  return tonumber(oldest[2])
end

if state == 'open' and now >= opened_at + reset_timeout then
  move('half_open', 'reset timeout passed')
end

local granted, retry_after = 0, 0

if op == 'reset' then
  if state ~= 'closed' then
    move('closed', 'reset by an operator')
  else
    redis.call('DEL', window_key, trials_key)
    redis.call('HSET', state_key, 'failures', 0, 'successes', 0, 'window_failures', 0)
  end
elseif op == 'allow' then
  if state == 'closed' then
    granted = 1
  elseif state == 'open' then
    retry_after = opened_at + reset_timeout - now
  else
    -- A trial that never reported stops holding its slot after reset_timeout.
    if redis.call('ZCOUNT', trials_key, live_since, '+inf') < half_open_max then
      redis.call('ZADD', trials_key, ARGV[2], trial)
      granted = 1
    else
      retry_after = oldest_live_trial() + reset_timeout - now
    end
  end
elseif op == 'success' or op == 'failure' then
  local failed = op == 'failure'
  if state == 'closed' then
    local failures = 0
    if failed then
      failures = redis.call('HINCRBY', state_key, 'failures', 1)
      redis.call('HINCRBY', state_key, 'window_failures', 1)
    else
      redis.call('HSET', state_key, 'failures', 0)
    end
    redis.call('LPUSH', window_key, failed and '0' or '1')
    local calls = redis.call('LLEN', window_key)
    if calls > window then
      if redis.call('RPOP', window_key) == '0' then
        redis.call('HINCRBY', state_key, 'window_failures', -1)
      end
      calls = window
    end
    local window_failures = tonumber(redis.call('HGET', state_key, 'window_failures'))
    if failed and failures >= failure_threshold then
      move('open', failures .. ' consecutive failures')
    elseif failed and calls >= min_calls and window_failures / calls >= failure_rate then
      move('open', string.format('%d of the last %d calls failed', window_failures, calls))
    end
  elseif state == 'half_open' and trial ~= '' and redis.call('ZREM', trials_key, trial) == 1 then
    -- Only trials count here: a call let through before the breaker opened proves nothing now.
    if failed then
      move('open', 'a trial call failed')
    else
      local successes = redis.call('HINCRBY', state_key, 'successes', 1)
      if successes >= success_threshold then
        move('closed', successes .. ' trial calls succeeded')
      end
    end
  end
end

local reply = {state, granted, tostring(retry_after)}
for _, value in ipairs(changes) do
  table.insert(reply, value)
end
return reply
