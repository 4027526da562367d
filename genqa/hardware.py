"""What this machine can do, measured: CPU flags, cores, bf16 vs fp32 matmul speed; the precision genqa trains in.

The machines genqa runs on differ: a CPU with AVX512-BF16 (or AMX) runs bf16 matmuls about 4x faster than fp32, one
with AVX2 only runs them about 50x *slower*; TRL's `SFTConfig` defaults to `bf16: true` either way. So genqa decides
from a measurement, not a default: `probe()` times a square fp32 and bf16 matmul (about 0.2 s), once per CPU model,
flags, torch version and thread count, cached in `$GENQA_CACHE/hardware/` (default `~/.cache/genqa`).
`decide_precision` turns the recipe's request and the measurement into the precision a run uses, with the reason and,
when the recipe asks for bf16 on a CPU where it is slower, a warning that gives the measured ratio.

Hand-written because neither torch nor accelerate answers "is bf16 faster here": `torch.backends.mkldnn` /
`torch.cpu._is_avx512_bf16_supported()` say whether kernels *exist*, not how fast they run under this build and
thread count. `python -m genqa.hardware` (`genqa env`) prints the whole report.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.metadata
import importlib.util
import json
import math
import os
import platform
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from genqa.files import cache_dir, write_atomic

#: CPU flags that decide matmul speed (as /proc/cpuinfo spells them)
FLAGS_THAT_MATTER = ("avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "amx_bf16", "amx_tile", "amx_int8")
#: bf16 is used where its matmuls are at least this much faster than fp32 (below it, autocast's casts eat the gain)
MIN_BF16_SPEEDUP = 1.25
PROBE_SIZE = 384  # square matmul side: 0.11 GFLOP, ~0.15 s even where bf16 is emulated at ~1 GFLOP/s
PROBE_VERSION = 2  # part of the cache key: a changed probe measures again
PROBE_SECONDS = 0.15  # both dtypes, alternating, after one warm-up call each
LIBRARIES = ("torch", "transformers", "trl", "peft", "accelerate", "datasets", "tokenizers", "bitsandbytes",
             "deepspeed")


# ---- CPU and cores -------------------------------------------------------------------------------------------------
def cpu_info() -> dict[str, Any]:
    """CPU model name and the flags that matter (Linux /proc/cpuinfo; empty flags elsewhere)."""
    model, flags = platform.processor() or platform.machine(), set()
    try:
        text = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:
        text = ""
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip()
        if key == "model name" and value.strip():
            model = value.strip()
        elif key == "flags" and not flags:
            flags = set(value.split())
    return {"model": model, "flags": {f: f in flags for f in FLAGS_THAT_MATTER}, "flags_known": bool(flags)}


def available_cores() -> int:
    """Cores this process may actually use: its CPU affinity, capped by a cgroup CPU quota when one is set."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cores = os.cpu_count() or 1
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()[:2]
        if quota != "max":
            cores = min(cores, max(1, math.ceil(int(quota) / int(period))))
    except (OSError, ValueError):
        pass
    return cores


def fit_threads() -> str:
    """Lower torch's intra-op threads to the cores this process may use (torch counts the machine's cores, not the
    container's); returns what was done. Left alone when OMP_NUM_THREADS / MKL_NUM_THREADS set it on purpose."""
    import torch

    cores, threads = available_cores(), torch.get_num_threads()
    if os.environ.get("OMP_NUM_THREADS") or os.environ.get("MKL_NUM_THREADS"):
        return f"torch threads: {threads} (set by OMP_NUM_THREADS/MKL_NUM_THREADS), {cores} cores available"
    if threads > cores:
        torch.set_num_threads(cores)
        return f"torch threads: {threads} -> {cores}, the cores this process may use (affinity / cgroup quota)"
    return f"torch threads: {threads}, {cores} cores available"


# ---- the probe -----------------------------------------------------------------------------------------------------
def _best_seconds(n: int = PROBE_SIZE, budget: float = PROBE_SECONDS) -> tuple[float, float]:
    """Fastest fp32 and bf16 n x n matmul seen within about `budget` seconds, after one warm-up call each.

    The two dtypes alternate, call by call, so that a machine shared with other work loads both sides alike.
    """
    import torch

    gen = torch.Generator().manual_seed(0)
    pairs = [(a, a.to(torch.bfloat16)) for a in (torch.randn(n, n, generator=gen), torch.randn(n, n, generator=gen))]
    (a32, a16), (b32, b16) = pairs
    torch.mm(a32, b32), torch.mm(a16, b16)
    best32 = best16 = float("inf")
    start = time.perf_counter()
    while True:
        t = time.perf_counter()
        torch.mm(a32, b32)
        t2 = time.perf_counter()
        torch.mm(a16, b16)
        best32, best16 = min(best32, t2 - t), min(best16, time.perf_counter() - t2)
        if time.perf_counter() - start > budget:
            return best32, best16


