"""OmegaConf resolvers the configs use; registered when ``seqlab`` is imported."""

from __future__ import annotations

import os

from omegaconf import OmegaConf


def run_id(default: str) -> str:
    """``slurm-<job id>`` inside a SLURM batch job, else ``default`` (a timestamp).

    A job that SLURM re-queues (pre-emption, time limit) runs again under the same job id, so it
    lands in the same run folder and resumes from the checkpoint it left there. Interactive
    allocations (``salloc``, ``srun --pty bash``) keep timestamped folders: several runs share
    their job id.
    """
    job = os.environ.get("SLURM_ARRAY_JOB_ID") or os.environ.get("SLURM_JOB_ID")
    if job is None or os.environ.get("SLURM_JOB_NAME") in ("bash", "interactive"):
        return default
    task = os.environ.get("SLURM_ARRAY_TASK_ID")
    return f"slurm-{job}" + (f"_{task}" if task else "")


def register_resolvers() -> None:
    if not OmegaConf.has_resolver("seqlab.run_id"):
        OmegaConf.register_new_resolver("seqlab.run_id", run_id, use_cache=True)
