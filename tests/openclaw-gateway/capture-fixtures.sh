#!/usr/bin/env bash
# Captures OpenClaw 2026.9.6 and clawgate side by side on the same stores and writes
# tests/fixtures/openclaw-2026.9.6/<store>/{openclaw,clawgate}.json (normalised, diffable).
#
#   tests/openclaw-gateway/capture-fixtures.sh [store ...]     stores: tiny-legacy tiny-sqlite demo-3x20
#
# Needs: `npm ci` done here (README.md), `cargo build --workspace --bins`, and the shared fixture
# (OPENCLAW_FIXTURES, default /work/shared/openclaw/fixtures). Each gateway gets its own copy of the
# store: OpenClaw migrates a legacy store in place when it starts.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
fixtures="${OPENCLAW_FIXTURES:-/work/shared/openclaw/fixtures}"
out_root="$root/tests/fixtures/openclaw-2026.9.6"
clawgate="$root/target/debug/clawgate"
token="capture-token-$$"
scratch="$(mktemp -d /tmp/oc-capture-XXXXXX)"
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
}
trap cleanup EXIT

[ -x "$clawgate" ] || { echo "build clawgate first: cargo build --workspace --bins" >&2; exit 1; }
[ -d "$here/node_modules/openclaw" ] || { echo "install OpenClaw first (see $here/README.md)" >&2; exit 1; }

free_port() { node -e 'const s=require("net").createServer().listen(0,"127.0.0.1",()=>{console.log(s.address().port);s.close()})'; }

# Waits (up to $2 s) for a line in file $1; prints it.
wait_line() {
  local file="$1" deadline=$((SECONDS + $2))
  while [ ! -s "$file" ]; do
    [ "$SECONDS" -lt "$deadline" ] || { echo "no line in $file within $2 s" >&2; return 1; }
    sleep 0.2
  done
  head -1 "$file"
}

capture_store() {
  local name="$1" src="$2" vars="$3"
  local dir="$scratch/$name" out="$out_root/$name"
  mkdir -p "$dir" "$out"
  echo "== $name ($src)"

  # OpenClaw 2026.9.6.
  local p1; p1="$(free_port)"
  node "$here/start.mjs" --store "$src" --port "$p1" --token "$token" --work "$dir/openclaw" > "$dir/openclaw.ready" 2> "$dir/openclaw.err" &
  pids+=($!); local oc_pid=$!
  local ready; ready="$(wait_line "$dir/openclaw.ready" 180)"
  echo "openclaw: $ready"
  echo "$ready" | grep -q '"ready":true' || { cat "$dir/openclaw.err" >&2; exit 1; }

  # clawgate on its own copy.
  local p2; p2="$(free_port)"
  mkdir -p "$dir/clawgate"
  cp -rp "$src" "$dir/clawgate/state"
  "$clawgate" serve --state-dir "$dir/clawgate/state" --data-dir "$dir/clawgate/data" --token "$token" \
    --listen "127.0.0.1:$p2" > "$dir/clawgate/console.log" 2>&1 &
  pids+=($!); local cg_pid=$!
  local deadline=$((SECONDS + 60))
  until curl -fsS -m 1 "http://127.0.0.1:$p2/healthz" > /dev/null 2>&1; do
    [ "$SECONDS" -lt "$deadline" ] || { tail -20 "$dir/clawgate/console.log" >&2; exit 1; }
    sleep 0.2
  done
  echo "clawgate: listening on $p2"

  node "$here/capture.mjs" --url "ws://127.0.0.1:$p1" --token "$token" --label openclaw --vars "$vars" \
    --state-dir "$dir/openclaw/state" --work "$dir/openclaw" --warm 120 --out "$out/openclaw.json" 2> "$dir/openclaw.capture.log"
  node "$here/capture.mjs" --url "ws://127.0.0.1:$p2" --token "$token" --label clawgate --vars "$vars" \
    --state-dir "$dir/clawgate/state" --work "$dir/clawgate" --warm 120 --out "$out/clawgate.json" 2> "$dir/clawgate.capture.log"
  grep -E '^warm' "$dir/openclaw.capture.log" "$dir/clawgate.capture.log" || true
  cp "$dir/openclaw.capture.log" "$out/openclaw.log.txt"
  cp "$dir/clawgate.capture.log" "$out/clawgate.log.txt"

  kill "$oc_pid" "$cg_pid" 2>/dev/null || true
  wait "$oc_pid" 2>/dev/null || true
  wait "$cg_pid" 2>/dev/null || true
}

tiny_vars='{"key":"agent:main:main","sessionId":"6513270e-269e-4d37-b2a7-4de452e6b438","agent2":"agent1","key2":"agent:agent1:whatsapp:group:g1","start":"2026-11-10","end":"2026-11-14","day":"2026-11-12","search":"slack"}'
stores=("$@")
[ "${#stores[@]}" -gt 0 ] || stores=(tiny-legacy tiny-sqlite demo-3x20)
for s in "${stores[@]}"; do
  case "$s" in
    tiny-legacy) capture_store "$s" "$fixtures/tiny/legacy" "$tiny_vars" ;;
    tiny-sqlite) capture_store "$s" "$fixtures/tiny/sqlite-2026.9.6" "$tiny_vars" ;;
    demo-3x20)
      "$clawgate" demo --out "$scratch/demo-src" --agents 3 --sessions 20 --seed 7 > /dev/null
      key="$(node -e 'const s=require(process.argv[1]);const k=Object.keys(s)[0];console.log(k+" "+s[k].sessionId)' "$scratch/demo-src/agents/main/sessions/sessions.json")"
      key2="$(node -e 'console.log(Object.keys(require(process.argv[1]))[1])' "$scratch/demo-src/agents/agent1/sessions/sessions.json")"
      start="$(date -u -d '-20 days' +%F)"; end="$(date -u -d '-6 days' +%F)"; day="$(date -u -d '-10 days' +%F)"
      vars="{\"key\":\"${key% *}\",\"sessionId\":\"${key#* }\",\"agent2\":\"agent1\",\"key2\":\"$key2\",\"start\":\"$start\",\"end\":\"$end\",\"day\":\"$day\",\"search\":\"telegram\"}"
      capture_store "$s" "$scratch/demo-src" "$vars"
      ;;
    *) echo "unknown store $s" >&2; exit 2 ;;
  esac
done
rm -rf "$scratch"
echo "written under $out_root"
