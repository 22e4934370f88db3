-- A multi-agent coding workflow over the role templates of
-- ../shared/data/multiagent: an architect designs the files and APIs of a
-- snake game; four programmers implement the four files in parallel (their
-- prompts share the architect's answer, computed once); a reviewer comments
-- on the code; four revisers revise their files in parallel.
--
--   weft run examples/multi_agent.lua [--arg max_tokens=64] [--arg data=DIR]
--       [--arg quiet=1]
--
local data = arg.data or os.getenv("WEFT_DATA_DIR") or "../shared/data"
local max_tokens = tonumber(arg.max_tokens or 64)
local quiet = arg.quiet == "1"

local function role(name)
  local path = string.format("%s/multiagent/%s.txt", data, name)
  local f = assert(io.open(path, "rb"), "cannot open " .. path)
  local t = f:read("a")
  f:close()
  return t
end
-- Each role is a chat function: its template is the user message (its
-- {slot}s become weft placeholders), the reply fills the role's output slot,
-- which the template keeps as a format hint.
local function agent(name, out, tokens, extra)
  local text = role(name)
  if out then text = text:gsub("{" .. out .. "}", out) end
  text = text:gsub("{([%w_]+)}", "{{%1}}")
  local o = {max_tokens = tokens}
  for k, v in pairs(extra or {}) do o[k] = v end
  return weft.fn{name = name, messages = {{role = "user", content = text}},
                 outputs = {[out or "design"] = o}}
end

-- the architect's own format slots ({main_api}, ...) are its answer: literal text
local architect = weft.fn{name = "architect", messages = {{role = "user", content = role("architect")}},
                          outputs = {design = {max_tokens = max_tokens * 2}}}
local programmer = agent("programmer", "code", max_tokens)
local reviewer = agent("reviewer", "review", max_tokens)
local reviser = agent("reviser", "revised_code", max_tokens)

local files = {"main.py", "game.py", "snake.py", "food.py"}
local function others(f)
  local o = {}
  for _, g in ipairs(files) do if g ~= f then o[#o + 1] = g end end
  return o
end

local design = architect{}
local code = {}
for _, f in ipairs(files) do
  local o = others(f)
  code[f] = programmer{architect_response = design, file_name = f,
                       other_filename1 = o[1], other_filename2 = o[2], other_filename3 = o[3]}
end
local review = reviewer{main_code = code["main.py"], snake_code = code["snake.py"],
                        game_code = code["game.py"], food_code = code["food.py"]}
local revised = {}
for _, f in ipairs(files) do
  revised[f] = reviser{main_code = code["main.py"], snake_code = code["snake.py"],
                       game_code = code["game.py"], food_code = code["food.py"],
                       review = review, file_name = f}
end

if not quiet then
  print("== architect\n" .. design:get())
  for _, f in ipairs(files) do print("== programmer: " .. f .. "\n" .. code[f]:get()) end
  print("== reviewer\n" .. review:get())
end
for _, f in ipairs(files) do print("== reviser: " .. f .. "\n" .. revised[f]:get()) end
