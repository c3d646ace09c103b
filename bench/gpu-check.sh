#!/usr/bin/env bash
# The GPU check of the CUDA backend (docs/cuda.md), for a machine with an NVIDIA GPU:
#   1. configure and build with -DGALLEON_CUDA=ON (BUILD_DIR, default build-cuda), or use the
#      binaries staged by `bench/gpu-check.sh stage` (STAGE_DIR, default build-gpu-stage);
#   2. run the CUDA tests (cuda_test: CPU vs GPU logits bits; cuda_emu_test; and, when built
#      here, model_test's Engine.DeviceFlag);
#   3. compare logits_sha256 of `run --json` (the last prompt row, then token-by-token decode)
#      and of `score --json` (every prompt row) of the static CPU engine (galleon-engine,
#      --device cpu) and the CUDA engine (galleon-engine-cuda, --device cuda) for stories260K and
#      synthetic models of every tensor type (and Q4_K_M; qwen2, qwen3, phi3, gemma2, gemma3,
#      granite, olmo2, smollm3 and exaone ones too), with --batch 1, 7 and 64 (prefill split three
#      ways), and all three again with GALLEON_CUDA_GEMM=0 GALLEON_CUDA_ATTN_TILES=0 (the one-lane
#      kernels,
#      without the prompt paths on by default: the prompt GEMM tiles, i.e. tensor cores for
#      the quantized types and shared-memory tiles for F32/F16/BF16; attention scores from
#      K tiles), a model's first mismatch compared again with each part switched off alone
#      ("bisect:" lines); cuda_test's matmul kernels and two models once more with each tile variant
#      other than the defaults (GALLEON_CUDA_MMA=s4, k4, k8, p4, t4, u4, v4, w4, x4; y4 is the
#      default; r2 and s2 passed on the H200; GALLEON_CUDA_PLAIN=b1, ring and ring2 with the F16
#      and BF16 models), and the attention tests with GALLEON_CUDA_ATTN_COLUMNS=0 (steps 4 to 6
#      by lane cells; column warps are the default) and GALLEON_CUDA_ATTN_ROWS=32 and 16
#      (several tokens per block);
#   4. a bundle of recipes/stories260k.yaml with its CUDA engine member: `galleon install`, then
#      `galleon check stories260k --device cuda` and `galleon run stories260k --device cuda`;
#   5. print a speed table (CPU and GPU tok/s, 124M and 1.1B shapes, F16 Q8_0 Q4_0 Q4_K, the GPU
#      with its defaults; then 512-token prompts on the GPU, 3 runs each: 1.1B Q4_0, Q8_0, Q4_K,
#      Q4_K_M (llama.cpp's: V and down in Q6_K) and F16 with the defaults (tensor-core variant
#      y4, the attention by column warps), Q4_K and Q4_K_M with x4 (the default before y4: the
#      K-quants' blocks read as t4 does), Q4_0 with the defaults before 2026-11-29 (t4, lane
#      cells: GALLEON_CUDA_MMA=t4 GALLEON_CUDA_ATTN_COLUMNS=0) and with 16 rows per attention
#      block (GALLEON_CUDA_ATTN_ROWS=16); 124M Q4_0 and Q8_0 with the defaults and with 32 and
#      16 rows per attention block (its 3 heads per KV head), and where a prompt's GPU time goes
#      (six copies of the logits checks' prompt, one batch of 859 tokens), per kind of step
#      (GALLEON_CUDA_PROFILE=1, every kernel loaded before: CUDA_MODULE_LOADING=EAGER): 1.1B
#      Q4_0, Q4_K and F16 with the defaults, Q4_K with x4, Q4_0 with 16 rows per attention
#      block; 124M Q4_0
#      with the defaults and with 16 rows.
# Prints PASS or FAIL per check; exits non-zero when any check fails. Sized for about 5 minutes
# on a 16-core H100/H200 machine (SPEED_TIMEOUT bounds the table; SKIP_SPEED=1 skips it).
# GPU_CHECK_DEVICE=host is a dry run of this script on a machine without a GPU: the GPU side is
# galleon-engine-cuda-host, session.cu compiled for the host CUDA runtime of tests/cuda_host (its
# kernels run on the CPU, a fiber per GPU thread), so every step runs session.cu's code as the
# GPU would, only slower: cuda_host_test with a subset of its tests stands in for cuda_test, the
# logits checks take stories260K and five of the synthetic models, the bundle's CUDA engine member
# is the host engine, and the speed table is left out (the profile runs on stories260K).
#
# GPU machines whose image lacks this project's build dependencies (CLI11, GTest, OpenSSL, ...):
# run `bench/gpu-check.sh stage` on the build machine first. It builds here and copies
# galleon-engine, galleon-engine-cuda, cuda_test, cuda_emu_test, llama_bench, stories260K.gguf,
# the galleon CLI with its shared libraries (all but glibc and libstdc++) and a signed
# stories260k bundle into STAGE_DIR/payload.tar.xz (STAGE_DIR is ignored by git as build*/;
# about 30 MB, unpacked there on first use); take that folder along and run `bash bench/gpu-check.sh` from the repository root there. The staged
# executables need glibc >= 2.34 and libstdc++ >= GCC 11 (GLIBCXX_3.4.29); the CUDA runtime is
# linked in and loads the driver at run time.
# `bench/gpu-check.sh ncu` runs no check: Nsight Compute's sections for the prompt attention and
# the tensor-core matmuls of a 1.1B Q4_0 prompt, and the plain tiles of an F16 one (below),
# where the GPU machine has ncu.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
MODE=${1:-check}
[[ $MODE =~ ^(check|stage|ncu)$ ]] || { echo "usage: bench/gpu-check.sh [check|stage|ncu]" >&2; exit 2; }
HOST=0
[[ ${GPU_CHECK_DEVICE:-cuda} == host ]] && HOST=1
[[ ${GPU_CHECK_DEVICE:-cuda} =~ ^(cuda|host)$ ]] || { echo "GPU_CHECK_DEVICE: cuda or host" >&2; exit 2; }
BUILD=${BUILD_DIR:-build-cuda}
[[ $HOST == 1 ]] && BUILD=${BUILD_DIR:-build}
STAGE=${STAGE_DIR:-build-gpu-stage}
SHARED=${GALLEON_SHARED_DIR:-$ROOT/../shared}
JOBS=${JOBS:-$(nproc)}
NVCC=${CUDACXX:-/usr/local/cuda/bin/nvcc}
SPEED_TIMEOUT=${SPEED_TIMEOUT:-200}
DEV=cuda
START=$(date +%s)

