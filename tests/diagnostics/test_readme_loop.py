"""The README's "Using dgs_core in your own loop" section runs as written (its diagnostics
snippets included: the plain loop and the flat gradient buffer)."""

from __future__ import annotations

import re
from pathlib import Path

README = (Path(__file__).resolve().parents[2] / "README.md").read_text()


def test_the_own_loop_section_runs(capsys) -> None:
    section = README.split("## Using `dgs_core` in your own loop", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```python\n(.*?)```", section, re.S)
    assert len(blocks) >= 4 and any("flat_grads=buffer" in block for block in blocks)
    namespace: dict = {}
    for block in blocks:
        exec(compile(block, "README.md", "exec"), namespace)
    records, diag = namespace["records"], namespace["diag"]
    assert [r.step for r in records] == [1, 11, 21, 31, 41, 51, 61, 71, 81, 91]
    assert diag._flat is namespace["buffer"]  # the last block's diagnostics read the buffer itself
    assert "importance" in capsys.readouterr().out
