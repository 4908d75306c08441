"""Cost of the registered backbones at the TikTok shape and at a Tiktok-like synthetic shape.

Performance bars:

1. LightGCN-style propagation (``painvrl.model.graphs.propagate``, L layers) runs at no less than 0.5x a bare
   ``torch.sparse.mm`` loop over the same adjacency and layers (ratio = bare seconds / ours); forward and
   forward + backward are both printed.
2. The top-k cosine kNN item graph at 76k items (256-d) is built in chunks with peak memory under 2 GB; the
   dense items x items float32 similarity it avoids is printed beside it.
3. One training epoch of every backbone (batch 2048, the default negatives) is reported, with the peak RSS of
   the process that ran it (bar on TikTok: under 3 GB).

Every measurement runs in its own subprocess, so peak RSS is the measurement's own. Random positives and
features of the given shape (the cost does not depend on the values).

    PYTHONPATH=. python benchmarks/bench_backbones.py                 # TikTok shape + 36k x 76k shape
    PYTHONPATH=. python benchmarks/bench_backbones.py --quick         # small shapes, seconds
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from typing import Any

SHAPES = {
    "tiktok": {"n_users": 9308, "n_items": 6710, "n_positives": 59541, "dims": [128, 128]},
    "tiktok-like": {"n_users": 36000, "n_items": 76000, "n_positives": 560000, "dims": [128, 128]},
    "quick": {"n_users": 2000, "n_items": 3000, "n_positives": 20000, "dims": [32, 32]},
}
MODELS = ["ultragcn", "lightgcn", "vbpr", "mmgcn", "lattice", "freedom", "bm3"]


def _data(shape: dict[str, Any]) -> Any:
    import numpy as np

    from painvrl.data.dataset import InteractionData

    rng = np.random.default_rng(0)
    n_users, n_items, n_pos = shape["n_users"], shape["n_items"], shape["n_positives"]
    train = np.stack([rng.integers(0, n_users, n_pos), rng.integers(0, n_items, n_pos)], axis=1)
    held = np.stack([np.arange(n_users), rng.integers(0, n_items, n_users)], axis=1)
    features = {f"m{k}": rng.standard_normal((n_items, d)).astype(np.float32) for k, d in enumerate(shape["dims"])}
    return InteractionData("bench", n_users, n_items, train, held, held, features)


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def measure_propagation(shape: dict[str, Any], layers: int = 3, reps: int = 5) -> dict[str, float]:
    """Seconds of L-layer propagation, forward and forward + backward (the gradient of the embeddings).

    Ours is ``propagate`` over the graph as the backbones hold it (CSR with a stored-transpose backward); bare is
    a ``torch.sparse.mm`` loop over the COO adjacency with autograd's own backward.
    """
    import torch

    from painvrl.model.graphs import bipartite_adjacency, propagate
    from painvrl.model.sparse import SparseMatrix

    data = _data(shape)
    adj = bipartite_adjacency(data.train, data.n_users, data.n_items)
    graph = SparseMatrix(adj, symmetric=True)
    emb = torch.randn(data.n_users + data.n_items, 64, requires_grad=True)

    def bare() -> torch.Tensor:
        out = cur = emb
        for _ in range(layers):
            cur = torch.sparse.mm(adj, cur)
            out = out + cur
        return out

    def ours() -> torch.Tensor:
        return propagate(graph.matrix(), emb, layers)

    def timed(fn: Any, backward: bool) -> float:
        samples = []
        for rep in range(reps + 1):
            started = time.perf_counter()
            if backward:
                fn().sum().backward()
                emb.grad = None
            else:
                with torch.no_grad():
                    fn()
            if rep:  # the first call warms up
                samples.append(time.perf_counter() - started)
        return sorted(samples)[len(samples) // 2]

    return {"ours_s": timed(ours, False), "bare_s": timed(bare, False), "ours_train_s": timed(ours, True),
            "bare_train_s": timed(bare, True), "nnz": float(adj._nnz())}


def measure_knn(shape: dict[str, Any], k: int = 10) -> dict[str, float]:
    import torch

    from painvrl.model.graphs import knn_neighbours

    x = torch.randn(shape["n_items"], sum(shape["dims"]))
    before = _peak_mb()
    started = time.perf_counter()
    knn_neighbours(x, k)
    return {"seconds": time.perf_counter() - started, "peak_mb": _peak_mb(), "before_mb": before,
            "dense_mb": shape["n_items"] ** 2 * 4 / 2**20}


def measure_epoch(shape: dict[str, Any], name: str, steps: int) -> dict[str, float]:
    import torch

    from painvrl.config import load_config
    from painvrl.distributed.collective import LocalCollective
    from painvrl.distributed.sampling import EpochBatches
    from painvrl.model.encoders import FeatureProjection
    from painvrl.training.loop import Optimisers, step_loss
    from painvrl.training.pipeline import new_model

    data = _data(shape)
    config = load_config(None, [f"model.name={name}", "train.batch_size=2048"])
    m = config.model
    features = torch.from_numpy(data.feature_matrix())
    build_started = time.perf_counter()
    model = new_model(config, data, features, lambda: FeatureProjection(data.feature_dim, m.k_f, m.init_std), 0)
    build = time.perf_counter() - build_started
    opt = Optimisers(model, list(model.parameters()), 1e-3, sparse=True)
    train = torch.as_tensor(data.train)
    batches = EpochBatches(len(train), 2048, 0, 0, phase="bench", n_items=data.n_items,
                           n_negatives=m.n_negatives, negative_pool=m.negative_pool)
    model.train()
    model.start_epoch(0, 0)
    collective = LocalCollective()
    timings = []
    for index, batch in enumerate(batches):
        if index >= steps + 1:
            break
        started = time.perf_counter()
        rows = train[batch.rows]
        opt.zero_grad()
        assert batch.negatives is not None
        loss = step_loss(model, rows[:, 0], rows[:, 1], batch.negatives, batch.global_size, 1,
                         pool=batch.pool, pool_positions=batch.pool_positions)
        loss.backward()
        opt.sync(collective)
        opt.step()
        if index:  # the first step warms up
            timings.append(time.perf_counter() - started)
    per_step = sum(timings) / len(timings)
    return {"build_s": build, "step_s": per_step, "epoch_s": per_step * len(batches), "steps": float(len(batches)),
            "peak_mb": _peak_mb()}


def child(kind: str, shape_name: str, extra: str) -> None:
    shape = SHAPES[shape_name]
    if kind == "propagation":
        result = measure_propagation(shape)
    elif kind == "knn":
        result = measure_knn(shape)
    else:
        result = measure_epoch(shape, extra, steps=int(kind.split(":")[1]))
    print(json.dumps(result))


def run_child(kind: str, shape: str, extra: str = "") -> dict[str, float]:
    out = subprocess.run([sys.executable, __file__, "--child", kind, shape, extra], capture_output=True, text=True,
                         check=False)
    if out.returncode != 0:
        raise RuntimeError(f"{kind} {shape} {extra}: {out.stderr[-2000:]}")
    result: dict[str, float] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--steps", type=int, default=5, help="timed training steps per backbone")
    parser.add_argument("--models", nargs="+", default=MODELS)
    parser.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(*args.child)
        return
    shapes = ["quick"] if args.quick else ["tiktok", "tiktok-like"]
    print("propagation, 3 layers, 64-d; ratio = bare s / ours s (bar: forward ratio >= 0.5)")
    print(f"{'shape':<12} {'nnz':>10} {'ours fwd':>9} {'bare fwd':>9} {'ratio':>6} {'ours f+b':>9} {'bare f+b':>9} "
          f"{'ratio':>6}")
    for shape in shapes:
        r = run_child("propagation", shape)
        ratio, train_ratio = r['bare_s'] / r['ours_s'], r['bare_train_s'] / r['ours_train_s']
        print(f"{shape:<12} {r['nnz']:>10.0f} {r['ours_s']:>9.4f} {r['bare_s']:>9.4f} {ratio:>6.2f} "
              f"{r['ours_train_s']:>9.4f} {r['bare_train_s']:>9.4f} {train_ratio:>6.2f}")
    print("\nkNN item graph, k=10, all feature columns (bar: peak under 2048 MB at 76k items)")
    print(f"{'shape':<12} {'items':>7} {'seconds':>8} {'peak RSS MB':>12} {'dense sim MB':>13}")
    for shape in shapes:
        r = run_child("knn", shape)
        print(f"{shape:<12} {SHAPES[shape]['n_items']:>7} {r['seconds']:>8.1f} {r['peak_mb']:>12.0f} "
              f"{r['dense_mb']:>13.0f}")
    print(f"\none training epoch, batch 2048 (extrapolated from {args.steps} timed steps; bar: TikTok peak < 3072 MB)")
    print(f"{'shape':<12} {'model':<9} {'build s':>8} {'step s':>8} {'steps':>6} {'epoch s':>8} {'peak RSS MB':>12}")
    for shape in shapes:
        for name in args.models:
            try:
                r = run_child(f"epoch:{args.steps}", shape, name)
            except RuntimeError as exc:
                print(f"{shape:<12} {name:<9} failed: {str(exc).splitlines()[-1]}")
                continue
            print(f"{shape:<12} {name:<9} {r['build_s']:>8.2f} {r['step_s']:>8.3f} {r['steps']:>6.0f} "
                  f"{r['epoch_s']:>8.1f} {r['peak_mb']:>12.0f}", flush=True)


if __name__ == "__main__":
    main()
