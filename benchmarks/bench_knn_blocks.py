"""Top-k cosine kNN search (``painvrl.model.graphs.knn_neighbours``) with its default row blocks against one
256 MB block of rows, measured in the same run.

LATTICE searches its learned item graphs once per epoch and, in mask learning and HEI, once per epoch of every
environment model, so at the TikTok size the search is a visible share of a painvrl run. Rows: catalogue size x
content width (64: LATTICE's learned content; 128: one raw TikTok modality; 256: the Tiktok-like shape).

    PYTHONPATH=. python benchmarks/bench_knn_blocks.py            # TikTok and 76k-item shapes
    PYTHONPATH=. python benchmarks/bench_knn_blocks.py --quick    # TikTok shapes only
"""

from __future__ import annotations

import argparse
import time

import torch

from painvrl.model.graphs import KNN_BLOCK_ELEMENTS, knn_neighbours


def seconds(x: torch.Tensor, chunk: int | None, repeats: int) -> float:
    knn_neighbours(x, 10, chunk)  # warm-up
    started = time.perf_counter()
    for _ in range(repeats):
        knn_neighbours(x, 10, chunk)
    return (time.perf_counter() - started) / repeats


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    shapes = [(6710, 64, 5), (6710, 128, 5)] + ([] if args.quick else [(76000, 256, 1)])
    print("| items x dims | one 256 MB block of rows | default blocks | speed-up | same neighbours |")
    print("|---|---|---|---|---|")
    for n, d, repeats in shapes:
        x = torch.randn(n, d, generator=torch.Generator().manual_seed(0))
        big = max(1, KNN_BLOCK_ELEMENTS // n)
        base, ours = seconds(x, big, repeats), seconds(x, None, repeats)
        same = torch.equal(knn_neighbours(x, 10, big)[0], knn_neighbours(x, 10)[0])
        print(f"| {n:,} x {d} | {base:.3f} s | {ours:.3f} s | {base / ours:.2f}x | {same} |", flush=True)


if __name__ == "__main__":
    main()
