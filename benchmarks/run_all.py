"""Run the seven benchmarks one after the other and collect their `summary:` lines.

    python benchmarks/run_all.py                    # all seven
    python benchmarks/run_all.py --log /tmp/bench.log
    python benchmarks/run_all.py --only transport commands
    nice -n 10 python benchmarks/run_all.py         # on a machine shared with more important work

Each benchmark runs in its own process with this interpreter; its output is shown as it comes.
`bench_gpu.py` runs as is on CUDA (480x832, bf16) and, without a GPU, as its CPU smoke run
(64x112, fp32, few blocks: a check that it runs, not a speed figure). At the end: the machine
(cores, CPU model, GPU), each benchmark's wall time and its summary line.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

from _machine import cpu_model  # this folder is sys.path[0] when a script here runs

HERE = Path(__file__).resolve().parent
#: bench_gpu.py without a GPU: the smoke run (reduced DiT, tiny resolution); it checks the script.
CPU_SMOKE_GPU_ARGS = (
    "--height 64 --width 112 --blocks 4 --warmup 1 --switch-every 2 --layers 2 --threads 1".split()
)


def has_cuda() -> tuple[bool, str]:
    """Asked in a child process: this one stays small (its peak RSS is inherited by the children)."""
    code = "import torch; print(torch.cuda.get_device_name(0) if torch.cuda.is_available() else '')"
    try:
        name = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, timeout=300
        ).stdout
    except (OSError, subprocess.SubprocessError):
        name = ""
    name = name.strip()
    return bool(name), name or "none"


def plan(cuda: bool) -> dict[str, list[str]]:
    return {
        "blocks": ["bench_blocks.py"] + (["--device", "cuda"] if cuda else []),
        "transport": ["bench_transport.py"],
        "commands": ["bench_commands.py"],
        "load": ["bench_load.py"],
        "gpu": ["bench_gpu.py"] if cuda else ["bench_gpu.py", *CPU_SMOKE_GPU_ARGS],
        "demo": ["bench_demo.py"],
        "pacing": ["bench_pacing.py"],
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument(
        "--only", nargs="+", choices=["blocks", "transport", "commands", "load", "gpu", "demo", "pacing"]
    )
    ap.add_argument("--log", default=None, help="also save the full output to this file")
    ap.add_argument("--timeout", type=float, default=600.0, help="seconds before a benchmark is stopped")
    args = ap.parse_args()

    cuda, gpu = has_cuda()
    runs = {k: v for k, v in plan(cuda).items() if not args.only or k in args.only}
    stamp = dt.datetime.now().strftime("%Y-%m-%d %H:%M")
    log_path = Path(args.log) if args.log else Path(os.devnull)
    header = (
        f"# longlive benchmarks {stamp}: {os.cpu_count()} cores ({cpu_model()}), GPU: {gpu}, "
        f"python {platform.python_version()}, nice {os.nice(0)}"
    )
    print(header, flush=True)
    results: list[tuple[str, float, int, str]] = []
    with log_path.open("w") as log:
        log.write(header + "\n")
        for name, cmd in runs.items():
            line = f"\n## {name}: python benchmarks/{' '.join(cmd)}"
            print(line, flush=True)
            log.write(line + "\n")
            t0 = time.perf_counter()
            proc = subprocess.Popen(
                [sys.executable, "-u", str(HERE / cmd[0]), *cmd[1:]],
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            )
            summary = ""
            assert proc.stdout is not None
            deadline = t0 + args.timeout
            for out in proc.stdout:
                print(out, end="", flush=True)
                log.write(out)
                if out.startswith("summary:"):
                    summary = out.strip()
                if time.perf_counter() > deadline:
                    proc.kill()
                    summary = summary or f"summary: stopped after {args.timeout:.0f} s"
                    break
            rc = proc.wait()
            results.append((name, time.perf_counter() - t0, rc, summary or "summary: (none printed)"))

        lines = ["", f"{'benchmark':<10} {'wall s':>7} {'rc':>3}  summary"]
        lines += [f"{n:<10} {s:>7.0f} {rc:>3}  {summ}" for n, s, rc, summ in results]
        text = "\n".join(lines) + "\n"
        print(text, end="")
        log.write(text)
    if args.log:
        print(f"# full output: {log_path}")
    return 0 if all(rc == 0 for _, _, rc, _ in results) else 1


if __name__ == "__main__":
    sys.exit(main())
