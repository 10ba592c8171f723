"""The examples/ scripts, run as real processes on the default model (the embedded demo), small sizes.

The in-process examples run `Reactor.local()`; the websocket ones drive a `longlive-runner serve`
subprocess of the default model shared by this module (`runner_url`; `--pace fast`, so the tests
do not wait for real time). The notebook runs too, cell after cell, as a kernel would.
"""

from __future__ import annotations

import ast
import contextlib
import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from _runner_process import RunnerProcess, start_runner
from longlive import latent_to_video_frame
from longlive.video import read_video

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
DEMO_SIZE = (64, 64, 3)  # the embedded demo's frames (the default model): height, width, RGB
SIZE = DEMO_SIZE
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


@pytest.fixture(scope="module", autouse=True)
def _runner_starting() -> Iterator[Future[RunnerProcess]]:
    """Start the module's runner in the background at once: it loads while the in-process
    examples run (the default model, single-threaded, CPU, no grace period, no pacing)."""
    from longlive_runner.cli import DEFAULT_MODEL

    with ThreadPoolExecutor(1) as pool:
        future = pool.submit(
            start_runner,
            "--device",
            "cpu",
            "--grace-period",
            "off",
            "--pace",
            "fast",
            model=DEFAULT_MODEL,
            env={"OMP_NUM_THREADS": "1"},
        )
        yield future
        with contextlib.suppress(Exception):
            future.result().stop()


@pytest.fixture(scope="module")
def runner_process(_runner_starting: Future[RunnerProcess]) -> RunnerProcess:
    """The module's runner (overrides the shared fixture of the same name)."""
    return _runner_starting.result(timeout=300)


def run_example(
    name: str, *args: str, cwd: Path, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        [sys.executable, str(EXAMPLES / name), *args],
        input=stdin,
        stdin=None if stdin is not None else subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=180,
        cwd=cwd,
        env=ENV,
    )
    assert "Traceback" not in proc.stderr, proc.stderr
    return proc


def video_frames(path: Path, size: tuple[int, int, int] = SIZE) -> np.ndarray:
    video = read_video(path)
    assert video.shape[1:] == size and video.dtype == np.uint8
    return video


