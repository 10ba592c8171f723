"""The `longlive-runner` command, run as a real process."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest


def run_cli(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "longlive_runner", *args], capture_output=True, text=True, timeout=timeout
    )


def test_info_of_the_real_model_needs_no_weights():
    proc = run_cli("info", "--model", "longlive-1.3b")
    assert proc.returncode == 0, proc.stderr
    info = json.loads(proc.stdout)
    assert info["dit_parameters"] == 1418996800
    assert info["tokens_per_latent_frame"] == 1560
    assert info["video_frames_first_block"] == 9 and info["video_frames_per_block"] == 12
    assert 3.4 < info["memory_gb"]["kv_cache_bf16"] < 3.5  # "about 3.45 GB" for 30 layers


def test_generate_writes_an_mp4_with_every_frame(tmp_path):
    from longlive.video import read_video

    out = tmp_path / "v.mp4"
    proc = run_cli("generate", "--model", "tiny", "--prompt", "0:a red circle", "--prompt", "6:a blue square",
                   "--frames", "9", "--out", str(out))  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "generating" in proc.stderr and "wrote 33 frames" in proc.stderr
    video = read_video(out)
    assert video.shape == (33, 64, 112, 3) and video.dtype == np.uint8


def test_user_errors_exit_2_with_one_clear_line(tmp_path):
    proc = run_cli("info", "--model", "nope")
    assert proc.returncode == 2
    assert "error: 'nope' is neither a model name nor a folder; models: demo" in proc.stderr
    for args in (["generate", "--prompt", "0:a"], ["info"]):  # one wording, the quotes intact
        proc = run_cli(*args, "--model", "/nonexistent")
        assert proc.returncode == 2, proc.stderr
        assert proc.stderr == (
            "longlive-runner: error: '/nonexistent' is neither a model name nor a folder; "
            "models: demo, longlive-1.3b, longlive2-5b, tiny, tiny2\n"
        ), proc.stderr
    bad = tmp_path / "s.json"
    bad.write_text('{"x": "a"}')
    proc = run_cli("generate", "--schedule", str(bad))
    assert proc.returncode == 2 and "not an integer frame" in proc.stderr
    proc = run_cli("generate", "--prompt", "3:late start")
    assert proc.returncode == 2 and "frame 0" in proc.stderr
    proc = run_cli("generate", "--model", "longlive-1.3b", "--prompt", "0:x")
    assert proc.returncode == 2 and "longlive-runner download" in proc.stderr
    proc = run_cli("serve", "--max-frames", "2")  # the user limit must hold one block
    assert proc.returncode == 2 and "--max-frames must be in 3.." in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr


def test_a_device_the_machine_lacks_is_one_line_not_a_traceback():
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA: --device cuda works here")
    proc = run_cli("generate", "--device", "cuda", "--prompt", "0:a red circle")
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert "--device cuda: no CUDA device is available" in proc.stderr and "use --device cpu" in proc.stderr
    proc = run_cli("generate", "--device", "gpu0", "--prompt", "0:a red circle")
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and "not a torch device" in proc.stderr


def test_generate_notes_what_it_does_differently_and_warns_of_unknown_words(tmp_path):
    R, B = (
        "a red circle moving right on a black background",
        "a blue square moving right on a black background",
    )
    proc = run_cli("generate", "--prompt", "0:a purple elephant", "--prompt", f"7:{B}", "--prompt", f"0:{R}",
                   "--prompt", f"8:{R}", "--prompt", "99:a red circle moving up on a gray background",
                   "--prompt", "1:a purple elephant", "--frames", "12", "--out", str(tmp_path / "v.mp4"))  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    err = proc.stderr
    assert f"note: two prompts at frame 0: '{R}' (--prompt) replaces 'a purple elephant' (--prompt)" in err
    assert "note: the prompt at frame 7 takes effect at frame 9, the next block boundary" in err
    assert "note: the prompt at frame 8 replaces the one at frame 7: both take effect at frame 9" in err
    assert "note: the prompt at frame 99 is past the end of the video (frame 12): it is not used" in err
    # A prompt with words the demo cannot read: one warning naming them, and what it draws; one
    # saying what it lacks of the demo's form, with the prompt in the form.
    warning = [line for line in err.splitlines() if "warning:" in line]
    assert len(warning) == 2, err
    assert all("prompt at frame 1 ('a purple elephant')" in line for line in warning)
    assert "the model does not know 'purple', 'elephant'" in warning[0]
    assert "the demo model draws 'a COLOR SHAPE moving DIRECTION on a BACKGROUND background'" in warning[0]
    assert "it has no COLOR, SHAPE, DIRECTION or BACKGROUND" in warning[1]
    assert "in the form: 'a red circle moving right on a black background'" in warning[1]


def test_generate_help_shows_every_default():
    proc = run_cli("generate", "--help")
    assert proc.returncode == 0
    text = " ".join(proc.stdout.split())
    for option in ("--seed SEED", "--out OUT", "--frames FRAMES"):
        assert option in text
    assert "(default 0)" in text and "(default longlive.mp4)" in text and "(default 24)" in text


# A Python without the runner extra, as `pip install longlive` leaves it: its modules are hidden
# from the import system (sitecustomize runs before anything else).
WITHOUT_RUNNER_EXTRA = """
import sys
HIDDEN = {"torch", "safetensors", "einops", "tokenizers", "tqdm", "httpx"}
class _Hide:
    def __init__(self, inner):
        self.inner = inner
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in HIDDEN:
            return None
        return self.inner.find_spec(name, path, target)
    def __getattr__(self, name):
        return getattr(self.inner, name)
