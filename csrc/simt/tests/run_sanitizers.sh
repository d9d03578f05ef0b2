#!/usr/bin/env bash
# The sanitizer target of the CPU execution layer (csrc/simt): builds its self-test -- the
# layer's primitives and every kernel of csrc/cuda run through the layer at small sizes, checked
# against loops in double -- three ways (plain -O2, ThreadSanitizer, AddressSanitizer with
# UndefinedBehaviorSanitizer), runs each, then runs the negative controls under ThreadSanitizer:
# a kernel missing its __syncthreads (`--race`), and the same race after a __syncthreads
# (`--race-after-barrier`), each of which must be reported as a data race. Prints
# one line per build; exits non-zero on any failure. Needs g++ and the CUDA toolkit's headers
# ($CUDA_HOME, $CUDA_PATH or /usr/local/cuda); no GPU, no torch.
set -euo pipefail
cd "$(dirname "$0")/../.."  # csrc: the -include path below is relative to it
cuda_home=${CUDA_HOME:-${CUDA_PATH:-/usr/local/cuda}}
[ -f "$cuda_home/include/cuda_runtime.h" ] || { echo "run_sanitizers.sh: no CUDA headers in $cuda_home/include"; exit 1; }
cxx=${CXX:-g++}
max_jobs=$(nproc 2>/dev/null || echo 2)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# As setup.py builds the layer: contraction off, so the statistics kernels and the host steps
# they are compared with round alike (bit for bit) whatever -march a compiler defaults to.
common=(-std=c++20 -g -Wall -Wno-unknown-pragmas -fno-strict-aliasing -ffp-contract=off -DFASTCLIP_CUDA_ON_CPU
        -I"$cuda_home/include" -I"$cuda_home/include/cccl")
declare -A flavour_flags=(
  [plain]="-O2"
  [tsan]="-O1 -fsanitize=thread"
  [asan]="-O1 -fno-omit-frame-pointer -fsanitize=address,undefined -fno-sanitize-recover=undefined"
)
# Each kernel source is its own translation unit (they have anonymous namespaces), compiled as
# C++ after the layer's prelude.
kernel_sources=(cuda/*_kernel.cu)
# The layer itself (not the Python module or torch's device runtime beside it), the self-test,
# and the launch log every launch writes to.
host_sources=(simt/block_runner.cpp simt/fiber.cpp simt/launch.cpp simt/tests/*.cpp cuda/kernel_log.cpp)

# compile FLAVOUR SOURCE: one object; a failure leaves $work/FLAVOUR/failed.
compile() {
  local flavour=$1 source=$2
  local -a flags prelude=()
  read -r -a flags <<< "${flavour_flags[$flavour]}"
  [[ $source == *.cu ]] && prelude=(-x c++ -include simt/cuda_on_cpu.h)
  "$cxx" "${common[@]}" "${flags[@]}" "${prelude[@]}" -c "$source" \
    -o "$work/$flavour/$(tr / _ <<< "${source%.*}").o" || touch "$work/$flavour/failed"
}

# build FLAVOUR: compiles every source (max_jobs at a time) and links $work/FLAVOUR/selftest.
build() {
  local flavour=$1 source
  local -a flags
  read -r -a flags <<< "${flavour_flags[$flavour]}"
  mkdir -p "$work/$flavour"
  for source in "${kernel_sources[@]}" "${host_sources[@]}"; do
    while (( $(jobs -rp | wc -l) >= max_jobs )); do wait -n || true; done
    compile "$flavour" "$source" &
  done
  wait
  [ ! -e "$work/$flavour/failed" ] && "$cxx" "${flags[@]}" "$work/$flavour"/*.o -o "$work/$flavour/selftest" -lpthread
}

# run FLAVOUR [ARGS]: runs that build's self-test; writes its exit code and seconds to
# $work/FLAVOUR[ARGS].result and its output to the .log beside it.
run() {
  local flavour=$1 name="$1${2:-}" sms="${FASTCLIP_SIMT_SMS:-}" start=$SECONDS code=0
  # ThreadSanitizer's time grows with the OS threads a launch runs blocks on: two (not the
  # layer's default four) still run blocks of a launch concurrently, unordered.
  [ "$flavour" = tsan ] && sms=2
  FASTCLIP_SIMT_SMS=$sms TSAN_OPTIONS=halt_on_error=1 ASAN_OPTIONS=detect_leaks=1:abort_on_error=0 \
    UBSAN_OPTIONS=print_stacktrace=1 "$work/$flavour/selftest" ${2:+"$2"} > "$work/$name.log" 2>&1 || code=$?
  echo "$code $((SECONDS - start))" > "$work/$name.result"
}

# Each build's runs start as soon as it is linked, while the next build compiles.
status=0
declare -A built runs
for flavour in plain tsan asan; do
  start=$SECONDS
  # (A subshell: build's job control then sees its own compiles only, not the runs below.)
  if (build "$flavour") > "$work/$flavour.build.log" 2>&1; then
    built[$flavour]=$((SECONDS - start))
    [ -s "$work/$flavour.build.log" ] && cat "$work/$flavour.build.log"  # warnings
    if [ "$flavour" = tsan ]; then
      (run tsan; run tsan --race; run tsan --race-after-barrier) &
    else
      run "$flavour" &
    fi
    runs[$flavour]=$!
  else
    echo "$flavour: build FAILED"
    cat "$work/$flavour.build.log"
    status=1
  fi
done

for flavour in plain tsan asan; do
  [ -n "${runs[$flavour]:-}" ] || continue
  wait "${runs[$flavour]}" || true  # run always exits 0: its result is in the file
  read -r code seconds < "$work/$flavour.result"
  if [ "$code" = 0 ]; then
    echo "$flavour: built in ${built[$flavour]} s, self-test passed in $seconds s"
  else
    echo "$flavour: built in ${built[$flavour]} s, self-test FAILED (exit code $code) after $seconds s:"
    cat "$work/$flavour.log"
    status=1
  fi
done

# The negative controls: ThreadSanitizer must see each race (its exit code is 66 by default).
for control in --race --race-after-barrier; do
  [ -f "$work/tsan$control.result" ] || continue
  read -r code seconds < "$work/tsan$control.result"
  if [ "$code" = 66 ] && grep -q "WARNING: ThreadSanitizer: data race" "$work/tsan$control.log"; then
    echo "tsan $control: the missing __syncthreads was reported as a data race ($seconds s)"
  else
    echo "tsan $control: FAILED: expected a data race report and exit code 66, got exit code $code:"
    cat "$work/tsan$control.log"
    status=1
  fi
done
exit $status
