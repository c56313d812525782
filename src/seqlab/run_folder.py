"""One run per run folder: a lock file in it, taken before Hydra writes anything there.

Two runs in one folder (a fixed ``hydra.run.dir=...`` used twice, two ``ckpt_path=last``
resumes of one run) would overwrite each other's config, checkpoints and metrics and leave a
folder that is neither run. The first takes ``.seqlab.lock`` (an advisory ``flock``, which the
kernel lets go of when the process ends, however it ends); the second is refused in one line.
The file is removed when the run exits; one left by a killed run is stale and simply taken.
"""

from __future__ import annotations

import atexit
import fcntl
import os
import socket
import sys
from pathlib import Path
from typing import IO, Any

from hydra.experimental.callback import Callback
from lightning.fabric.utilities.rank_zero import rank_zero_only
from omegaconf import DictConfig, OmegaConf

from seqlab.errors import USER_ERROR_EXIT, ConfigError, UserError

LOCK_NAME = ".seqlab.lock"

# The folders this process holds, with their open lock files.
_held: dict[Path, IO[str]] = {}


def lock_run_folder(folder: str | Path) -> None:
    """Hold ``folder``'s lock until this process exits (made if need be); a ``ConfigError``
    names the run that holds it. Only the first process of a distributed run locks: the others
    (DDP's, started again in the same folder) work in the folder it holds."""
    path = Path(folder).resolve()
    if path in _held or getattr(rank_zero_only, "rank", 0) != 0:
        return
    check_can_make(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise ConfigError(
            f"{path}: cannot make the run folder ({error.strerror}); set hydra.run.dir (or "
            "paths.log_dir) to a folder you can write"
        ) from None
    lock = path / LOCK_NAME
    while True:
        file = lock.open("a+")
        try:
            fcntl.flock(file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            file.seek(0)
            holder = file.read().strip() or "another process"
            file.close()
            raise ConfigError(
                f"{path} is in use by another run ({holder}; lock file {lock}): give this run "
                "its own folder (hydra.run.dir=...), or wait for that one to end"
            ) from None
        # The holder may have removed the file between our open and our lock: lock anew.
        if lock.exists() and os.stat(lock).st_ino == os.fstat(file.fileno()).st_ino:
            break
        file.close()
    file.seek(0)
    file.truncate()
    file.write(f"pid {os.getpid()} on {socket.gethostname()}\n")
    file.flush()
    if not _held:
        atexit.register(release_run_folders)
    _held[path] = file


def release_run_folders() -> None:
    """Remove this process's lock files and let go of their locks."""
    for path, file in list(_held.items()):
        (path / LOCK_NAME).unlink(missing_ok=True)
        file.close()
    _held.clear()


def check_can_make(folder: Path) -> None:
    """A ``ConfigError`` where ``folder`` cannot be a folder: it, or a folder above it, is a
    file (Python would say only "Not a directory")."""
    for part in (folder, *folder.parents):
        if part.exists():
            if not part.is_dir():
                raise ConfigError(
                    f"{folder}: cannot be the run folder, {part} is a file; set hydra.run.dir "
                    "(or paths.log_dir) to a folder"
                )
            return


class RunFolderGuard(Callback):
    """Hydra's callback (``configs/hydra/default.yaml``): the run folder is checked and locked
    before Hydra makes it and writes its config there. Logging is not set up yet at that
    point, so a refusal is printed as the ``error:`` line itself."""

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        self._guard(lambda: lock_run_folder(OmegaConf.select(config, "hydra.run.dir")))

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        # Each job gets its own numbered folder below this one; only its making can fail.
        self._guard(lambda: check_can_make(Path(OmegaConf.select(config, "hydra.sweep.dir"))))

    def on_run_end(self, config: DictConfig, **kwargs: Any) -> None:
        release_run_folders()

    @staticmethod
    def _guard(check: Any) -> None:
        try:
            check()
        except UserError as error:
            for line in str(error).splitlines():
                print(f"error: {line}", file=sys.stderr)
            raise SystemExit(USER_ERROR_EXIT) from None
