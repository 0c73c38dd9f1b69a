#!/usr/bin/env bash
# Planted bugs (issue 16): each one is applied to a scratch copy of the crate, the test binaries
# that should see it run there, and the script fails if any planted bug survives (its tests pass),
# if one no longer applies (its code moved: the text to replace is not found exactly once), or if
# one no longer compiles. The working tree is never touched.
#
#   scripts/mutants.sh            # the CI set: the three former survivors
#   scripts/mutants.sh full       # every planted bug (a longer job; docs/testing.md has its last result)
#   scripts/mutants.sh list       # the planted bugs, their tier and their tests
#   scripts/mutants.sh NAME...    # only these
#
# The scratch copy lives in target/mutants/ and shares the crate's target folder for the
# registry dependencies, so only the crate (and, for a .cu change, the emulator) rebuilds per
# planted bug. Each line of the report gives the time that planted bug took.
set -euo pipefail
cd "$(dirname "$0")/.."
root="$PWD"
scratch="$root/target/mutants/src"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$root/target}"
export CARGO_TERM_COLOR=never

names=() tiers=() tests=() edits=()
# mutant NAME TIER "TEST BINARIES" then one or more: edit FILE OLD NEW
mutant() { names+=("$1"); tiers+=("$2"); tests+=("$3"); edits+=(""); }
edit() {
  local i=$((${#names[@]} - 1))
  local file=$1 old=$2 new=$3
  edits[$i]+="$file"$'\t'"$(printf %s "$old" | base64 -w0)"$'\t'"$(printf %s "$new" | base64 -w0)"$'\n'
}

# --- the three bugs that survived the suite before issue 16 -----------------------------------
mutant vx_from_fused ci "model_oracle model"
edit src/model/layer.rs 'let vx = self.value_id.forward(pass, x)?;' 'let vx = self.value_id.forward(pass, f)?;'

mutant lambda_ignored ci "model_oracle model"
edit src/model/mod.rs '            contrastive,
            lambda,
            attribute_prediction,' '            contrastive,
            lambda: 1.0,
            attribute_prediction,'

mutant hash_constant_both_sides ci "known_answers dropout"
edit src/rng.rs 'counter.wrapping_mul(0x9E37_79B9_7F4A_7C15)' 'counter.wrapping_mul(0x9E37_79B9_7F4A_7C17)'
edit kernels/hash_rng.cuh '(counter * 0x9E3779B97F4A7C15ull)' '(counter * 0x9E3779B97F4A7C17ull)'

# --- others, Rust only (no emulator rebuild; the first three in CI) -----------------------------
mutant layer_norm_eps_dropped full "kernels"
edit src/ops/layer_norm/cpu.rs 'let rstd = F::one() / (variance + eps).sqrt();' 'let rstd = F::one() / variance.sqrt().max(eps);'

mutant ndcg_discount_off_by_one full "metrics"
edit src/metrics.rs 'let gain = 1.0 / ((r + 1) as f64).log2();' 'let gain = 1.0 / ((r + 2) as f64).log2();'

mutant optimistic_ties full "metrics"
edit src/metrics.rs 'let mut above = scores[1..].iter().filter(|&&s| s >= st).count() - 1;' 'let mut above = scores[1..].iter().filter(|&&s| s > st).count();'

mutant contrastive_clamp_wrong full "contrastive known_answers"
edit src/ops/contrastive/cpu.rs 'let clamped = exp_s > max_scale;' 'let clamped = exp_s > max_scale + max_scale;'

mutant hie_rank_guard_removed full "hie"
edit src/ops/hie/cpu.rs 'if p >= max_rank || norm <= tolerance * largest {' 'if p >= max_rank || norm <= F::zero() {'

# --- the longer job: kernels (each recompiles the emulator) and the data pipeline --------------
mutant attention_syncwarp_removed full "attention"
edit kernels/attention.cu '        scratch[r * ATTENTION_SCRATCH_STRIDE + lane] = partial;
    }
    __syncwarp();' '        scratch[r * ATTENTION_SCRATCH_STRIDE + lane] = partial;
    }'

mutant dropout_kernel_scale_dropped full "dropout known_answers"
edit kernels/dropout.cu 'asif_dropout_keep(seed, (unsigned long long)i, p) ? x[i] * scale : 0.0f;' 'asif_dropout_keep(seed, (unsigned long long)i, p) ? x[i] : 0.0f;'

# Kernel backwards seen by their own forward (tests/kernel_finite_differences.rs alone).
mutant attention_kernel_backward_sign full "kernel_finite_differences"
edit kernels/attention.cu 'w[ATTENTION_MAX_LEN + j] = scale * (ds_x + ds_p);' 'w[ATTENTION_MAX_LEN + j] = scale * (ds_x - ds_p);'

mutant attention_kernel_backward_dropout_multiplier full "kernel_finite_differences"
edit kernels/attention.cu 'ds_x = expf(scale * (s1 + s2 + s3) - lse_x[i]) * (m * dp_x - d_x);' 'ds_x = expf(scale * (s1 + s2 + s3) - lse_x[i]) * (dp_x - d_x);'

# Attention v2 (issue 18): the forward's and the one-pass backward's, seen by the kernel tests
# that run both versions (tests/attention.rs).
mutant attention_v2_cp_async_wait_missing full "attention"
edit kernels/attention.cu '    cp_async_wait_all();
    __syncthreads();
    const int row0 = 16 * (threadIdx.x / ASIF_WARP_SIZE);
    if (active) {
        attention_v2_scores(s,' '    __syncthreads();
    const int row0 = 16 * (threadIdx.x / ASIF_WARP_SIZE);
    if (active) {
        attention_v2_scores(s,'

mutant attention_v2_mask_one_future_key full "attention"
edit kernels/attention.cu 'const bool valid = t < key_tiles && row_valid && j <= i;' 'const bool valid = t < key_tiles && row_valid && j <= i + 1;'

mutant attention_v2_backward_ds_sign full "attention"
edit kernels/attention.cu 'p[t][2 * half + e] * (dp[t][2 * half + e] - row_dot);' 'p[t][2 * half + e] * (row_dot - dp[t][2 * half + e]);'

mutant attention_v2_backward_dv_dropout_multiplier full "attention"
edit kernels/attention.cu 'weighted[local * ATTENTION_V2_STRIDE + j] = m * probability;' 'weighted[local * ATTENTION_V2_STRIDE + j] = probability;'

mutant hie_kernel_backward_sign_mask_dropped full "kernel_finite_differences"
edit kernels/hie.cu '            g *= mask_b[t * r + lane];
' ''

mutant hie_kernel_v2_backward_sign_mask_dropped full "kernel_finite_differences"
edit kernels/hie.cu '        g *= k_lane < r ? mask_b[t * r + k_lane] : 0.0f;
' ''

# H_X staged once (issue 19): only its first row reaches shared memory.
mutant hie_v2_forward_stages_one_row full "hie"
edit kernels/hie.cu 'for (int e = threadIdx.x; e < rows * d; e += blockDim.x) x_s[e] = x_b[e];' 'for (int e = threadIdx.x; e < d; e += blockDim.x) x_s[e] = x_b[e];'

# HIE v3 (issue 19): M_b = H_Xᵀ W_r on 3xTF32 tiles misses its last k step over the rows.
mutant hie_v3_mb_last_k_step_skipped full "hie"
edit kernels/hie.cu 'for (int t0 = 0; t0 < rows; t0 += 8) {' 'for (int t0 = 0; t0 + 8 < rows; t0 += 8) {'

mutant contrastive_kernel_scale_gradient full "kernel_finite_differences"
edit kernels/contrastive.cu 'const float g = grad_weight * (p + q - (t == u ? 2.0f : 0.0f));' 'const float g = grad_weight * (p + q - (t == u ? 1.0f : 0.0f));'

mutant contrastive_kernel_clamp_bound full "contrastive"
edit kernels/contrastive.cu '#define CONTRASTIVE_LOGIT_SCALE_MAX 100.0f' '#define CONTRASTIVE_LOGIT_SCALE_MAX 1000.0f'

mutant contrastive_v2_transposed_product full "contrastive"
edit kernels/contrastive.cu ': scores[kk * CONTRASTIVE_V2_SCORE_STRIDE + m];' ': scores[m * CONTRASTIVE_V2_SCORE_STRIDE + kk];'

mutant contrastive_v2_tile_at_length_skipped full "contrastive"
edit kernels/contrastive.cu 'const int len_tiles = (len + 7) / 8;' 'const int len_tiles = len / 8;'

mutant contrastive_v2_k_pairing_mismatched full "contrastive"
edit kernels/contrastive.cu 'k_rows[(8 * k + 2 * in_group + i) * stride' 'k_rows[(8 * k + in_group + 4 * i) * stride'

# x and a staged once (issue 19): phase C reads every 32-column output tile's B fragments from
# the first 32 staged columns.
mutant contrastive_v2_staged_column_offset_dropped full "contrastive"
edit kernels/contrastive.cu '* stride + c1 + 8 * j + group_id];' '* stride + 8 * j + group_id];'

# The FFN's bias add fused with GELU (issue 20): the forward's bias column off by one, and the
# backward's GELU' taken at y instead of y + b; each planted by hand first (tests/linear.rs).
mutant bias_gelu_forward_bias_column_shifted full "linear"
edit kernels/bias_gelu.cu 'return gelu_value(v + bias[(int)i % cols]);' 'return gelu_value(v + bias[((int)i + 1) % cols]);'

mutant bias_gelu_backward_derivative_without_bias full "linear"
edit kernels/bias_gelu.cu 'const float g = gelu_gradient(y[at] + bias[col], dh[at]);' 'const float g = gelu_gradient(y[at], dh[at]);'

# The input lookups in one launch (issue 20): the pooling reads each row's tokens one slot late.
mutant input_embedding_pooling_off_by_one full "embedding"
edit kernels/input_embedding.cu 'tokens + (size_t)position * max_tokens, max_tokens' 'tokens + (size_t)position * max_tokens + 1, max_tokens'

mutant attention_reference_backward_diagonal full "attention"
edit src/ops/attention/cpu.rs '                for j in 0..=i {
                    let p = (problem.logits(&scores, s, j, scale) - lse).exp();' '                for j in 0..i {
                    let p = (problem.logits(&scores, s, j, scale) - lse).exp();'

mutant kcore_one_pass full "data_reader data_synthetic data_ml100k"
edit src/data/load.rs '        if !banned {
            break;
        }' '        if !banned || stats.kcore_rounds > 0 {
            break;
        }'

# ----------------------------------------------------------------------------------------------

list() {
  for i in "${!names[@]}"; do printf '%-34s %-4s tests: %s\n' "${names[$i]}" "${tiers[$i]}" "${tests[$i]}"; done
}

# Applies the edit records $2 under folder $1; fails loudly when a text is not found exactly once.
apply() {
  python3 -c '
import base64, sys, pathlib
root = pathlib.Path(sys.argv[1])
ok = True
applied = 0
for line in sys.argv[2].split("\n"):
    if not line:
        continue
    f, old, new = line.split("\t")
    old, new = base64.b64decode(old).decode(), base64.b64decode(new).decode()
    path = root / f
    text = path.read_text()
    count = text.count(old)
    if count != 1:
        print(f"    DOES NOT APPLY: {f}: the text to replace occurs {count} times (code moved?)")
        ok = False
        continue
    path.write_text(text.replace(old, new))
    applied += 1
sys.exit(0 if ok and applied else 1)
' "$1" "$2"
}

selected=()
case "${1:-ci}" in
list) list; exit 0 ;;
ci) for i in "${!names[@]}"; do [[ ${tiers[$i]} == ci ]] && selected+=("$i"); done ;;
full) selected=("${!names[@]}") ;;
*)
  for want in "$@"; do
    found=
    for i in "${!names[@]}"; do [[ ${names[$i]} == "$want" ]] && selected+=("$i") && found=1; done
    [[ -n $found ]] || { echo "unknown planted bug: $want (see: $0 list)" >&2; exit 2; }
  done ;;
esac

# A fresh scratch copy of the tracked and untracked-not-ignored files (the committed fixtures
# included), leaving build outputs in the shared target folder.
# Extraction keeps the files' times, so a file unchanged since the last run is not rebuilt. A run
# stopped between applying and restoring leaves `dirty`: then every file a planted bug touches gets
# a fresh time, so no stale build of a planted bug can be reused.
rm -rf "$scratch"
mkdir -p "$scratch"
git ls-files -z --cached --others --exclude-standard | tar --null -T - -cf - | tar -xf - -C "$scratch"
dirty="$root/target/mutants/dirty"
if [[ -e $dirty ]]; then
  for i in "${!names[@]}"; do printf '%s' "${edits[$i]}" | cut -f1; done | sort -u |
    while read -r f; do [[ -n $f ]] && touch "$scratch/$f"; done
  rm -f "$dirty"
fi
[[ -d data ]] && ln -sfn "$root/data" "$scratch/data"

# Puts back the files a planted bug touched (a fresh mtime, so cargo rebuilds them).
restore() {
  while IFS= read -r f; do
    [[ -n $f ]] && { cp "$root/$f" "$scratch/$f"; touch "$scratch/$f"; }
  done <<<"$1"
}

failures=0
report=()
start_all=$SECONDS
for i in "${selected[@]}"; do
  name=${names[$i]}
  t0=$SECONDS
  echo "== $name (${tiers[$i]}): tests ${tests[$i]}"
  files=$(printf '%s' "${edits[$i]}" | cut -f1)
  : >"$dirty"
  if ! apply "$scratch" "${edits[$i]}"; then
    restore "$files"
    report+=("DOES NOT APPLY  $name")
    failures=$((failures + 1))
    continue
  fi
  args=()
  for t in ${tests[$i]}; do args+=(--test "$t"); done
  log="$root/target/mutants/$name.log"
  if ! (cd "$scratch" && cargo test --no-run "${args[@]}") >"$log" 2>&1; then
    echo "    DOES NOT COMPILE (see $log)"
    report+=("NO BUILD        $name")
    failures=$((failures + 1))
  elif (cd "$scratch" && cargo test "${args[@]}") >>"$log" 2>&1; then
    echo "    SURVIVED: every test of ${tests[$i]} passed (see $log)"
    report+=("SURVIVED        $name")
    failures=$((failures + 1))
  else
    killed=$(grep -E '^    [a-z0-9_:]+$' "$log" | sed 's/^ *//' | sort -u | tr '\n' ' ')
    echo "    killed by: ${killed:-(see $log)}"
    report+=("killed ($((SECONDS - t0)) s)  $name: ${killed}")
  fi
  restore "$files"
  rm -f "$dirty"
done

echo
echo "== planted bugs: ${#selected[@]} in $((SECONDS - start_all)) s"
printf '  %s\n' "${report[@]}"
if ((failures)); then
  echo "FAIL: $failures planted bug(s) survived, no longer apply, or do not compile"
  exit 1
fi
echo "every planted bug was caught"
