#!/usr/bin/env bash
# One GPU session's measurements, in the order they pay off; each step logs to $OUT (default
# ./gpu_out) and a failing step does not stop the next. Run from the repository root with
# dnastream importable (installed, or PYTHONPATH=src) and ../shared present.
#
#   bash benchmarks/gpu_session.sh tests        # GPU suites of the kernels, model and pipelines
#   bash benchmarks/gpu_session.sh tune         # tune_conv forward + backward into the cache
#   bash benchmarks/gpu_session.sh explore      # explore_plans: plan structures side by side
#   bash benchmarks/gpu_session.sh structures   # plan-structure A/Bs (circular, B = 2) and tests
#   bash benchmarks/gpu_session.sh bwd_options  # backward options of the 2-row outer plans
#   bash benchmarks/gpu_session.sh scaling      # R-row static scaling, shipped tuning entries
#   bash benchmarks/gpu_session.sh stop22       # stop 21's queue, first: the GPU tests of its new
#                                               # defaults, 512K through bench_conv, one A/B
#   bash benchmarks/gpu_session.sh stop22_tune  # ... launch tuning at B = 2 (training)
#   bash benchmarks/gpu_session.sh stop22_ncu   # ... Nsight Compute: fused 16K backward, 2-row 4K
#   bash benchmarks/gpu_session.sh eager        # eager-training path vs the operators
#   bash benchmarks/gpu_session.sh bench        # bench_conv (with the tuned cache), sparse rows,
#                                               # backward-plan A/B, training step, windows
#   bash benchmarks/gpu_session.sh pipelines    # bench_pipeline tiny (raw chunks vs always
#                                               # compressed) and the large shape
#   bash benchmarks/gpu_session.sh multi        # bench_multi_gpu: torchrun N GPUs vs one
#   bash benchmarks/gpu_session.sh all
#
# Time on an H100 (2026-11-27): tests ~5 min with pytest-xdist, tune ~4 min,
# explore ~1-2 min (parallel pre-compilation), bench ~5 min, multi ~2 min (2 GPUs).
# On an H200 (2026-11-28, stop 20): the kernel file with xdist 1.5 min, bench_conv --graphs
# 3 min. The H200 image has no pyfaidx or biopython: carry their wheels with pytest's
# (pip download --python-version 3.12 ... pyfaidx==0.9.2.2 biopython==1.88, README's device
# notes), or the pipeline and FASTA suites fail to import (results/gpu_suite_h200_stop20.log).
set -u
OUT=${OUT:-gpu_out}
mkdir -p "$OUT"
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
export DNASTREAM_CACHE_DIR=${DNASTREAM_CACHE_DIR:-$OUT/cache}
what=${1:-all}
# pytest-xdist (if importable) compiles the kernel tests' Triton specialisations in parallel
XDIST=()
python -c "import xdist" 2>/dev/null && XDIST=(-n "${GPU_TEST_WORKERS:-6}")
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader | tee "$OUT/card.txt"

step() {  # step NAME SECONDS CMD...
    local name=$1 secs=$2
    shift 2
    echo "== $name"
    timeout "$secs" "$@" >"$OUT/$name.log" 2>&1
    echo "   rc=$? ($OUT/$name.log)"
    tail -4 "$OUT/$name.log"
}

kernel_file_tests() {  # the whole GPU kernel file, every size 256-16M (~2 min with xdist)
    # (the 2^31 offsets test holds ~56 GB: alone, after the parallel run; beside the xdist
    # workers it ran them out of memory in stop 18's first call)
    step gpu_kernels_sizes 240 python -m pytest -m gpu -q -p no:cacheprovider "${XDIST[@]}" \
        tests/test_fftconv_triton.py -k "not offsets_past_2_31"
    step gpu_offsets_2_31 120 python -m pytest -m gpu -q -p no:cacheprovider \
        tests/test_fftconv_triton.py -k "offsets_past_2_31"
}

if [[ $what == tests || $what == all ]]; then
    step gpu_kernels_ops 300 python -m pytest -m gpu -q -p no:cacheprovider "${XDIST[@]}" \
        tests/test_fftconv_op.py tests/test_fftconv_sparse.py tests/test_short_conv_triton.py
    kernel_file_tests
    # the model end to end through the Triton short conv (opt-in until this passes)
    step gpu_model_short_conv 240 env DNASTREAM_SHORT_CONV=triton python -m pytest -m gpu -q \
        -p no:cacheprovider tests/test_gpu_model.py
    step gpu_pipelines 300 python -m pytest -m gpu -q -rs -p no:cacheprovider \
        tests/test_gpu_pipeline.py
fi
if [[ $what == tune || $what == all ]]; then
    step tune_forward 400 python benchmarks/tune_conv.py --write-cache --budget-s 360 \
        --case-budget-s 40
    step tune_backward 300 python benchmarks/tune_conv.py --backward --write-cache \
        --cases padded:512,padded:1024,padded:2048,padded:4096,padded:8192 --budget-s 260
    cp "$DNASTREAM_CACHE_DIR"/fftconv_plans.json "$OUT/" 2>/dev/null
    # back on the dev machine: python benchmarks/ship_tuned.py <files_at>/fftconv_plans.json
