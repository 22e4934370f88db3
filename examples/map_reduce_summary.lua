-- Map-reduce summarization over the arXiv articles of ../shared/data/arxiv.
--
--   weft run examples/map_reduce_summary.lua [--arg n=30] [--arg chars=1200]
--       [--arg max_tokens=64] [--arg data=DIR] [--arg quiet=1]
--
-- Map: one call per article summarizes its first `chars` characters (whitespace
-- collapsed) — the calls do not depend on each other, so weft runs them in one
-- batch, and their shared instruction head is computed once. Reduce: one call
-- over all the summaries, awaited, so it runs at latency priority.
local data = arg.data or os.getenv("WEFT_DATA_DIR") or "../shared/data"
local n = tonumber(arg.n or 30)
local chars = tonumber(arg.chars or 1200)
local max_tokens = tonumber(arg.max_tokens or 64)
local quiet = arg.quiet == "1"

local function excerpt(i)
  local path = string.format("%s/arxiv/article_%d.txt", data, i)
  local f = assert(io.open(path, "rb"), "cannot open " .. path)
  local text = f:read("a")
  f:close()
  text = text:gsub("%s+", " ")
  return text:sub(1, chars)
end

local map = weft.fn{
  name = "map",
  messages = {
    {role = "system", content = "You are a helpful assistant that summarizes scientific articles."},
    {role = "user", content = "Summarize the main idea of this article excerpt in two sentences.\n\n{{text}}"},
  },
  outputs = {summary = {max_tokens = max_tokens}},
}

local reduce = weft.fn{
  name = "reduce",
  messages = {
    {role = "system", content = "You are a helpful assistant that summarizes scientific articles."},
    {role = "user", content = "Here are short summaries of several articles:\n\n{{summaries}}\n\nWrite one paragraph on the topics they cover."},
  },
  -- a mild repetition penalty: greedy decoding over thirty summaries otherwise
  -- often ends in a loop ("The proof of the theorem" again and again)
  outputs = {overview = {max_tokens = max_tokens * 2, repeat_penalty = 1.2}},
}

local summaries = {}
for i = 0, n - 1 do
  summaries[#summaries + 1] = map{text = excerpt(i)}
end
local numbered = {}
for i, s in ipairs(summaries) do
  numbered[#numbered + 1] = weft.join({string.format("%d. ", i), s})
end
local overview = reduce{summaries = weft.join(numbered, "\n")}

local texts = weft.gather(summaries)
if not quiet then
  for i, t in ipairs(texts) do
    print(string.format("[article %d] %s", i - 1, (t:gsub("%s+", " "))))
  end
  print()
end
-- returned: weft run prints it, and the store keeps it as the run's output
return "Overview: " .. overview:get()
