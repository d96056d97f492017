-- Health of a Meridian Region (platform.meridian.dev/v1alpha1).
--
-- The Meridian operator provisions or adopts a Region's stack and reports it in the
-- conditions DatabaseReady, SearchReady, EventsReady and Ready, each carrying
-- observedGeneration, the metadata.generation it describes. Ready says whether the
-- Region's database serves; search and events are reported but not required (the
-- database serves without them, unpublished events wait in the outbox). This script
-- reads Ready:
--   Healthy      Ready=True for the current generation. When SearchReady or EventsReady
--                is False for another reason than NotConfigured, the message says so.
--   Progressing  no status yet, a generation the operator has not reconciled yet, or
--                Ready=False with a reason that means "still creating or starting"
--                (DatabaseCreating on AWS, DatabaseStarting in the cluster, ...).
--   Degraded     Ready=False with any other reason (invalid spec, unreachable database,
--                AWS errors, a provider this operator cannot run, ...); the message is
--                the reason and the condition's message.
-- A Region has no field that pauses it: as long as it exists it is reconciled, so this
-- script never answers Suspended.
-- Only Lua's base library is used: argocd-cm scripts run without the string library.
local hs = {}

-- The reasons the operator treats as waits, not failures (it looks again every few
-- seconds, without backoff); the same list for Country, Region and PatientIndex.
local waiting = {
  RegionNotFound = true,
  RegionNotReady = true,
  SchemaPending = true,
  DatabaseCreating = true,
  DatabaseStarting = true,
  DatabaseRestarting = true,
  SearchStarting = true,
  NamespaceMissing = true,
  ConnectionSecretMissing = true,
  RolesNotCreated = true,
}

local function find(conditions, kind)
  if conditions == nil then
    return nil
  end
  for _, c in ipairs(conditions) do
    if c.type == kind then
      return c
    end
  end
  return nil
end

local function explain(c)
  local reason = c.reason or ""
  local message = c.message or ""
  if reason == "" then
    return message
  end
  if message == "" then
    return reason
  end
  return reason .. ": " .. message
end

local status = obj.status
local ready = nil
if status ~= nil then
  ready = find(status.conditions, "Ready")
end
if ready == nil then
  hs.status = "Progressing"
  hs.message = "Waiting for the Meridian operator to report the Region's Ready condition"
  return hs
end

-- The generation Ready describes: its own observedGeneration (the operator sets it on
-- every condition it writes, while status.observedGeneration moves only when a
-- reconcile gets through), else the status's.
local generation = obj.metadata.generation
local observed = ready.observedGeneration
if observed == nil then
  observed = status.observedGeneration
end
if generation ~= nil and (observed == nil or observed < generation) then
  hs.status = "Progressing"
  hs.message = "Waiting for the Meridian operator to reconcile generation " .. tostring(generation)
  if observed ~= nil then
    hs.message = hs.message .. " (the status describes generation " .. tostring(observed) .. ")"
  end
  return hs
end

if ready.status == "True" then
  hs.status = "Healthy"
  hs.message = ready.message or ""
  for _, kind in ipairs({ "SearchReady", "EventsReady" }) do
    local c = find(status.conditions, kind)
    if c ~= nil and c.status == "False" and c.reason ~= "NotConfigured" then
      hs.message = hs.message .. "; " .. kind .. " is False (" .. explain(c) .. ")"
    end
  end
  return hs
end
if ready.status == "False" and not waiting[ready.reason] then
  hs.status = "Degraded"
  hs.message = explain(ready)
  return hs
end
hs.status = "Progressing"
hs.message = explain(ready)
return hs
