"""The front door and the documentation site: a small README whose quickstart runs, a site that
builds strictly (no broken link, no missing page, no docstring the API reference cannot read)."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"


def test_the_readme_is_a_front_door():
    text = README.read_text()
    assert len(text.encode()) <= 12 * 1024
    commands = re.search(r"```bash\n(.*?)```", text, re.S).group(1).strip().splitlines()
    assert commands == [
        "scripts/install.sh && .venv/bin/entroguard demo --out demo-out",
        "scripts/install.sh --dev && .venv/bin/python -m pytest",
    ]
    for link in re.findall(r"\]\((docs/[^)]+)\)", text):
        page, _, anchor = link.partition("#")
        assert (ROOT / page).is_file(), link
        if anchor:  # a heading of that page, in MkDocs' slug form
            headings = re.findall(r"^#+ (.+)$", (ROOT / page).read_text(), re.M)
            slugs = {re.sub(r"[^a-z0-9 -]", "", h.lower()).strip().replace(" ", "-")
                     for h in headings}  # fmt: skip
            assert anchor in slugs, link


def test_the_readme_quickstart_runs():
    code = re.search(r"```python\n(.*?)```", README.read_text(), re.S).group(1)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    sizes, classes = out.stdout.strip().split("] [")
    assert len(sizes.strip("[").split(",")) == 8 and len(classes.strip("]").split(",")) == 8


def test_the_quickstart_example_prints_bytes_and_accuracy():
    script = ROOT / "examples" / "quickstart.py"
    assert len(script.read_text().splitlines()) <= 16
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, check=True)
    clean, attacked = out.stdout.strip().splitlines()
    assert clean.startswith("clean {") and "'payload_bytes'" in clean and "'top1'" in clean
    assert attacked.startswith("rate_pgd 8/255 {")


@pytest.mark.slow
def test_the_documentation_site_builds_strictly(tmp_path):
    mkdocs = shutil.which("mkdocs") or str(Path(sys.executable).with_name("mkdocs"))
    out = subprocess.run([mkdocs, "build", "--strict", "--site-dir", str(tmp_path / "site")],
                         cwd=ROOT, capture_output=True, text=True)  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    assert (tmp_path / "site" / "portability" / "index.html").is_file()
