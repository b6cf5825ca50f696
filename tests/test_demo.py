"""`make demo` prints what the README says it prints."""

import os
import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
README_BLOCK = re.compile(r"and prints:\n\n```\n(Wrote:\n.*?)```", re.S)
FILE_LINE = re.compile(r"^\s+(\S+)\s+(\d+) bytes$", re.M)


def _summary(text: str) -> tuple[dict[str, int], str]:
    """({file: bytes}, the last sentence)."""
    return dict((name, int(size)) for name, size in FILE_LINE.findall(text)), \
        text.strip().splitlines()[-1]


def test_demo_prints_the_readme_block():
    """Runs what `make demo` runs, into the same demo-output/ folder (the output paths are
    recorded in the score raster's metadata, so another folder changes its size)."""
    block = README_BLOCK.search((REPO / "README.md").read_text())
    assert block, "README lost its demo block"
    env = {**os.environ, "PYTHON": sys.executable, "OUT": "demo-output"}
    run = subprocess.run(["bash", str(REPO / "tools" / "demo.sh")], env=env, cwd=REPO,
                         capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-2000:]
    printed = run.stdout[run.stdout.index("Wrote:"):]
    assert _summary(printed) == _summary(block.group(1))
