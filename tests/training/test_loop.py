from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from distributed_helpers import exit_rank_now, free_port

from painvrl.distributed.sampling import draw_negative_pool, make_generator
from painvrl.model.encoders import FeatureProjection
from painvrl.model.ultragcn import UltraGCN, degree_weights
from painvrl.training.checkpoint import load_pipeline_state, save_pipeline_state
from painvrl.training.loop import LoopConfig, Optimisers, step_loss, train_recommender

N_USERS, N_ITEMS, DIM = 30, 40, 12


def _pairs(seed: int = 0, n: int = 200) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.stack([rng.integers(0, N_USERS, n), rng.integers(0, N_ITEMS, n)], axis=1)


def _model(train: np.ndarray, seed: int = 0) -> UltraGCN:
    rng = np.random.default_rng(0)  # features are data: the same whatever the init seed
    features = torch.from_numpy(rng.standard_normal((N_ITEMS, DIM)).astype(np.float32))
    b_user, b_item = degree_weights(train, N_USERS, N_ITEMS)
    torch.manual_seed(seed)
    return UltraGCN(N_USERS, N_ITEMS, features, FeatureProjection(DIM, 4, 0.1), b_user, b_item, k_id=4, k_f=4,
                    init_std=0.1)


def _batch() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    train = _pairs()
    generator = make_generator(0, "t")
    rows = torch.randint(len(train), (16,), generator=generator)
    pool, positions = draw_negative_pool(generator, 16, 5, N_ITEMS, 10)
    users, items = torch.from_numpy(train[:, 0])[rows], torch.from_numpy(train[:, 1])[rows]
    return users, items, pool[positions], pool, positions


@pytest.mark.parametrize("sparse", [False, True])
def test_step_loss_equals_backbone_loss_with_and_without_pool(sparse: bool) -> None:
    model = _model(_pairs())
    users, items, negatives, pool, positions = _batch()
    expected = model.loss(users, items, negatives)
    model.sparse_gradients = sparse
    plain = step_loss(model, users, items, negatives, 16, 1)
    pooled = step_loss(model, users, items, negatives, 16, 1, pool=pool, pool_positions=positions)
    assert torch.allclose(plain, expected, atol=1e-6) and torch.allclose(pooled, expected, atol=1e-6)


def test_rank_shares_sum_to_the_single_process_gradient() -> None:
    """Two ranks with B/2 each, losses divided by the GLOBAL size, gradients summed == one rank with B."""
    users, items, negatives, pool, positions = _batch()
    single = _model(_pairs())
    step_loss(single, users, items, negatives, 16, 1, pool=pool, pool_positions=positions).backward()
    split = _model(_pairs())
    for part in (slice(0, 8), slice(8, 16)):
        step_loss(split, users[part], items[part], negatives[part], 16, 2, pool=pool,
                  pool_positions=positions[part]).backward()  # gradients accumulate = sync_gradients' sum
    for (name, a), (_, b) in zip(single.named_parameters(), split.named_parameters(), strict=True):
        assert a.grad is not None and b.grad is not None
        assert torch.allclose(a.grad, b.grad, atol=1e-6), name


def test_sparse_optimiser_updates_only_batch_rows_of_embeddings() -> None:
    model = _model(_pairs())
    users, items, negatives, pool, positions = _batch()
    before = model.user_embedding.detach().clone()
    optimiser = Optimisers(model, list(model.parameters()), 0.01, sparse=True)
    optimiser.zero_grad()
    model.sparse_gradients = True
    step_loss(model, users, items, negatives, 16, 1, pool=pool, pool_positions=positions).backward()
    optimiser.step()
    changed = (model.user_embedding.detach() != before).any(dim=1)
    assert set(torch.nonzero(changed).reshape(-1).tolist()) == set(users.unique().tolist())


def _scripted(values: list[float], states: list[dict[str, torch.Tensor]]) -> Callable[[UltraGCN], dict[str, float]]:
    def val_eval(model: UltraGCN) -> dict[str, float]:
        states.append({k: v.clone() for k, v in model.state_dict().items()})
        return {"iid.recall@20": values[len(states) - 1]}

    return val_eval


def test_early_stopping_keeps_the_best_validation_epoch() -> None:
    train = _pairs()
    model = _model(train)
    states: list[dict[str, torch.Tensor]] = []
    records: list[dict] = []
    cfg = LoopConfig(epochs=10, batch_size=64, lr=0.05, patience=2, progress=False, n_negatives=3,
                     negative_pool=0, selection_key="iid.recall@20")
    outcome = train_recommender(model, train, _scripted([0.1, 0.5, 0.3, 0.2, 0.9, 0.9], states), cfg,
                                on_evaluation=records.append)
    assert outcome.best_epoch == 1 and outcome.best_value == 0.5
    assert len(outcome.history) == 4 and outcome.epochs_run == 4  # stopped after 2 evaluations without gain
    assert [r["epoch"] for r in records] == [0, 1, 2, 3]
    for key, value in outcome.best_state.items():
        assert torch.equal(value, states[1][key]), key
    assert not torch.equal(outcome.best_state["user_embedding"], states[3]["user_embedding"])


