"""Benchmark: full-ranking evaluation at a Kwai-like shape against a bare "chunked matmul + topk" floor.

Shape (default): 7,000 users, 86,000 items, dim 128, ~300k training positives excluded, ~40k test positives;
scores = P[users] @ Q^T. Both paths use ``torch.set_num_threads(2)`` and the same chunk size.

- floor: for each chunk of users, ``P_chunk @ Q^T`` then ``torch.topk``; nothing else;
- ours: ``evaluate_positives`` (seen-item exclusion, top-K, recall/precision/ndcg/hit @10,20 with 3 envs).

Peak memory: each evaluation runs in a fresh subprocess for 1x and 2x the users; the growth of peak RSS
(``resource.getrusage``) over the post-setup baseline must stay near one ``chunk x n_items`` score block,
not grow with ``users x items``.

Usage: ``python benchmarks/bench_evaluation.py [--quick]``.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from painvrl.evaluation import PositiveSets, evaluate_positives

DIM = 128
KS = (10, 20)


@dataclass
class Shape:
    users: int
    items: int
    train: int
    test: int


FULL = Shape(users=7_000, items=86_000, train=300_000, test=40_000)
QUICK = Shape(users=1_500, items=20_000, train=60_000, test=8_000)


@dataclass
class Problem:
    P: torch.Tensor
    Q: torch.Tensor
    exclude: PositiveSets
    test_pairs: np.ndarray
    env_labels: np.ndarray


def make_problem(shape: Shape, seed: int = 0) -> Problem:
    gen = torch.Generator().manual_seed(seed)
    rng = np.random.default_rng(seed)
    P = torch.randn(shape.users, DIM, generator=gen) / DIM**0.5
    Q = torch.randn(shape.items, DIM, generator=gen)
    train = np.stack(
        [rng.integers(0, shape.users, shape.train), rng.integers(0, shape.items, shape.train)], 1
    )
    test = np.stack([rng.integers(0, shape.users, shape.test), rng.integers(0, shape.items, shape.test)], 1)
    exclude = PositiveSets.from_pairs(train, shape.users, shape.items)
    return Problem(P, Q, exclude, test, rng.integers(0, 3, shape.test))


def run_ours(pb: Problem, chunk: int) -> dict[str, object]:
    def score(users: torch.Tensor) -> torch.Tensor:
        return pb.P[users] @ pb.Q.T

    res = evaluate_positives(
        score, pb.Q.shape[0], pb.test_pairs, pb.exclude, KS, chunk_size=chunk, env_labels=pb.env_labels
    )
    return res.to_dict()


def run_floor(pb: Problem, users: np.ndarray, chunk: int) -> None:
    k = max(KS)
    with torch.no_grad():
        for start in range(0, users.shape[0], chunk):
            ids = torch.from_numpy(users[start : start + chunk])
            torch.topk(pb.P[ids] @ pb.Q.T, k, dim=1)


def status_mib(field: str) -> float:
    """A ``/proc/self/status`` memory field (``VmRSS``, ``VmHWM``) in MiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024.0
    raise RuntimeError(f"{field} not in /proc/self/status")


