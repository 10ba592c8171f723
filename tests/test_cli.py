"""The `longlive-runner` command, run as a real process."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np


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
    from longlive._video import read_video

    out = tmp_path / "v.mp4"
    proc = run_cli("generate", "--model", "tiny", "--prompt", "0:a red circle", "--prompt", "6:a blue square",
                   "--frames", "9", "--out", str(out))  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "generating" in proc.stderr and "wrote 33 frames" in proc.stderr
    video = read_video(out)
    assert video.shape == (33, 64, 112, 3) and video.dtype == np.uint8


def test_user_errors_exit_2_with_one_clear_line(tmp_path):
    proc = run_cli("info", "--model", "nope")
    assert proc.returncode == 2 and "unknown model 'nope'" in proc.stderr
    bad = tmp_path / "s.json"
    bad.write_text('{"x": "a"}')
    proc = run_cli("generate", "--schedule", str(bad))
    assert proc.returncode == 2 and "not an integer frame" in proc.stderr
    proc = run_cli("generate", "--prompt", "3:late start")
    assert proc.returncode == 2 and "frame 0" in proc.stderr
    proc = run_cli("generate", "--model", "longlive-1.3b", "--prompt", "0:x")
    assert proc.returncode == 2 and "longlive-runner download" in proc.stderr
    assert "Traceback" not in proc.stderr
