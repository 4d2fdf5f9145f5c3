"""Shared helpers of the benchmark scripts: the machine, statistics, timing and Markdown."""

from __future__ import annotations

import math
import os
import platform
import random
import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch


def machine() -> dict[str, Any]:
    """CPU model, core count, torch threads, load average and package versions."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    from causalvl.runtime import package_versions

    load = os.getloadavg() if hasattr(os, "getloadavg") else (float("nan"),) * 3
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "platform": platform.platform(),
        "load_average_at_start": [round(x, 2) for x in load],
        "versions": {k: v or "not installed" for k, v in package_versions().items()},
    }


def mean_std(values: Sequence[float]) -> dict[str, Any]:
    """``{"mean", "std", "values"}`` (sample standard deviation; 0 for a single value)."""
    vals = [float(v) for v in values]
    return {
        "mean": statistics.fmean(vals),
        "std": statistics.stdev(vals) if len(vals) > 1 else 0.0,
        "values": vals,
    }


def interleaved_medians(
    fns: Mapping[str, Callable[[], Any]], *, rounds: int, warmup: int = 1, seed: int = 0
) -> dict[str, dict[str, float]]:
    """Time every function ``rounds`` times, interleaved, after ``warmup`` untimed calls each.

    Each round calls every function once in an order shuffled by ``seed``, so slow drift of the
    machine (thermal, other processes) spreads over all of them alike. Returns per name the
    median and the min / max of the timed calls, in seconds.
    """
    rng = random.Random(seed)
    names = list(fns)
    for _ in range(warmup):
        for name in names:
            fns[name]()
    times: dict[str, list[float]] = {n: [] for n in names}
    for _ in range(rounds):
        order = names[:]
        rng.shuffle(order)
        for name in order:
            start = time.perf_counter()
            fns[name]()
            times[name].append(time.perf_counter() - start)
    return {
        n: {"median": statistics.median(t), "min": min(t), "max": max(t), "n": len(t)}
        for n, t in times.items()
    }


def fmt(value: float, digits: int = 3) -> str:
    """A finite number with ``digits`` decimals; raises on NaN / inf so no table shows them."""
    if value is None or not math.isfinite(float(value)):
        raise ValueError(f"cannot format {value!r} in a benchmark table: not a finite number")
    return f"{float(value):.{digits}f}"


def pm(stats: Mapping[str, Any], digits: int = 3) -> str:
    """``mean ± std`` of a :func:`mean_std` result."""
    return f"{fmt(stats['mean'], digits)} ± {fmt(stats['std'], digits)}"


def table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A GitHub-flavoured Markdown table."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)
