#!/bin/bash
# One SLURM array task per GPU: task I of N runs manifest jobs I, I+N, I+2N, ... (personalive batch --shard).
#   mkdir -p logs reports && sbatch --array=0-7 examples/slurm_batch.sh jobs.yaml [more batch options]
# A node with several GPUs can run one task with all of them instead: --gres=gpu:4 and add `--devices all`.
# Outputs and reports go to shared storage; finished jobs are skipped, so resubmitting the array (or one task:
# sbatch --array=3 ...) finishes what is missing. The task fails (exit 1) if any of its jobs failed.
#SBATCH --job-name=personalive
#SBATCH --gres=gpu:1
#SBATCH --cpus-per-task=4
#SBATCH --output=logs/%A_%a.log
set -euo pipefail
manifest=$1
shift
personalive batch "$manifest" --shard "$SLURM_ARRAY_TASK_ID/$SLURM_ARRAY_TASK_COUNT" \
    --report "reports/$SLURM_ARRAY_TASK_ID.json" "$@"