def probe_key() -> str:
    """What a probe result depends on: the probe's version, CPU model and flags, torch version, thread count."""
    import torch

    cpu = cpu_info()
    text = json.dumps([PROBE_VERSION, cpu["model"], sorted(f for f, on in cpu["flags"].items() if on),
                       torch.__version__, torch.get_num_threads()])
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def probe(refresh: bool = False) -> dict[str, Any]:
    """fp32 and bf16 matmul speed on this CPU (GFLOP/s) and `bf16_speedup` (bf16 / fp32); cached per `probe_key`."""
    import torch

    path = cache_dir() / "hardware" / f"cpu-{probe_key()}.json"
    if path.is_file() and not refresh:
        try:
            return json.loads(path.read_text(encoding="utf-8")) | {"cached": True}
        except (OSError, ValueError):
            pass  # unreadable cache: measure again
    flop = 2 * PROBE_SIZE ** 3
    t32, t16 = _best_seconds()
    result = {"fp32_gflops": round(flop / t32 / 1e9, 2), "bf16_gflops": round(flop / t16 / 1e9, 2),
              "bf16_speedup": round(t32 / t16, 3), "matmul": f"{PROBE_SIZE}x{PROBE_SIZE}",
              "threads": torch.get_num_threads(), "torch": torch.__version__,
              "load_average": round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None}
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(path, json.dumps(result, indent=1))
    except OSError:
        pass  # a read-only home: measure on every run
    return result | {"cached": False}


# ---- the decision --------------------------------------------------------------------------------------------------
@dataclass
class Precision:
    """The precision a run uses: `bf16` (autocast / mixed precision), why, and a warning for the user if any."""

    bf16: bool
    reason: str
    warning: str | None = None
    bf16_speedup: float | None = None


RECIPE_FIX = ("Remove `bf16` from the recipe (genqa then picks the faster precision per machine) or set "
              "`bf16: false`.")


def decide_precision(requested: bool | None, device: str, bf16_speedup: float | None = None,
                     gpu_bf16: bool = False, fix: str = RECIPE_FIX) -> Precision:
    """bf16 or not, from what the recipe asked (`None`: it did not say) and what was measured.

    GPU: bf16 where the GPU supports it, unless the recipe says otherwise. CPU: bf16 only where the probe measured
    bf16 matmuls at least `MIN_BF16_SPEEDUP` times faster; an explicit `bf16: true` is kept (the user asked) but warned
    about, with the measured ratio, where bf16 is slower than fp32.
    """
    if device != "cpu":
        if requested is None:
            return Precision(gpu_bf16, f"{device} {'supports' if gpu_bf16 else 'does not support'} bf16")
        if requested and not gpu_bf16:
            return Precision(True, "the recipe asks for bf16", f"the recipe asks for bf16 but this {device} does not "
                             "support it; set `bf16: false` (or `fp16: true`)")
        return Precision(requested, "the recipe sets bf16" if requested else "the recipe sets bf16: false")
    measured = (f"bf16 matmuls measured {bf16_speedup:.2f}x the speed of fp32 on this CPU"
                if bf16_speedup is not None else "bf16 speed not measured")
    if requested is None:
        fast = bf16_speedup is not None and bf16_speedup >= MIN_BF16_SPEEDUP
        return Precision(fast, f"{measured} ({'bf16 autocast' if fast else 'fp32'}; the recipe does not set bf16)",
                         bf16_speedup=bf16_speedup)
    warning = None
    if requested and bf16_speedup is not None and bf16_speedup < 1:
        warning = (f"bf16 is asked for, but {measured}: this run will be about {1 / bf16_speedup:.0f}x slower "
                   f"than in fp32. {fix}")
    return Precision(requested, f"the recipe sets bf16: {str(requested).lower()} ({measured})", warning, bf16_speedup)


