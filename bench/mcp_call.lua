-- wrk script: MCP `tools/call` over streamable HTTP, every response checked.
--
--   MCP_SESSIONS=/tmp/ids.txt BENCH_THREADS=2 wrk -t2 -c32 -d10s -s bench/mcp_call.lua http://127.0.0.1:8000/mcp
--
-- Environment:
--   BENCH_MODE     "mcp" (default): POST tools/call with a session id;
--                  "modern": POST a 2026-07-28 single-exchange tools/call (no session, the
--                  `_meta` envelope, the Mcp-Method and Mcp-Name headers; MCP_SESSIONS not needed);
--                  "direct": plain GET of the URL (the direct-upstream baseline), same checks
--   MCP_SESSIONS   file with one Mcp-Session-Id per line (written by bench/sessions.py)
--   BENCH_THREADS  wrk's -t; thread k gets the k-th equal slice of the ids (without it every
--                  thread cycles through all ids)
--   MCP_TOOL       tool name (default getUser)
--   MCP_ARGS       JSON arguments (default {"userId":"u1"})
--   BENCH_EXPECT   text every response body must contain (default Alice Johnson)
--   MCP_PROTOCOL   the MCP-Protocol-Version header of "mcp" mode (default 2025-06-18): the version
--                  the sessions in MCP_SESSIONS were opened with
--
-- Sessions and connections: wrk gives Lua one state per thread and no handle on the connection a
-- request() is for, so a session cannot be pinned to a TCP connection. Each thread gets as many
-- ids as it has connections and hands them out round-robin, one per request: with one request in
-- flight per connection, each session has about one request in flight at a time (a slow request
-- can overlap the next use of its id). At -c1 it is exactly one session on one connection.
--
-- A response counts as good only if: HTTP 200, the body contains BENCH_EXPECT, and the body has no
-- `"isError": true`. Failures are counted per thread and reported by done(), with a few samples.
-- done() prints one line `BENCH_RESULT {json}` for bench/bench.py.

local mode = os.getenv("BENCH_MODE") or "mcp"
local expect = os.getenv("BENCH_EXPECT") or "Alice Johnson"
local tool = os.getenv("MCP_TOOL") or "getUser"
local args = os.getenv("MCP_ARGS") or '{"userId":"u1"}'
local token = os.getenv("MCP_TOKEN")  -- set for the auth-on target: one bearer token, cached by the server
local protocol = os.getenv("MCP_PROTOCOL") or "2025-06-18"

-- ---------------------------------------------------------------- main state: setup / done
local threads = {}
local all_ids = nil

local function load_ids()
  local path = os.getenv("MCP_SESSIONS")
  if not path then
    error("MCP_SESSIONS is not set (file of Mcp-Session-Id values from bench/sessions.py)")
  end
  local ids = {}
  for line in io.lines(path) do
    if line ~= "" then table.insert(ids, line) end
  end
  if #ids == 0 then error("no session ids in " .. path) end
  return ids
end

function setup(thread)
  table.insert(threads, thread)
  local k = #threads
  thread:set("tid", k)
  if mode == "mcp" then
    all_ids = all_ids or load_ids()
    local n = tonumber(os.getenv("BENCH_THREADS") or "0") or 0
    local mine = {}
    if n > 0 and #all_ids >= n then
      local per = math.floor(#all_ids / n)
      for i = (k - 1) * per + 1, k * per do table.insert(mine, all_ids[i]) end
    else
      for i = 1, #all_ids do table.insert(mine, all_ids[((i + k - 2) % #all_ids) + 1]) end
    end
    thread:set("ids", mine)
  end
end

-- ---------------------------------------------------------------- thread state
ok = 0
failures = 0
samples = {}
local reqs = {}
local nreq = 0
local cursor = 0

function init(argv)
  if mode == "direct" then
    reqs = { wrk.format("GET", wrk.path) }
  elseif mode == "modern" then
    body_head = '{"jsonrpc":"2.0","id":'
    body_tail = ',"method":"tools/call","params":{"name":"' .. tool .. '","arguments":' .. args
      .. ',"_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28",'
      .. '"io.modelcontextprotocol/clientCapabilities":{}}}}'
    local h = {
      ["Content-Type"] = "application/json",
      ["Accept"] = "application/json, text/event-stream",
      ["MCP-Protocol-Version"] = "2026-07-28",
      ["Mcp-Method"] = "tools/call",
      ["Mcp-Name"] = tool,
    }
    if token then h["Authorization"] = "Bearer " .. token end
    reqs = { h }
  else
    -- The JSON-RPC id must differ between requests in flight in one session (the SDK keys its
    -- per-request streams by session + id), so the body is formatted per request with a counter.
    body_head = '{"jsonrpc":"2.0","id":'
    body_tail = ',"method":"tools/call","params":{"name":"' .. tool .. '","arguments":' .. args .. '}}'
    for _, id in ipairs(ids) do
      local h = {
        ["Content-Type"] = "application/json",
        ["Accept"] = "application/json, text/event-stream",
        ["Mcp-Session-Id"] = id,
        ["MCP-Protocol-Version"] = protocol,
      }
      if token then h["Authorization"] = "Bearer " .. token end
      table.insert(reqs, h)
    end
  end
  nreq = #reqs
end

local seq = 0

function request()
  cursor = cursor % nreq + 1
  if mode == "direct" then return reqs[1] end
  seq = seq + 1
  return wrk.format("POST", wrk.path, reqs[cursor], body_head .. (tid * 1000000000 + seq) .. body_tail)
end

function response(status, headers, body)
  body = body or ""
  if status == 200 and string.find(body, expect, 1, true)
      and not string.find(body, '"isError"%s*:%s*true') then
    ok = ok + 1
  else
    failures = failures + 1
    if #samples < 3 then
      table.insert(samples, "HTTP " .. status .. ": " .. string.sub(body, 1, 300))
    end
  end
end

-- ---------------------------------------------------------------- report (main state)
local function jstr(s)
  s = string.gsub(s, '[%c"\\]', function(c)
    if c == '"' then return '\\"' elseif c == "\\" then return "\\\\" end
    return string.format("\\u%04x", string.byte(c))
  end)
  return '"' .. s .. '"'
end

function done(summary, latency, requests)
  local good, bad, smp = 0, 0, {}
  for _, t in ipairs(threads) do
    good = good + (t:get("ok") or 0)
    bad = bad + (t:get("failures") or 0)
    local s = t:get("samples") or {}
    for _, v in ipairs(s) do if #smp < 5 then table.insert(smp, v) end end
  end
  local e = summary.errors
  local sock_errors = e.connect + e.read + e.write + e.timeout
  io.write(string.format("checked responses: %d good, %d failed; socket errors: connect %d read %d write %d timeout %d\n",
    good, bad, e.connect, e.read, e.write, e.timeout))
  for _, v in ipairs(smp) do io.write("  failure sample: " .. v .. "\n") end
  local parts = {}
  for _, v in ipairs(smp) do table.insert(parts, jstr(v)) end
  io.write(string.format(
    'BENCH_RESULT {"requests":%d,"duration_us":%d,"bytes":%d,"good":%d,"failures":%d,' ..
    '"socket_errors":%d,"status_errors":%d,"timeouts":%d,' ..
    '"lat_mean_us":%.1f,"lat_p50_us":%d,"lat_p90_us":%d,"lat_p99_us":%d,"lat_max_us":%d,"samples":[%s]}\n',
    summary.requests, summary.duration, summary.bytes, good, bad, sock_errors, e.status, e.timeout,
    latency.mean, latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max,
    table.concat(parts, ",")))
end
