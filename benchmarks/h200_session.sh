#!/usr/bin/env bash
# The GPU measurements of benchmarks/results/*_h200*: what ran on a lent NVIDIA H200, in the order it ran.
#
# The lent machine reaches no registry and no Hub, and each call carries at most 64 MiB, so its inputs travel in an
# ignored folder, .xfer/ (made by the `pack` step on a machine that has them):
#   .xfer/base/  the wheels the machine's image lacks or holds too old (transformers, datasets, seqeval, gguf),
#                data.tgz (the shared CoNLL-2003, SQuAD, SST-2 and SciFact files), tok.tgz (the converted 270M's config
#                and tokenizer, which the random-weight 1B benchmark reuses), gguf.sha256
#   .xfer/g1..g4 the embedded Gemma 3 270M GGUF in four pieces (reassembled and checked against gguf.sha256)
# One call carries one of these folders. Between calls the machine keeps /tmp but not an untracked .xfer/ in the
# checkout, so each call first copies what it carried to /tmp/x, and the steps read XFER=/tmp/x:
#
#   bash benchmarks/h200_session.sh pack                                    # here: fill .xfer/
#   mkdir -p /tmp/x && cp -r .xfer/* /tmp/x/           # there: one call per piece, carry=[.xfer/g1], then g2 ...
#   cp -r .xfer/* /tmp/x/ && XFER=/tmp/x bash benchmarks/h200_session.sh perf   # carry=[.xfer/base]: speed, MFU
#   XFER=/tmp/x bash benchmarks/h200_session.sh finetune                       # the token-task runs
#
# Results go to $OUT (the device tool's return folder; ./h200-out elsewhere) as results.tgz plus a log.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-$PWD/h200-out}
X=${XFER:-$PWD/.xfer}  # XFER: where the pieces were gathered, when calls carried them one at a time
mkdir -p "$OUT"

setup() {
    if [ -z "${NO_INSTALL:-}" ]; then  # NO_INSTALL=1: a dry run with this machine's own packages
        python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$X/site" \
            "$X"/base/whl/*.whl || exit 1
    fi
    export PYTHONPATH=$X/site:$PWD PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
    export GEMMA_ENCODER_DATA=$X/data
    [ -d "$X/data" ] || tar xzf "$X/base/data.tgz" -C "$X"
    [ -d "$X/tokdir" ] || tar xzf "$X/base/tok.tgz" -C "$X"
    nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || true
    python3 -c "import torch, transformers, datasets, pyarrow, seqeval, torchmetrics, gguf
import gemma_encoder_hf.harness.token_tasks, gemma_encoder_hf.harness.adaptation
print('torch', torch.__version__, 'transformers', transformers.__version__, 'datasets', datasets.__version__,
      'pyarrow', pyarrow.__version__, torch.cuda.is_available() and torch.cuda.get_device_name())" || exit 1
}

