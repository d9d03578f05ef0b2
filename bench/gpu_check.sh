#!/usr/bin/env bash
# The GPU check: one command for a session that has a GPU for a few minutes. It builds fastclip
# for the GPU present, runs the CUDA tests and the op, function and clipper tests on it (CUDA
# graph capture and replay, launch counts and torch.cuda.set_sync_debug_mode("error") around the
# ops and clippers are among them), checks the runtime's decisions (bench/gpu_runtime_check.py:
# re-captured graphs keep no new pinned buffer; which path the single launches take, and again
# under MPS with CUDA_MPS_ACTIVE_THREAD_PERCENTAGE where MPS can be started), runs every op and
# clipper under compute-sanitizer's memcheck, racecheck and synccheck when it is installed, and
# runs `fastclip bench` and the bench/ scripts on the device (`--checks` leaves the benchmarks
# out: the checks after the build take about five minutes). Everything is written to
# bench/results/gpu_<gpu name>/ (and, when $OUT is set, as one tarball plus the summary into $OUT,
# for the device tool to bring back), and a one-screen summary is printed. Without a GPU it says so
# and exits 0; otherwise it exits 1 if a step failed.
#
#   bash bench/gpu_check.sh [--checks]   # PYTHON=... picks the interpreter (default .venv/bin/python, else python3)
set -uo pipefail
cd "$(dirname "$0")/.."
benchmarks=yes
case "${1:-}" in
  --checks) benchmarks=no ;;
  "") ;;
  *) echo "usage: bash bench/gpu_check.sh [--checks]" >&2; exit 2 ;;
esac
if [ -z "${PYTHON:-}" ]; then
  if [ -x .venv/bin/python ]; then PYTHON=.venv/bin/python; else PYTHON=python3; fi
fi

gpu=$("$PYTHON" -c 'import torch; print(torch.cuda.get_device_name(0) if torch.cuda.is_available() else "")' \
      2>/dev/null)
if [ -z "$gpu" ]; then
  echo "gpu_check: no CUDA GPU visible to $PYTHON (torch.cuda.is_available() is False); nothing to check"
  exit 0
fi
arch=$("$PYTHON" -c 'import torch; print("%d.%d" % torch.cuda.get_device_capability(0))')
slug=$(printf '%s' "$gpu" | tr -c 'A-Za-z0-9' '_' | tr -s '_' | tr 'A-Z' 'a-z' | sed 's/^_//; s/_$//')
results=bench/results/gpu_$slug
rm -rf "$results" && mkdir -p "$results"
summary=$results/summary.txt
failed=0
started=$SECONDS

# step NAME LIMIT_S COMMAND...: runs COMMAND with its output in $results/NAME.log, and adds a line
# (pass or fail, seconds) to the summary.
step() {
  local name=$1 limit=$2
  shift 2
  local start=$SECONDS
  timeout "$limit" "$@" > "$results/$name.log" 2>&1
  local rc=$?
  local verdict="ok"
  if [ $rc -eq 124 ]; then verdict="FAILED (timed out after $limit s)"; elif [ $rc -ne 0 ]; then verdict="FAILED (exit $rc)"; fi
  [ $rc -eq 0 ] || failed=1
  printf '%-16s %-28s %4d s\n' "$name" "$verdict" $((SECONDS - start)) >> "$summary"
  echo "gpu_check: $name: $verdict"
  return $rc
}

{
  echo "fastclip GPU check on $gpu (compute capability $arch), $(date -u '+%Y-%m-%d %H:%M UTC')"
  echo "torch $("$PYTHON" -c 'import torch; print(torch.__version__)'), $(nvcc --version 2>/dev/null | tail -1)"
  echo
} > "$summary"

if ! step build 420 env TORCH_CUDA_ARCH_LIST="$arch" FASTCLIP_CUDA=1 MAX_JOBS="$(nproc)" \
    "$PYTHON" setup.py build_ext --inplace; then
  tail -30 "$results/build.log"
  cat "$summary"
  exit 1
fi

# The peers' parity tests and benchmarks need their packages; the others run everywhere.
peers_present=$("$PYTHON" -c 'import zclip, autoclip, timm' > /dev/null 2>&1 && echo yes || echo no)
tests=(tests/test_cuda.py tests/test_clippers_cuda.py tests/test_ops.py tests/test_clip_grad.py
       tests/test_clipper_state.py tests/test_layouts.py tests/test_autoclip_history.py tests/test_step_skip.py)
[ "$peers_present" = yes ] && tests+=(tests/test_clippers.py)
step tests 300 "$PYTHON" -m pytest -q -p no:cacheprovider "${tests[@]}"

# The runtime's decisions: re-captures keep no new staging buffer; the single launches' path.
step recapture 90 "$PYTHON" bench/gpu_runtime_check.py recapture
step cooperative 90 "$PYTHON" bench/gpu_runtime_check.py cooperative

