"""How far the notebooks' numbers move between CPUs, and the reference that nbval checks.

Floating-point results depend on which kernels a CPU selects (AVX-512, AVX2, SSE; oneDNN's
convolution algorithms; thread counts), and short training runs amplify the rounding. This
script measures that spread on one machine by running every notebook row of a profile
(default ``smoke``, what CI re-executes) once per numeric setting, each in its own process:

| setting | environment / override |
| --- | --- |
| default | as the machine is |
| avx2 | ``ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2`` |
| sse41 | ``ATEN_CPU_CAPABILITY=default ONEDNN_MAX_CPU_ISA=SSE41`` (no vector units in ATen) |
| aten-default | ``ATEN_CPU_CAPABILITY=default`` (oneDNN as the machine is) |
| threads-2 | ``--set train.threads=2`` with ``OMP_NUM_THREADS=2`` |

It prints, per quantity, the largest range (max - min over settings) across all rows, and
with ``--write`` stores ``notebooks/reference/<profile>.json``: the midpoint of each value
over the settings, and the tolerances ``canlib.repro.notebook.compare_with_reference`` applies:

* loss parts of the untrained model on a fixed batch: relative, ``max(1e-4, 10 x range)``;
* metrics (untrained and trained): ``max(2 x range, floor)`` points, where the floor is one
  query's worth of a rank metric (100 / queries) and of mAP / mINP (a near tie that flips on
  another CPU moves a single query's AP by up to that much).

Usage: ``python benchmarks/numeric_spread.py [--profile smoke] [--write] [--jobs 2]``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SETTINGS: dict[str, tuple[dict[str, str], list[str]]] = {
    "default": ({}, []),
    "avx2": ({"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2"}, []),
    "sse41": ({"ATEN_CPU_CAPABILITY": "default", "ONEDNN_MAX_CPU_ISA": "SSE41"}, []),
    "aten-default": ({"ATEN_CPU_CAPABILITY": "default"}, []),
    "threads-2": ({"OMP_NUM_THREADS": "2"}, ["train.threads=2"]),
}
QUANTITIES = ("loss", "untrained", "trained")


def measure(name: str, profile: str, workdir: Path) -> dict:
    """Run every row under one setting in a fresh process; returns its values."""
    env_extra, overrides = SETTINGS[name]
    out = workdir / f"{name}.json"
    code = (
        "import json, sys, torch; from canlib.repro.notebook import reference_values; "
        f"v = reference_values({profile!r}, {str(workdir / name)!r}, {overrides!r}); "
        "v['_capability'] = torch.backends.cpu.get_cpu_capability(); "
        f"json.dump(v, open({str(out)!r}, 'w'))"
    )
    env = {**os.environ, **env_extra, "CANLIB_CACHE": str(workdir / name / "cache")}
    start = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-c", code], env=env, cwd=REPO, capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        raise RuntimeError(f"setting {name} failed:\n{done.stderr[-3000:]}")
    values = json.loads(out.read_text())
    print(
        f"{name:>13}: {time.monotonic() - start:5.0f} s, ATen capability "
        f"{values.pop('_capability')}",
        flush=True,
    )
    return values


def spread(runs: dict[str, dict]) -> tuple[dict, dict]:
    """Midpoints of every value over the settings, and the largest range per quantity/name.

    Loss ranges are relative to the value (floored at 1); metric ranges are in points.
    """
    first = next(iter(runs.values()))
    midpoints: dict = {}
    largest: dict = {q: {} for q in QUANTITIES}
    for table, rows in first.items():
        for row, entry in rows.items():
            mid = {"config_hash": entry["config_hash"]}
            for quantity in QUANTITIES:
                mid[quantity] = {}
                for key in entry[quantity]:
                    values = [run[table][row][quantity][key] for run in runs.values()]
                    low, high = min(values), max(values)
                    mid[quantity][key] = (low + high) / 2
                    width = high - low
                    if quantity == "loss":
                        width /= max(abs(mid[quantity][key]), 1.0)
                    largest[quantity][key] = max(largest[quantity].get(key, 0.0), width)
            midpoints.setdefault(table, {})[row] = mid
    return midpoints, largest


def tolerances(largest: dict, num_queries: int) -> dict:
    """The tolerance rule of the module docstring applied to the measured ranges."""
    floor = 100.0 / num_queries

    def points(ranges: dict) -> dict:
        return {k: _round_up(max(2 * width, floor)) for k, width in ranges.items()}

    return {
        "loss": max(1e-4, _round_up(10 * max(largest["loss"].values()))),
        "untrained": points(largest["untrained"]),
        "trained": points(largest["trained"]),
    }


def _round_up(value: float) -> float:
    """Up to two significant digits, so the stored tolerances read cleanly."""
    if value <= 0:
        return 0.0
    scale = 10 ** (math.floor(math.log10(value)) - 1)
    return math.ceil(value / scale - 1e-9) * scale


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="smoke")
    parser.add_argument(
        "--settings",
        default=",".join(SETTINGS),
        help="comma-separated subset of: " + ", ".join(SETTINGS),
    )
    parser.add_argument("--jobs", type=int, default=2, help="settings run at once")
    parser.add_argument(
        "--write", action="store_true", help="store notebooks/reference/<profile>.json"
    )
    args = parser.parse_args(argv)
    names = [n.strip() for n in args.settings.split(",") if n.strip()]
    unknown = [n for n in names if n not in SETTINGS]
    if unknown or len(names) < 2:
        parser.error(f"--settings needs two or more of {', '.join(SETTINGS)} (got {names})")

    from canlib.engine import build_data
    from canlib.repro.experiments import profile

    num_queries = len(build_data(profile(args.profile)).query)
    with tempfile.TemporaryDirectory() as tmp, ThreadPoolExecutor(args.jobs) as pool:
        results = list(pool.map(lambda n: measure(n, args.profile, Path(tmp)), names))
    runs = dict(zip(names, results, strict=True))
    midpoints, largest = spread(runs)
    tol = tolerances(largest, num_queries)

    print(f"\nLargest range over {len(names)} settings ({', '.join(names)}), all rows:\n")
    print("| quantity | value | range | tolerance |\n| --- | --- | --- | --- |")
    for quantity in QUANTITIES:
        for key, width in largest[quantity].items():
            allowed = tol[quantity] if quantity == "loss" else tol[quantity][key]
            unit = " (relative)" if quantity == "loss" else ""
            print(f"| {quantity} | {key} | {width:.3g}{unit} | {allowed:g} |")
    if args.write:
        path = REPO / "notebooks" / "reference" / f"{args.profile}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        reference = {
            "profile": args.profile,
            "device": "cpu",
            "about": (
                "Written by benchmarks/numeric_spread.py --write: values are midpoints over "
                "the settings, tolerances follow its docstring's rule."
            ),
            "settings": {n: {"env": SETTINGS[n][0], "overrides": SETTINGS[n][1]} for n in names},
            "num_queries": num_queries,
            "largest_range": largest,
            "tolerance": tol,
            "values": midpoints,
        }
        path.write_text(json.dumps(reference, indent=1, sort_keys=False) + "\n")
        print(f"\nwrote {path.relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
