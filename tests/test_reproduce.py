"""``python -m canlib reproduce``: interrupted reproductions resume, failures are recorded."""

import json
import shutil
from pathlib import Path

import nbformat
import pytest

from canlib.errors import CanlibError, ConfigError
from canlib.repro.reproduce import notebooks, reproduce

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def table4_root(tmp_path: Path) -> Path:
    """A repository root holding only the Table 4 notebook (4 smoke trainings)."""
    (tmp_path / "notebooks").mkdir()
    source = next(p for p in notebooks(REPO / "notebooks") if p.name.startswith("05_"))
    shutil.copy(source, tmp_path / "notebooks" / source.name)
    return tmp_path


def _summaries(root: Path) -> dict[str, float]:
    runs = root / "results" / "smoke" / "runs"
    return {p.parent.name: p.stat().st_mtime_ns for p in runs.glob("*/summary.json")}


def test_an_interrupted_reproduction_redoes_only_what_is_missing(table4_root):
    first = reproduce("smoke", root=table4_root)
    assert first["notebooks"]["05_table4_losses"]["status"] == "ok"
    done = _summaries(table4_root)
    assert len(done) == 4  # CE, CE+triplet, CE+triplet+center, global+local
    # Simulate a run killed before it finished: its folder lost its summary and checkpoints.
    victim = min(done)
    for path in (table4_root / "results" / "smoke" / "runs" / victim).iterdir():
        path.unlink()
    second = reproduce("smoke", root=table4_root)
    again = _summaries(table4_root)
    assert set(again) == set(done)
    assert again[victim] != done[victim]  # retrained
    assert all(again[k] == done[k] for k in done if k != victim)  # reused untouched
    entry = second["notebooks"]["05_table4_losses"]
    assert entry["status"] == "ok" and entry["wall_seconds"] > 0 and entry["peak_rss_mib"] > 0
    results = table4_root / "results" / "smoke"
    assert (results / "manifest.previous.json").is_file()
    assert (results / "table4.csv").is_file() and (
        results / "notebooks" / "05_table4_losses.ipynb"
    ).is_file()
    manifest = json.loads((results / "manifest.json").read_text())
    assert manifest["environment"]["torch"] and "git_commit" in manifest["environment"]
    # Executed notebooks hold paths relative to the repository, none of this machine.
    executed = results / "notebooks" / "05_table4_losses.ipynb"
    assert str(table4_root) not in executed.read_text() and str(REPO) not in executed.read_text()
    book = nbformat.read(executed, as_version=4)
    assert book.metadata["papermill"]["parameters"]["options"]["results_dir"] == "../results/smoke"
    assert book.metadata["papermill"]["input_path"] == "notebooks/05_table4_losses.ipynb"


def test_a_failing_notebook_stops_the_run_and_is_recorded(tmp_path):
    (tmp_path / "notebooks").mkdir()
    book = nbformat.v4.new_notebook()
    params = nbformat.v4.new_code_cell('profile = "smoke"')
    params.metadata["tags"] = ["parameters"]
    book.cells = [params, nbformat.v4.new_code_cell("raise RuntimeError('boom in cell 2')")]
    book.metadata["kernelspec"] = {
        "name": "python3",
        "display_name": "Python 3",
        "language": "python",
    }
    nbformat.write(book, tmp_path / "notebooks" / "01_broken.ipynb")
    with pytest.raises(CanlibError, match="01_broken.ipynb.*boom in cell 2"):
        reproduce("smoke", root=tmp_path)
    manifest = json.loads((tmp_path / "results" / "smoke" / "manifest.json").read_text())
    assert manifest["notebooks"]["01_broken"]["status"] == "failed"
    assert "boom in cell 2" in manifest["notebooks"]["01_broken"]["error"]
    assert (tmp_path / "results" / "smoke" / "notebooks" / "01_broken.ipynb").is_file()


def test_bad_options_are_refused_before_any_notebook_runs(table4_root):
    with pytest.raises(ConfigError, match="'lrr' in config section 'train'"):
        reproduce("smoke", overrides=["train.lrr=1"], root=table4_root)
    with pytest.raises(ConfigError, match="profile"):
        reproduce("tiny", root=table4_root)
    with pytest.raises(ConfigError, match="09"):
        reproduce("smoke", only=["09"], root=table4_root)
    assert not (table4_root / "results").exists()
