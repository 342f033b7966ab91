"""Timing helper shared by the benchmark scripts."""

import time


def timed_alternately(functions: dict, repeats: int) -> tuple[dict, dict]:
    """Seconds per call of each function, calls interleaved so machine load hits all alike;
    and each function's last result."""
    seconds = {name: [] for name in functions}
    results = {name: function() for name, function in functions.items()}  # warm-up
    for _ in range(repeats):
        for name, function in functions.items():
            started = time.perf_counter()
            results[name] = function()
            seconds[name].append(time.perf_counter() - started)
    return seconds, results
