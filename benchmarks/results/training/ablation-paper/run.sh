#!/bin/bash
# The paper-objective ablation (issue 26), then VAVL's reconstruction vs --missing alone.
# Single-threaded, resumable: run this script again after an interruption (finished runs are kept).
cd /work/wt/i26 || exit 1
export PYTHONPATH=/work/wt/i26 OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
date -u +"start %FT%TZ"
python -m training.ablation --root build/ablation-corpus-breath --init training/demo --freeze-video \
    --objective paper --mem-head mlp --configs foalnet,no-avel,no-mem,no-avel-no-mem --seeds 1,2,3,4,5 \
    --folds 1,2,3,4,5 --epochs 14 --patience 4 --batch-size 64 --lr 1e-3 --schedule cosine --threads 1 \
    --out benchmarks/results/training/ablation-paper
date -u +"ablation done %FT%TZ"
python -m training.ablation --root build/ablation-corpus-breath --init training/demo --freeze-video \
    --objective full --mem-head mlp --configs missing30,missing30-reconstruct --seeds 1,2,3 \
    --folds 1,2,3,4,5 --epochs 14 --patience 4 --batch-size 64 --lr 1e-3 --schedule cosine --threads 1 \
    --out benchmarks/results/training/ablation-vavl-reconstruction
date -u +"vavl done %FT%TZ"
