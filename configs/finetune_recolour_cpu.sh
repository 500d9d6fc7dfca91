#!/usr/bin/env bash
# Colour re-balancing fine-tune of the shipped transformer (issue "does what the words say": colour x article
# pairs never seen in training). Real train photos whose garment is recoloured to another colour that the
# same article type HAS in the train split (so no unseen pair is created), captions changed to match, plus as
# many unchanged random train photos (replay). See src/m6_fashion/training/recolour.py.
#
#   bash configs/finetune_recolour_cpu.sh     # the CPU run that was made (2 threads, bfloat16 autocast)
#
# Rerunning resumes from the newest checkpoint (--resume_from_checkpoint latest). Then score it with
#   python benchmarks/bench_words_and_masks.py counterfactual --threads 2 --model runs/recolour/model --out-dir runs/recolour/bench
#
# finetune_newpairs_cpu.sh reuses this recipe with other data (PAIR_ARGS), steps (MAX_STEPS) and time (MAX_MINUTES).
set -euo pipefail
TRAIN=${TRAIN:-../shared/data/fashion-product-images/train.parquet}
OUT=${OUT:-runs/recolour}
PAIR_ARGS=${PAIR_ARGS:---min_pair_rows 3}
MAX_STEPS=${MAX_STEPS:-1200}
MAX_MINUTES=${MAX_MINUTES:-70}

# ~1 min on one CPU thread: 6,000 recoloured + 6,000 replay rows
# shellcheck disable=SC2086  # PAIR_ARGS holds several arguments
[[ -f "$OUT/train.parquet" ]] || python -m m6_fashion.training.recolour --train "$TRAIN" --out "$OUT/train.parquet" \
  --num_recoloured 6000 --num_replay 6000 $PAIR_ARGS --seed 0

RESUME=()
compgen -G "$OUT/model/checkpoint-*" > /dev/null && RESUME=(--resume_from_checkpoint latest)
# 2.6 s per step of 16 on 2 threads of an Intel Xeon with AMX (bf16 autocast); pre-tokenising the 12,000
# photos once takes ~3 min and is cached
OMP_NUM_THREADS=2 m6-fashion finetune --data "$OUT/train.parquet" --output_dir "$OUT/model" "${RESUME[@]}" \
  --max_steps "$MAX_STEPS" --per_device_train_batch_size 16 --learning_rate 2e-4 --warmup_steps 50 \
  --eval_steps 300 --save_steps 100 --logging_steps 20 --seed 0 --bf16 --max_train_minutes "$MAX_MINUTES" \
  --report_to none --disable_tqdm true \
  --sample_prompts "Men Yellow Sweatshirt" "Women Yellow Bra" "Men Red Jeans" "Men Orange Track Pants"
