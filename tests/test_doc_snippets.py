"""Every prompt in the docs and examples is one the default model draws, and the docs' code runs.

- Prompts: every prompt written in README.md, docs/, examples/, the live page's placeholder and
  the SDK's docstrings (found by where prompts go: `schedule_prompt("...")`, `--prompt "N:..."`,
  `"new_prompt": "..."`, `{0: "..."}` schedules, ...) must follow the demo model's grammar, and is
  judged drawable: the demo generates it and its checker (`longlive_runner.demo.checker`) reads
  back the asked colour and background. Commands that name the real weights (`--wan-dir`) may use
  any prompt: the demo does not run them.
- Snippets: every ```python block of README.md and docs/ runs, against the default model
  (in-process, or a `serve` of it), in its own process; the few that cannot (API sketches, real
  weights) are listed below with the reason, and any new block must be added to one list or the
  other. The README's client snippet runs in tests/test_readme_client.py.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

from _runner_process import start_runner
from longlive_runner.demo.checker import measure_frames
from longlive_runner.demo.scenes import parse_prompt

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
PROMPT_SOURCES = [
    *DOCS,
    *sorted((ROOT / "examples").glob("*.py")),
    ROOT / "examples" / "notebook.ipynb",
    ROOT / "src" / "longlive_runner" / "serving" / "static" / "index.html",
    ROOT / "src" / "longlive" / "__init__.py",
    ROOT / "src" / "longlive" / "notebook.py",
]
PROMPT_PATTERNS = [
    re.compile(r'schedule_prompt\(\s*"([^"]+)"'),  # \s* spans lines: the whole text is searched
    re.compile(r'"(?:new_prompt|prompt|current_prompt|previous_prompt)"\s*:\s*"([^"]+)"'),
    re.compile(r'--prompt\s+"\d+:([^"]+)"'),
    re.compile(r'(?:^|[{,])[ \t]*"?\d+"?\s*:\s*"([^"]+)"', re.M),  # {0: "...", 12: "..."} and {"0": "..."}
    re.compile(r'"--(?:later-)?prompt",.*default="([^"]+)"'),  # the examples' argparse defaults
    re.compile(r'[A-Z_]*PROMPT\s*=\s*"([^"]+)"'),
    re.compile(r'^\s*default="([^"]+)",', re.M),  # a default on its own line (checked: a prompt's)
    re.compile(r'placeholder="([^"(]+?)\s*\('),
]
REAL_WEIGHTS = re.compile(r"--wan-dir|wan_dir=|longlive-1\.3b")


def _text(path: Path) -> str:
    if path.suffix == ".ipynb":
        cells = json.loads(path.read_text())["cells"]
        return "\n".join("".join(c["source"]) for c in cells)
    return path.read_text()


def doc_prompts() -> dict[str, list[str]]:
    """{prompt: [where it is written, ...]} over every source."""
    found: dict[str, list[str]] = {}
    for path in PROMPT_SOURCES:
        text = _text(path)
        lines = text.splitlines()
        for pattern in PROMPT_PATTERNS:
            for match in pattern.finditer(text):
                n = text.count("\n", 0, match.start()) + 1
                # the logical line: a shell command continued with backslashes counts as one
                first = n
                while first > 1 and lines[first - 2].rstrip().endswith("\\"):
                    first -= 1
                last = n
                while last < len(lines) and lines[last - 1].rstrip().endswith("\\"):
                    last += 1
                if REAL_WEIGHTS.search(" ".join(lines[first - 1 : last])):
                    continue
                prompt = match.group(1).strip()
                if len(prompt.split()) < 3:  # "...", file names, other defaults
                    continue
                found.setdefault(prompt, []).append(f"{path.relative_to(ROOT)}:{n}")
    return found


def test_every_prompt_in_the_docs_follows_the_demo_grammar() -> None:
    prompts = doc_prompts()
    assert len(prompts) >= 8, prompts  # the extraction finds them
    bad = {p: where for p, where in prompts.items() if not _parses(p)}
    assert not bad, f"prompts the default (demo) model cannot draw: {bad}"


def _parses(prompt: str) -> bool:
    try:
        parse_prompt(prompt)
    except ValueError:
        return False
    return True


def test_every_prompt_in_the_docs_is_drawn_by_the_demo(tmp_path: Path) -> None:
    """The demo's checker reads back the asked colour and background from 2 generated blocks."""
    from longlive_runner import load_pipeline

    pipe = load_pipeline("demo", device="cpu")
    for prompt in sorted(p for p in doc_prompts() if _parses(p)):
        scene = parse_prompt(prompt)
        frames = [f for block in pipe.stream({0: prompt}, 6, seed=0) for f in block.frames]
        measures = measure_frames(frames)
        colour = Counter(m.color for m in measures).most_common(1)[0][0]
        background = Counter(m.background for m in measures).most_common(1)[0][0]
        assert (colour, background) == (scene.color, scene.background), (prompt, colour, background)