fails=0
pass() { echo "PASS  $*"; }
failed() { echo "FAIL  $*"; fails=$((fails + 1)); }
elapsed() { echo "$(( $(date +%s) - START ))s"; }

build() {
  echo "== build ($BUILD, -j$JOBS) [$(elapsed)]"
  local cuda=(-DGALLEON_CUDA=ON -DCMAKE_CUDA_COMPILER="$NVCC")
  [[ $HOST == 1 ]] && cuda=(-DGALLEON_CUDA=OFF)
  cmake -S . -B "$BUILD" -G Ninja -DCMAKE_BUILD_TYPE=Release "${cuda[@]}" \
    -DGALLEON_SHARED_DIR="$SHARED" >/dev/null
  cmake --build "$BUILD" -j"$JOBS" --target "$@"
}

# A signed bundle of recipes/stories260k.yaml built by BIN/galleon into DIR (with DIR/gpu.pub);
# its CUDA engine member is BIN/galleon-engine-cuda (BIN/galleon-engine-cuda-host in a dry run).
make_bundle() {  # BIN DIR
  local engine=galleon-engine-cuda
  [[ $HOST == 1 ]] && engine=galleon-engine-cuda-host
  GALLEON_HOME="$2/build-home" "$1/galleon" key generate gpu --dir "$2" >/dev/null
  GALLEON_HOME="$2/build-home" "$1/galleon" build recipes/stories260k.yaml --offline \
    --source-dir "$SHARED/models/stories260K" --key "$2/gpu.key" --out "$2/stories260k.galleon" \
    --cuda-engine "$1/$engine" >/dev/null
  rm -rf "$2/build-home" "$2/gpu.key"
}

STAGED_BINS=(galleon-engine galleon-engine-cuda cuda_test cuda_emu_test llama_bench galleon)
# One digest of the sources the staged binaries are built from (scripts and docs excluded), so
# that a check never runs binaries staged from other sources without saying so.
sources_digest() {
  find CMakeLists.txt runtime pkg signing tests bench recipes -type f ! -name '*.sh' ! -name '*.md' \
    -print0 | LC_ALL=C sort -z | xargs -0 sha256sum | sha256sum | cut -c1-64
}
if [[ "$MODE" != check && $HOST == 1 ]]; then
  echo "a dry run (GPU_CHECK_DEVICE=host) builds here and has no profiler: only the check" >&2
  exit 2
