#!/usr/bin/env bash
# The GPU check, a few minutes on one GPU: decode speed against transformers' generate, then
# r1kit's GRPO stage against TRL's GRPOTrainer (bench/vs_trl.py --preset gpu).
# PROFILE=1 adds the kernel tables of one r1kit rollout (CUDA graphs off) and update
# (bench/profile_gpu.py; PROFILE_PHASES=update_policy for the update alone, PROFILE_GRAPHS=1
# for the rollout with its CUDA graphs); DECODE=0 skips the decode benchmark (DECODE_PATHS:
# its paths; DECODE_PARTS=1: r1kit's decode time by part; DECODE_AGREE=1: the compiled paths'
# tokens and log-probs against the plain graphs); RUNS=2 runs both sides of
# vs_trl.py twice; SHARING_ON=1 adds r1kit's side once more with prompt_sharing = on (`auto`
# leaves it off on CUDA); COMPILE_OFF=1 adds it once more with compile = off (`auto` compiles
# the training pass and sampling's arithmetic on CUDA); DECODE_LAYERS=1 adds it once more with
# the decoder layers compiled inside the decode graphs (experimental; LAYERS_SIDE=1 runs that
# side in each of vs_trl.py's runs instead, between r1kit's and the next run's TRL side);
# LOGPROB_ROWS=N adds it once more with the reference's log-probs in no-grad passes of N rows
# (logprob_micro_batch_size; the default is one micro-batch, 32 rows); PRECISION=bf16 runs
# vs_trl.py with both sides updating the bf16 weights directly (runs D-G; the default, mixed:
# both update float32 weights, each side as its users get it by default);
# REWARD_OVERLAP=1 adds
# bench/reward_overlap.py (math-verify's checks during the rollout or after it; needs
# math-verify's wheels); SHARING_CHECK=0 skips bench/sharing_check.py (prompt sharing's
# numbers and time on the GPU); GROWTH_CHECK=0 skips bench/growth_check.py (sampling's cache
# growing and its graphs captured again: the same samples). Everything printed also goes to OUT_DIR/run.log; the figures
# go to one JSON file per benchmark (the device tool brings back 8 files at most).
#
#   bash bench/gpu.sh [OUT_DIR]
#
# The GPU machine has torch, transformers and accelerate but neither TRL nor datasets (nor
# math-verify): bring their wheels in .whl/ (made where pip works with
#   pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#     --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 -d .whl \
#     trl==1.16.0 datasets==5.2.0 dill==0.4.1 multiprocess==0.70.19 math-verify==0.9.0 \
#     latex2sympy2_extended==1.11.0 antlr4-python3-runtime==4.13.2
# ); they are installed with --no-deps into /tmp/site.
set -uo pipefail
cd "$(dirname "$0")/.."
out=${1:-${OUT:-/tmp/r1kit-gpu}}
mkdir -p "$out"
export PYTHONUNBUFFERED=1
if ls .whl/*.whl >/dev/null 2>&1; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target /tmp/site .whl/*.whl || exit 1
    export PYTHONPATH=/tmp/site
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
{ date -u; nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
  python3 -c "import torch, transformers; print('torch', torch.__version__, 'transformers', transformers.__version__)"
} 2>&1 | tee "$out/run.log"
if [ "${SHARING_CHECK:-1}" = 1 ]; then
    timeout 90 python3 bench/sharing_check.py --out "$out/sharing_check.json" 2>&1 \
        | tee -a "$out/run.log"
fi
if [ "${GROWTH_CHECK:-1}" = 1 ]; then  # the cache growing on the CUDA-graph path
    timeout 60 python3 bench/growth_check.py --out "$out/growth_check.json" 2>&1 \
        | tail -n 4 | tee -a "$out/run.log"
fi
if [ "${DECODE:-1}" = 1 ]; then
    limit=150; [ -n "${DECODE_AGREE:-}" ] && limit=210  # --agree: two more compiled rollouts
    timeout "$limit" python3 bench/decode.py --paths "${DECODE_PATHS:-hf,r1kit}" ${DECODE_PARTS:+--parts} \
        ${DECODE_AGREE:+--agree} \
        --out "$out/decode.json" 2>&1 | tee -a "$out/run.log"
fi
vs_trl=(python3 bench/vs_trl.py --preset gpu --precision "${PRECISION:-mixed}" --steps "${STEPS:-5}")
sides=trl,r1kit per_run=120
if [ "${LAYERS_SIDE:-0}" = 1 ]; then sides=trl,r1kit,r1kit-layers per_run=190; fi
timeout "$((per_run * ${RUNS:-1} + 120))" "${vs_trl[@]}" \
    --runs "${RUNS:-1}" --sides "$sides" --out "$out/vs_trl.json" 2>&1 | tee -a "$out/run.log"
if [ "${SHARING_ON:-0}" = 1 ]; then  # the same r1kit side with prompt sharing
    timeout 120 "${vs_trl[@]}" --sides r1kit \
        --prompt-sharing on --out "$out/vs_trl-sharing-on.json" 2>&1 | tee -a "$out/run.log"
fi
if [ "${COMPILE_OFF:-0}" = 1 ]; then  # the same r1kit side without torch.compile
    timeout 120 "${vs_trl[@]}" --sides r1kit \
        --compile off --out "$out/vs_trl-compile-off.json" 2>&1 | tee -a "$out/run.log"
fi
if [ "${DECODE_LAYERS:-0}" = 1 ]; then  # the same r1kit side with its decode layers compiled
    timeout 150 "${vs_trl[@]}" --sides r1kit \
        --compile-decode-layers --out "$out/vs_trl-decode-layers.json" 2>&1 | tee -a "$out/run.log"
fi
if [ -n "${LOGPROB_ROWS:-}" ]; then  # the same r1kit side with larger no-grad passes
    timeout 120 "${vs_trl[@]}" --sides r1kit \
        --logprob-rows "$LOGPROB_ROWS" --out "$out/vs_trl-rows$LOGPROB_ROWS.json" 2>&1 \
        | tee -a "$out/run.log"
fi
if [ "${REWARD_OVERLAP:-0}" = 1 ]; then  # the tiny world as a math task, rewards overlapped or not
    R1KIT_CACHE=/tmp/r1kit-cache timeout 240 python3 bench/reward_overlap.py \
        --out "$out/reward_overlap.json" 2>&1 | grep -v "^Writing" | tee -a "$out/run.log"
fi
if [ "${PROFILE:-0}" = 1 ]; then  # kernel tables (bench/profile_gpu.py)
    timeout 150 python3 bench/profile_gpu.py --phases "${PROFILE_PHASES:-generate,update_policy}" \
        --out "$out/profile" ${PROFILE_GRAPHS:+--graphs} \
        2>&1 | grep -v "^Writing" | tee -a "$out/run.log"
fi
