"""The notebooks as artefacts: thin, parameterised, runnable by papermill and by JupyterLab.

nbval (``make test``) re-executes every committed notebook with its default parameters;
these tests check what nbval cannot: the structure of the notebooks, a run with a
non-default parameter, a bad parameter failing in the first cells, and the interactive
path a reader takes (a Jupyter server listing the notebooks and starting a kernel).
"""

import json
import os
import re
import secrets
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import nbformat
import pytest

from canlib.repro.reproduce import notebooks

NOTEBOOKS = notebooks()
NAMES = [p.stem for p in NOTEBOOKS]


def test_all_eight_notebooks_are_present_in_reading_order():
    assert [n[:2] for n in NAMES] == ["01", "02", "03", "04", "05", "06", "07", "08"]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=NAMES)
def test_first_code_cell_is_the_parameters_cell(path):
    book = nbformat.read(path, as_version=4)
    code = [c for c in book.cells if c.cell_type == "code"]
    assert "parameters" in code[0].metadata.get("tags", [])
    # What a reader changes, and one options dict for the plumbing (output folders, force,
    # checkpoint, epochs): nothing else.
    names = re.findall(r"^(\w+) = ", code[0].source, re.MULTILINE)
    assert names == ["profile", "dataset", "data_root", "device", "seed", "overrides", "options"]
    assert book.metadata["kernelspec"]["name"] == "python3"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=NAMES)
def test_papermill_reads_every_parameter_of_the_parameters_cell(path):
    # A line papermill cannot parse (an "=" in its comment did it) makes it warn "Passed
    # unknown parameter" for every run that sets that parameter.
    from papermill.translators import PythonTranslator

    code = [c for c in nbformat.read(path, as_version=4).cells if c.cell_type == "code"]
    parsed = [p.name for p in PythonTranslator.inspect({"source": code[0].source})]
    assert parsed == ["profile", "dataset", "data_root", "device", "seed", "overrides", "options"]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=NAMES)
def test_second_code_cell_passes_the_parameters_to_start_in_one_line(path):
    code = [c for c in nbformat.read(path, as_version=4).cells if c.cell_type == "code"]
    calls = [line for line in code[1].source.splitlines() if "notebook.start(" in line]
    assert calls == [
        "run = notebook.start(profile, dataset, data_root, device, seed, overrides, options)"
    ]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=NAMES)
def test_notebooks_stay_thin(path):
    # Logic belongs in canlib, where tests reach it: no definitions, short cells.
    for cell in nbformat.read(path, as_version=4).cells:
        if cell.cell_type != "code":
            continue
        assert not re.search(r"^\s*(def|class) ", cell.source, re.MULTILINE), cell.source
        assert len(cell.source.splitlines()) <= 15, cell.source


def _images(book) -> int:
    return sum(
        "image/png" in output.get("data", {})
        for cell in book.cells
        if cell.cell_type == "code"
        for output in cell.outputs
    )


@pytest.mark.parametrize("path", NOTEBOOKS, ids=NAMES)
def test_every_committed_notebook_shows_its_figures_inline(path):
    # A figure that is only saved to disk is not shown: a reader on GitHub sees the outputs.
    assert _images(nbformat.read(path, as_version=4)) >= 1


def _papermill(path: Path, out: Path, params: dict, env_root: Path) -> subprocess.CompletedProcess:
    args = [
        sys.executable,
        "-m",
        "papermill",
        str(path),
        str(out),
        "-k",
        "python3",
        "--cwd",
        str(path.parent),
        "--no-progress-bar",
    ]
    for key, value in params.items():
        args += ["-y", json.dumps({key: value})]
    env = {**os.environ, "CANLIB_OUTPUT_ROOT": str(env_root)}
    return subprocess.run(args, capture_output=True, text=True, env=env, timeout=300, check=False)


@pytest.fixture(scope="module")
def papermill_root(tmp_path_factory):
    """One output folder for the notebooks run in order, so later ones reuse earlier runs
    (as ``make reproduce`` does)."""
    return tmp_path_factory.mktemp("papermill")


