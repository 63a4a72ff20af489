"""The Redis side of room events across workers: key names, the two Lua scripts, entry ids and payloads.

Keys are described in ``cluster.events_bus``; everything that spells one lives here.
"""

from __future__ import annotations

import json
from typing import Any

PREFIX = "cherry:events:"
CONTROL = PREFIX + "control"
BANS = PREFIX + "bans"

# Item fields the channel adds on the wire (stripped before an item is passed on to another worker).
CHANNEL_FIELDS = ("c", "b", "from", "w")

# Append a batch of a room's events, only while holding its lease, skipping what the stream already has.
# KEYS: stream, lease. ARGV: me, lease ms, max length, epoch, first n, gap allowed (0/1), entries...
# Returns {0, last n, added, top n before} | {-1, owner} (not ours) | {-2, top n} (the stream lost events:
# fill from there).
APPEND = """
local owner = redis.call('GET', KEYS[2])
if owner and owner ~= ARGV[1] then return {-1, owner} end
if not owner then redis.call('SET', KEYS[2], ARGV[1], 'PX', ARGV[2]) end
local epoch = tonumber(ARGV[4])
local top = 0
local last = redis.call('XREVRANGE', KEYS[1], '+', '-', 'COUNT', 1)
if #last > 0 then
  local e, n = string.match(last[1][1], '^(%d+)-(%d+)$')
  if tonumber(e) > epoch then return {-1, ''} end
  if tonumber(e) == epoch then top = tonumber(n) end
end
local first = tonumber(ARGV[5])
if top < first - 1 and ARGV[6] == '0' then return {-2, top} end
local added = 0
for i = 7, #ARGV do
  local n = first + i - 7
  if n > top then
    redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[3], ARGV[4] .. '-' .. n, 'e', ARGV[i])
    added = added + 1
  end
end
return {0, first + #ARGV - 7, added, top}
"""
# Hand the lease from ARGV[1] to ARGV[2] ('' lets it go); only its holder can.
HAND = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  if ARGV[2] == '' then redis.call('DEL', KEYS[1]) else redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3]) end
  return 1
end
return 0
"""


def key(kind: str, name: str) -> str:
    return f"{PREFIX}{kind}:{name}"


def position(entry_id: str) -> tuple[int, int]:
    epoch, _, n = entry_id.partition("-")
    return int(epoch), int(n or 0)


def dumps(data: Any) -> str:
    return json.dumps(data, separators=(",", ":"))