def reset_peak_rss() -> bool:
    """Reset the peak-RSS mark (Linux >= 4.0: write 5 to /proc/self/clear_refs); False when unsupported."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def mem_child(users: int, items: int, train: int, test: int, chunk: int) -> None:
    """Subprocess body: peak RSS before and after one full evaluation, printed as JSON."""
    torch.set_num_threads(2)
    pb = make_problem(Shape(users, items, train, test))
    if reset_peak_rss():  # peak RSS restarts from the current RSS, so setup peaks do not mask growth
        before, method = status_mib("VmRSS"), "VmHWM after clear_refs"
        run_ours(pb, chunk)
        after = status_mib("VmHWM")
    else:
        before, method = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0, "ru_maxrss"
        run_ours(pb, chunk)
        after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    print(json.dumps({"before_mib": before, "after_mib": after, "method": method}))


def measure_memory(shape: Shape, factor: int, chunk: int) -> tuple[float, str]:
    """Peak-RSS growth (MiB) of one evaluation at ``factor`` x the users/pairs, in a fresh subprocess."""
    cmd = [
        sys.executable,
        __file__,
        "--mem-child",
        *(str(v) for v in (shape.users * factor, shape.items, shape.train * factor, shape.test * factor)),
        "--chunk-size",
        str(chunk),
    ]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.strip().splitlines()[-1]
    rec = json.loads(out)
    return float(rec["after_mib"]) - float(rec["before_mib"]), str(rec["method"])


def best_of(fn: object, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()  # type: ignore[operator]
        times.append(time.perf_counter() - t0)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small shape (seconds)")
    parser.add_argument("--chunk-size", type=int, default=1024)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--mem-child", nargs=4, type=int, metavar=("USERS", "ITEMS", "TRAIN", "TEST"))
    args = parser.parse_args()
    if args.mem_child:
        users, items, train, test = args.mem_child
        mem_child(users, items, train, test, chunk=args.chunk_size)
        return

    torch.set_num_threads(2)
    shape = QUICK if args.quick else FULL
    chunk = args.chunk_size
    pb = make_problem(shape)
    users = PositiveSets.from_pairs(pb.test_pairs, shape.users, shape.items).users_with_items()
    n = users.shape[0]
    run_floor(pb, users[: min(n, chunk)], chunk)  # warm-up
    t_floor = best_of(lambda: run_floor(pb, users, chunk), args.repeats)
    metrics: dict[str, object] = {}

    def ours() -> None:
        metrics.update(run_ours(pb, chunk))

    t_ours = best_of(ours, args.repeats)
    mem1 = measure_memory(shape, 1, chunk)
    mem2 = measure_memory(shape, 2, chunk)
    block_mib = chunk * shape.items * 4 / 2**20
    full_mib = n * shape.items * 4 / 2**20

    print(
        f"shape: {shape.users} users ({n} with test positives), {shape.items} items, dim {DIM}, "
        f"{pb.exclude.nnz} seen pairs excluded, {pb.test_pairs.shape[0]} test pairs, "
        f"chunk {chunk}, K={max(KS)}, threads {torch.get_num_threads()}"
    )
    print()
    print(f"| {'path':<42} | {'seconds':>8} | {'users/s':>9} | {'vs floor':>8} |")
    print(f"|{'-' * 44}|{'-' * 10}|{'-' * 11}|{'-' * 10}|")
    print(f"| {'floor: chunked matmul + topk':<42} | {t_floor:8.2f} | {n / t_floor:9.0f} | {1.0:8.2f} |")
    ours_label = "ours: evaluate_positives (exclude+metrics)"
    print(f"| {ours_label:<42} | {t_ours:8.2f} | {n / t_ours:9.0f} | {t_floor / t_ours:8.2f} |")
    print()
    print(f"| {'peak RSS growth (' + mem1[1] + ')':<42} | {'users':>8} | {'MiB':>9} |")
    print(f"|{'-' * 44}|{'-' * 10}|{'-' * 11}|")
    for factor, mem in ((1, mem1), (2, mem2)):
        label = f"ours, {factor}x users"
        print(f"| {label:<42} | {shape.users * factor:8d} | {mem[0]:9.0f} |")
    print(f"| {'one chunk x items float32 block':<42} | {chunk:8d} | {block_mib:9.0f} |")
    print(f"| {'dense users x items float32 (1x), avoided':<42} | {n:8d} | {full_mib:9.0f} |")
    print()
    overall = metrics.get("metrics", {})
    print("metrics (random model, sanity only):", json.dumps(overall))
    ratio = t_floor / t_ours
    mem_ratio = mem2[0] / max(mem1[0], 1.0)
    print(f"throughput ratio ours/floor = {ratio:.2f} (bar >= 0.5): {'PASS' if ratio >= 0.5 else 'FAIL'}")
    print(f"peak-RSS growth 2x/1x users = {mem_ratio:.2f} (bounded if ~1, dense would be 2)")


if __name__ == "__main__":
    main()
