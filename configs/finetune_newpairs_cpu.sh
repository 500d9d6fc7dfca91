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
HELD_OUT=${HELD_OUT:-benchmarks/results/counterfactual_prompts.json}
# the recolour recipe with new pairs allowed (except the held-out ones), 600 steps, at most 35 minutes;
# 6,000 recoloured + 6,000 replay rows, ~1 min to build
OUT=${OUT:-runs/newpairs} MAX_STEPS=600 MAX_MINUTES=35 \
  PAIR_ARGS="--min_pair_rows 0 --held_out_pairs $HELD_OUT --new_pair_share 0.5" \
  exec bash "$(dirname "$0")/finetune_recolour_cpu.sh"
