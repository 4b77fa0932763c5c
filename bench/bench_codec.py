"""Codec throughput for float32 arrays: `python bench/bench_codec.py [--repeats N] [--sizes 1,16,100,300]`.

Prints MiB/s (best of N) for encode, decode of a bytes body (one copy per array), decode of a bytearray
body (zero copy), and encode followed by a bytes decode.
"""

from __future__ import annotations

import argparse
import gc
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fl_broker.wire.codec import decode, encode  # noqa: E402

MiB = 1024 * 1024


def best_seconds(action: Callable[[], Any], repeats: int) -> float:
    """The fastest of `repeats` runs; the result is dropped before the next run so memory stays flat."""
    best = float("inf")
    for _ in range(repeats):
        gc.collect()
        start = time.perf_counter()
        result = action()
        best = min(best, time.perf_counter() - start)
        del result
    return best


def bench_size(size_mib: int, repeats: int) -> dict[str, float]:
    """MiB/s of each operation for one float32 array of `size_mib` MiB."""
    weights = np.random.default_rng(0).random(size_mib * MiB // 4, dtype=np.float32)
    obj = {"numpy_key": weights, "meta": {"round": 1}}
    body = encode(obj)
    writable = bytearray(body)
    assert decode(body)["numpy_key"].tobytes() == weights.tobytes()
    timings = {
        "encode": best_seconds(lambda: encode(obj), repeats),
        "decode(bytes)": best_seconds(lambda: decode(body), repeats),
        "decode(bytearray)": best_seconds(lambda: decode(writable), repeats),
        "encode+decode": best_seconds(lambda: decode(encode(obj)), repeats),
    }
    return {name: size_mib / seconds for name, seconds in timings.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--sizes", default="1,16,100,300", help="comma-separated sizes in MiB")
    args = parser.parse_args()
    columns = ["encode", "decode(bytes)", "decode(bytearray)", "encode+decode"]
    print(f"float32 arrays, best of {args.repeats}, MiB/s")
    print(f"{'size':>8} " + " ".join(f"{c:>18}" for c in columns))
    for size in (int(s) for s in args.sizes.split(",")):
        rates = bench_size(size, args.repeats)
        print(f"{size:>5} MiB " + " ".join(f"{rates[c]:>18,.0f}" for c in columns))


if __name__ == "__main__":
    main()