elif [[ "$MODE" == stage ]]; then
  build "${STAGED_BINS[@]}"
  rm -rf "$STAGE"
  mkdir -p "$STAGE/bin" "$STAGE/shared/models/stories260K" "$STAGE/bundle" "$STAGE/lib"
  for b in "${STAGED_BINS[@]}"; do cp "$BUILD/bin/$b" "$STAGE/bin/"; done
  cp "$SHARED/models/stories260K/stories260K.gguf" "$STAGE/shared/models/stories260K/"
  make_bundle "$BUILD/bin" "$STAGE/bundle"
  # The CLI's shared libraries except those of the C/C++ toolchain, which the GPU image has.
  ldd "$BUILD/bin/galleon" | awk '$3 ~ /^\// {print $3}' |
    grep -vE '/(libc|libm|libstdc\+\+|libgcc_s|libresolv|ld-linux[^/]*)\.so' |
    xargs -I{} cp -L {} "$STAGE/lib/"
  tar -C "$STAGE" -cf - bin bundle lib shared | xz -T0 -6 >"$STAGE/payload.tar.xz"
  sources_digest >"$STAGE/sources.sha256"
  rm -rf "${STAGE:?}/bin" "${STAGE:?}/bundle" "${STAGE:?}/lib" "${STAGE:?}/shared"
  du -sh "$STAGE"
  echo "staged in $STAGE: on the GPU machine, with $STAGE beside the sources, run"
  echo "  bash bench/gpu-check.sh"
  exit 0
fi

echo "== machine"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>/dev/null ||
  echo "(nvidia-smi not available)"
echo "$(nproc) CPUs; $(ldd --version 2>/dev/null | head -1)"

STAGED=0
CUDA_TEST=cuda_test ENGINE_CUDA=galleon-engine-cuda
if [[ $HOST == 1 ]]; then
  # The dry run: session.cu on the host runtime, built here (never the staged binaries).
  CUDA_TEST=cuda_host_test ENGINE_CUDA=galleon-engine-cuda-host
  echo "== dry run: the GPU side is session.cu on the host CUDA runtime (tests/cuda_host)"
elif [[ -f "$STAGE/payload.tar.xz" && ! -x "$STAGE/bin/galleon-engine" ]]; then
  tar -C "$STAGE" -xJf "$STAGE/payload.tar.xz"
fi
if [[ $HOST == 0 && -x "$STAGE/bin/galleon-engine" ]]; then
  STAGED=1
  BIN=$ROOT/$STAGE/bin
  SHARED=$ROOT/$STAGE/shared
  echo "== using the binaries staged in $STAGE (not building)"
  if [[ "$(cat "$STAGE/sources.sha256" 2>/dev/null)" == "$(sources_digest)" ]]; then
    pass "the staged binaries were built from these sources"
  else
    failed "the staged binaries were built from other sources: run \`bench/gpu-check.sh stage\` again"
  fi
else
  build galleon galleon-engine "$ENGINE_CUDA" "$CUDA_TEST" cuda_emu_test model_test llama_bench
  BIN=$ROOT/$BUILD/bin
fi
# The reference runs on the static CPU engine; the GPU runs on the CUDA engine.
ENGINE_CPU=$BIN/galleon-engine ENGINE_GPU=$BIN/$ENGINE_CUDA
export GALLEON_TEST_SHARED_DIR=$SHARED GALLEON_TEST_BIN_DIR=$BIN

echo "== GPU [$(elapsed)]"
if probe=$("$ENGINE_GPU" abi 2>&1) && grep -q '"cuda":true' <<<"$probe"; then
  pass "$ENGINE_CUDA has the CUDA backend"
else
  failed "$ENGINE_CUDA has no CUDA backend: $probe"
fi
if [[ -f "$SHARED/models/stories260K/stories260K.gguf" ]] &&
   ! probe=$("$ENGINE_GPU" run "$SHARED/models/stories260K/stories260K.gguf" -p Once \
     --max-tokens 1 --device "$DEV" 2>&1 >/dev/null); then
  failed "no usable GPU: $probe"
  echo "== stopped: nothing else can be checked without a GPU"
  exit 1
fi

TMP=$(mktemp -d /tmp/galleon-gpu-check-XXXXXX)
trap 'rm -rf "$TMP"' EXIT
# The prompt of the logits checks.
PROMPT="Once upon a time, there was a little girl named Lily. She loved to play outside in the\
 park with her friends. One day, she saw a big red ball under a tree and asked her mom if she\
 could take it home. Her mom said yes, and Lily was very happy."
# The profiles' prompt (GALLEON_CUDA_PROFILE=1 and the ncu mode): one batch (--batch 1024) of
# 859 tokens of the 1.1B models.
LONG_PROMPT="$PROMPT $PROMPT $PROMPT $PROMPT $PROMPT $PROMPT"

