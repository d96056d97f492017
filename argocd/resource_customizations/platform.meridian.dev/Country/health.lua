-- Health of a Meridian Country (platform.meridian.dev/v1alpha1).
--
-- The Meridian operator reconciles a Country in steps, each owning one condition
-- (ResidencyCompliant, DatabaseReady, SearchIndexReady, RoutesReady), and sums them up
-- in the condition Ready. Every condition carries observedGeneration, the
-- metadata.generation it describes. This script reads Ready:
--   Healthy      Ready=True for the current generation: the country is served.
--   Suspended    Ready=False with reason Suspended: spec.suspend is true, the routes are
--                withdrawn and the data is kept.
--   Progressing  no status yet, a generation the operator has not reconciled yet, or
--                Ready=False with a reason that means "waiting for something else"
--                (its Region, the Region's schema or namespace).
--   Degraded     Ready=False with any other reason (refused spec, duplicate code,
--                residency violation, a failed step); the message is the reason and
--                the condition's message.
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
  hs.message = "Waiting for the Meridian operator to report the Country's Ready condition"
  return hs
end

-- The generation Ready describes: its own observedGeneration (the operator sets it on
-- every condition it writes), else the status's.
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
  return hs
end
if ready.reason == "Suspended" then
  hs.status = "Suspended"
  hs.message = ready.message or ""
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
