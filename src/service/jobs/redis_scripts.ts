/**
 * The Lua scripts of the Redis job store (redis_store.ts). Every write that must check something
 * first (a generation, the log's last seq, a lease's fencing token) is one script, so the check
 * and the write are atomic on the server: two replicas cannot both pass a check. Each script
 * answers `{status, value}`: status "ok" or the reason it refused ("not_found", "fence",
 * "generation", "seq", "held", "lost"), which redis_store.ts turns into errors.
 *
 * The job hash (KEYS "job") holds: rec (the record's JSON), gen (its generation), seq (the log's
 * last seq), state (the record's state), tok (the job's last token, "0" once released). The log is a stream whose entry ids are `0-<seq>`, one
 * field `e` holding the event's JSON. A lease is a string "<token> <owner>" with a PX expiry.
 * (Which replica runs which job is BullMQ's, fleet_queue.ts: no queue index is kept here.)
 */

/** `fenced(leaseKey, fence)`: true when no fence is given or it is the live lease's token. */
const FENCED = `
local function fenced(leaseKey, fence)
  if fence == '' then return true end
  local held = redis.call('GET', leaseKey)
  if not held then return false end
  return string.match(held, '^(%d+) ') == fence
end
`;

const TERMINAL = `
local function terminal(state)
  return state == 'SUCCEEDED' or state == 'FAILED' or state == 'CANCELLED'
end
`;

/**
 * KEYS: job, jobs (zset by created_ms), requests (hash "<kind>\\0<request_id>" -> job id).
 * ARGV: job id, record JSON, created_ms, request field ("" for none), state.
 * -> {"ok"} | {"known", job id} | {"exists"}
 */
export const CREATE = `
if ARGV[4] ~= '' then
  local known = redis.call('HGET', KEYS[3], ARGV[4])
  if known then return {'known', known} end
end
if redis.call('EXISTS', KEYS[1]) == 1 then return {'exists', ''} end
redis.call('HSET', KEYS[1], 'rec', ARGV[2], 'gen', 1, 'seq', 0, 'state', ARGV[5])
redis.call('ZADD', KEYS[2], ARGV[3], ARGV[1])
if ARGV[4] ~= '' then redis.call('HSET', KEYS[3], ARGV[4], ARGV[1]) end
return {'ok', 1}
`;

/**
 * KEYS: job, lease. ARGV: record JSON, expected generation, fence ("" for none), state.
 * -> {"ok", new generation} | {"not_found"} | {"fence"} | {"generation", current}
 */
export const PUT = FENCED + `
if redis.call('EXISTS', KEYS[1]) == 0 then return {'not_found', ''} end
if not fenced(KEYS[2], ARGV[3]) then return {'fence', ''} end
local gen = tonumber(redis.call('HGET', KEYS[1], 'gen'))
if gen ~= tonumber(ARGV[2]) then return {'generation', gen} end
redis.call('HSET', KEYS[1], 'rec', ARGV[1], 'gen', gen + 1, 'state', ARGV[4])
return {'ok', gen + 1}
`;

/**
 * KEYS: job, log, lease. ARGV: seq, event JSON, fence ("" for none).
 * -> {"ok", seq} | {"not_found"} | {"fence"} | {"seq", last seq} | {"ended", last seq}
 */
export const APPEND = FENCED + TERMINAL + `
if redis.call('EXISTS', KEYS[1]) == 0 then return {'not_found', ''} end
if not fenced(KEYS[3], ARGV[3]) then return {'fence', ''} end
local last = tonumber(redis.call('HGET', KEYS[1], 'seq'))
if terminal(redis.call('HGET', KEYS[1], 'state')) then return {'ended', last} end
if tonumber(ARGV[1]) ~= last + 1 then return {'seq', last} end
redis.call('XADD', KEYS[2], '0-' .. ARGV[1], 'e', ARGV[2])
redis.call('HSET', KEYS[1], 'seq', ARGV[1])
return {'ok', tonumber(ARGV[1])}
`;

/**
 * The terminal event and the final record in one step. KEYS: job, log, lease.
 * ARGV: record JSON, expected generation, fence ("" for none), seq, event JSON, state.
 * -> {"ok", new generation} | {"not_found"} | {"fence"} | {"generation", current}
 *    | {"seq", last seq} | {"ended", last seq}
 */
export const END = FENCED + TERMINAL + `
if redis.call('EXISTS', KEYS[1]) == 0 then return {'not_found', ''} end
if not fenced(KEYS[3], ARGV[3]) then return {'fence', ''} end
local gen = tonumber(redis.call('HGET', KEYS[1], 'gen'))
if gen ~= tonumber(ARGV[2]) then return {'generation', gen} end
local last = tonumber(redis.call('HGET', KEYS[1], 'seq'))
if terminal(redis.call('HGET', KEYS[1], 'state')) then return {'ended', last} end
if tonumber(ARGV[4]) ~= last + 1 then return {'seq', last} end
redis.call('XADD', KEYS[2], '0-' .. ARGV[4], 'e', ARGV[5])
redis.call('HSET', KEYS[1], 'rec', ARGV[1], 'gen', gen + 1, 'seq', ARGV[4], 'state', ARGV[6])
return {'ok', gen + 1}
`;

/**
 * KEYS: job, lease, fence counter. ARGV: owner, ttl ms.
 * The token is max(counter + 1, the server's clock in ms): it grows with every claim, and still
 * grows after a restart that lost the counter's last writes (an AOF fsynced once a second on a
 * host that crashed), because the clock has moved past every token handed out before.
 * -> {"ok", token, expires ms} | {"not_found"} | {"held"}
 */
export const CLAIM = `
if redis.call('EXISTS', KEYS[1]) == 0 then return {'not_found', ''} end
if redis.call('EXISTS', KEYS[2]) == 1 then return {'held', ''} end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local last = tonumber(redis.call('GET', KEYS[3]) or '0')
local token = string.format('%.0f', math.max(last + 1, now))
redis.call('SET', KEYS[3], token)
redis.call('SET', KEYS[2], token .. ' ' .. ARGV[1], 'PX', ARGV[2])
redis.call('HSET', KEYS[1], 'tok', token)
return {'ok', token, string.format('%.0f', now + tonumber(ARGV[2]))}
`;

/**
 * KEYS: lease, job. ARGV: token, ttl ms, owner.
 * A lease that expired while nobody claimed the job since (its token is still the job's last) is
 * taken again: the lease is lost only once it was released or another claim took the job.
 * -> {"ok", expires ms} | {"lost"}
 */
export const RENEW = `
local held = redis.call('GET', KEYS[1])
if held and string.match(held, '^(%d+) ') == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
elseif not held and redis.call('HGET', KEYS[2], 'tok') == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[1] .. ' ' .. ARGV[3], 'PX', ARGV[2])
else
  return {'lost', ''}
end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
return {'ok', string.format('%.0f', now + tonumber(ARGV[2]))}
`;

/** KEYS: lease, job. ARGV: token. Also after an expiry, so that RENEW cannot take it again. */
export const RELEASE = `
local held = redis.call('GET', KEYS[1])
if held and string.match(held, '^(%d+) ') == ARGV[1] then redis.call('DEL', KEYS[1]) end
if redis.call('HGET', KEYS[2], 'tok') == ARGV[1] then redis.call('HSET', KEYS[2], 'tok', '0') end
return {'ok', ''}
`;
