-- Chain summarization over the arXiv articles of ../shared/data/arxiv.
--
--   weft run examples/chain_summary.lua [--arg n=4] [--arg chunks=4]
--       [--arg chunk_chars=800] [--arg max_tokens=48] [--arg data=DIR]
--
-- Each article is cut into `chunks` pieces of `chunk_chars` characters; its
-- summary is refined piece by piece, each step's prompt holding the summary
-- so far and the next piece — a chain, every step waiting for the one
-- before. The chains of different articles are independent: weft runs them
-- side by side, while each chain stays strictly sequential.
local data = arg.data or os.getenv("WEFT_DATA_DIR") or "../shared/data"
local n = tonumber(arg.n or 4)
local chunks = tonumber(arg.chunks or 4)
local chunk_chars = tonumber(arg.chunk_chars or 800)
local max_tokens = tonumber(arg.max_tokens or 48)

local function pieces(i)
  local path = string.format("%s/arxiv/article_%d.txt", data, i)
  local f = assert(io.open(path, "rb"), "cannot open " .. path)
  local text = f:read("a"):gsub("%s+", " ")
  f:close()
  local out = {}
  for k = 0, chunks - 1 do
    out[#out + 1] = text:sub(k * chunk_chars + 1, (k + 1) * chunk_chars)
  end
  return out
end

local first = weft.fn{
  name = "chain.first",
  messages = {{role = "user", content = "Summarize this part of an article in two sentences.\n\n{{piece}}"}},
  outputs = {summary = {max_tokens = max_tokens}},
}
local step = weft.fn{
  name = "chain.step",
  messages = {{role = "user", content = "Summary so far: {{so_far}}\n\nNext part of the article:\n{{piece}}\n\nRewrite the summary in two sentences to cover both."}},
  outputs = {summary = {max_tokens = max_tokens}},
}

local finals = {}
for i = 0, n - 1 do
  local ps = pieces(i)
  local s = first{piece = ps[1]}
  for k = 2, #ps do
    s = step{so_far = s, piece = ps[k]}
  end
  finals[#finals + 1] = s
end
for i, s in ipairs(finals) do
  print(string.format("[article %d] %s", i - 1, (s:get():gsub("%s+", " "))))
end
