"""Checkpoint files written atomically: a crash while saving leaves the previous file intact."""

from __future__ import annotations

import errno
import os
import re
from pathlib import Path
from typing import Any

import torch
from lightning.fabric.utilities.types import _PATH
from lightning.pytorch.plugins.io import TorchCheckpointIO

from seqlab.errors import WriteError


class AtomicCheckpointIO(TorchCheckpointIO):
    """Saves to a temporary file beside the target, syncs it to disk, then renames it over the
    target (``os.replace`` is atomic on POSIX and Windows). Remote paths (``s3://``, ...) keep
    Lightning's own writer."""

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: _PATH, storage_options: Any | None = None
    ) -> None:
        if "://" in str(path):
            super().save_checkpoint(checkpoint, path, storage_options)
            return
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(f".{path.name}.{os.getpid()}.partial")
        try:
            with open(partial, "wb") as file:
                torch.save(checkpoint, file)
                file.flush()
                os.fsync(file.fileno())
            os.replace(partial, path)
        except (OSError, RuntimeError) as error:
            reason = disk_full(error)
            if reason is None:
                raise
            raise WriteError(
                f"{path}: the checkpoint could not be written, disk full ({reason}); the "
                f"previous {path.name}, if any, is intact. Free space on that disk (or set "
                "paths.log_dir to another one), then resume with ckpt_path=last"
            ) from error
        finally:
            partial.unlink(missing_ok=True)


def disk_full(error: BaseException) -> str | None:
    """How ``error`` says the disk is full, or None. Written to a file object, a full disk
    raises ENOSPC (EDQUOT: over quota); torch's zip writer, given a path, says only that its
    position is off ("unexpected pos 704 vs 598") after a short write."""
    if isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT):
        return os.strerror(error.errno)
    found = re.search(r"unexpected pos \d+ vs \d+", str(error))
    if isinstance(error, RuntimeError) and found:
        return f"torch's writer stopped part-way: {found[0]}"
    return None