def test_resume_from_a_snapshot_reproduces_the_uninterrupted_run(tmp_path: Path) -> None:
    train = _pairs()
    cfg = LoopConfig(epochs=4, batch_size=64, lr=0.05, patience=10, progress=False, n_negatives=3,
                     negative_pool=8, selection_key="x")

    def val_eval(model: UltraGCN) -> dict[str, float]:
        return {"x": float(model.user_embedding.sum())}

    full = train_recommender(_model(train), train, val_eval, cfg)
    snapshots: list[dict] = []
    short = LoopConfig(**{**cfg.__dict__, "epochs": 2})
    train_recommender(_model(train), train, val_eval, short, snapshot=snapshots.append)
    save_pipeline_state({"loop": snapshots[-1], "mask": np.arange(3.0)}, tmp_path / "ckpt")
    state = load_pipeline_state(tmp_path / "ckpt")
    assert np.array_equal(state["mask"], np.arange(3.0))
    resumed = train_recommender(_model(train, seed=5), train, val_eval, cfg, resume=state["loop"])
    assert resumed.best_epoch == full.best_epoch
    for key, value in full.best_state.items():
        assert torch.allclose(value, resumed.best_state[key], atol=1e-6), key


def test_pipeline_reports_resumable_state_and_resumes_to_the_same_result(tmp_path: Path) -> None:
    from painvrl.config import load_config
    from painvrl.data.registry import load_dataset
    from painvrl.training.pipeline import run_pipeline

    config = load_config(None, ["dataset.synthetic.n_users=40", "dataset.synthetic.n_items=60",
                                "dataset.synthetic.interactions_per_user=8",
                                "dataset.synthetic.modality_dims=[4,4]", "model.k_id=4", "model.k_f=4",
                                "model.n_negatives=3",
                                "train.epochs=3", "train.batch_size=64", "train.progress=false",
                                "train.device=cpu"])
    data = load_dataset(config.dataset)
    updates: list[dict] = []
    states: list[tuple[int, dict]] = []

    def reporter(update: dict, state: dict | None) -> None:
        if state is not None:
            states.append((update["epoch"], state))

    full = run_pipeline(config, data, reporter=reporter, checkpoints=True)
    run_pipeline(config, data, reporter=lambda update, state: updates.append((update, state)))
    assert all(state is None for _, state in updates)  # without checkpoints=True only the updates
    updates = [update for update, _ in updates]
    assert [e for e, _ in states] == [0, 1, 2] and [u["epoch"] for u in updates] == [0, 1, 2]
    save_pipeline_state(states[0][1], tmp_path / "ckpt")
    resumed = run_pipeline(config, data, resume_state=load_pipeline_state(tmp_path / "ckpt"))
    assert resumed.metrics["selection"] == full.metrics["selection"]
    assert resumed.metrics["test"] == full.metrics["test"]
    assert len(resumed.metrics["history"]) == 3


def _distributed_worker(rank: int, world_size: int, port: int, out_file: str) -> None:
    import torch.distributed as dist

    from painvrl.distributed.torch_collective import TorchCollective

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world_size)
    torch.set_num_threads(1)
    train = _pairs()
    model = _model(train)
    cfg = LoopConfig(epochs=2, batch_size=64, lr=0.05, patience=5, progress=False, n_negatives=3,
                     negative_pool=8, selection_key="x")
    train_recommender(model, train, lambda m: {"x": 0.0}, cfg, TorchCollective())
    if rank == 0:
        torch.save({k: v.detach().clone() for k, v in model.state_dict().items()}, out_file)
    dist.barrier()
    dist.destroy_process_group()
    exit_rank_now()


def test_two_gloo_ranks_train_exactly_like_one_process(tmp_path: Path) -> None:
    """Global batch B on one process == two torch.distributed ranks with B/2 each (sparse lazy-Adam path)."""
    import torch.multiprocessing as mp

    out = tmp_path / "two.pt"
    mp.spawn(_distributed_worker, args=(2, free_port(), str(out)), nprocs=2, join=True)
    train = _pairs()
    model = _model(train)
    cfg = LoopConfig(epochs=2, batch_size=64, lr=0.05, patience=5, progress=False, n_negatives=3,
                     negative_pool=8, selection_key="x")
    train_recommender(model, train, lambda m: {"x": 0.0}, cfg)
    two = torch.load(out, weights_only=True)
    for key, value in model.state_dict().items():
        assert torch.allclose(value, two[key], atol=1e-5), key