# ----------------------------------------------------------------------------------------------
def test_quickstart_generates_two_prompts_in_process_into_an_mp4(tmp_path):
    proc = run_example("quickstart.py", "--blocks", "2", "--out", "q.mp4", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "scheduled 'a blue square moving right on a black background' at latent frame 3" in out
    assert "latent frame 3: now generating 'a blue square" in out
    assert "block at latent frame   0: 9 frames of 64x64" in out  # the demo model
    assert "block at latent frame   3: 12 frames of 64x64" in out
    assert "wrote 21 frames (expected 21)" in out
    assert len(video_frames(tmp_path / "q.mp4", DEMO_SIZE)) == latent_to_video_frame(6) == 21


def test_connect_to_runner_over_the_websocket(runner_url, tmp_path):
    proc = run_example(
        "connect_to_runner.py", runner_url, "--blocks", "3", "--model", "demo", "--out", "r.mp4", cwd=tmp_path
    )
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert f"connected to {runner_url} (demo): 64x64 at 16 fps, 3 latent frames per block" in out
    assert "prompt switched at latent frame 3: 'a red square moving up on a black background'" in out
    assert [line.split(":")[0] for line in out.splitlines() if line.startswith("block ")] == [
        "block 0",
        "block 1",
        "block 2",
    ]
    assert "progress: 9 latent frames (33 video frames) done" in out
    assert "received 33 frames" in out and "wrote 33 frames" in out
    assert len(video_frames(tmp_path / "r.mp4")) == 33

    wrong = run_example("connect_to_runner.py", runner_url, "--model", "longlive-1.3b", cwd=tmp_path)
    assert wrong.returncode != 0 and "the runner serves 'demo', not 'longlive-1.3b'" in wrong.stderr


def test_live_prompts_schedules_each_typed_line_at_the_next_block(runner_url, tmp_path):
    typed = "a blue square moving right on a black background\n\na green triangle moving up on a navy background\n"
    proc = run_example(
        "live_prompts.py",
        "--url",
        runner_url,
        "--blocks",
        "5",
        "--out",
        "live.mp4",
        cwd=tmp_path,
        stdin=typed,
    )
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    scheduled = [line for line in lines if line.startswith("scheduled ")]
    switched = [line for line in lines if line.startswith("prompt switched")]
    typed_prompts = [line for line in typed.splitlines() if line]
    assert [s.split("'")[1] for s in scheduled] == typed_prompts
    frames = [int(s.rsplit(" ", 1)[1]) for s in scheduled]
    assert frames[0] % 3 == 0 and frames[1] == frames[0] + 3  # block boundaries, one after the other
    assert [s.split("'")[1] for s in switched] == typed_prompts
    assert [int(s.split("frame ")[1].split(":")[0]) for s in switched] == frames
    assert "(end of input: no more prompts)" in proc.stdout
    n = latent_to_video_frame(15)
    assert f"wrote {n} frames to live.mp4" in proc.stdout and len(video_frames(tmp_path / "live.mp4")) == n


def test_record_schedule_renders_a_json_schedule_file(runner_url, tmp_path):
    (tmp_path / "story.json").write_text(
        json.dumps(
            [
                {"timestamp": 0, "prompt": "a red circle moving right on a black background"},
                # not on a boundary: takes effect at 6
                {"timestamp": 4, "prompt": "a blue square moving right on a black background"},
            ]
        )
    )
    proc = run_example("record_schedule.py", "story.json", "--frames", "8", "--url", runner_url, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "   4 -> takes effect at latent frame    6: 'a blue square moving right" in proc.stdout
    assert "switched at latent frame 6 (video frame 21): 'a blue square moving right" in proc.stdout
    assert "wrote 33 frames (expected 33) to story.mp4" in proc.stdout
    assert len(video_frames(tmp_path / "story.mp4")) == 33

    (tmp_path / "bad.json").write_text('{"3": "a red circle moving up on a black background"}')
    bad = run_example("record_schedule.py", "bad.json", "--url", runner_url, cwd=tmp_path)
    assert bad.returncode != 0 and "needs a prompt at latent frame 0" in bad.stderr


def test_record_schedule_runs_as_its_docstring_says_with_the_shipped_schedule(tmp_path):
    """`python examples/record_schedule.py` with no file: the shipped examples/schedule.json (the
    docstring's), written to schedule.mp4 in the current directory."""
    shipped = json.loads((EXAMPLES / "schedule.json").read_text())
    doc = ast.get_docstring(ast.parse((EXAMPLES / "record_schedule.py").read_text())) or ""
    assert all(f'"{t}": "{p}"' in doc for t, p in shipped.items()), (
        "the docstring's schedule is not the file's"
    )
    proc = run_example("record_schedule.py", "--frames", "15", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "  12 -> takes effect at latent frame   12: 'a blue square moving right" in proc.stdout
    assert "switched at latent frame 12 (video frame 45): 'a blue square moving right" in proc.stdout
    n = latent_to_video_frame(15)
    assert f"wrote {n} frames (expected {n}) to schedule.mp4" in proc.stdout
    assert len(video_frames(tmp_path / "schedule.mp4", DEMO_SIZE)) == n
    assert not (EXAMPLES / "schedule.mp4").exists()


def test_the_examples_prompt_the_demo_in_its_form():
    """Every prompt an example's docstring suggests is of the demo model's form (`a blue square`
    alone gives a blotchy, shape-shifting video: the `prompt_form` warning)."""
    from longlive_runner.demo.scenes import form_problem

    seen = 0
    for path in sorted(EXAMPLES.glob("*.py")):
        doc = ast.get_docstring(ast.parse(path.read_text())) or ""
        for quoted in re.findall(r"'([^']*)'|\"([^\"]*)\"", doc):
            for text in "".join(quoted).split("\\n"):
                if re.match(r"an? [a-z]", text):
                    assert form_problem(text) is None, (path.name, text)
                    seen += 1
    assert seen >= 6


def test_scripts_default_to_the_cli_model_and_take_small_sizes():
    from longlive_runner.cli import DEFAULT_MODEL

    for name in ("quickstart.py", "live_prompts.py", "record_schedule.py"):
        text = (EXAMPLES / name).read_text()
        assert "from longlive_runner.cli import DEFAULT_MODEL" in text and "default=DEFAULT_MODEL" in text
        assert "--blocks" in text or "--frames" in text
    assert DEFAULT_MODEL == "demo"


def test_notebook_is_valid_nbformat_4_with_code_cells_that_compile():
    nb = json.loads((EXAMPLES / "notebook.ipynb").read_text())
    assert nb["nbformat"] == 4 and isinstance(nb["metadata"], dict)
    code = [c for c in nb["cells"] if c["cell_type"] == "code"]
    assert len(code) >= 4 and {c["cell_type"] for c in nb["cells"]} == {"code", "markdown"}
    sources = []
    for i, cell in enumerate(code):
        assert cell["outputs"] == [] and cell["execution_count"] is None  # stored unexecuted
        source = "".join(cell["source"]) if isinstance(cell["source"], list) else cell["source"]
        compile(source, f"notebook cell {i}", "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)
        sources.append(source)
    text = "\n".join(sources)
    assert "await reactor.connect()" in text and "asyncio.run" not in text
    assert (
        "from longlive.notebook import show" in text and "view = show(reactor)" in text
    )  # as the README says
    assert "await reactor.wait_for_frame(SWITCH)" in text and "current_start_frame + 3" in text


def test_record_schedule_in_process_on_the_default_model(tmp_path):
    """No --url: the runner runs in the script's process, on the default (embedded demo) model."""
    (tmp_path / "story.json").write_text(
        json.dumps(
            [
                {"timestamp": 0, "prompt": "a red circle moving right on a black background"},
                {"timestamp": 6, "prompt": "a blue circle moving right on a black background"},
            ]
        )
    )
    proc = run_example("record_schedule.py", "story.json", "--frames", "12", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "switched at latent frame 6 (video frame 21)" in proc.stdout
    n = latent_to_video_frame(12)
    assert f"wrote {n} frames (expected {n}) to story.mp4" in proc.stdout
    assert len(video_frames(tmp_path / "story.mp4", DEMO_SIZE)) == n


def test_live_prompts_in_process(tmp_path):
    proc = run_example(
        "live_prompts.py",
        "--blocks",
        "4",
        "--out",
        "live.mp4",
        cwd=tmp_path,
        stdin="a blue square moving up on a gray background\n",
    )
    assert proc.returncode == 0, proc.stderr
    assert "scheduled 'a blue square moving up on a gray background'" in proc.stdout
    assert "prompt switched" in proc.stdout
    n = latent_to_video_frame(12)
    assert (
        f"wrote {n} frames to live.mp4" in proc.stdout
        and len(video_frames(tmp_path / "live.mp4", DEMO_SIZE)) == n
    )


NOTEBOOK_RUNNER = """
import ast, asyncio, json, sys
cells = [c for c in json.load(open(sys.argv[1]))["cells"] if c["cell_type"] == "code"]

async def main():
    namespace = {"__name__": "__main__"}
    for i, cell in enumerate(cells):
        source = "".join(cell["source"])
        code = compile(source, f"cell {i}", "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)
        result = eval(code, namespace)  # a coroutine when the cell awaits, as in IPython
        if asyncio.iscoroutine(result):
            await result
        print(f"[cell {i} done]", flush=True)

asyncio.run(main())
"""


def test_the_notebook_runs_cell_after_cell_on_the_default_model(tmp_path):
    """The notebook as a kernel runs it (top-level await, one event loop), outside an IPython
    shell (`show()` then displays nothing)."""
    proc = subprocess.run(
        [sys.executable, "-c", NOTEBOOK_RUNNER, str(EXAMPLES / "notebook.ipynb")],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
        env={**ENV, "PYTHONPATH": ""},
        stdin=subprocess.DEVNULL,
    )
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr
    out = proc.stdout
    assert "latent frame 12: now 'a blue square moving right on a black background'" in out
    assert "now 'a blue square moving up on a navy background'" in out
    assert "recorded " in out and "notebook.mp4" in out
    written = int(out.split("recorded ")[1].split(" frames")[0])
    assert written >= 7 * 12 and len(video_frames(tmp_path / "notebook.mp4", DEMO_SIZE)) == written


def test_the_notebook_runs_headless_in_a_real_kernel_as_its_narration_says(tmp_path):
    """ "Run all" in a real Jupyter kernel (nbclient, as `jupyter nbconvert --execute` does): the
    switch at frame 12 shows, then the live change after it; the saved copy holds the live view's
    last frame and status, and the mp4."""
    import base64

    nbformat = pytest.importorskip("nbformat", reason="nbformat (Jupyter) is not installed")
    nbclient = pytest.importorskip("nbclient", reason="nbclient (Jupyter) is not installed")
    pytest.importorskip("ipykernel", reason="ipykernel (Jupyter) is not installed")

    nb = nbformat.read(EXAMPLES / "notebook.ipynb", as_version=4)
    client = nbclient.NotebookClient(
        nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
    )
    old_env = {k: os.environ.get(k) for k in ("OMP_NUM_THREADS",)}
    os.environ["OMP_NUM_THREADS"] = "1"  # the kernel inherits this process's environment
    try:
        client.execute()
    finally:
        for k, v in old_env.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    cells = {c.id: c for c in nb.cells}
    view = cells["code-3"].outputs
    [image] = [o for o in view if "image/png" in o.get("data", {})]
    assert base64.b64decode(image["data"]["image/png"])[:8] == b"\x89PNG\r\n\x1a\n"
    [status] = [o for o in view if "text/html" in o.get("data", {})]
    assert (
        "paused" in status["data"]["text/plain"]
        and "a blue square moving up on a navy background" in (status["data"]["text/plain"])
    )
    live = "".join(o.get("text", "") for o in cells["code-7"].outputs)
    effective = int(live.split("takes effect at latent frame ")[1].split()[0])
    assert effective > 12
    printed = "".join(o.get("text", "") for o in cells["code-9"].outputs).splitlines()
    assert printed[:2] == [
        "latent frame 12: now 'a blue square moving right on a black background'",
        f"latent frame {effective}: now 'a blue square moving up on a navy background'",
    ], printed
    written = int(printed[2].split("recorded ")[1].split(" frames")[0])
    assert written >= 7 * 12 and len(video_frames(tmp_path / "notebook.mp4", DEMO_SIZE)) == written
