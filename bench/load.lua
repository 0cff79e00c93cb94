-- wrk script of bench/load.py, configured through environment variables:
--   BENCH_KIND    get | add | row | batch | mixed
--   BENCH_PATHS   space-separated paths, used round-robin (mixed: counter paths, GET and /add alternate)
--   BENCH_KEY     API key; BENCH_TOKEN_PREFIX makes idempotency tokens unique per run
--   BENCH_GENERATION_TIME  generation_time of every token (RFC 3339)
--   BENCH_BATCH_SIZE, BENCH_BATCH_COUNTERS, BENCH_BATCH_TOKENS (1/0)  shape of batch bodies
--   BENCH_DELAY_MS  pause of each connection between its requests (0: as fast as possible)
local kind = os.getenv("BENCH_KIND")
local prefix = os.getenv("BENCH_TOKEN_PREFIX") or "t"
local generation_time = os.getenv("BENCH_GENERATION_TIME")
local batch_size = tonumber(os.getenv("BENCH_BATCH_SIZE") or "500")
local batch_counters = tonumber(os.getenv("BENCH_BATCH_COUNTERS") or "1000")
local batch_tokens = os.getenv("BENCH_BATCH_TOKENS") == "1"
local delay_ms = tonumber(os.getenv("BENCH_DELAY_MS") or "0")
local headers = {
  ["Authorization"] = "Bearer " .. os.getenv("BENCH_KEY"),
  ["Content-Type"] = "application/json",
}
local paths = {}
for p in string.gmatch(os.getenv("BENCH_PATHS"), "%S+") do
  paths[#paths + 1] = p
end

local threads = 0
function setup(thread)
  thread:set("thread_id", threads)
  threads = threads + 1
end

thread_id = 0
local sent = 0

local function token_json(n)
  return '{"token":"' .. prefix .. "-" .. thread_id .. "-" .. n .. '","generation_time":"' .. generation_time .. '"}'
end

local function add_body()
  return '{"delta":1,"idempotency_token":' .. token_json(sent) .. "}"
end

local function batch_body()
  local items = {}
  for i = 1, batch_size do
    local n = sent * batch_size + i
    local item = '{"counter":"c' .. (n % batch_counters) .. '","delta":1'
    if batch_tokens then
      item = item .. ',"idempotency_token":' .. token_json(n)
    end
    items[i] = item .. "}"
  end
  return '{"mutations":[' .. table.concat(items, ",") .. "]}"
end

function request()
  sent = sent + 1
  local path = paths[(sent % #paths) + 1]
  if kind == "get" then
    return wrk.format("GET", path, headers)
  elseif kind == "add" then
    return wrk.format("POST", path, headers, add_body())
  elseif kind == "row" then
    return wrk.format("POST", path, headers, '{"delta":1}')
  elseif kind == "batch" then
    return wrk.format("POST", path, headers, batch_body())
  elseif kind == "mixed" then
    path = paths[(math.floor(sent / 2) % #paths) + 1]
    if sent % 2 == 0 then
      return wrk.format("POST", path .. "/add", headers, add_body())
    end
    return wrk.format("GET", path, headers)
  end
  error("unknown BENCH_KIND " .. tostring(kind))
end

-- Paced runs: each connection waits a random time (mean delay_ms, exponential) before each
-- request, so requests arrive as independent events (Poisson) rather than the connections
-- firing together after equal pauses, which made every request of a round queue behind the others.
if delay_ms > 0 then
  math.randomseed(os.time() + thread_id)
  function delay()
    return math.floor(-delay_ms * math.log(1 - math.random()))
  end
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'BENCH-RESULT {"requests": %d, "duration_us": %d, "status_errors": %d, "socket_errors": %d, '
      .. '"p50_us": %d, "p99_us": %d, "max_us": %d}\n',
    summary.requests, summary.duration, e.status, e.connect + e.read + e.write + e.timeout,
    latency:percentile(50), latency:percentile(99), latency.max
  ))
end
