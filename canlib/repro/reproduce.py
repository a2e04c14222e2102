"""Execute the numbered notebooks with papermill into versioned results.

``reproduce("synthetic")`` runs ``notebooks/NN_*.ipynb`` in order, each in a fresh
``python3`` kernel, with :func:`notebook_parameters`. Executed notebooks and tables go to
``results/<profile>/``, figures to ``figures/<profile>/``; ``manifest.json`` records the
environment and, per notebook, wall time, peak memory and status. Trained models are cached
by config hash under ``results/<profile>/runs/``, so an interrupted reproduction started
again redoes only what is missing; the previous manifest is kept as
``manifest.previous.json``.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from pathlib import Path
from typing import Any, Self

import psutil

from canlib import trunk
from canlib.config import parse_overrides
from canlib.errors import CanlibError, ConfigError
from canlib.repro.experiments import profile
from canlib.repro.results import REPO_ROOT, environment

log = logging.getLogger(__name__)

# Per-notebook limits (seconds): papermill stops a cell that runs longer.
TIMEOUTS = {"smoke": 600, "synthetic": 3600, "paper": 7 * 24 * 3600}


def notebooks(folder: Path | None = None) -> list[Path]:
    """The numbered notebooks ``NN_name.ipynb`` of ``folder``, in reading order."""
    folder = folder or REPO_ROOT / "notebooks"
    return sorted(folder.glob("[0-9][0-9]_*.ipynb"))


def output_dirs(profile_name: str, root: Path | None = None) -> dict[str, Path]:
    """Where a profile's results, figures, runs and executed notebooks go."""
    root = root or REPO_ROOT
    results = root / "results" / profile_name
    return {
        "results": results,
        "figures": root / "figures" / profile_name,
        "runs": results / "runs",
        "notebooks": results / "notebooks",
    }


def reproduce(
    profile_name: str,
    *,
    overrides: list[str] | dict[str, Any] | None = None,
    device: str = "auto",
    only: list[str] | None = None,
    force: bool = False,
    root: Path | None = None,
) -> dict[str, Any]:
    """Run the notebooks of ``profile_name`` and return the manifest.

    ``overrides`` apply in every notebook (``"data.data_root=/data"``); ``only`` names the
    notebooks to run (``["03", "04"]``, default all); ``force`` retrains cached runs; ``root``
    is the repository root holding ``notebooks/``, ``results/`` and ``figures/``.

    Raises:
        ConfigError: a bad profile, override or notebook number, before anything runs.
        CanlibError: a notebook failed; the partial executed notebook is kept.
    """
    # Imported here: canlib trains and evaluates without papermill (a GPU box with torch).
    import papermill

    override_list = [f"{k}={v}" for k, v in parse_overrides(overrides).items()]
    # Validate everything before the first (possibly hour-long) notebook starts.
    base = profile(profile_name, override_list + [f"train.device={device}"])
    root = root or REPO_ROOT
    selected = _select(notebooks(root / "notebooks"), only, root / "notebooks")
    dirs = output_dirs(profile_name, root)
    for path in dirs.values():
        path.mkdir(parents=True, exist_ok=True)
    manifest_path = dirs["results"] / "manifest.json"
    previous = _keep_previous_manifest(manifest_path)  # a partial run (only) keeps its entries
    manifest: dict[str, Any] = {
        "profile": profile_name,
        "overrides": override_list,
        "device": device,
        "environment": environment(),
        "started": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "notebooks": dict(previous.get("notebooks", {})) if only else {},
    }
    parameters = notebook_parameters(
        profile_name, override_list, device, force, dirs, cwd=root / "notebooks"
    )
    for nb in selected:
        out = dirs["notebooks"] / nb.name
        entry: dict[str, Any] = {"status": "running"}
        manifest["notebooks"][nb.stem] = entry
        _write_json(manifest_path, manifest)
        entry.update(_execute(papermill, nb, out, parameters, TIMEOUTS[profile_name], root))
        manifest["finished"] = time.strftime("%Y-%m-%dT%H:%M:%S")
        manifest["wall_seconds"] = round(
            sum(e.get("wall_seconds", 0.0) for e in manifest["notebooks"].values()), 1
        )
        manifest["trunk"] = trunk.describe(base)
        _write_json(manifest_path, manifest)
        if entry["status"] == "failed":
            raise CanlibError(
                f"notebook {nb.name} failed ({entry['error']}); the partial notebook is in {out}"
            )
    return manifest


