#!/bin/sh
# Start one developer's evqueue node on a shared host:  start-node.sh NAME WS_PORT [--daemon]
# Every node listed in NODES (space separated) is a cluster member; edit the database settings
# below, or export them before calling.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
[ $# -ge 2 ] || { echo "usage: $0 NAME WS_PORT [--daemon]" >&2; exit 2; }
export EVQ_NODE=$1 EVQ_WS_PORT=$2
shift 2
: "${NODES:=alice bob carol}"
: "${EVQ_RUN:=/tmp/evqueue-run}"
: "${EVQ_DB_HOST:=localhost}" "${EVQ_DB_USER:=root}" "${EVQ_DB_PASSWORD:=}" \
  "${EVQ_DB_NAME:=evqueue}" "${EVQ_ADMIN_PASSWORD:=admin}"
export EVQ_RUN EVQ_DB_HOST EVQ_DB_USER EVQ_DB_PASSWORD EVQ_DB_NAME EVQ_ADMIN_PASSWORD
export EVQ_STATE="${EVQ_STATE_ROOT:-/tmp/evqueue-state}/$EVQ_NODE"
EVQ_CLUSTER=""
for n in $NODES; do EVQ_CLUSTER="${EVQ_CLUSTER:+$EVQ_CLUSTER,}unix://$EVQ_RUN/$n.sock"; done
export EVQ_CLUSTER
mkdir -p "$EVQ_RUN" "$EVQ_STATE/logs" "$EVQ_STATE/scripts" "$EVQ_STATE/plugins"
exec "${EVQUEUE:-evqueue}" --config "$here/evqueue-node.conf" "$@"