@pytest.mark.parametrize("path", NOTEBOOKS, ids=NAMES)
def test_papermill_runs_every_notebook_with_non_default_parameters(path, papermill_root):
    # seed=3 and an override change every config hash: the notebook really trains anew.
    out = papermill_root / f"{path.stem}.ipynb"
    done = _papermill(path, out, {"seed": 3, "overrides": ["data.pad=2"]}, papermill_root)
    assert done.returncode == 0, done.stderr[-2000:]
    book = nbformat.read(out, as_version=4)
    injected = [c for c in book.cells if "injected-parameters" in c.metadata.get("tags", [])]
    assert injected and "seed = 3" in injected[0].source
    # Each notebook ends with post-conditions on its own outputs; here: it wrote figures
    # and showed them.
    assert any((papermill_root / "figures" / "smoke").glob("*.png"))
    assert _images(book) >= 1


def test_a_bad_parameter_fails_in_the_first_cells_with_one_sentence(tmp_path):
    path = next(p for p in NOTEBOOKS if p.stem.startswith("03"))
    out = tmp_path / "out.ipynb"
    done = _papermill(path, out, {"dataset": "market"}, tmp_path)
    assert done.returncode != 0
    assert "data.dataset must be one of" in done.stderr
    book = nbformat.read(out, as_version=4)
    executed = [c for c in book.cells if c.cell_type == "code" and c.get("execution_count")]
    # parameters, injected parameters, then the start() cell that raised: nothing trained.
    assert len(executed) <= 3
    assert not (tmp_path / "results" / "smoke" / "runs").exists() or not any(
        (tmp_path / "results" / "smoke" / "runs").iterdir()
    )


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _request(url: str, token: str, method: str = "GET", body: dict | None = None):
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(
        url,
        data=data,
        method=method,
        headers={"Authorization": f"token {token}", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        text = response.read().decode()
        return json.loads(text) if text else None


def test_jupyter_server_lists_the_notebooks_and_starts_a_kernel_that_imports_canlib(tmp_path):
    port, token = _free_port(), secrets.token_hex(16)
    root = Path(__file__).resolve().parents[1]
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "jupyter",
            "lab",
            "--no-browser",
            f"--port={port}",
            "--ip=127.0.0.1",
            f"--IdentityProvider.token={token}",
            f"--ServerApp.root_dir={root}",
            "--ServerApp.open_browser=False",
            "--allow-root",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "JUPYTER_RUNTIME_DIR": str(tmp_path), "HOME": str(tmp_path)},
    )
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(120):
            try:
                _request(f"{base}/api/status", token)
                break
            except OSError:
                if server.poll() is not None:
                    pytest.fail(f"jupyter lab exited: {server.stderr.read()[-2000:]}")
                time.sleep(0.5)
        listing = _request(f"{base}/api/contents/notebooks", token)
        names = {item["name"] for item in listing["content"]}
        assert {f"{n}.ipynb" for n in NAMES} <= names
        specs = _request(f"{base}/api/kernelspecs", token)
        assert "python3" in specs["kernelspecs"]
        kernel = _request(f"{base}/api/kernels", token, "POST", {"name": "python3"})
        _assert_kernel_imports_canlib(tmp_path, kernel["id"])
        _request(f"{base}/api/kernels/{kernel['id']}", token, "DELETE")
    finally:
        server.terminate()
        server.wait(timeout=30)


def _assert_kernel_imports_canlib(runtime_dir: Path, kernel_id: str) -> None:
    # Connect a second client to the server's kernel through its connection file (in the
    # server's runtime folder) and have the kernel import canlib.
    from jupyter_client import BlockingKernelClient

    client = BlockingKernelClient(connection_file=str(runtime_dir / f"kernel-{kernel_id}.json"))
    client.load_connection_file()
    client.start_channels()
    try:
        client.wait_for_ready(timeout=60)
        reply = client.execute_interactive(
            "import canlib, canlib.engine; print('canlib', canlib.__version__)", timeout=60
        )
        assert reply["content"]["status"] == "ok"
    finally:
        client.stop_channels()