def _execute(
    papermill: Any, nb: Path, out: Path, parameters: dict, timeout: int | None, root: Path
) -> dict[str, Any]:
    """Run one notebook into ``out``; its status (and error), wall time and peak memory."""
    entry: dict[str, Any] = {}
    started = time.monotonic()
    with _PeakMemory() as memory:
        try:
            papermill.execute_notebook(
                str(nb),
                str(out),
                parameters=parameters,
                kernel_name="python3",
                cwd=str(nb.parent),
                progress_bar=False,
                execution_timeout=timeout,
            )
            entry["status"] = "ok"
        except papermill.PapermillExecutionError as exc:
            entry["status"] = "failed"
            entry["error"] = f"{exc.ename}: {exc.evalue}"
        _relative_papermill_paths(out, root)
    entry["wall_seconds"] = round(time.monotonic() - started, 1)
    entry["peak_rss_mib"] = round(memory.peak_mib, 1)
    return entry


def notebook_parameters(
    profile_name: str,
    overrides: list[str],
    device: str,
    force: bool,
    dirs: dict[str, Path],
    cwd: Path,
) -> dict[str, Any]:
    """The papermill parameters of every notebook of a reproduction.

    The reader's parameters (``profile``, ``overrides``, ``device``) go in as themselves; the
    plumbing (``force`` and the output folders) in the one ``options`` dict that
    :func:`canlib.repro.notebook.start` reads. Folders are relative to the notebooks' working
    folder ``cwd``, so executed notebooks hold no path of the machine that ran them.
    """
    return {
        "profile": profile_name,
        "overrides": overrides,
        "device": device,
        "options": {
            "force": force,
            "results_dir": os.path.relpath(dirs["results"], cwd),
            "figures_dir": os.path.relpath(dirs["figures"], cwd),
            "runs_dir": os.path.relpath(dirs["runs"], cwd),
        },
    }


def _select(found: list[Path], only: list[str] | None, folder: Path) -> list[Path]:
    if not found:
        raise ConfigError(f"no numbered notebooks (NN_*.ipynb) in {folder}")
    if not only:
        return found
    by_number = {p.name[:2]: p for p in found}
    unknown = [n for n in only if n.zfill(2) not in by_number]
    if unknown:
        raise ConfigError(
            f"--only {','.join(unknown)}: no such notebook; have {', '.join(by_number)}"
        )
    return [by_number[n.zfill(2)] for n in only]


def _relative_papermill_paths(path: Path, root: Path) -> None:
    """Papermill records the absolute input and output paths: keep them relative to ``root``."""
    import nbformat  # with papermill, only for reproduce (see reproduce)

    if not path.is_file():
        return
    book = nbformat.read(path, as_version=4)
    meta = book.metadata.get("papermill", {})
    for key in ("input_path", "output_path"):
        if meta.get(key):
            meta[key] = os.path.relpath(meta[key], root)
    nbformat.write(book, path)


def _keep_previous_manifest(path: Path) -> dict[str, Any]:
    if not path.exists():
        return {}
    backup = path.with_name("manifest.previous.json")
    backup.write_text(path.read_text())
    log.info("keeping the previous manifest as %s", backup)
    return json.loads(backup.read_text())


def _write_json(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=2))
    tmp.replace(path)


class _PeakMemory:
    """Polls the resident memory of this process and its children (the kernel)."""

    def __init__(self, interval: float = 0.5):
        self.interval = interval
        self.peak_mib = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _poll(self) -> None:
        me = psutil.Process()
        while not self._stop.is_set():
            total = 0
            for proc in [me, *me.children(recursive=True)]:
                try:
                    total += proc.memory_info().rss
                except psutil.Error:
                    continue
            self.peak_mib = max(self.peak_mib, total / 2**20)
            self._stop.wait(self.interval)