fi
if [[ $what == explore || $what == all ]]; then
    # plan structures the launch tuner cannot change (fused limit, inner split, row tiles)
    step explore_plans 400 python benchmarks/explore_plans.py --warm-jobs 14
fi
if [[ $what == bench || $what == all ]]; then
    step bench_conv 430 python benchmarks/bench_conv.py --graphs --csv "$OUT/bench_conv.csv"
    # forward+backward: GPU kernel time against host time per step
    step profile_backward 120 python benchmarks/profile_backward.py --sizes 256,512,1024,4096
    step bench_conv_sparse 200 python benchmarks/bench_conv.py --freq-keep 0.25 \
        --sizes 2048,4096,8192 --modes padded,gated_padded,padded_bwd
    # backward plans of the multi-pass sizes side by side (with errors against float64), and
    # a HyenaDNA-large training step with the default dispatch against torch.fft
    step ab_backward_plans 200 python benchmarks/ab_backward_plans.py \
        --sizes 131072,1048576,2097152,4194304 --variants separate,fp32buf,bf16buf --rounds 2
    step ab_backward_plans_gated 120 python benchmarks/ab_backward_plans.py \
        --sizes 131072,1048576 --variants fp32buf --rounds 2 --gated
    step bench_train_step 170 python benchmarks/bench_train_step.py \
        --cases 4x16384,2x65536,2x131072 --rounds 2
    step bench_blocked 150 python benchmarks/bench_blocked.py
fi
if [[ $what == structures || $what == all ]]; then
    # plan structures by inner FFT size (stop 15 measured them: results/ab_structures_*_stop15):
    # the GPU tests of the adopted ones, and the A/Bs to re-run after a kernel change
    step gpu_structures 240 python -m pytest -m gpu -q -p no:cacheprovider \
        tests/test_fftconv_triton.py -k "radix_128 or one_pair_and_circular"
    step ab_structures_circular 300 python benchmarks/ab_backward_plans.py --circular \
        --sizes 65536,131072,262144,524288,1048576 --variants inner1k,inner2k,inner4k --rounds 2
    step ab_structures_b2 300 python benchmarks/ab_backward_plans.py --batch 2 \
        --sizes 32768,131072,262144,524288 --variants inner1k,inner2k,inner4k,inner32k --rounds 2
fi
if [[ $what == bwd_options || $what == all ]]; then
    # the backward options of the 2-row plans under outer levels (stop 16 measured them,
    # results/ab_row_tile_bwd_h100_stop16.log): shared_bwd_outer (the default over 1024-point
    # inner FFTs) against the separate passes, and the options that lost (the fused backward
    # on 2-row tiles, the filter-gradient kernel without the register cap). ~6 min on an H100.
    step gpu_row_tile_bwd 240 python -m pytest -m gpu -q -p no:cacheprovider "${XDIST[@]}" \
        tests/test_fftconv_triton.py -k "row_tile_backward_options"
    step ab_row_tile_bwd 300 python benchmarks/ab_backward_plans.py \
        --sizes 131072,4194304 --rounds 2 --variants unshared,sep_nocap,fused_rows_w8_nocap
    step ab_shared_bwd 200 python benchmarks/ab_backward_plans.py \
        --sizes 32768,262144 --variants shared --rounds 2
    step ab_shared_bwd_gated 160 python benchmarks/ab_backward_plans.py \
        --sizes 131072,262144 --variants unshared,shared --rounds 2 --gated
fi
if [[ $what == scaling || $what == all ]]; then
    # static_scale on the R-row kernels (the default since stop 16) against the row maxima it
    # replaced: forward of the fused 256-2048 plans, forward+backward at 512-2K, 128K and 4M
    step gpu_static_rows 200 python -m pytest -m gpu -q -p no:cacheprovider "${XDIST[@]}" \
        tests/test_fftconv_triton.py -k "TestGPUAllSizes and static_scale_on_row_tiles"
    step explore_static_rows 200 python benchmarks/explore_plans.py --warm-jobs 14 \
        --cases padded:256,padded:1024,gated_padded:1024,padded:2048,padded:131072
    step ab_static_rows 160 python benchmarks/ab_backward_plans.py \
        --sizes 512,1024,2048,131072,4194304 --variants dynamic_rows --rounds 2
    # shipped tuning entries against plan_for's defaults, forward and forward+backward, with
    # CUDA-graph replays (the eager times of the small sizes are host bound)
    step bench_entries_untuned 150 python benchmarks/bench_conv.py --graphs --untuned \
        --sizes 256,512,1024,4096,32768,65536 --modes circular,padded,gated_padded,padded_bwd
    step bench_entries_tuned 150 python benchmarks/bench_conv.py --graphs \
        --sizes 256,512,1024,4096,32768,65536 --modes circular,padded,gated_padded,padded_bwd
