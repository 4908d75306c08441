"""Early-stopped training of a Recommender on the ERM objective, written for the global-batch design.

Read top to bottom: for each epoch, for each global batch (this rank's slice), loss = (sum of per-example
losses over the slice + L2 of the slice's embeddings) / GLOBAL batch size + L2 of shared parameters /
world_size; backward; ``collective.sync_gradients``; Adam step. With one process this is exactly the batch
mean of ``Recommender.loss``; with N ranks the synced gradient equals the single-process gradient of the union.
Every ``eval_every`` epochs the model is evaluated on VALIDATION data only, the best state is kept and training
stops after ``patience`` evaluations without improvement.
"""

from __future__ import annotations

import copy
import logging
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from painvrl.config import Config, TrainConfig
from painvrl.distributed.collective import Collective, LocalCollective
from painvrl.distributed.sampling import EpochBatches
from painvrl.model.recommender import Recommender
from painvrl.training.objectives.base import Batch, Objective

logger = logging.getLogger(__name__)

ValEval = Callable[[Recommender], dict[str, float]]

DEFAULT_NEGATIVE_POOL = 512
"""Pool size used while the config has no ``model.negative_pool`` field (benchmarks/bench_backbone_epoch.py)."""
DEFAULT_SPARSE_EMBEDDINGS = True
"""Lazy Adam on P / Q while the config has no ``train.sparse_embeddings`` field."""


@dataclass
class LoopConfig:
    """What one early-stopped training run needs (built from Config with :meth:`from_config`; the defaults are
    TrainConfig's, so the two cannot drift apart)."""

    epochs: int = TrainConfig.epochs
    batch_size: int = TrainConfig.batch_size
    lr: float = TrainConfig.lr
    patience: int = TrainConfig.patience
    eval_every: int = TrainConfig.eval_every
    seed: int = TrainConfig.seed
    progress: bool = True
    selection_key: str = "iid.recall@20"
    """Key of the dict returned by the validation evaluator that is maximised."""
    n_negatives: int = 50
    negative_pool: int = DEFAULT_NEGATIVE_POOL
    """Per-step shared negative pool (0: independent uniform negatives); see sampling.py."""
    sparse_embeddings: bool = DEFAULT_SPARSE_EMBEDDINGS
    """SparseAdam (lazy Adam) for the P / Q tables instead of dense Adam; see :class:`Optimisers`."""

    @classmethod
    def from_config(cls, config: Config, selection_key: str, epochs: int | None = None) -> LoopConfig:
        t, m = config.train, config.model
        return cls(epochs=t.epochs if epochs is None else epochs, batch_size=t.batch_size, lr=t.lr,
                   patience=t.patience, eval_every=t.eval_every, seed=t.seed, progress=t.progress,
                   selection_key=selection_key, n_negatives=m.n_negatives,
                   negative_pool=int(getattr(m, "negative_pool", DEFAULT_NEGATIVE_POOL)),
                   sparse_embeddings=bool(getattr(t, "sparse_embeddings", DEFAULT_SPARSE_EMBEDDINGS)))


@dataclass
class TrainOutcome:
    best_state: dict[str, torch.Tensor]
    """CPU copy of the state_dict at the best validation evaluation."""
    best_epoch: int
    best_value: float
    history: list[dict[str, Any]] = field(default_factory=list)
    """One record per evaluation: phase, epoch, loss, seconds, validation metrics."""
    epochs_run: int = 0


def _cpu_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}


def in_ray_worker() -> bool:
    """True inside a Ray worker process (progress bars are switched off there)."""
    ray = sys.modules.get("ray")
    if ray is None:
        return False
    try:
        return bool(ray.is_initialized()) and ray.get_runtime_context().worker.mode == 1  # WORKER_MODE
    except Exception:  # any Ray internals mismatch means "not sure": keep progress on
        return False


def step_loss(model: Recommender, users: torch.Tensor, pos_items: torch.Tensor, neg_items: torch.Tensor,
              global_size: int, world_size: int, *, pool: torch.Tensor | None = None,
              pool_positions: torch.Tensor | None = None) -> torch.Tensor:
    """This rank's share of the global mean ERM loss (sums divided by the GLOBAL batch size).

    Equals ``model.loss`` on one process. With a negative pool (``neg_items == pool[pool_positions]``) a model
    may score the negatives as one [b, P] product against the pool's items.
    """
    rows = torch.arange(users.shape[0], device=users.device)
    batch = Batch(rows, users, pos_items, neg_items, global_size, world_size, pool, pool_positions)
    return Objective().batch_loss(model, batch, LocalCollective())


