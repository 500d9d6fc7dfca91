#!/usr/bin/env bash
# Portrait (3:4) model on CPU: the shipped stage 1 and the shipped transformer moved to a 16 x 12 token grid,
# then stage 2 fine-tuned on 16 x 12 grids of the high-resolution train photos (issue "catalogue resolution":
# a 192x256 output should not spend 4 of its 16 token columns on white margin).
#
#   bash configs/finetune_portrait_cpu.sh
#
# 1. conversion/square_to_portrait.py: image tokenizer and decoders unchanged (convolutional; the tokenizer now
#    reads 64 x 48 px, decoder_hr paints 256 x 192), transformer on a 16 x 12 grid whose column embeddings are the
#    shipped model's columns 2..13 (where a 3:4 photo sits on its padded 64-px square).
# 2. m6-fashion finetune on the 15,566 high-resolution train photos, each read at 64 x 48 px (pre-tokenised once
#    and cached), all transformer weights, bf16 autocast, EMA of the weights for the result.
# Rerunning resumes from the newest checkpoint. Then evaluate it at the catalogue size:
#   m6-fashion evaluate --model runs/portrait/model --height 256 --width 192 \
#     --data_dir ../shared/data/fashion-product-images-hr --num_samples 798 --batch_size 16 \
#     --transformer_dtype bfloat16 --threads 2 --out runs/portrait/eval.json
set -euo pipefail
DATA=${DATA:-../shared/data/fashion-product-images-hr/train.parquet}
OUT=${OUT:-runs/portrait}
STEPS=${STEPS:-800}
MINUTES=${MINUTES:-60}

[[ -f "$OUT/init/model_index.json" ]] || python conversion/square_to_portrait.py --out "$OUT/init" --cols 12

RESUME=()
compgen -G "$OUT/model/checkpoint-*" > /dev/null && RESUME=(--resume_from_checkpoint latest)
OMP_NUM_THREADS=${THREADS:-2} m6-fashion finetune --data "$DATA" --model "$OUT/init" --output_dir "$OUT/model" "${RESUME[@]}" \
  --max_steps "$STEPS" --per_device_train_batch_size 32 --learning_rate 1e-4 --warmup_steps 50 \
  --ema true --ema_decay 0.998 --eval_steps 200 --save_steps 50 --logging_steps 10 --seed 0 --bf16 \
  --max_train_minutes "$MINUTES" --report_to none --disable_tqdm true --num_sample_prompts 4