fi
if [[ $what == stop22 || $what == all ]]; then
    # queued by stop 21 (~6 min). First the GPU tests of stop 21's two new defaults (the fused
    # 4096-point plan and causal 512K at B >= 3 on 2-row tiles of 8 warps; 512K also with the
    # shared backward pass), then bench_conv's 512K rows with the new plan (stop 21 measured it
    # only in an A/B: forward+backward 13.57 vs 17.66 ms), then the one combination that A/B did
    # not run: those tiles with the radix-128 2-row outer launch (uncapped, 3 per SM; forward
    # 1.22x against 1.18x with separate passes)
    step gpu_kernels_sizes 240 python -m pytest -m gpu -q -p no:cacheprovider "${XDIST[@]}" \
        tests/test_fftconv_triton.py -k "not offsets_past_2_31"
    step bench_512k 90 python benchmarks/bench_conv.py --graphs --sizes 524288 \
        --modes padded,gated_padded,padded_bwd
    step ab_512k_o3 150 python benchmarks/ab_backward_plans.py --sizes 524288 \
        --variants o3_shared --rounds 2
fi
if [[ $what == stop22_tune || $what == all ]]; then
    # queued since stop 18: two sequences per step (training at B = 2: bench_train_step's
    # 2 x 64K / 2 x 128K) run the one-pair plans, which no launch tuning has reached;
    # HyenaDNA-large's H = 256
    step tune_b2 300 python benchmarks/tune_conv.py --write-cache --budget-s 270 \
        --case-budget-s 45 --batch 2 --heads 256 --json "$OUT/tuned_b2.json" \
        --cases padded:131072,padded:262144,padded:524288,padded:2097152
    step tune_b2_backward 200 python benchmarks/tune_conv.py --backward --write-cache \
        --budget-s 180 --batch 2 --heads 256 --cases padded:131072,padded:262144
    cp "$DNASTREAM_CACHE_DIR"/fftconv_plans.json "$OUT/" 2>/dev/null
fi
if [[ $what == stop22_ncu || $what == all ]]; then
    # Nsight Compute on the fused 16K backward (10 of its 10 ms step; not yet read) and the
    # fused 4096-point 2-row kernel that stop 21 made the default
    step ncu_fused_bwd 150 ncu --profile-from-start off --clock-control none \
        --section SpeedOfLight --section WarpStateStats --section Occupancy \
        python benchmarks/profile_conv.py --cases padded:16384 --backward
    step ncu_r2_4k 100 ncu --profile-from-start off --clock-control none -k regex:_conv_kernel \
        --section SpeedOfLight --section WarpStateStats --section Occupancy \
        python benchmarks/profile_conv.py --cases padded:4096
fi
if [[ $what == eager || $what == all ]]; then
    # eager training through a plain autograd.Function (default) against the operators
    # (DNASTREAM_EAGER_OPS=off): host-bound small steps, same call. ~2 min.
    step train_step_eager 150 python benchmarks/bench_train_step.py --cases 8x1024,4x4096 \
        --rounds 2
    step train_step_operators 150 env DNASTREAM_EAGER_OPS=off \
        python benchmarks/bench_train_step.py --cases 8x1024,4x4096 --rounds 2
fi
if [[ $what == multi || $what == all ]]; then
    # torchrun on every GPU of the host against one GPU (needs >= 2 GPUs)
    step bench_multi_gpu 300 python benchmarks/bench_multi_gpu.py
fi
if [[ $what == pipelines || $what == all ]]; then
    # a fresh process's fixed cost (imports, first chunk), three times: the first pays the
    # compile and autotune caches, the later ones show what every run pays
    for i in 1 2 3; do
        step "fixed_cost_$i" 120 python -m dnastream score \
            ../shared/data/genomes/hg38_chr2_1-2333275.fa.gz --region chr2:1-300000 \
            -o "$OUT/fixed_$i.h5" --model tests/data/hyenadna_tiny_random_hf --device cuda \
            --quiet --force --stats-json "$OUT/fixed_cost_$i.json"
        python -c "import json,sys; d=json.load(open(sys.argv[1])); m=d['marks']; \
print('   imports', round(d['process_start_to_entry'], 2), 's, first chunk', \
round(m['first_chunk'] - m['loop_start'], 2), 's')" "$OUT/fixed_cost_$i.json"
    done
    step bench_pipeline_tiny 300 python benchmarks/bench_pipeline.py --device cuda --threads 8 \
        --fresh-repeats 3
    step bench_pipeline_tiny_compress_always 240 env DNASTREAM_COMPRESS_ALWAYS=1 \
        python benchmarks/bench_pipeline.py --device cuda --threads 8 --jobs embed
    step bench_pipeline_large 300 python benchmarks/bench_pipeline.py --device cuda --threads 8 \
        --model-shape large --max-bases 2000000 --fresh-repeats 2
fi