class Optimisers:
    """Adam for dense parameters; with ``sparse``, SparseAdam ("lazy Adam": only the batch's rows and their
    moments are updated) for the model's embedding tables (``sparse_tables``, P and Q of a linear scorer),
    whose dense Adam update would otherwise cost more
    than the whole rest of a step on large catalogues."""

    def __init__(self, model: Recommender, params: list[torch.nn.Parameter], lr: float, sparse: bool) -> None:
        tables = {id(table) for table in model.sparse_tables()}
        self.sparse_params = [p for p in params if sparse and id(p) in tables]
        self.dense_params = [p for p in params if id(p) not in {id(q) for q in self.sparse_params}]
        self.optimisers: list[torch.optim.Optimizer] = []
        if self.dense_params:
            self.optimisers.append(torch.optim.Adam(self.dense_params, lr=lr))
        if self.sparse_params:
            self.optimisers.append(torch.optim.SparseAdam(self.sparse_params, lr=lr))
        model.sparse_gradients = bool(self.sparse_params)  # SparseAdam needs the tables' row-sparse gradients

    def zero_grad(self) -> None:
        for optimiser in self.optimisers:
            optimiser.zero_grad(set_to_none=True)

    def sync(self, collective: Collective) -> None:
        """Sum gradients over ranks (TorchCollective sums row-sparse gradients over the union of touched rows)."""
        collective.sync_gradients(self.dense_params + self.sparse_params)

    def step(self) -> None:
        for optimiser in self.optimisers:
            optimiser.step()

    def state_dict(self) -> list[dict[str, Any]]:
        return [copy.deepcopy(o.state_dict()) for o in self.optimisers]

    def load_state_dict(self, states: list[dict[str, Any]]) -> None:
        for optimiser, state in zip(self.optimisers, states, strict=True):
            optimiser.load_state_dict(state)