# Under MPS at a quarter of the SMs the single launch may be refused (the occupancy query answers
# for the whole device): the several-kernel path must then be taken, the refusal remembered. The
# daemon is this script's own (its pipes in a fresh /tmp directory, short enough for a socket path,
# its logs under $results), stopped afterwards; processes without these variables do not see it.
if command -v nvidia-cuda-mps-control > /dev/null; then
  CUDA_MPS_PIPE_DIRECTORY=$(mktemp -d /tmp/fastclip-mps.XXXXXX)
  export CUDA_MPS_PIPE_DIRECTORY CUDA_MPS_LOG_DIRECTORY="$PWD/$results/mps-log"
  mkdir -p "$CUDA_MPS_LOG_DIRECTORY"
  if nvidia-cuda-mps-control -d > "$results/mps-start.log" 2>&1 \
      && CUDA_MPS_ACTIVE_THREAD_PERCENTAGE=25 timeout 60 "$PYTHON" -c 'import torch; torch.zeros(1, device="cuda")' \
        >> "$results/mps-start.log" 2>&1; then
    step cooperative-mps 120 env CUDA_MPS_ACTIVE_THREAD_PERCENTAGE=25 "$PYTHON" bench/gpu_runtime_check.py \
      cooperative --allow-refusal
  else
    echo "cooperative-mps  skipped (MPS could not be started: $results/mps-start.log)" >> "$summary"
  fi
  echo quit | nvidia-cuda-mps-control > /dev/null 2>&1
  sleep 2  # the daemon and its server exit
  rm -rf "$CUDA_MPS_PIPE_DIRECTORY"
  unset CUDA_MPS_PIPE_DIRECTORY CUDA_MPS_LOG_DIRECTORY
else
  echo "cooperative-mps  skipped (nvidia-cuda-mps-control not installed)" >> "$summary"
fi

sanitizers=(memcheck racecheck synccheck)
if command -v compute-sanitizer > /dev/null; then
  for tool in "${sanitizers[@]}"; do
    step "sanitize-$tool" 240 compute-sanitizer --tool "$tool" --error-exitcode 1 "$PYTHON" bench/gpu_sanitize.py
  done
else
  echo "sanitize         skipped (compute-sanitizer not installed)" >> "$summary"
fi

if [ "$benchmarks" = no ]; then
  echo "bench            skipped (--checks)" >> "$summary"
else
  step bench 300 "$PYTHON" -m fastclip bench --device cuda --repeat 9 --json "$results/fastclip_bench.json" \
    --csv "$results/fastclip_bench.csv" --plot "$results/fastclip_bench.png"
  step bench-llama7b 240 "$PYTHON" -m fastclip bench --device cuda --suite llama-7b --repeat 9 \
    --json "$results/fastclip_bench_llama7b.json" --csv "$results/fastclip_bench_llama7b.csv"
  step bench-clip 240 "$PYTHON" bench/bench_clip.py --device cuda --repeat 25 --markdown \
    --json "$results/clip_grad_norm.json" --csv "$results/clip_grad_norm.csv"
  # The same cases on the two-kernel path: the single cooperative launch against it, side by side.
  step bench-clip-two-launches 150 env FASTCLIP_SINGLE_LAUNCH=0 "$PYTHON" bench/bench_clip.py --device cuda --repeat 9 \
    --markdown --json "$results/clip_grad_norm_two_launches.json" --csv "$results/clip_grad_norm_two_launches.csv"
  cases=autoclip-history,attach
  "$PYTHON" -c 'import timm' > /dev/null 2>&1 && cases+=,agc,agc-many-rows,agc-huge-row
  "$PYTHON" -c 'import zclip, autoclip' > /dev/null 2>&1 && cases+=,zclip,autoclip-tensor
  step bench-clippers 300 "$PYTHON" bench/bench_clippers.py --device cuda --repeat 9 --cases "$cases" \
    --json "$results/clippers.json" --csv "$results/clippers.csv"
  # The clippers' three-kernel path (norm, statistics, scale) beside their single launch.
  step bench-clippers-three-launches 150 env FASTCLIP_SINGLE_LAUNCH=0 "$PYTHON" bench/bench_clippers.py --device cuda \
    --repeat 5 --cases "$cases" --json "$results/clippers_three_launches.json" \
    --csv "$results/clippers_three_launches.csv"
fi

{
  echo
  echo "tests: $(grep -E '[0-9]+ (passed|failed)' "$results/tests.log" | tail -1)"
  for log in recapture cooperative cooperative-mps; do
    [ -f "$results/$log.log" ] && grep -E '^(recapture|cooperative):' "$results/$log.log" | sed "s/^/$log: /"
  done
  for tool in "${sanitizers[@]}"; do
    [ -f "$results/sanitize-$tool.log" ] && echo "$tool: $(grep -E 'ERROR SUMMARY|Device not supported' \
      "$results/sanitize-$tool.log" | tail -1)"
  done
  echo
  [ -f "$results/bench.log" ] && grep -v '^\[' "$results/bench.log" | sed -n '/median ms/,$p' && echo
  echo "whole check: $((SECONDS - started)) s; everything in $results/"
} >> "$summary"

if [ -n "${OUT:-}" ]; then
  cp "$summary" "$OUT/gpu_check_summary.txt"
  tar -czf "$OUT/gpu_check_$slug.tar.gz" -C bench/results "gpu_$slug"
fi
echo
cat "$summary"
exit $failed
