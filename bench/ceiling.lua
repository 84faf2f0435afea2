-- wrk script for ceiling.py: every request carries the next session cookie of a file
-- (one id per line), each wrk thread walking its own share of them.
--   wrk ... -s ceiling.lua URL -- PATH COOKIE_NAME COOKIE_FILE THREADS
local threads = 0

function setup(thread)
  thread:set("id", threads)
  threads = threads + 1
end

function init(args)
  local path, name, file, step = args[1], args[2], args[3], tonumber(args[4])
  -- Built once: a request is then a table lookup, so wrk's own CPU stays the same
  -- whichever route or however many sessions are measured.
  requests = {}
  for line in io.lines(file) do
    requests[#requests + 1] = wrk.format("GET", path, { Cookie = name .. "=" .. line })
  end
  stride = step
  index = (id % #requests) + 1
end

function request()
  local req = requests[index]
  index = ((index - 1 + stride) % #requests) + 1
  return req
end
