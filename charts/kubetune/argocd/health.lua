-- Argo CD health check for kubetune.io/TuningExperiment.
-- Argo CD runs it with the live object in the global `obj`; it returns `hs` with `status` and `message`.
--   Progressing  no status yet, status older than the spec (observedGeneration < generation), or still running
--   Degraded     Stalled=True, or Succeeded=False (failed); the message is the condition's
--   Healthy      Succeeded=True
-- Install: argocd-cm key `resource.customizations.health.kubetune.io_TuningExperiment` (see argocd-cm.yaml).
local hs = {}

local function condition(ctype)
  if obj.status == nil or obj.status.conditions == nil then
    return nil
  end
  for _, c in ipairs(obj.status.conditions) do
    if c.type == ctype then
      return c
    end
  end
  return nil
end

local function describe(c, fallback)
  if c ~= nil and c.message ~= nil and c.message ~= "" then
    if c.reason ~= nil and c.reason ~= "" then
      return c.reason .. ": " .. c.message
    end
    return c.message
  end
  if c ~= nil and c.reason ~= nil and c.reason ~= "" then
    return c.reason
  end
  return fallback
end

local generation = nil
if obj.metadata ~= nil then
  generation = obj.metadata.generation
end

if obj.status == nil then
  hs.status = "Progressing"
  hs.message = "Waiting for the kubetune operator to report status"
  return hs
end

if generation ~= nil and (obj.status.observedGeneration == nil or obj.status.observedGeneration < generation) then
  hs.status = "Progressing"
  hs.message = "Waiting for the kubetune operator to observe generation " .. tostring(generation)
  return hs
end

-- A condition written for an older generation says nothing about the current spec.
local function current(c)
  if c == nil then
    return nil
  end
  if generation ~= nil and c.observedGeneration ~= nil and c.observedGeneration < generation then
    return nil
  end
  return c
end

local stalled = current(condition("Stalled"))
local succeeded = current(condition("Succeeded"))
local reconciling = current(condition("Reconciling"))

if stalled ~= nil and stalled.status == "True" then
  hs.status = "Degraded"
  hs.message = describe(stalled, "Stalled")
  return hs
end

if succeeded ~= nil and succeeded.status == "False" then
  hs.status = "Degraded"
  hs.message = describe(succeeded, "Failed")
  return hs
end

if succeeded ~= nil and succeeded.status == "True" then
  hs.status = "Healthy"
  hs.message = describe(succeeded, "Succeeded")
  return hs
end

hs.status = "Progressing"
local trials = obj.status.trials
local progress = nil
if trials ~= nil and obj.spec ~= nil and obj.spec.maxTrials ~= nil then
  progress = tostring(trials.succeeded or 0) .. " of " .. tostring(obj.spec.maxTrials) .. " trials succeeded, "
    .. tostring(trials.running or 0) .. " running"
end
if reconciling ~= nil and reconciling.status == "True" then
  hs.message = describe(reconciling, progress or "Reconciling")
else
  hs.message = progress or "Running"
end
return hs
