-- Health of an Argo CD Application, as seen by the Application that holds it (the
-- app-of-apps pattern). Argo CD dropped its built-in check for Applications in 1.8, so
-- a parent does not wait for one sync wave of child Applications to be healthy before
-- the next one unless argocd-cm configures a check like this one. Meridian's
-- argocd/argocd-cm.yaml does; this file is the copy its tests run.
--   Progressing  no health reported yet, a sync operation still running, or a resource
--                of the child still missing from the cluster.
--   Degraded     the child's last sync failed (its message says why), or the child
--                itself reports Degraded.
--   otherwise    the health the child reports (Healthy, Suspended, Progressing, ...).
-- The sync status is not read: with prune disabled, a manifest removed from Git leaves
-- its child OutOfSync until someone prunes by hand, which must not hold back the waves.
-- Only Lua's base library is used: argocd-cm scripts run without the string library.
local hs = {}

local status = obj.status
if status == nil or status.health == nil or status.health.status == nil then
  hs.status = "Progressing"
  hs.message = "Waiting for the Application's first health report"
  return hs
end

local operation = status.operationState
if obj.operation ~= nil or (operation ~= nil and operation.phase == "Running") then
  hs.status = "Progressing"
  hs.message = "A sync operation is running"
  if operation ~= nil and operation.message ~= nil and operation.message ~= "" then
    hs.message = hs.message .. ": " .. operation.message
  end
  return hs
end
if operation ~= nil and (operation.phase == "Failed" or operation.phase == "Error") then
  hs.status = "Degraded"
  hs.message = "The last sync failed"
  if operation.message ~= nil and operation.message ~= "" then
    hs.message = hs.message .. ": " .. operation.message
  end
  return hs
end

if status.resources ~= nil then
  local missing = ""
  for _, r in ipairs(status.resources) do
    if r.health ~= nil and r.health.status == "Missing" then
      if missing ~= "" then
        missing = missing .. ", "
      end
      missing = missing .. (r.kind or "") .. "/" .. (r.name or "")
    end
  end
  if missing ~= "" then
    hs.status = "Progressing"
    hs.message = "Waiting for " .. missing .. " to be created"
    return hs
  end
end

hs.status = status.health.status
hs.message = status.health.message or ""
return hs