# ----------------------------------------------------------------------------------------------
# The docs' code
# ----------------------------------------------------------------------------------------------
def python_blocks() -> dict[tuple[str, int], str]:
    blocks = {}
    for path in DOCS:
        for i, match in enumerate(re.finditer(r"```python\n(.*?)```", path.read_text(), re.S)):
            blocks[(str(path.relative_to(ROOT)), i)] = match.group(1)
    return blocks


NOT_RUN_HERE = {
    ("README.md", 0): "the client snippet: tests/test_readme_client.py runs it, twice, against serve",
    ("docs/architecture.md", 0): "an API sketch: signatures and shapes, not a program",
    ("docs/architecture.md", 1): "an API sketch: signatures and shapes, not a program",
    ("docs/architecture.md", 2): "an API sketch: signatures and shapes, not a program",
    ("docs/architecture.md", 3): "needs a converted 1.3B folder, CUDA and another implementation's tensors",
    ("docs/weights.md", 0): "needs the real weights (weights/Wan2.1-T2V-1.3B, weights/LongLive)",
    (
        "docs/weights.md",
        1,
    ): "needs the real LongLive 2.0 weights (weights/Wan2.2-TI2V-5B, weights/LongLive-2.0-5B)",
    (
        "docs/reactor-clients.md",
        0,
    ): "WebRTC needs two network namespaces: tests/test_reactor_e2e.py drives reactor-sdk the same way",
    (
        "docs/reactor-clients.md",
        1,
    ): "WebRTC needs two network namespaces: tests/test_reactor_e2e.py runs our SDK over webrtc_transport",
    (
        "docs/live-view.md",
        1,
    ): "runs the notebook in a Jupyter kernel: tests/test_examples.py does it with nbclient",
    (
        "docs/cluster.md",
        0,
    ): "needs a cluster and its token: tests/test_cluster.py makes the same calls on one",
}

# Cells run before / after a snippet that is a fragment (as in a notebook: top-level await).
LOCAL = "from longlive import Reactor\nreactor = Reactor.local()\nawait reactor.connect()\n"
STARTED = LOCAL + (
    'await reactor.schedule_prompt("a red circle moving right on a black background", 0)\n'
    "await reactor.start()\n"
)
CLOSE = "await reactor.close()\n"
FAKE_IPYTHON = """
import sys, types
display_module = types.ModuleType("IPython.display")
class _Handle:
    def update(self, obj): pass
display_module.display = lambda obj=None, display_id=None: _Handle()
display_module.Image = lambda data=None, **kw: data
display_module.HTML = lambda data=None, **kw: data
ipython = types.ModuleType("IPython")
ipython.display = display_module
sys.modules["IPython"] = ipython
sys.modules["IPython.display"] = display_module
"""
SNIPPETS: dict[tuple[str, int], tuple[str, str]] = {  # (before, after)
    ("README.md", 1): ("", ""),
    ("docs/quickstart.md", 0): ("", ""),
    ("docs/client-guide.md", 0): ("", ""),
    ("docs/client-guide.md", 1): (  # the page's previous block imports Reactor
        "from longlive import Reactor\n",
        "await reactor.wait_for_frame(12, timeout=60)\n" + CLOSE,
    ),
    ("docs/client-guide.md", 2): (
        "",
        "service = VideoService(RUNNER_URL)\n"
        "await service.start()\n"
        "await service.reactor.reset()\n"
        'await service.reactor.schedule_prompt("a red circle moving right on a black background", 0)\n'
        "await service.reactor.start()\n"
        "await service.reactor.wait_for_frame(6, timeout=60)\n"
        'assert await service.steer("a blue square moving right on a black background") >= 9\n'
        "assert service.latest is not None\n"
        "await service.stop()\n",
    ),
    ("docs/client-guide.md", 3): (
        STARTED
        + "class metrics:\n    @staticmethod\n    async def send(value): pass\n"
        + "def process(image): assert image.shape == (64, 64, 3)\n",
        CLOSE,
    ),
    ("docs/client-guide.md", 4): (LOCAL, "assert reactor.state.running\n" + CLOSE),
    ("docs/client-guide.md", 5): (STARTED, CLOSE),
    ("docs/live-view.md", 0): (
        FAKE_IPYTHON,
        "await reactor.wait_for_frame(12, timeout=60)\nview.close()\n" + CLOSE,
    ),
}

