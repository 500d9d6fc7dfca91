#!/usr/bin/env bash
# Compositional fine-tune of the shipped transformer (issue "does what the words say": colour x article pairs
# never seen in training). Like finetune_recolour_cpu.sh, but the recolour tool may give a garment ANY colour,
# creating thousands of colour x article pairs the catalogue does not have (purple jeans, pink formal shoes),
# except the 32 pairs of the counterfactual benchmark, which stay unseen (--held_out_pairs): the model is taught
# that colour and article combine freely and tested on combinations it never saw, even synthetically.
#
#   bash configs/finetune_newpairs_cpu.sh     # the CPU run that was made (2 threads, bfloat16 autocast)
#
# Rerunning resumes from the newest checkpoint (--resume_from_checkpoint latest). Then score it with
#   python benchmarks/bench_words_and_masks.py counterfactual --threads 2 --model runs/newpairs/model --guidance-scales 1 3 5 8 --out-dir runs/newpairs/bench
set -euo pipefail
TRAIN=${TRAIN:-../shared/data/fashion-product-images/train.parquet}
OUT=${OUT:-runs/newpairs}
HELD_OUT=${HELD_OUT:-benchmarks/results/counterfactual_prompts.json}

# ~1 min on one CPU thread: 6,000 recoloured + 6,000 replay rows
[[ -f "$OUT/train.parquet" ]] || python -m m6_fashion.training.recolour --train "$TRAIN" --out "$OUT/train.parquet" \
  --num_recoloured 6000 --num_replay 6000 --min_pair_rows 0 --held_out_pairs "$HELD_OUT" --new_pair_share 0.5 --seed 0

RESUME=()
compgen -G "$OUT/model/checkpoint-*" > /dev/null && RESUME=(--resume_from_checkpoint latest)
# 2.6 s per step of 16 on 2 threads of an Intel Xeon with AMX (bf16 autocast); pre-tokenising the 12,000
# photos once takes ~3 min and is cached
OMP_NUM_THREADS=2 m6-fashion finetune --data "$OUT/train.parquet" --output_dir "$OUT/model" "${RESUME[@]}" \
  --max_steps 600 --per_device_train_batch_size 16 --learning_rate 2e-4 --warmup_steps 50 \
  --eval_steps 300 --save_steps 100 --logging_steps 20 --seed 0 --bf16 --max_train_minutes 35 \
  --report_to none --disable_tqdm true \
  --sample_prompts "Men Yellow Sweatshirt" "Women Yellow Bra" "Men Red Jeans" "Men Orange Track Pants"
