#!/usr/bin/env bash
# Side by side with Salt (issue 8), in ONE run: a SaltStack master and N minions on loopback
# measured by Salt's own API (../shared/peers/salt/bench.py), then one Elves center and N
# agents measured on the same phases (`elves-bench salt-peer`), then a table of every measure
# for Elves, for Salt and as a ratio Elves/Salt. Not part of CI (about 5–10 minutes).
#
#   cargo build --release -p elves-cli -p elves-bench
#   scripts/bench-salt.sh                 # prints the table; keeps the JSON files in $OUT_DIR
#
# Env: SALT_HOME   where Salt's venv and run/ live (default ~/.cache/salt-peer); the venv is
#                  created with `pip install salt` when missing, reused otherwise
#      SALT_PEER   the peer's scripts (default: ../shared/peers/salt next to the repository)
#      ELVES_BENCH the bench binary (default: $CARGO_TARGET_DIR or target, release)
#      N           minions = agents (default 10); OUT_DIR (default: a new temporary directory)
#      SALT_QUIET_WAIT  bench.py --quiet-wait, seconds (default 0: do not wait for a quiet host)
#      SALT_PUB_PORT / SALT_RET_PORT  passed to setup.sh (default 14505 / 14506)
#
# Bounded: every step runs under `timeout`; on any exit the trap stops the Salt processes
# setup.sh started (its stop.sh, by pid file) and the bench (which takes its center and agents
# with it).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
SALT_HOME="${SALT_HOME:-$HOME/.cache/salt-peer}"
SALT_PEER="${SALT_PEER:-$ROOT/../shared/peers/salt}"
BENCH="${ELVES_BENCH:-${CARGO_TARGET_DIR:-$ROOT/target}/release/elves-bench}"
N="${N:-10}"
QUIET_WAIT="${SALT_QUIET_WAIT:-0}"
OUT_DIR="${OUT_DIR:-$(mktemp -d -t bench-salt.XXXXXX)}"
export SALT_HOME

# The same counts on both sides (bench.py's defaults).
WARMUP=5 SYNC=50 FANOUT=20 JOBS=500 TIMEOUT_S=120 GRACE_S=240 WINDOW_JOBS=200 WINDOW=8

die() { echo "bench-salt.sh: $*" >&2; exit 2; }
[[ "$N" =~ ^[0-9]+$ ]] && (( N >= 1 && N <= 50 )) || die "N must be 1..50 (got '$N')"
[[ "$QUIET_WAIT" =~ ^[0-9]+$ ]] || die "SALT_QUIET_WAIT must be whole seconds"
for f in setup.sh bench.py stop.sh; do [[ -f "$SALT_PEER/$f" ]] || die "$SALT_PEER/$f not found (set SALT_PEER)"; done
[[ -x "$BENCH" ]] || die "$BENCH not found: cargo build --release -p elves-cli -p elves-bench (or set ELVES_BENCH)"
command -v python3 >/dev/null || die "python3 is needed"
mkdir -p "$OUT_DIR" "$SALT_HOME"

salt_started=0
bench_pid=""
cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  if [[ -n "$bench_pid" ]] && kill -0 "$bench_pid" 2>/dev/null; then
    kill -TERM "$bench_pid" 2>/dev/null || true
    for _ in $(seq 1 100); do kill -0 "$bench_pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$bench_pid" 2>/dev/null || true
  fi
  if (( salt_started )); then
    timeout 90 bash "$SALT_PEER/stop.sh" >&2 || echo "bench-salt.sh: stop.sh failed: check $SALT_HOME/run" >&2
  fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

load() { cut -d' ' -f1-3 /proc/loadavg; }
log() { echo "bench-salt.sh: $(date -u +%H:%M:%S) load $(load): $*" >&2; }

# ------------------------------------------------------------------ Salt
VENV="$SALT_HOME/.venv"
if [[ ! -x "$VENV/bin/salt-master" ]]; then
  log "installing salt into $VENV (pip, a few minutes)"
  python3 -m venv "$VENV"
  timeout 1800 "$VENV/bin/pip" install -q salt || die "pip install salt failed"
fi

log "salt: setup.sh $N"
salt_started=1
timeout 400 bash "$SALT_PEER/setup.sh" "$N" >&2
log "salt: bench.py"
echo "$(load)" >"$OUT_DIR/salt.load_start"
# bench.py's own bound: each sync/fan-out phase ≤ 300 s, the flood ≤ 120 + 240 s, the window ≤ 120 s.
timeout 1800 "$VENV/bin/python" "$SALT_PEER/bench.py" --warmup "$WARMUP" --sync-calls "$SYNC" \
  --fanout-reps "$FANOUT" --async-jobs "$JOBS" --async-timeout "$TIMEOUT_S" --async-grace "$GRACE_S" \
  --window-jobs "$WINDOW_JOBS" --window "$WINDOW" --quiet-wait "$QUIET_WAIT" \
  --out "$OUT_DIR/salt.json" >"$OUT_DIR/salt.stdout"