# All the snippets in ONE process (one torch import): first the plain scripts (their own
# asyncio.run), each in a fresh namespace and folder; then the notebook-style ones in one event
# loop, each with its cells (before, the snippet, after) in a fresh namespace, top-level await
# allowed as in a notebook kernel. Each prints "[ok] NAME", or "[fail] NAME" and its traceback.
HARNESS = """
import ast, asyncio, json, os, sys, traceback
snippets = json.load(open(sys.argv[1]))
home = os.getcwd()

def report(name, exc):
    if exc is None:
        print(f"[ok] {name}", flush=True)
    else:
        print(f"[fail] {name}", flush=True)
        traceback.print_exception(exc)

def fresh(name):
    folder = os.path.join(home, name.replace("/", "_").replace("#", "_"))
    os.makedirs(folder, exist_ok=True)
    os.chdir(folder)
    return {"__name__": "__main__"}

for name, cells in snippets["scripts"]:
    try:
        exec(compile(cells[0], name, "exec"), fresh(name))
        report(name, None)
    except BaseException as exc:
        report(name, exc)

async def main():
    for name, cells in snippets["cells"]:
        namespace = fresh(name)
        try:
            for i, source in enumerate(cells):
                code = compile(source, f"{name} cell {i}", "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)
                result = eval(code, namespace)
                if asyncio.iscoroutine(result):
                    await result
            report(name, None)
        except BaseException as exc:
            report(name, exc)

asyncio.run(main())
"""


def test_every_python_block_of_the_docs_is_listed() -> None:
    assert set(python_blocks()) == set(SNIPPETS) | set(NOT_RUN_HERE)


def test_the_docs_python_blocks_run(tmp_path: Path) -> None:
    """Every block of SNIPPETS runs to its end on the default model: in-process, or against a
    `serve` of it for the blocks that take its URL."""
    blocks = python_blocks()
    scripts: list[list] = []
    notebook: list[list] = []
    with start_runner("--grace-period", "off", "--pace", "fast", model="demo") as served:
        for key, (before, after) in sorted(SNIPPETS.items()):
            name = f"{key[0]}#{key[1]}"
            cells = [c.replace("ws://127.0.0.1:8765", served.url).replace("RUNNER_URL", repr(served.url))
                     for c in (before, blocks[key], after) if c]  # fmt: skip
            if "asyncio.run(" in blocks[key] or not any("await " in c for c in cells):
                assert len(cells) == 1, name  # a whole script: nothing around it
                scripts.append([name, cells])
            else:
                notebook.append([name, cells])
        (tmp_path / "snippets.json").write_text(json.dumps({"scripts": scripts, "cells": notebook}))
        proc = subprocess.run(
            [sys.executable, "-c", HARNESS, str(tmp_path / "snippets.json")],
            cwd=tmp_path,
            env={**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"},
            capture_output=True,
            text=True,
            timeout=400,
            stdin=subprocess.DEVNULL,
        )
    ran = [line for line in proc.stdout.splitlines() if line.startswith(("[ok] ", "[fail] "))]
    failed = [line for line in ran if line.startswith("[fail] ")]
    assert proc.returncode == 0 and not failed, f"{failed}\n{proc.stdout}\n{proc.stderr}"
    assert sorted(line.removeprefix("[ok] ") for line in ran) == sorted(n for n, _ in scripts + notebook)


def test_the_readme_generate_command_runs(tmp_path: Path) -> None:
    """The README's first command, its `longlive-runner generate` part (the install is done)."""
    text = (ROOT / "README.md").read_text()
    line = next(ln for ln in text.splitlines() if ln.startswith("pip install") and "generate" in ln)
    command = line.split("&&", 1)[1].strip()
    assert command.startswith("longlive-runner generate")
    proc = subprocess.run(
        command.replace("longlive-runner", f"{sys.executable} -m longlive_runner", 1),
        shell=True,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=240,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert proc.returncode == 0, proc.stderr
    assert "warning" not in proc.stderr and "note:" not in proc.stderr, proc.stderr
    assert (tmp_path / "longlive.mp4").stat().st_size > 1000


def test_cpu_users_install_cpu_torch_before_the_command_that_pulls_torch() -> None:
    """The CPU build's install comes first: after `pip install -e ".[all]"`, pip would already have
    fetched the 3 GB CUDA build."""
    for doc in ("README.md", "docs/quickstart.md"):
        text = (ROOT / doc).read_text()
        cpu = text.index("pip install torch --index-url https://download.pytorch.org/whl/cpu")
        assert cpu < text.index('pip install -e ".[all]"'), doc