# `bench/gpu-check.sh ncu`: no checks; Nsight Compute's view (where the machine has ncu) of a
# 1.1B Q4_0 prompt of 859 tokens in one batch: the first launch of the prompt attention (as is,
# by column warps, with 16 rows per block: 859 tokens' scores do not fit 32 rows) and the first
# three of the tensor-core matmuls (Q K V, output, gate and up; the default variant, then u4, w4
# and x4); then of the same prompt in F16, the first three plain-tile matmuls (as they are, and
# the ring variant). Their throughput, occupancy and warp stall sections; the full reports in
# NCU_OUT (default $TMP).
if [[ "$MODE" == ncu ]]; then
  ncu=$(command -v ncu || ls /usr/local/cuda*/bin/ncu /opt/nvidia/nsight-compute/*/ncu 2>/dev/null | head -1 || true)
  if [[ -z "$ncu" ]]; then
    echo "no ncu on this machine; $(ls -d /usr/local/cuda* /opt/nvidia 2>/dev/null | tr '\n' ' ')"
    exit 1
  fi
  out=${NCU_OUT:-$TMP}
  "$BIN/llama_bench" --write "$TMP" --shape 1.1b --type q4_0,q4_K,f16 >/dev/null
  # kernel:launches:GALLEON_CUDA_MMA:GALLEON_CUDA_ATTN_COLUMNS:GALLEON_CUDA_ATTN_ROWS:type
  # (q4_0 where empty) - the F16 rows: the plain tiles (1.1B F16 prompts, 0.13x of llama.cpp,
  # never profiled), as they are and with GALLEON_CUDA_PLAIN=ring in the variant field.
  # (GALLEON_CUDA_ATTN_COLUMNS: the default, 1, where empty)
  for k in attention_tiles:1::: attention_tiles:1::0: attention_rows:1:::16 \
    matmul_mma:3::: matmul_mma:3:t4:: matmul_mma:3::::q4_K matmul_plain:3::::f16 \
    matmul_plain_ring:3:ring:::f16; do
    IFS=: read -r kernel count variant columns rows type <<<"$k"
    type=${type:-q4_0}
    mma=$variant plain=''
    [[ $type == f16 ]] && mma='' plain=$variant
    tname=''
    [[ $type != q4_0 ]] && tname=-$type
    report="$out/ncu-$kernel$tname${variant:+-$variant}${columns:+-columns$columns}${rows:+-$rows}.txt"
    echo "-- $kernel ($type)${variant:+, variant $variant}${columns:+, GALLEON_CUDA_ATTN_COLUMNS=$columns}${rows:+, GALLEON_CUDA_ATTN_ROWS=$rows}"
    GALLEON_CUDA_ATTN_ROWS=${rows:-0} GALLEON_CUDA_ATTN_COLUMNS=${columns:-1} GALLEON_CUDA_MMA=$mma \
      GALLEON_CUDA_PLAIN=$plain timeout 120 "$ncu" \
      --kernel-name "regex:$kernel" --launch-count "$count" \
      --section SpeedOfLight --section Occupancy --section LaunchStats --section WarpStateStats \
      --section MemoryWorkloadAnalysis --section ComputeWorkloadAnalysis \
      "$ENGINE_GPU" run "$TMP/llama-1.1b-$type.gguf" -p "$LONG_PROMPT" --max-tokens 1 --batch 1024 \
      --device "$DEV" >"$report" 2>&1 || echo "(ncu $kernel: exit $?)"
    grep -E "^  [a-z_]+.*\(|Duration|Throughput|Achieved Occupancy|Theoretical Occupancy|Registers Per|Block Limit|Warp Cycles Per Issued|Issue Slots Busy|stall|L1/TEX Hit|L2 Hit|Executed Ipc|ERR|==PROF==|==WARNING==" \
      "$report" | cut -c1-240 | head -80
  done
  exit 0
fi
echo "== tests [$(elapsed)]"
# cuda_emu_test (CPU only) beside the GPU tests; its verdict after theirs.
"$BIN/cuda_emu_test" >"$TMP/cuda_emu_test.log" 2>&1 &
emu_pid=$!
# On the host runtime the whole of cuda_host_test takes minutes (CTest runs it): the dry run takes
# the kernels, stories260K and one type of each prompt tile family.
filter='*'
[[ $HOST == 1 ]] && filter='CudaKernels.*:Cuda.Stories260KMatchesCpu:AllTypes/CudaSynth.MatchesCpu/llama_f16:AllTypes/CudaSynth.MatchesCpu/llama_q4_K'
if out=$("$BIN/$CUDA_TEST" --gtest_filter="$filter" 2>&1); then
  # Cuda.NoGpuIsAClearError runs only where there is no GPU; any other skip is a failure.
  skipped=$(grep -E '^\[  SKIPPED \] [A-Za-z]' <<<"$out" | grep -v NoGpuIsAClearError | sort -u || true)
  if [[ -n "$skipped" ]]; then
    echo "$skipped" | head -5
    failed "$CUDA_TEST: tests skipped (no usable GPU, or no test data?)"
  else
    pass "$CUDA_TEST ($(grep -E '^\[  PASSED' <<<"$out"))"
  fi
else
  echo "$out" | grep -E "Failure|FAILED|first differing|Error|CUDA" | head -40
  failed "$CUDA_TEST"
  # Name the failing kernel, and look for invalid memory accesses where the tool works.
  GALLEON_CUDA_SYNC=1 timeout 60 "$BIN/$CUDA_TEST" --gtest_filter='Cuda.Stories260KMatchesCpu' \
    2>&1 | grep -E "CUDA|Failure|first differing" | head -5 || true
  if [[ $HOST == 0 ]] && command -v compute-sanitizer >/dev/null; then
    timeout 120 compute-sanitizer --tool memcheck --print-limit 5 "$BIN/cuda_test" \
      --gtest_filter='Cuda.Stories260KMatchesCpu' 2>&1 | grep -vE "^\[|^$" | head -30 || true
  fi
fi
# The tensor-core variants other than the default: the kernels and two models' forward passes
# (the dry run leaves them to cuda_emu_test and CTest's cuda_host_test).
for v in MMA=s4 MMA=k4 MMA=k8 MMA=p4 MMA=t4 MMA=u4 MMA=v4 MMA=w4 MMA=x4 PLAIN=b1 PLAIN=ring \
    PLAIN=ring2 \
    ATTN_COLUMNS=0 ATTN_ROWS=32 ATTN_ROWS=16; do
  [[ $HOST == 1 ]] && break
  tests='CudaKernels.MatmulMatchesRefDot:AllTypes/CudaSynth.MatchesCpu/llama_q4_K:AllTypes/CudaSynth.MatchesCpu/llama_q6_K'
  # the 256-element types' other sub-block forms (Q2_K's minimums, Q3_K's offset, IQ4_XS's table)
  for t in q2_K q3_K iq4_xs; do tests="$tests:AllTypes/CudaSynth.MatchesCpu/llama_$t"; done
  # u4, w4 and x4 pack the 32-element types' weights (Q4_0: nibble words, Q5_1: merged bytes
  # and minimums, IQ4_NL: table values) as y4 does; v4 and w4 stage 4 of their activation
  # blocks at once; t4 reads the weights as stored (y4 too, for weights without room for a
  # packed copy); x4 reads the K-quants' blocks as t4 does, y4 through its ring
  [[ $v =~ MMA=[tuvwx]4 ]] &&
    for t in q4_0 q5_1 iq4_nl; do tests="$tests:AllTypes/CudaSynth.MatchesCpu/llama_$t"; done
  [[ $v == PLAIN=* ]] && tests='CudaKernels.MatmulMatchesRefDot:AllTypes/CudaSynth.MatchesCpu/llama_f16:AllTypes/CudaSynth.MatchesCpu/llama_bf16'
  # the K-tile attention's steps 4 to 6 by lane cells, several tokens per attention block:
  # every group and head dim shape, the scores in global memory and past the default shared
  # memory
  [[ $v == ATTN_* ]] && tests='Cuda.Stories260KMatchesCpu:Cuda.AttentionGroupShapesMatchCpu:Cuda.LongContextScoresInGlobalMemoryMatchCpu:Cuda.LongPromptScoresPastTheDefaultSharedMemoryMatchCpu:AllTypes/CudaSynth.MatchesCpu/llama_q4_0'
  if out=$(env "GALLEON_CUDA_$v" "$BIN/$CUDA_TEST" --gtest_filter="$tests" 2>&1); then
    pass "$CUDA_TEST with GALLEON_CUDA_$v ($(grep -E '^\[  PASSED' <<<"$out"))"
  else
    echo "$out" | grep -E "Failure|FAILED|first differing" | head -10
    failed "$CUDA_TEST with GALLEON_CUDA_$v"
  fi
done
if wait "$emu_pid"; then
  pass "cuda_emu_test"
else
  tail -30 "$TMP/cuda_emu_test.log"
  failed "cuda_emu_test"
fi
if [[ $STAGED == 1 ]]; then
  echo "(model_test Engine.DeviceFlag needs the galleon CLI and its libraries: not staged)"
else
  # The dry run adds the host CUDA engine against the CPU engine through their command lines.
  tests=Engine.DeviceFlag
  [[ $HOST == 1 ]] && tests=$tests:Engine.CudaEngineOnTheHostRuntimeMatchesTheCpuEngine
  if out=$("$BIN/model_test" --gtest_filter="$tests" 2>&1); then
    pass "model_test $tests"
  else
    echo "$out" | tail -20
    failed "model_test $tests"
  fi
fi

echo "== logits_sha256, --device cpu vs $DEV [$(elapsed)]"

sha() {  # VERB MODEL DEVICE BATCH
  local args=(-t "$PROMPT") engine=$ENGINE_GPU
  [[ "$1" == run ]] && args=(-p "$PROMPT" --temperature 0 --ignore-eos --max-tokens 16)
  [[ "$3" == cpu ]] && engine=$ENGINE_CPU
  "$engine" "$1" "$2" "${args[@]}" --json --device "$3" --batch "$4" |
    grep -o '"logits_sha256":"[0-9a-f]*"' | cut -d'"' -f4
}

models=()
if [[ -f "$SHARED/models/stories260K/stories260K.gguf" ]]; then
  models+=("$SHARED/models/stories260K/stories260K.gguf")
else
  failed "stories260K missing under $SHARED/models"
fi
llama_types=f32,f16,bf16,q8_0,q4_0,q4_1,q5_0,q5_1,q2_K,q3_K,q4_K,q5_K,q6_K,iq4_nl,iq4_xs,q4_K_M
qwen2_types=q8_0,q4_K,f16
# The dry run (minutes per model on the host runtime): one type of each prompt tile family and
# one model of the other architecture; cuda_host_test (CTest) compares every type in process.
[[ $HOST == 1 ]] && llama_types=f16,q4_K qwen2_types=q8_0
"$BIN/llama_bench" --write "$TMP" --shape tiny --arch llama --type $llama_types >/dev/null
"$BIN/llama_bench" --write "$TMP" --shape tiny --arch qwen2 --type $qwen2_types >/dev/null
# qwen3's per-head norms, phi3's fused matrices, gemma2's caps and windows, gemma3's windows and
# second RoPE table, granite's multipliers, olmo2's norms, smollm3's layers without RoPE,
# exaone's attention biases (Q, K, V and output; cuda_host_test has them all).
if [[ $HOST == 0 ]]; then
  "$BIN/llama_bench" --write "$TMP" --shape tiny --arch qwen3 --type q4_0 >/dev/null
  "$BIN/llama_bench" --write "$TMP" --shape tiny --arch phi3 --type q4_K >/dev/null
  "$BIN/llama_bench" --write "$TMP" --shape tiny --arch gemma2 --type q4_K >/dev/null
  "$BIN/llama_bench" --write "$TMP" --shape tiny --arch gemma3 --type q8_0 >/dev/null
  "$BIN/llama_bench" --write "$TMP" --shape tiny --arch granite --type q5_K >/dev/null
  "$BIN/llama_bench" --write "$TMP" --shape tiny --arch olmo2 --type q5_0 >/dev/null
  "$BIN/llama_bench" --write "$TMP" --shape tiny --arch smollm3 --type q4_1 >/dev/null
  "$BIN/llama_bench" --write "$TMP" --shape tiny --arch exaone --type iq4_xs >/dev/null
fi
models+=("$TMP"/*.gguf)

check_model() {  # MODEL: its comparisons, as PASS/FAIL lines (run in a subshell)
  local m=$1 name verb ref b on got bisected=
  name=$(basename "$m" .gguf)
  for verb in run score; do
    if ! ref=$(sha "$verb" "$m" cpu 64) || [[ -z "$ref" ]]; then
      failed "$name $verb: cpu failed"
      continue
    fi
    # lanes: without the prompt paths on by default (GALLEON_CUDA_GEMM=0: no prompt GEMM tiles;
    # GALLEON_CUDA_ATTN_TILES=0: no K tiles in the attention).
    for b in 1 7 64 1lanes 7lanes 64lanes; do
      on=1
      [[ $b == *lanes ]] && on=0
      if ! got=$(GALLEON_CUDA_GEMM=$on GALLEON_CUDA_ATTN_TILES=$on sha "$verb" "$m" "$DEV" "${b%lanes}") ||
         [[ -z "$got" ]]; then
        failed "$name $verb batch $b: $DEV failed"
      elif [[ "$got" == "$ref" ]]; then
        pass "$name $verb batch $b: ${got:0:16}"
      else
        failed "$name $verb batch $b: cpu ${ref:0:16} != $DEV ${got:0:16}"
        [[ -n $bisected ]] || bisect "$verb" "$m" "${b%lanes}" "$on" "$ref"
        bisected=1
      fi
    done
  done
  return 0
}
# After a model's first mismatch: the same comparison once per setting below, each switching
# off (or back to its last GPU-checked form) one part of the path, so that one run names the
# part that differs: the K-tile attention, the prompt GEMM tiles, the tensor-core variant (t4,
# the default checked on the H200 before x4), the attention's steps 4 to 6 (lane cells), the
# plain tiles as of commit d8d1702 (one block per SM), the decoding graphs.
bisect() {  # VERB MODEL BATCH ON REF
  local s got
  for s in GALLEON_CUDA_ATTN_TILES=0 GALLEON_CUDA_GEMM=0 GALLEON_CUDA_MMA=t4 \
      GALLEON_CUDA_ATTN_COLUMNS=0 GALLEON_CUDA_PLAIN=b1 GALLEON_CUDA_GRAPHS=0; do
    # shellcheck disable=SC2163  # $s is NAME=value: export sets it
    got=$(export GALLEON_CUDA_GEMM=$4 GALLEON_CUDA_ATTN_TILES=$4 "$s"; sha "$1" "$2" "$DEV" "$3" 2>&1)
    if [[ "$got" == "$5" ]]; then echo "  bisect: with $s the same as cpu"
    else echo "  bisect: with $s still ${got:0:16}"; fi
  done
}
# LOGITS_JOBS models at a time (each compares its own), their lines then in the models' order.
par=${LOGITS_JOBS:-4}
[[ $HOST == 1 ]] && par=${LOGITS_JOBS:-2}
n=0
for m in "${models[@]}"; do
  while (( $(jobs -rp | wc -l) >= par )); do wait -n || true; done
  check_model "$m" >"$TMP/logits.$n" 2>&1 &
  n=$((n + 1))
done
wait
for ((k = 0; k < n; ++k)); do
  cat "$TMP/logits.$k"
  fails=$((fails + $(grep -c '^FAIL' "$TMP/logits.$k" || true)))
done

echo "== a bundle with a CUDA engine: install, check and run on $DEV [$(elapsed)]"
bundle_check() {
  local dir=$TMP/bundle
  mkdir -p "$dir"
  if [[ $STAGED == 1 ]]; then
    if [[ ! -d "$STAGE/lib" || ! -f "$STAGE/bundle/stories260k.galleon" ]]; then
      failed "bundle: $STAGE lacks lib/ or the bundle (run the stage step again)"
      return
    fi
    export LD_LIBRARY_PATH=$ROOT/$STAGE/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
    cp "$STAGE/bundle/"* "$dir/"
  else
    make_bundle "$BIN" "$dir"
  fi
  local g=("$BIN/galleon") out cpu gpu
  export GALLEON_HOME=$TMP/home
  if ! out=$("${g[@]}" trust add "$dir/gpu.pub" 2>&1 && "${g[@]}" install "$dir/stories260k.galleon" 2>&1); then
    echo "$out" | tail -5
    failed "bundle: galleon install"
    return
  fi
  if out=$("${g[@]}" check stories260k --device "$DEV" 2>&1); then
    pass "galleon check stories260k --device $DEV: ${out##*: }"
  else
    echo "$out" | tail -3
    failed "galleon check stories260k --device $DEV"
  fi
  local args=(run stories260k -p "Once upon a time" --temperature 0 --max-tokens 32 --json)
  if cpu=$("${g[@]}" "${args[@]}" --device cpu) && gpu=$("${g[@]}" "${args[@]}" --device "$DEV"); then
    cpu=$(grep -o '"logits_sha256":"[0-9a-f]*"' <<<"$cpu"); gpu=$(grep -o '"logits_sha256":"[0-9a-f]*"' <<<"$gpu")
    if [[ -n "$cpu" && "$cpu" == "$gpu" ]]; then pass "galleon run stories260k --device $DEV: ${gpu:17:16}"
    else failed "galleon run stories260k: cpu $cpu != $DEV $gpu"; fi
  else
    failed "galleon run stories260k --device $DEV"
  fi
  unset GALLEON_HOME
}
bundle_check

if [[ $HOST == 1 && "${SKIP_SPEED:-0}" != 1 ]]; then
  # No speed table (llama_bench has no CUDA backend here): the profile's path only.
  echo "== the profile's output on the host runtime [$(elapsed)]"
  for on in 1 0; do
    echo "-- stories260K, GALLEON_CUDA_GEMM=$on GALLEON_CUDA_ATTN_TILES=$on"
    GALLEON_CUDA_PROFILE=1 GALLEON_CUDA_GEMM=$on GALLEON_CUDA_ATTN_TILES=$on "$ENGINE_GPU" run \
      "$SHARED/models/stories260K/stories260K.gguf" -p "$PROMPT" --max-tokens 1 --device "$DEV" \
      --json 2>&1 >/dev/null | head -20 || true
  done
elif [[ "${SKIP_SPEED:-0}" != 1 ]]; then
  echo "== speed (tok/s; prompt 128 / 64 tokens, generate 32 / 16) [$(elapsed)]"
  # GPU rows show the device in the isa column (+gemm+tiles: the defaults); bw use is computed
  # for CPU rows only. Then 512-token prompts (as llama.cpp's figures), the mean of 3 runs.
  # The models are synthesized once (--save).
  timeout "$SPEED_TIMEOUT" bash -c "
    '$BIN/llama_bench' --shape 124m --type f16,q8_0,q4_0,q4_K --device cpu,$DEV \
      --threads $JOBS -p 128 -n 32 -r 1 --save '$TMP' &&
    '$BIN/llama_bench' --shape 1.1b --type f16,q8_0,q4_0,q4_K --device cpu,$DEV \
      --threads $JOBS -p 64 -n 16 -r 1 --save '$TMP' | tail -n +4 &&
    echo '-- 1.1B, 512 tokens: the defaults (y4, column warps; Q4_K_M synthesized here: the last row)' &&
    '$BIN/llama_bench' --shape 1.1b --type q4_0,q8_0,q4_K,f16,q4_K_M --device $DEV \
      -p 512 -n 16 -r 3 --save '$TMP' | tail -n +4 &&
    echo '-- 1.1B Q4_K and Q4_K_M with x4 (the default before y4: Q4_K blocks read as t4 does)' &&
    '$BIN/llama_bench' --shape 1.1b --type q4_K,q4_K_M --device $DEV --cuda-mma x4 \
      -p 512 -n 16 -r 3 --save '$TMP' | tail -n +4 &&
    echo '-- 1.1B Q4_0: the defaults before (t4, lane cells), then 16 rows per attention block' &&
    GALLEON_CUDA_ATTN_COLUMNS=0 '$BIN/llama_bench' --shape 1.1b --type q4_0 --device $DEV \
      --cuda-mma t4 -p 512 -n 16 -r 3 --save '$TMP' | tail -n +4 &&
    GALLEON_CUDA_ATTN_ROWS=16 '$BIN/llama_bench' --shape 1.1b --type q4_0 --device $DEV \
      -p 512 -n 16 -r 3 --save '$TMP' | tail -n +4 &&
    echo '-- 124M Q4_0 and Q8_0, 512 tokens: the defaults, then GALLEON_CUDA_ATTN_ROWS=32 (3 heads x 10 tokens), 16' &&
    '$BIN/llama_bench' --shape 124m --type q4_0,q8_0 --device $DEV -p 512 -n 16 -r 3 \
      --save '$TMP' | tail -n +4 &&
    GALLEON_CUDA_ATTN_ROWS=32 '$BIN/llama_bench' --shape 124m --type q4_0,q8_0 --device $DEV \
      -p 512 -n 16 -r 3 --save '$TMP' | tail -n +4 &&
    GALLEON_CUDA_ATTN_ROWS=16 '$BIN/llama_bench' --shape 124m --type q4_0,q8_0 --device $DEV \
      -p 512 -n 16 -r 3 --save '$TMP' | tail -n +4" | grep -v '^(model kept' ||
    echo "(speed table stopped after ${SPEED_TIMEOUT}s or failed; not a correctness check)"
  # Where a prompt's GPU time goes (GALLEON_CUDA_PROFILE=1: each step kind's kernel time; the
  # kernels loaded when the context is made, so that no step's first launch loads its kernel).
  export CUDA_MODULE_LOADING=EAGER
  # [SHAPE:]TYPE/MMA variant/ATTN_COLUMNS/ATTN_ROWS (1.1B unless named; 859 tokens: 32 rows
  # do not fit, 16 do)
  for mv in q4_0/// q4_0///16 q4_K/// q4_K/x4// f16/// 124m:q4_0/// 124m:q4_0///16; do
    IFS=/ read -r t v c r <<<"$mv"
    shape=1.1b
    [[ $t == *:* ]] && shape=${t%%:*} t=${t#*:}
    m=$TMP/llama-$shape-$t.gguf
    [[ -f "$m" ]] || continue
    echo "-- $(basename "$m" .gguf), ${v:+GALLEON_CUDA_MMA=$v, }${c:+GALLEON_CUDA_ATTN_COLUMNS=$c, }${r:+GALLEON_CUDA_ATTN_ROWS=$r, }the defaults otherwise"
    GALLEON_CUDA_ATTN_ROWS=${r:-0} GALLEON_CUDA_ATTN_COLUMNS=${c:-1} GALLEON_CUDA_MMA=$v \
      GALLEON_CUDA_PROFILE=1 timeout 60 \
      "$ENGINE_GPU" run "$m" -p "$LONG_PROMPT" --max-tokens 1 --batch 1024 --device "$DEV" \
      --json 2>&1 >/dev/null | head -20 || true
  done
fi

echo "== done in $(elapsed): $fails failed check(s)"
[[ $fails -eq 0 ]]