case "${1:-}" in
pack)
    G=$(python3 -c "from gemma_encoder_hf.integrations.conversion import embedded_gguf_path as p; print(p())")
    E=$(python3 -c "from gemma_encoder_hf.harness.training import encoder_dir; print(encoder_dir('embedded'))")
    rm -rf "$X" && mkdir -p "$X/base/whl" /tmp/h200-pack/tokdir
    python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 -d "$X/base/whl" \
        transformers==5.25.0 datasets==5.2.0 dill==0.4.1 multiprocess==0.70.19 gguf==0.19.0
    python3 -m pip wheel -q --no-deps -w "$X/base/whl" seqeval==1.2.2
    cp "$E"/config.json "$E"/tokenizer.json "$E"/tokenizer_config.json /tmp/h200-pack/tokdir/
    tar czf "$X/base/tok.tgz" -C /tmp/h200-pack tokdir
    tar czf "$X/base/data.tgz" -C "$PWD/../shared" data/conll2003 data/squad data/sst2 data/scifact/corpus.jsonl \
        data/scifact/queries.train.jsonl data/scifact/candidates
    sha256sum "$G" | cut -d' ' -f1 >"$X/base/gguf.sha256"
    split -n 4 -d "$G" /tmp/h200-pack/part.
    for i in 1 2 3 4; do mkdir -p "$X/g$i" && mv "/tmp/h200-pack/part.0$((i - 1))" "$X/g$i/part"; done
    du -sh "$X"/*
    ;;
perf)
    setup
    R=$X/perf && mkdir -p "$R"
    B="python3 benchmarks/bench_encoder.py --config 1b --device cuda --dtype bfloat16 --model-dir $X/tokdir --out $R"
    # 1. uniform batches up to 64k tokens (the MFU target), SST-2 sentences and SciFact pairs in batches of 32, LoRA
    timeout 80 $B --uniform 16x512,64x512,128x512 --sst2-batches 8 --scifact-batches 4 --repeats 5 \
        --lora-batches 4 --tag cuda_h200_1b 2>&1 | tee -a "$OUT/log.txt"
    # 2. the variable-length workloads in batches of 256, as bulk inference runs them
    timeout 40 $B --uniform "" --batch-size 256 --sst2-batches 4 --scifact-batches 0 --repeats 5 --lora-batches 0 \
        --tag cuda_h200_1b_batch256 2>&1 | tee -a "$OUT/log.txt"
    # 3. every layer of both models torch.compiled, uniform batches
    timeout 90 $B --uniform 64x512,128x512 --sst2-batches 0 --scifact-batches 0 --repeats 5 --lora-batches 0 \
        --compile --tag cuda_h200_1b_compiled 2>&1 | tee -a "$OUT/log.txt"
    tar czf "$OUT/results.tgz" -C "$X" perf
    ;;
finetune)
    setup
    if [ ! -f "$X/model.gguf" ]; then
        cat "$X"/g1/part "$X"/g2/part "$X"/g3/part "$X"/g4/part >"$X/model.gguf"
        echo "$(cat "$X/base/gguf.sha256")  $X/model.gguf" | sha256sum -c - || exit 1
    fi
    MODEL=${MODEL:-$X/model.gguf}
    R=$X/finetune && mkdir -p "$R"
    # Convert once (runs/converted), so the runs below share one encoder folder.
    python3 -c "from gemma_encoder_hf.harness.training import encoder_dir; print(encoder_dir('$MODEL'))" || exit 1
    C="--task conll2003 --max-length 64 --epochs 1"
    Q="--task squad --max-length 384 --epochs 2"
    N=${FULL:-0}  # 0: every training sentence / question
    TOP2="--modes bidirectional-top causal --bidirectional-layers 2"  # SQuAD's recipe (the top 2 layers) against causal
    # One run at a time, in order of priority; whatever the time limit leaves undone is simply missing. Seven
    # processes at once ran at 1.7-3 s per step on the H200, no faster than two CPU cores: 16 threads each on 16
    # cores, and seven CUDA contexts time-sliced on one GPU; which of the two it was is not known.
    RUNS=(
        "conll_full_s0|$C --train-examples $N --seeds 0 --modes bidirectional causal"
        "squad_2000_s0|$Q --train-examples ${SQUAD_N:-2000} --seeds 0 $TOP2"
        "conll_4000_mntp|$C --train-examples ${CONLL_MID:-4000} --seeds 0 --modes bidirectional+mntp"
        "conll_full_s1|$C --train-examples $N --seeds 1 --modes bidirectional causal"
        "squad_2000_s1|$Q --train-examples ${SQUAD_N:-2000} --seeds 1 $TOP2"
        "squad_2000_mntp|$Q --train-examples ${SQUAD_N:-2000} --seeds 0 --modes bidirectional+mntp"
    )
    DEADLINE=$((SECONDS + ${BUDGET:-380}))
    for run in "${RUNS[@]}"; do
        LEFT=$((DEADLINE - SECONDS))
        [ "$LEFT" -gt 30 ] || break
        OMP_NUM_THREADS=8 timeout "$LEFT" python3 benchmarks/token_tasks.py --device "${DEVICE:-cuda}" \
            --model "$MODEL" ${run#*|} --out "$R/${run%%|*}" >"$R/${run%%|*}.log" 2>&1
    done
    grep -h '^{"mode"' "$R"/*.log | tee -a "$OUT/log.txt"
    tail -n 3 "$R"/*.log >>"$OUT/log.txt"
    tar czf "$OUT/results.tgz" -C "$X" finetune
    ;;
*)
    echo "usage: $0 pack|perf|finetune" >&2
    exit 2
    ;;
esac