sys.meta_path[:] = [_Hide(f) for f in sys.meta_path]
"""


def test_without_the_runner_extra_every_use_is_a_one_line_hint(tmp_path):
    import os
    import shutil
    from pathlib import Path

    (tmp_path / "sitecustomize.py").write_text(WITHOUT_RUNNER_EXTRA)
    src = Path(__file__).resolve().parents[1] / "src"
    env = {**os.environ, "PYTHONPATH": f"{tmp_path}{os.pathsep}{src}"}
    check = subprocess.run([sys.executable, "-c", "import httpx"], capture_output=True, text=True, env=env)
    assert check.returncode == 1 and "No module named 'httpx'" in check.stderr  # the setup works
    script = shutil.which("longlive-runner")
    commands = [[sys.executable, "-m", "longlive_runner"]] + ([[script]] if script else [])
    for command in commands:
        for args in (["--help"], [], ["info"], ["serve", "--help"], ["generate", "--prompt", "0:a cat"]):
            proc = subprocess.run([*command, *args], capture_output=True, text=True, env=env, timeout=60)
            assert proc.returncode == 2 and proc.stdout == "", (args, proc.stdout)
            lines = proc.stderr.strip().splitlines()
            assert len(lines) == 1 and "Traceback" not in proc.stderr, (args, proc.stderr)
            assert "needs the 'runner' extra" in lines[0] and 'pip install "longlive[runner]"' in lines[0]
            assert "torch" in lines[0] and "httpx" in lines[0]


def test_thread_defaults_hold_up_on_a_shared_machine_and_longlive_threads_sets_them(tmp_path):
    """OpenMP waits passively and torch gets half the CPUs (1 on 2 cores) unless told otherwise;
    LONGLIVE_THREADS is the knob (0 = torch's default). `generate` says what it ran with."""
    import os

    from longlive_runner.threads import default_threads, thread_environment

    assert thread_environment({}, cpus=2) == {"OMP_WAIT_POLICY": "PASSIVE", "OMP_NUM_THREADS": "1"}
    assert thread_environment({}, cpus=16)["OMP_NUM_THREADS"] == "8"
    assert thread_environment({"OMP_NUM_THREADS": "3", "OMP_WAIT_POLICY": "ACTIVE"}, cpus=2) == {}
    assert thread_environment({"LONGLIVE_THREADS": "4", "OMP_NUM_THREADS": "3"}, cpus=2)["OMP_NUM_THREADS"] == "4"
    assert "OMP_NUM_THREADS" not in thread_environment({"LONGLIVE_THREADS": "0"}, cpus=2)
    for bad in ("x", "-1", "1.5"):
        with pytest.raises(ValueError, match="LONGLIVE_THREADS"):
            thread_environment({"LONGLIVE_THREADS": bad})

    base = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "LONGLIVE_THREADS", "OMP_WAIT_POLICY")}
    n = default_threads()
    for extra, says in (({}, f"{n} torch thread{'s' if n != 1 else ''})"), ({"LONGLIVE_THREADS": "2"}, "2 torch threads)")):
        proc = subprocess.run(
            [sys.executable, "-m", "longlive_runner", "generate", "--model", "tiny", "--prompt", "0:a cat",
             "--frames", "3", "--out", str(tmp_path / "t.mp4")],
            capture_output=True, text=True, env={**base, **extra}, timeout=300,
        )  # fmt: skip
        assert proc.returncode == 0, proc.stderr
        assert says in proc.stderr.splitlines()[-1], proc.stderr
    proc = subprocess.run(
        [sys.executable, "-m", "longlive_runner", "info"], capture_output=True, text=True,
        env={**base, "LONGLIVE_THREADS": "many"}, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and "LONGLIVE_THREADS='many'" in proc.stderr