def train_recommender(
    model: Recommender,
    train_pairs: np.ndarray,
    val_eval: ValEval,
    cfg: LoopConfig,
    collective: Collective | None = None,
    phase: str = "train",
    on_evaluation: Callable[[dict[str, Any]], None] | None = None,
    params_to_train: Iterable[torch.nn.Parameter] | None = None,
    *,
    resume: dict[str, Any] | None = None,
    snapshot: Callable[[dict[str, Any]], None] | None = None,
    objective: Objective | None = None,
) -> TrainOutcome:
    """Train ``model`` with Adam on ``train_pairs`` [N, 2]; select on ``val_eval(model)[cfg.selection_key]``.

    ``objective`` says what a batch's loss is (ERM by default; painvrl/training/objectives/); its own
    parameters, if any, train with the model's.

    ``on_evaluation(record)`` gets each evaluation record; ``snapshot(loop_state)`` (optional) gets a resumable
    state (model, optimiser, best state, history) after each evaluation, and ``resume=loop_state`` continues
    from one. The model is left holding its LAST state; ``TrainOutcome.best_state`` holds the selected one.
    """
    collective = collective or LocalCollective()
    device = model.features.device
    objective = objective or Objective()
    params = [p for p in (params_to_train if params_to_train is not None else model.parameters())
              if p.requires_grad] + objective.parameters()
    optimizer = Optimisers(model, params, cfg.lr, cfg.sparse_embeddings)
    users_all = torch.as_tensor(np.asarray(train_pairs)[:, 0], dtype=torch.long)
    items_all = torch.as_tensor(np.asarray(train_pairs)[:, 1], dtype=torch.long)

    history: list[dict[str, Any]] = []
    best_state, best_epoch, best_value, bad_evals, start_epoch = _cpu_state(model), -1, -float("inf"), 0, 0
    if resume is not None:
        model.load_state_dict(resume["model_state"])
        optimizer.load_state_dict(resume["optimizer_state"])
        best_state, best_epoch = resume["best_state"], int(resume["best_epoch"])
        best_value, bad_evals = float(resume["best_value"]), int(resume["bad_evals"])
        history, start_epoch = list(resume["history"]), int(resume["epoch"]) + 1
        objective.load_state_dict(resume.get("objective_state", {}))
        logger.info("%s: resuming at epoch %d (best %.5f at epoch %d)", phase, start_epoch, best_value,
                    best_epoch)

    show_progress = cfg.progress and collective.rank == 0 and not in_ray_worker()
    epoch = start_epoch - 1
    bar: Any = None  # one progress bar over the whole phase (all epochs' batches)
    for epoch in range(start_epoch, cfg.epochs):
        if bad_evals >= cfg.patience:
            break
        model.train()
        model.start_epoch(epoch, cfg.seed)
        objective.start_epoch(epoch)
        started = time.perf_counter()
        batches = EpochBatches(len(users_all), cfg.batch_size, cfg.seed, epoch, collective.rank,
                               collective.world_size, phase=phase, n_items=model.n_items,
                               n_negatives=cfg.n_negatives, negative_pool=cfg.negative_pool)
        iterator: Iterable[Any] = batches
        if bar is None and show_progress:
            from tqdm.auto import tqdm

            bar = tqdm(total=(cfg.epochs - start_epoch) * len(batches), desc=phase, unit="batch", leave=False,
                       dynamic_ncols=True)
        loss_sum = torch.zeros((), device=device)
        for batch in iterator:
            users = users_all[batch.rows].to(device, non_blocking=True)
            pos_items = items_all[batch.rows].to(device, non_blocking=True)
            assert batch.negatives is not None
            neg_items = batch.negatives.to(device, non_blocking=True)
            pool = None if batch.pool is None else batch.pool.to(device, non_blocking=True)
            positions = None if batch.pool_positions is None else batch.pool_positions.to(device, non_blocking=True)
            optimizer.zero_grad()
            rows = batch.rows.to(device, non_blocking=True)
            loss = objective.batch_loss(model, Batch(rows, users, pos_items, neg_items, batch.global_size,
                                                     collective.world_size, pool, positions), collective)
            loss.backward()
            optimizer.sync(collective)
            optimizer.step()
            loss_sum += loss.detach() * batch.global_size
            if bar is not None:
                bar.update(1)
        epoch_loss = float(collective.all_reduce_sum(loss_sum).item()) / len(users_all)
        seconds = time.perf_counter() - started
        logger.info("%s epoch %d: loss %.5f (%.1fs)", phase, epoch, epoch_loss, seconds)

        if (epoch + 1) % cfg.eval_every != 0 and epoch != cfg.epochs - 1:
            continue
        model.eval()
        with torch.no_grad():
            metrics = val_eval(model)
        if cfg.selection_key not in metrics:
            raise KeyError(f"validation metrics lack the selection key {cfg.selection_key!r}: {sorted(metrics)}")
        value = float(metrics[cfg.selection_key])
        improved = value > best_value
        if improved:
            best_state, best_epoch, best_value, bad_evals = _cpu_state(model), epoch, value, 0
        else:
            bad_evals += 1
        record = {"phase": phase, "epoch": epoch, "loss": epoch_loss, "seconds": seconds,
                  "selection": value, "best": best_value, "improved": improved, **metrics}
        history.append(record)
        logger.info("%s epoch %d: val %s = %.5f%s", phase, epoch, cfg.selection_key, value,
                    " (best)" if improved else "")
        if bar is not None:
            bar.set_postfix_str(f"epoch {epoch}, val {cfg.selection_key} {value:.4f}, best {best_value:.4f}")
        if snapshot is not None:  # before on_evaluation, so a reporter can attach this state to this record
            snapshot({"epoch": epoch, "model_state": _cpu_state(model),
                      "optimizer_state": optimizer.state_dict(), "objective_state": objective.state_dict(),
                      "best_state": best_state,
                      "best_epoch": best_epoch, "best_value": best_value, "bad_evals": bad_evals,
                      "history": list(history)})
        if on_evaluation is not None:
            on_evaluation(record)
        if bad_evals >= cfg.patience:
            logger.info("%s: early stop at epoch %d (best epoch %d)", phase, epoch, best_epoch)
            break
    if bar is not None:
        bar.close()
    model.sparse_gradients = False
    return TrainOutcome(best_state=best_state, best_epoch=best_epoch, best_value=best_value, history=history,
                        epochs_run=epoch + 1)
