"""`genqa env`: what a bug report needs -- versions, CPU and GPU, bf16 support, bitsandbytes / DeepSpeed availability.

A minimal report, to be extended (measured bf16 vs fp32 speed) by the hardware module proper.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import platform
import sys
from importlib.metadata import PackageNotFoundError, version

PACKAGES = ("genqa", "torch", "transformers", "trl", "peft", "accelerate", "datasets", "tokenizers", "bitsandbytes",
            "deepspeed", "tensorboard", "matplotlib")


def _version(name: str) -> str:
    try:
        return version(name)
    except PackageNotFoundError:
        return "not installed"


def _cpu_flags() -> str:
    """The bf16-related instruction sets the CPU advertises (Linux /proc/cpuinfo; empty elsewhere)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            flags = next((line.split(":", 1)[1].split() for line in fh if line.startswith("flags")), [])
    except OSError:
        return "unknown"
    wanted = ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile")
    return " ".join(f for f in wanted if f in flags) or "none of avx2/avx512/amx"


def report() -> list[str]:
    """The environment report, one `key: value` line each."""
    import torch

    lines = [f"python: {platform.python_version()} ({sys.executable})", f"platform: {platform.platform()}"]
    lines += [f"{name}: {_version(name)}" for name in PACKAGES]
    lines.append(f"cpu: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
                 f"torch threads {torch.get_num_threads()}, flags: {_cpu_flags()}")
    if torch.cuda.is_available():
        for i in range(torch.cuda.device_count()):
            p = torch.cuda.get_device_properties(i)
            lines.append(f"gpu {i}: {p.name}, {p.total_memory / 2**30:.1f} GiB, capability {p.major}.{p.minor}")
        lines.append(f"cuda: {torch.version.cuda}, bf16 supported: {torch.cuda.is_bf16_supported()}")
    else:
        lines.append("gpu: none (CUDA not available)")
    lines.append(f"bitsandbytes importable: {importlib.util.find_spec('bitsandbytes') is not None}")
    lines.append(f"deepspeed importable: {importlib.util.find_spec('deepspeed') is not None}")
    return lines


def main(argv: list[str] | None = None) -> int:
    """Print the environment report."""
    argparse.ArgumentParser(prog="genqa env", description=__doc__.split("\n\n")[0]).parse_args(argv)
    print("\n".join(report()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
