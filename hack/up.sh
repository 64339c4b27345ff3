#!/usr/bin/env bash
# `make up`: the local platform through the Helm chart, step by step with elapsed times.
#   1. the testbed (a control plane on loopback, nodes running Pods as processes)
#   2. `helm upgrade --install` of charts/mqfleet with values-testbed.yaml (images
#      mqfleet/<binary>:dev run this workspace's build)
#   3. the quickstart instance, topic and group in the first account's namespace, awaited
#   4. what to paste: KUBECONFIG, PATH, the console URL and keys, NAMESRV_ADDR, a
#      produce/consume example and a signed console call
# Idempotent: a second run finds everything in place and only waits for it.
#   hack/up.sh --env    only print the export lines for a running platform (`make env`)
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
TESTBED=${TESTBED:-$ROOT/target/debug/mq-testbed}
TOOLS=${MQFLEET_CACHE:-$HOME/.cache/mqfleet}/helm-v3.18.0/bin
RELEASE=mqfleet
PLATFORM=mqfleet-system
TENANT=mq-demo
WAIT=${MQFLEET_UP_TIMEOUT:-300}
# `make up` starts the clock before installing and building, so the total is printed.
START=${MQFLEET_UP_START:-$(date +%s%3N)}

elapsed() { local ms=$(( $(date +%s%3N) - START )); printf '%d.%d' $((ms / 1000)) $((ms % 1000 / 100)); }
step() { printf '[%6ss] %s\n' "$(elapsed)" "$*"; }
die() { echo "make up: $*" >&2; exit 1; }

ENV_ONLY=false
[ "${1:-}" = --env ] && ENV_ONLY=true

testbed_kubeconfig() {
  local out
  out=$("$TESTBED" status 2>&1) || die "no testbed is running (make up starts one):
$out"
  KUBECONFIG=$(printf '%s\n' "$out" | sed -n 's/^export KUBECONFIG=//p' | tail -1)
  [ -n "$KUBECONFIG" ] || KUBECONFIG=${MQFLEET_TESTBED_DIR:-$ROOT/.testbed}/kubeconfig
}

install_platform() {
  step "starting the testbed in ${MQFLEET_TESTBED_DIR:-.testbed}"
  log=$(mktemp)
  trap 'rm -f "$log"' EXIT
  "$TESTBED" up >"$log" 2>&1 || { cat "$log" >&2; die "the testbed did not start (above)"; }
  KUBECONFIG=$(sed -n 's/^export KUBECONFIG=//p' "$log" | tail -1)
  [ -n "$KUBECONFIG" ] || { cat "$log" >&2; die "the testbed printed no KUBECONFIG"; }
  export KUBECONFIG
  export PATH="$TOOLS:$PATH"
  step "testbed ready: $(grep -m1 -E '^(testbed up|a healthy testbed)' "$log" || true)"

  step "helm upgrade --install $RELEASE charts/mqfleet (namespace $PLATFORM)"
  helm upgrade --install "$RELEASE" charts/mqfleet --namespace "$PLATFORM" --create-namespace \
    -f charts/mqfleet/values-testbed.yaml --set firstAccount.namespace="$TENANT" \
    --wait --timeout "${WAIT}s" >"$log" 2>&1 || { cat "$log" >&2; die "helm install failed (above)"; }
  step "operator and console ready"

  kubectl get namespace "$TENANT" >/dev/null 2>&1 || kubectl create namespace "$TENANT" >/dev/null
  kubectl apply -n "$TENANT" -f examples/quickstart/demo.yaml >/dev/null
  step "applied examples/quickstart/demo.yaml in $TENANT; waiting for instance demo to be Ready"
  kubectl wait -n "$TENANT" --for=condition=Ready mqinstance/demo --timeout="${WAIT}s" >/dev/null
  kubectl wait -n "$TENANT" --for=condition=Ready mqtopic/demo-orders mqgroup/gid-demo --timeout="${WAIT}s" >/dev/null
  step "instance demo, topic DEMO_ORDERS and group GID_DEMO are Ready"
}

if $ENV_ONLY; then
  testbed_kubeconfig
  export KUBECONFIG PATH="$TOOLS:$PATH"
else
  install_platform
fi

secret=$(kubectl -n "$PLATFORM" get secret -l "mqfleet.io/first-account=$RELEASE" -o name | head -1)
[ -n "$secret" ] || die "the chart made no first account"
field() { kubectl -n "$PLATFORM" get "$secret" -o "jsonpath={.data.$1}" | base64 -d; }
ACCESS_KEY=$(field accessKey)
SECRET_KEY=$(field secretKey)
# Clients on this machine are outside the cluster: the external endpoint (node ports).
NAMESRV=$(kubectl -n "$TENANT" get mqinstance demo -o 'jsonpath={.status.externalEndpoint}')
[ -n "$NAMESRV" ] || NAMESRV=$(kubectl -n "$TENANT" get mqinstance demo -o 'jsonpath={.status.endpoint}')
CONSOLE=$(kubectl -n "$PLATFORM" get service mq-console -o 'jsonpath={.spec.clusterIP}:{.spec.ports[0].port}')
INSTANCE_ID=$(kubectl -n "$TENANT" get mqinstance demo -o 'jsonpath={.status.instanceId}')
BIN=$ROOT/target/debug

if $ENV_ONLY; then
  cat <<TEXT
export KUBECONFIG=$KUBECONFIG
export PATH=$TOOLS:$BIN:\$PATH
export MQ_ACCESS_KEY=$ACCESS_KEY
export MQ_SECRET_KEY=$SECRET_KEY
export MQ_CONSOLE_URL=http://$CONSOLE
export NAMESRV_ADDR=$NAMESRV
export MQ_INSTANCE_ID=$INSTANCE_ID
TEXT
  exit 0
fi

cat <<TEXT

mqfleet is up in $(elapsed) s. Paste into your shell (or run: eval "\$(make -s env)"):

  export KUBECONFIG=$KUBECONFIG
  export PATH=$TOOLS:$BIN:\$PATH        # kubectl, helm, mq-broker, mq-console
  export MQ_ACCESS_KEY=$ACCESS_KEY       # the first account (namespace $TENANT)
  export MQ_SECRET_KEY=$SECRET_KEY
  export MQ_CONSOLE_URL=http://$CONSOLE
  export NAMESRV_ADDR=$NAMESRV           # instance demo from outside the cluster (ACL on: clients sign with the keys above)

Then:
  kubectl get mqfleet -A
  mq-broker produce --topic DEMO_ORDERS --count 3
  mq-broker consume --topic DEMO_ORDERS --group GID_DEMO --count 3
  mq-console call /json/instance/baseInfo instanceId=$INSTANCE_ID

Stop with \`make down\`; \`make clean\` also removes the testbed's data.
TEXT
