#!/usr/bin/env bash
# `make fuzz`: builds every cargo-fuzz target in fuzz/ and runs each for FUZZ_SECONDS
# (default 60). Any crash, panic, broken invariant, timeout or out-of-memory fails the
# run; libFuzzer leaves the input that caused it in fuzz/artifacts/<target>/.
#
#   FUZZ_SECONDS=600 make fuzz              longer runs
#   FUZZ_TARGETS="validation envelope" make fuzz
#   cargo fuzz run <target> fuzz/artifacts/<target>/crash-…   (with RUSTC_BOOTSTRAP=1) to replay
#
# The committed seeds in fuzz/corpus/<target>/ are read, never written: what a run
# discovers goes to fuzz/work/corpus/<target>/ (ignored by git), so repeated runs start
# from everything found before.
set -euo pipefail
cd "$(dirname "$0")/.."

seconds=${FUZZ_SECONDS:-60}
# cargo-fuzz passes nightly-only flags (-Z) to rustc; this lets the stable toolchain take them.
export RUSTC_BOOTSTRAP=1
# Release code with overflow checks and debug assertions: an arithmetic overflow is a
# finding. No sanitizer: the project forbids unsafe code, and without ASan's overhead the
# minute buys several times more executions.
build_flags=(--release --debug-assertions --sanitizer none)

if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "fuzz: installing cargo-fuzz"
  cargo install cargo-fuzz --locked
fi

read -r -a targets <<<"${FUZZ_TARGETS:-$(cargo fuzz list | tr '\n' ' ')}"
echo "fuzz: building ${targets[*]}"
cargo fuzz build "${build_flags[@]}"

dictionary_for() {
  case "$1" in
    validation | envelope) echo "-dict=fuzz/dicts/callback.dict" ;;
    csv_import) echo "-dict=fuzz/dicts/csv.dict" ;;
  esac
}

mkdir -p fuzz/work
summary=()
failed=()
for target in "${targets[@]}"; do
  work_corpus="fuzz/work/corpus/$target"
  log="fuzz/work/$target.log"
  mkdir -p "$work_corpus" "fuzz/corpus/$target"
  echo "fuzz: $target for ${seconds}s (log: $log)"
  # -timeout: one input taking 10 s is a hang; -rss_limit_mb: 2 GiB is a memory blow-up.
  # shellcheck disable=SC2046 # the dictionary flag is one word or none
  if cargo fuzz run "${build_flags[@]}" "$target" "$work_corpus" "fuzz/corpus/$target" -- \
    -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
    $(dictionary_for "$target") >"$log" 2>&1; then
    outcome=ok
  else
    outcome=FAILED
    failed+=("$target")
    tail -n 40 "$log"
  fi
  # The last status line: "#<runs> DONE cov: <edges> ft: <features> corp: <units>/<size> … exec/s: <n>".
  status=$(grep -E '^#[0-9]+' "$log" | tail -n 1 || true)
  runs=$(sed -nE 's/^stat::number_of_executed_units: *([0-9]+)/\1/p' "$log" | tail -n 1)
  rate=$(sed -nE 's/^stat::average_exec_per_sec: *([0-9]+)/\1/p' "$log" | tail -n 1)
  cov=$(sed -nE 's/.* cov: ([0-9]+).*/\1/p' <<<"$status")
  ft=$(sed -nE 's/.* ft: ([0-9]+).*/\1/p' <<<"$status")
  corp=$(sed -nE 's/.* corp: ([0-9]+)\/.*/\1/p' <<<"$status")
  summary+=("$(printf '%-12s %-7s %12s %10s %8s %8s %8s' "$target" "$outcome" "${runs:--}" "${rate:--}" "${cov:--}" "${ft:--}" "${corp:--}")")
done

echo
printf '%-12s %-7s %12s %10s %8s %8s %8s\n' target result executions exec/s cov ft corpus
printf '%s\n' "${summary[@]}"
if ((${#failed[@]})); then
  echo "fuzz: FAILED: ${failed[*]} (reproducers in fuzz/artifacts/)" >&2
  exit 1
fi
echo "fuzz: no crashes in ${#targets[@]} targets"