echo "$(load)" >"$OUT_DIR/salt.load_end"
log "salt: stop.sh"
timeout 90 bash "$SALT_PEER/stop.sh" >&2
salt_started=0

# ------------------------------------------------------------------ Elves
log "elves: salt-peer with $N agents"
"$BENCH" salt-peer --agents "$N" --warmup "$WARMUP" --sync-calls "$SYNC" --fanout-reps "$FANOUT" \
  --async-jobs "$JOBS" --async-timeout "$TIMEOUT_S" --async-grace "$GRACE_S" \
  --window-jobs "$WINDOW_JOBS" --window "$WINDOW" --deadline-secs 1200 \
  --json "$OUT_DIR/elves.json" --out "$OUT_DIR/elves.md" >&2 &
bench_pid=$!
wait "$bench_pid"
bench_pid=""
log "done; JSON in $OUT_DIR"

# ------------------------------------------------------------------ the table
python3 - "$OUT_DIR/elves.json" "$OUT_DIR/salt.json" "$(cat "$OUT_DIR/salt.load_start")" \
  "$(cat "$OUT_DIR/salt.load_end")" <<'PY' | tee "$OUT_DIR/table.md"
import json, sys
e = json.load(open(sys.argv[1]))
s = json.load(open(sys.argv[2]))
ep, sp = e["phases"], s["phases"]

def g(d, *path):
    for k in path:
        if not isinstance(d, dict) or k not in d:
            return None
        d = d[k]
    return d

def fmt(v, nd=1):
    if v is None:
        return "?"
    return f"{v:.{nd}f}" if isinstance(v, float) else str(v)

rows = []
def row(name, ev, sv, unit, better):
    ratio = (ev / sv) if isinstance(ev, (int, float)) and isinstance(sv, (int, float)) and sv else None
    rows.append((name, unit, ev, sv, ratio, better))

for pct in ("p50", "p90", "p99", "max"):
    row(f"a. one host, sync call, {pct}", g(ep, "a_sync_rt_exec_agent1_ms", pct), g(sp, "a_sync_cmd_run_true_m1_ms", pct), "ms", "lower")
for pct in ("p50", "p99"):
    row(f"a. one host, vs Salt event-bus wait (a2), {pct}", g(ep, "a_sync_rt_exec_agent1_ms", pct), g(sp, "a2_sync_cmd_run_true_m1_eventwait_ms", pct), "ms", "lower")
for pct in ("p50", "p90", "p99", "max"):
    row(f"b. fan-out to {e['n_agents']}, {pct}", g(ep, "b_fanout_rt_exec_all_ms", pct), g(sp, "b_fanout_cmd_run_true_all_ms", pct), "ms", "lower")
for pct in ("p50", "p99"):
    row(f"b. fan-out, vs Salt event-bus wait (b2), {pct}", g(ep, "b_fanout_rt_exec_all_ms", pct), g(sp, "b2_fanout_cmd_run_true_all_eventwait_ms", pct), "ms", "lower")
row("c. flood of 500 async jobs, end to end (bench.py's headline)", g(ep, "c_async_flood_agent1", "end_to_end_jobs_per_s"), g(sp, "c_async_throughput_m1", "end_to_end_jobs_per_s"), "jobs/s", "higher")
def eventual(phase, d):
    n, t = g(d, phase, "eventual_returned"), g(d, phase, "eventual_first_submit_to_last_return_s")
    return n / t if n and t else None