def precision_for(requested: bool | None, use_cpu: bool = False, fix: str = RECIPE_FIX) -> Precision:
    """`decide_precision` on this machine: the GPU when one is used, else the (cached) CPU probe."""
    import torch

    if torch.cuda.is_available() and not use_cpu:
        return decide_precision(requested, "cuda", gpu_bf16=torch.cuda.is_bf16_supported(), fix=fix)
    return decide_precision(requested, "cpu", probe()["bf16_speedup"], fix=fix)


def resolve_autocast(asked: str) -> str:
    """`genqa.generate --autocast`: `auto` becomes `bf16` or `none` by `precision_for`; says what was chosen, and
    warns where an explicit `bf16` is slower than fp32 on this CPU. Returns `bf16` or `none`."""
    if asked == "none":
        return "none"
    choice = precision_for(None if asked == "auto" else True, fix="Use `--autocast auto` (or `none`).")
    if asked == "auto":
        print(f"[genqa] autocast: {'bf16' if choice.bf16 else 'none'} -- {choice.reason}", file=sys.stderr)
    if choice.warning:
        print(f"[genqa] warning: {choice.warning}", file=sys.stderr)
    return "bf16" if choice.bf16 else "none"


# ---- the report ----------------------------------------------------------------------------------------------------
def _version(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def describe(measure: bool = True) -> dict[str, Any]:
    """Everything `genqa env` reports, as a dict (JSON-serialisable)."""
    import torch

    info: dict[str, Any] = {"python": sys.version.split()[0], "platform": platform.platform(),
                            "versions": {name: _version(name) for name in LIBRARIES}}
    info["cpu"] = cpu_info() | {"cores_available": available_cores(), "os_cpu_count": os.cpu_count(),
                                "torch_threads": torch.get_num_threads()}
    info["gpu"] = {"cuda_available": torch.cuda.is_available(), "cuda_version": torch.version.cuda,
                   "devices": [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]}
    if torch.cuda.is_available():
        info["gpu"]["bf16_supported"] = torch.cuda.is_bf16_supported()
    info["bitsandbytes"] = importlib.util.find_spec("bitsandbytes") is not None
    info["deepspeed"] = importlib.util.find_spec("deepspeed") is not None
    if measure:
        info["cpu_probe"] = probe()
        info["precision"] = asdict(precision_for(None))
    return info


def report_lines(info: dict[str, Any]) -> list[str]:
    """`describe()` as the lines `genqa env` prints."""
    cpu, gpu = info["cpu"], info["gpu"]
    flags = ", ".join(f"{f} {'yes' if on else 'no'}" for f, on in cpu["flags"].items())
    lines = [f"python {info['python']} on {info['platform']}",
             "versions: " + ", ".join(f"{k} {v or '-'}" for k, v in info["versions"].items()),
             f"CPU: {cpu['model']}; {flags if cpu['flags_known'] else 'flags unknown (no /proc/cpuinfo)'}",
             f"cores: {cpu['cores_available']} available to this process (of {cpu['os_cpu_count']}), torch uses "
             f"{cpu['torch_threads']} threads",
             f"GPU: {', '.join(gpu['devices']) or 'none'} (CUDA {gpu['cuda_version'] or '-'})",
             f"bitsandbytes: {'installed' if info['bitsandbytes'] else 'not installed'}; "
             f"DeepSpeed: {'installed' if info['deepspeed'] else 'not installed'}"]
    if "cpu_probe" in info:
        pr = info["cpu_probe"]
        lines.append(f"CPU matmul {pr['matmul']}, {pr['threads']} threads: fp32 {pr['fp32_gflops']} GFLOP/s, bf16 "
                     f"{pr['bf16_gflops']} GFLOP/s (bf16/fp32 {pr['bf16_speedup']}x; "
                     f"{'cached' if pr.get('cached') else 'measured now'})")
        prec = info["precision"]
        lines.append(f"precision genqa uses when a recipe does not set bf16: {'bf16' if prec['bf16'] else 'fp32'} "
                     f"-- {prec['reason']}")
    return lines


def main(argv: list[str] | None = None) -> int:
    """`genqa env` / `python -m genqa.hardware`: print the environment report (`--json` for the dict)."""
    p = argparse.ArgumentParser(prog="genqa env", description="What this machine offers genqa, measured.")
    p.add_argument("--json", action="store_true", help="Print the report as one JSON object.")
    p.add_argument("--refresh", action="store_true", help="Measure the CPU again instead of reading the cache.")
    args = p.parse_args(argv)
    if args.refresh:
        probe(refresh=True)
    info = describe()
    print(json.dumps(info, indent=1) if args.json else "\n".join(report_lines(info)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
