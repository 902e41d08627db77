"""The docs stay true: the API page matches the code, and every Python snippet in the README
and docs/ runs, as do the examples in the op docstrings."""

import doctest
import importlib.util
import re
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = sorted([ROOT / "README.md", *(ROOT / "docs").glob("*.md")])
FENCE = re.compile(r"^```python\n(.*?)^```", re.S | re.M)


def test_api_page_matches_docstrings():
    spec = importlib.util.spec_from_file_location("gen_api_docs", ROOT / "scripts" / "gen_api_docs.py")
    gen = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gen)
    expected = gen.render()
    actual = (ROOT / "docs" / "api.md").read_text()
    assert actual == expected, "docs/api.md is stale: run `python scripts/gen_api_docs.py`"


@pytest.mark.parametrize("path", DOCS, ids=lambda p: p.name)
def test_python_snippets_run(path, tmp_path, monkeypatch):
    blocks = FENCE.findall(path.read_text())
    monkeypatch.chdir(tmp_path)  # snippets that write files write them here
    namespace = {"__name__": "__doc_snippet__"}
    for i, block in enumerate(blocks):
        code = compile(block, f"{path.name}[python block {i}]", "exec")
        exec(code, namespace)  # blocks of one page share a namespace, like a tutorial


@pytest.mark.parametrize("module", ["pyfacepnp.ops.pnp", "pyfacepnp.ops.ransac", "pyfacepnp.ops.warp"])
def test_docstring_examples(module):
    import torch

    mod = importlib.import_module(module)
    res = doctest.testmod(mod, extraglobs={"torch": torch}, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert res.attempted > 0 and res.failed == 0