row("c. flood, eventual: all returns ÷ first submit → last return", eventual("c_async_flood_agent1", ep), eventual("c_async_throughput_m1", sp), "jobs/s", "higher")
row("c. flood: jobs back within 120 s", g(ep, "c_async_flood_agent1", "returned_within_limit"), g(sp, "c_async_throughput_m1", "returned_within_limit"), "jobs", "higher")
row("c2. sustained async, ≤ 8 in flight", g(ep, "c2_async_window_agent1", "jobs_per_s"), g(sp, "c2_async_window_m1", "jobs_per_s"), "jobs/s", "higher")
row("c2. per job, submit → seen done, p50", g(ep, "c2_async_window_agent1", "per_job_submit_to_seen_ms", "p50"), g(sp, "c2_async_window_m1", "per_job_submit_to_return_ms", "p50"), "ms", "lower")
for who_e, who_s, label in (("center", "master", "center / master"), ("agent1", "m1", "agent / minion")):
    for key, what in (("main_vmrss_kb", "idle VmRSS, main process"), ("main_vmhwm_kb", "idle VmHWM, main process"),
                      ("tree_vmrss_kb_sum", "idle VmRSS, process tree"), ("tree_pss_kb_sum", "idle PSS, process tree")):
        ev, sv = g(e, "mem_idle", who_e, key), g(s, "mem_idle", who_s, key)
        row(f"d. {label} {what}", ev / 1024 if ev is not None else None, sv / 1024 if sv is not None else None, "MiB", "lower")
    row(f"d. {label} processes", g(e, "mem_idle", who_e, "tree_procs"), g(s, "mem_idle", who_s, "tree_procs"), "", "lower")

def per_call(phase_e, phase_s, calls_e, calls_s):
    ce, cs = g(ep, phase_e, "cpu", "elves_daemons_cpu_s"), g(sp, phase_s, "cpu", "salt_daemons_cpu_s")
    return (ce * 1000 / calls_e if ce is not None and calls_e else None,
            cs * 1000 / calls_s if cs is not None and calls_s else None)
n = e["n_agents"]
for label, pe, ps, ce, cs in (
    ("a", "a_sync_rt_exec_agent1_ms", "a_sync_cmd_run_true_m1_ms", g(ep, "a_sync_rt_exec_agent1_ms", "n"), g(sp, "a_sync_cmd_run_true_m1_ms", "n")),
    ("b", "b_fanout_rt_exec_all_ms", "b_fanout_cmd_run_true_all_ms", (g(ep, "b_fanout_rt_exec_all_ms", "n") or 0) * n, (g(sp, "b_fanout_cmd_run_true_all_ms", "n") or 0) * n),
    ("c", "c_async_flood_agent1", "c_async_throughput_m1", g(ep, "c_async_flood_agent1", "eventual_returned"), g(sp, "c_async_throughput_m1", "eventual_returned")),
    ("c2", "c2_async_window_agent1", "c2_async_window_m1", g(ep, "c2_async_window_agent1", "jobs_returned"), g(sp, "c2_async_window_m1", "jobs_returned")),
):
    ev, sv = per_call(pe, ps, ce, cs)
    row(f"CPU of the daemons per call/job, phase {label}", ev, sv, "ms", "lower")
for label, pe, ps in (("a", "a_sync_rt_exec_agent1_ms", "a_sync_cmd_run_true_m1_ms"), ("c", "c_async_flood_agent1", "c_async_throughput_m1")):
    row(f"CPU of other processes during phase {label} (noise)", g(ep, pe, "cpu", "other_processes_cpu_s"), g(sp, ps, "cpu", "other_processes_cpu_s"), "cpu-s", "")

print(f"Elves: {e['date_utc']}, {n} agents, worker: {e['worker']}, load {e['loadavg_at_start']} → {e['loadavg_at_end']}")
print(f"Salt {s['salt_version']}: {s['date_utc']}, {s['n_minions']} minions, load {sys.argv[3]} → {sys.argv[4]}")
print()
print("| measure | unit | Elves | Salt | Elves/Salt | better |")
print("|---|---|--:|--:|--:|---|")
for name, unit, ev, sv, ratio, better in rows:
    nd = 2 if unit == "jobs/s" else 1 if unit in ("ms", "MiB", "cpu-s") else 0
    if unit == "ms" and name.startswith("CPU"):
        nd = 2
    print(f"| {name} | {unit} | {fmt(ev, nd)} | {fmt(sv, nd)} | {fmt(ratio, 3) if ratio is not None else '?'} | {better} |")
fails = {"elves": [g(ep, k, "failed") for k in ("a_sync_rt_exec_agent1_ms", "b_fanout_rt_exec_all_ms")],
         "salt": [g(sp, k, "failed") for k in ("a_sync_cmd_run_true_m1_ms", "b_fanout_cmd_run_true_all_ms")]}
print()
print(f"failed calls (a, b): Elves {fails['elves']}, Salt {fails['salt']}; "
      f"flood ok: Elves {g(ep, 'c_async_flood_agent1', 'eventual_returned_ok')}/{g(ep, 'c_async_flood_agent1', 'jobs_submitted')}, "
      f"Salt retcode 0 {g(sp, 'c_async_throughput_m1', 'eventual_returned_retcode0')}/{g(sp, 'c_async_throughput_m1', 'jobs_submitted')}")
PY
