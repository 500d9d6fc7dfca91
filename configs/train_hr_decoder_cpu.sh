#!/usr/bin/env bash
# High-resolution decoder for the EXISTING tokens of the shipped m6-fashion-64 pipeline (route 1 of the
# "catalogue resolution" issue): 16x16x4 tokens of the 64-px-preprocessed photo -> 256x256 (the 192x256
# photo padded to a white square). See src/m6_fashion/training/train_hr_decoder.py.
#
#   bash configs/train_hr_decoder_cpu.sh          # the CPU run that was made (1 thread, 40 min of training)
#   GPU=1 bash configs/train_hr_decoder_cpu.sh    # GPU variant (bigger batch, whole images, bf16; NOT run yet)
#
# Rerunning the same command resumes from the latest checkpoint exactly; --max_train_minutes counts the
# training time of all runs together. Tokenising the 8,056 native 192x256 train photos once (~5 min on one
# CPU thread) is not counted in it. Then: python benchmarks/bench_hr_decoder.py --threads 1
set -euo pipefail
DATA=${DATA:-../shared/data/fashion-product-images-hr}
OUT=${OUT:-runs/hr-decoder}

if [[ "${GPU:-0}" == "1" ]]; then
  # whole 256x256 images, the copied 64-px levels fine-tuned at a lower learning rate, longer warm-up
  python -m m6_fashion.training.train_hr_decoder --data "$DATA" --output_dir "$OUT-gpu" \
    --decoder_channels 256 128 64 32 16 --style_channels 128 --crop_size 0 \
    --train_batch_size 64 --learning_rate 3e-4 --base_learning_rate 5e-5 --disc_learning_rate 2e-4 \
    --grad_weight 0.5 --adv_weight 0.05 --adv_start_step 2000 --r1_gamma 1.0 --r1_every 16 \
    --max_train_steps 8000 --max_train_minutes 10 --eval_every 1000 --eval_limit 200 \
    --checkpoint_every 1000 --checkpoint_every_minutes 3 --mixed_precision bf16 --seed 0
  exit 0
fi

# CPU run (made on 2 shared cores with 1 torch thread; 1,495 steps in 40.2 min, results in
# benchmarks/results/hr_decoder.md): copied 16/32/64-px levels frozen, new 128/256-px
# levels trained on 128x128 crops; adversarial term from step 900
OMP_NUM_THREADS=1 python -m m6_fashion.training.train_hr_decoder --data "$DATA" --output_dir "$OUT" \
  --decoder_channels 256 128 64 32 16 --style_channels 128 --crop_size 128 \
  --train_batch_size 8 --learning_rate 3e-4 --base_learning_rate 0 --disc_learning_rate 2e-4 \
  --grad_weight 0.5 --adv_weight 0.05 --adv_start_step 900 --r1_gamma 1.0 --r1_every 16 \
  --max_train_steps 100000 --max_train_minutes 40 --eval_every 250 --eval_limit 48 \
  --checkpoint_every 1000 --checkpoint_every_minutes 5 --num_threads 1 --seed 0
