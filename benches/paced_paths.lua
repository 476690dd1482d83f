-- wrk script: ../shared/bench/paths.lua (env SCRIPT_DIR names its directory), each
-- connection waiting env DELAY_MS (default 10) before each request: a steady load of
-- about connections × 1000 / DELAY_MS tiles per second, as many map users panning,
-- instead of a closed loop that takes every cycle the machine has.
dofile((os.getenv("SCRIPT_DIR") or "../shared/bench") .. "/paths.lua")
local pause = tonumber(os.getenv("DELAY_MS") or "10")
function delay() return pause end
