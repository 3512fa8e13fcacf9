"""The example notebook runs top to bottom in a real Jupyter kernel, and what it renders
loads nothing from the network.

It needs the `notebook` extra (nbclient, ipykernel), which `make test` installs; without it
the test skips and says so, except where RNNSCOPE_REQUIRE_NOTEBOOK=1 (CI) makes that a failure."""
from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

NOTEBOOK = Path(__file__).resolve().parent.parent / "examples" / "lecture.ipynb"
# What would make a browser fetch something by itself: a src, a stylesheet link, a CSS url() or
# @import naming an address (a link a reader may click, such as the server's, is not a fetch).
EXTERNAL = re.compile(r"""src\s*=\s*["']?(?:https?:)?//|<link[^>]*href\s*=\s*["']?(?:https?:)?//"""
                      r"""|url\(\s*["']?(?:https?:)?//|@import""", re.I)


def load_kernel_tools():
    try:
        import nbclient
        import nbformat
    except ImportError:
        if os.environ.get("RNNSCOPE_REQUIRE_NOTEBOOK") == "1":
            pytest.fail("RNNSCOPE_REQUIRE_NOTEBOOK=1 but nbclient/nbformat are missing: pip install '.[notebook]'")
        pytest.skip("the notebook extra is not installed: pip install '.[notebook]'")
    return nbclient, nbformat


@pytest.fixture(scope="module")
def executed(tmp_path_factory):
    nbclient, nbformat = load_kernel_tools()
    nb = nbformat.read(NOTEBOOK, as_version=4)
    # The training cell trains for RNNSCOPE_NOTEBOOK_SECONDS (60 s for a reader; 8 s here).
    os.environ.setdefault("RNNSCOPE_NOTEBOOK_SECONDS", "8")
    client = nbclient.NotebookClient(nb, timeout=300, kernel_name="python3",
                                     resources={"metadata": {"path": str(tmp_path_factory.mktemp("nb"))}})
    client.execute()                              # raises CellExecutionError on any error
    return nb


def outputs(nb, mime: str) -> list[str]:
    return [o["data"][mime] for cell in nb.cells if cell.cell_type == "code"
            for o in cell.get("outputs", []) if mime in o.get("data", {})]


def test_the_example_notebook_runs_top_to_bottom(executed):
    errors = [o for cell in executed.cells if cell.cell_type == "code" for o in cell.get("outputs", [])
              if o.get("output_type") == "error"]
    assert not errors
    printed = "".join(o.get("text", "") for cell in executed.cells if cell.cell_type == "code"
                      for o in cell.get("outputs", []) if o.get("output_type") == "stream")
    assert "steps in" in printed and "rnnscope is serving on http://127.0.0.1:" in printed
    if "largest difference in loss" in printed:        # torch was there: the import matches it
        assert float(re.search(r"largest difference in loss: (\S+)", printed).group(1)) < 1e-5


def test_what_the_notebook_renders_loads_nothing_from_the_network(executed):
    pages = outputs(executed, "text/html")
    assert len(pages) >= 4, "the coloured texts and tables should render as HTML"
    assert sum("top 5 guesses" in p for p in pages) >= 2
    for page in pages:
        assert not EXTERNAL.search(page), EXTERNAL.search(page).group(0)
    assert outputs(executed, "application/vnd.plotly.v1+json"), "the gradient figure should be a Plotly figure"
