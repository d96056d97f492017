#!/usr/bin/env bash
# Meridian on a kind cluster, end to end: creates the cluster, builds the `meridian` image and
# loads it, installs the Gateway API with Envoy Gateway, the development token issuer, the
# operator's chart, the example Regions as `inCluster` stacks, the PatientIndex and the
# Countries; waits until everything is Ready; then books an appointment in Germany through
# the Gateway.
#
#   e2e/kind/run.sh                 # everything (about 14 GiB of memory for the six Regions)
#   REGIONS="eu-central-1 eu-west-3" e2e/kind/run.sh   # only these Regions and their Countries
#   e2e/kind/run.sh delete          # removes the cluster
#
# Needs docker, kind (v0.24 or newer: its network plugin enforces NetworkPolicies), kubectl,
# helm (v3.8 or newer, for OCI charts), curl and python3. Safe to run again: every step
# applies what is missing and keeps what is there.
set -euo pipefail
cd "$(dirname "$0")/../.."

CLUSTER="${CLUSTER:-meridian}"
IMAGE_REPOSITORY="${IMAGE_REPOSITORY:-meridian}"
IMAGE_TAG="${IMAGE_TAG:-dev}"
ENVOY_GATEWAY_VERSION="${ENVOY_GATEWAY_VERSION:-v1.2.6}"
REGIONS="${REGIONS:-$(cd examples/regions && ls ./*.yaml | sed 's|^\./||; s|\.yaml$||' | tr '\n' ' ')}"
# Each inCluster Region pulls and starts PostgreSQL and OpenSearch the first time.
READY_TIMEOUT="${READY_TIMEOUT:-20m}"
GATEWAY_PORT="${GATEWAY_PORT:-18080}"
ISSUER_PORT="${ISSUER_PORT:-18090}"
ISSUER="http://dev-issuer.meridian-system.svc:8080"
CONTEXT="kind-$CLUSTER"

step() { echo; echo "--- $*"; }
need() {
    command -v "$1" >/dev/null || { echo "e2e/kind/run.sh needs $1: $2" >&2; exit 1; }
}
k() { kubectl --context "$CONTEXT" "$@"; }

if [ "${1:-}" = delete ]; then
    kind delete cluster --name "$CLUSTER"
    exit 0
fi

need docker "https://docs.docker.com/engine/install/"
need kind "https://kind.sigs.k8s.io/docs/user/quick-start/#installation"
need kubectl "https://kubernetes.io/docs/tasks/tools/"
need helm "https://helm.sh/docs/intro/install/"
need curl "your distribution's curl package"
need python3 "your distribution's python3 package"

step "kind cluster $CLUSTER"
if kind get clusters 2>/dev/null | grep -qx "$CLUSTER"; then
    echo "already there"
else
    kind create cluster --name "$CLUSTER" --config e2e/kind/cluster.yaml --wait 180s
fi

step "image $IMAGE_REPOSITORY:$IMAGE_TAG (docker build, then kind load)"
docker build -t "$IMAGE_REPOSITORY:$IMAGE_TAG" .
kind load docker-image "$IMAGE_REPOSITORY:$IMAGE_TAG" --name "$CLUSTER"

step "Gateway API and Envoy Gateway $ENVOY_GATEWAY_VERSION (its chart brings the Gateway API CRDs)"
helm --kube-context "$CONTEXT" upgrade --install eg oci://docker.io/envoyproxy/gateway-helm \
    --version "$ENVOY_GATEWAY_VERSION" -n envoy-gateway-system --create-namespace --wait --timeout 10m
k apply --server-side -f e2e/kind/gateway.yaml
k -n envoy-gateway-system wait gateway/meridian --for=condition=Programmed --timeout=5m

step "development token issuer (kind has no identity provider)"
k create namespace meridian-system --dry-run=client -o yaml | k apply -f -
sed "s|image: meridian:dev|image: $IMAGE_REPOSITORY:$IMAGE_TAG|" e2e/kind/dev-issuer.yaml | k apply -f -
k -n meridian-system rollout status deployment/dev-issuer --timeout=5m

step "the operator's chart (CRDs from its crds/ folder, two replicas)"
helm --kube-context "$CONTEXT" upgrade --install meridian charts/meridian-operator -n meridian-system \
    --set image.repository="$IMAGE_REPOSITORY" --set image.tag="$IMAGE_TAG" \
    --set gateway.name=meridian --set gateway.namespace=envoy-gateway-system \
    --set oidc.issuer="$ISSUER" --set oidc.jwksUrl="$ISSUER/jwks.json" \
    --wait --timeout 10m
k -n meridian-system rollout status deployment/meridian --timeout=5m

step "Regions as inCluster stacks: $REGIONS"
# The examples are `local` Regions, which only `meridian dev` builds; in a cluster the same
# manifests become inCluster stacks (PostgreSQL, OpenSearch, booking and records in
# namespace meridian-region-<name>).
for region in $REGIONS; do
    sed 's/^  provider: local$/  provider: inCluster/' "examples/regions/$region.yaml" | k apply --server-side -f -
done

step "PatientIndex and the Countries of those Regions"
countries=()
for file in examples/countries/*.yaml; do
    region=$(python3 -c 'import re, sys; print(re.search(r"^  region: *(\S+)", open(sys.argv[1]).read(), re.M).group(1))' "$file")
    case " $REGIONS " in *" $region "*) countries+=("$(basename "$file" .yaml)") ;; esac
done
case " $REGIONS " in
    *" eu-central-1 "*) k apply --server-side -f examples/patientindex/global.yaml ;;
    *) echo "no PatientIndex: its Region eu-central-1 is not among $REGIONS" ;;
esac
for country in "${countries[@]}"; do
    k apply --server-side -f "examples/countries/$country.yaml"
done

step "waiting for Ready (up to $READY_TIMEOUT): regions, then countries"
for region in $REGIONS; do
    k wait "region/$region" --for=condition=Ready --timeout="$READY_TIMEOUT"
done
for country in "${countries[@]}"; do
    k wait "country/$country" --for=condition=Ready --timeout="$READY_TIMEOUT"
done
k get regions,countries,patientindexes

case " ${countries[*]} " in
    *" de "*) ;;
    *) echo; echo "done; no booking: Germany (eu-central-1) is not among the Regions"; exit 0 ;;
esac

step "a booking in Germany through the Gateway"
gateway_service=$(k -n envoy-gateway-system get service -o name \
    -l gateway.envoyproxy.io/owning-gateway-name=meridian,gateway.envoyproxy.io/owning-gateway-namespace=envoy-gateway-system)
k -n envoy-gateway-system port-forward "$gateway_service" "$GATEWAY_PORT:80" >/dev/null &
forwards=$!
k -n meridian-system port-forward service/dev-issuer "$ISSUER_PORT:8080" >/dev/null &
forwards="$forwards $!"
# shellcheck disable=SC2064
trap "kill $forwards 2>/dev/null || true" EXIT
for _ in $(seq 1 30); do
    curl -fs "http://127.0.0.1:$ISSUER_PORT/healthz" >/dev/null && break
    sleep 1
done

e2e/kind/book.sh "http://127.0.0.1:$GATEWAY_PORT" "http://127.0.0.1:$ISSUER_PORT/token"
