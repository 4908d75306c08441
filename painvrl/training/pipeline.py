"""One run of one method on one dataset: train, select on validation, evaluate, assemble metrics.json.

Methods (docs/algorithm.md):

- ``erm``: Backbone with a plain projection of the full features.
- ``oracle``: the same on features masked with the TRUE invariant dims (synthetic ground truth): the upper bound.
- ``painvrl`` / ``invrl``: ERM pretraining, then ``learn_invariant_mask`` (HEI + IMG rounds), then a final
  model trained from scratch with the convert module and the learned mask (invrl forces ``invariant_only``).

The same function runs in-process (LocalCollective) and in every Ray Train worker (TorchCollective): all random
draws that must agree across ranks come from generators seeded from (seed, phase, ...), and models are
initialised from the same seed on every rank. Test data is only read once, after selection.

Evaluation (docs/algorithm.md): full ranking; items excluded per user are the training positives for val,
training + val positives for test; for OOD, training positives for ood_val and training + val + ood_val for
ood_test. Environment labels of val/test positives come from the learned environment models (painvrl, invrl),
else from the synthetic ground truth, else there is one environment "all". The selection key is
``<eval.selection_source>.<eval.selection_metric>`` on VALIDATION (worst_env without labels = iid).
"""

from __future__ import annotations

import inspect
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from painvrl.config import Config
from painvrl.data.dataset import InteractionData
from painvrl.distributed.collective import Collective, LocalCollective
from painvrl.distributed.sampling import stream_seed
from painvrl.errors import PainvrlInputError
from painvrl.evaluation.evaluator import Evaluator, selection_key
from painvrl.model.backbone import Backbone, FeatureProjection, degree_weights
from painvrl.training.loop import LoopConfig, TrainOutcome, train_recommender
from painvrl.training.results import mask_summary, provenance

logger = logging.getLogger(__name__)

Reporter = Callable[..., None]
"""``reporter(update)`` or ``reporter(update, state)``: called at every evaluation with {phase, epoch, ...}.
A reporter that accepts a second positional argument also receives the resumable pipeline state (for
checkpoints; see checkpoint.save_pipeline_state)."""


@dataclass
class RunResult:
    metrics: dict[str, Any]
    """The metrics.json content."""
    mask: np.ndarray | None
    """float32 [d] mask of the final model (learned, or the oracle's true invariant dims); None for erm."""
    model_state: dict[str, torch.Tensor]
    """CPU state_dict of the selected final model."""
    model_meta: dict[str, Any] = field(default_factory=dict)
    """How to rebuild the model's encoder (see :func:`build_encoder`)."""


# ------------------------------------------------------------------------------------------------- models


class MaskedProjection(nn.Module):
    """h = W (m * f) with a fixed mask m (the oracle's encoder when the convert module is unavailable)."""

    def __init__(self, mask: torch.Tensor, feature_dim: int, k_f: int, init_std: float = 0.01) -> None:
        super().__init__()
        self.mask: torch.Tensor
        self.register_buffer("mask", mask.to(torch.float32).reshape(1, -1))
        self.weight = nn.Parameter(torch.randn(k_f, feature_dim) * init_std)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return (features * self.mask) @ self.weight.T


def encoder_spec(config: Config) -> dict[str, Any]:
    """Which encoder the method's final model uses: {"encoder": "projection" | "convert", "mode": ...}."""
    if config.method == "erm":
        return {"encoder": "projection", "mode": None}
    if config.method in ("oracle", "invrl"):
        return {"encoder": "convert", "mode": "invariant_only"}
    return {"encoder": "convert", "mode": config.convert.mode}


def build_encoder(spec: dict[str, Any], config: Config, feature_dim: int, mask: np.ndarray | None) -> nn.Module:
    """Encoder from a spec written by :func:`encoder_spec` (and stored in the run's checkpoint meta)."""
    m = config.model
    if spec["encoder"] == "projection":
        return FeatureProjection(feature_dim, m.k_f, m.init_std)
    if mask is None:
        raise PainvrlInputError(f"encoder {spec}: needs a mask")
    mask_t = torch.as_tensor(np.asarray(mask, dtype=np.float32))
    if spec["encoder"] == "masked_projection":
        return MaskedProjection(mask_t, feature_dim, m.k_f, m.init_std)
    from painvrl.model.convert import build_final_encoder

    encoder: nn.Module = build_final_encoder(spec["mode"], mask_t, feature_dim, m.k_f, m.init_std,
                                             config.convert.attention_dim)
    return encoder


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise PainvrlInputError(f"config field 'train.device': {name!r} requested but CUDA is not available")
    return torch.device(name)


def build_backbone(config: Config, data: InteractionData, features: torch.Tensor,
                   make_encoder: Callable[[], nn.Module], init_seed: int) -> Backbone:
    """A Backbone whose random init (encoder, then P and Q) depends only on ``init_seed``: identical on every
    rank and in every re-run."""
    b_user, b_item = degree_weights(data.train, data.n_users, data.n_items)
    m = config.model
    torch.manual_seed(init_seed)
    encoder = make_encoder()
    return Backbone(data.n_users, data.n_items, features, encoder, b_user, b_item, k_id=m.k_id, k_f=m.k_f,
                    init_std=m.init_std, loss_weights=(m.loss_weights[0], m.loss_weights[1], m.loss_weights[2],
                                                       m.loss_weights[3]), l2=m.l2)


# ----------------------------------------------------------------------------------------------- pipeline


def _reporter_takes_state(reporter: Reporter | None) -> bool:
    if reporter is None:
        return False
    try:
        params = list(inspect.signature(reporter).parameters.values())
    except (TypeError, ValueError):
        return False
    if any(p.kind is inspect.Parameter.VAR_POSITIONAL for p in params):
        return True
    positional = [p for p in params if p.kind in (inspect.Parameter.POSITIONAL_ONLY,
                                                  inspect.Parameter.POSITIONAL_OR_KEYWORD)]
    return len(positional) >= 2


class _Run:
    """State shared by the phases of one pipeline run (history, timing, reporting, resumable state)."""

    def __init__(self, config: Config, data: InteractionData, collective: Collective,
                 reporter: Reporter | None, resume_state: dict[str, Any] | None) -> None:
        self.config, self.data, self.collective, self.reporter = config, data, collective, reporter
        self.with_state = _reporter_takes_state(reporter)
        self.resume = resume_state or {}
        self.state: dict[str, Any] = {"method": config.method, "config_hash": config.config_hash(),
                                      "completed": dict(self.resume.get("completed", {}))}
        self.history: list[dict[str, Any]] = list(self.resume.get("history", []))
        self.timing: dict[str, float] = dict(self.resume.get("timing", {}))
        self.device = resolve_device(config.train.device)
        self.features = torch.from_numpy(data.feature_matrix()).to(self.device)
        self.evaluator = Evaluator(config, data, collective)
        self.key = selection_key(config, data)
        self._pending: dict[str, Any] | None = None
        if self.resume and self.resume.get("config_hash") != self.state["config_hash"]:
            raise PainvrlInputError("resume: the checkpoint was written by a different config (hash "
                                    f"{self.resume.get('config_hash')} != {self.state['config_hash']})")

    def report(self, update: dict[str, Any]) -> None:
        if self.reporter is None:
            return
        if self.with_state:
            self.reporter(update, self._pending)
        else:
            self.reporter(update)
        self._pending = None

    def train(self, model: Backbone, phase: str, epochs: int) -> TrainOutcome:
        cfg = LoopConfig.from_config(self.config, self.key, epochs=epochs)
        resume = self.resume.get("loop") if self.resume.get("phase") == phase else None

        def on_evaluation(record: dict[str, Any]) -> None:
            entry = {k: v for k, v in record.items() if k != "improved"}
            self.history.append(entry)
            if self._pending is not None:  # the state snapshot was taken just before this record
                self._pending["history"] = [*self._pending["history"], entry]
            self.report(dict(record))

        def snapshot(loop_state: dict[str, Any]) -> None:
            if self.with_state:
                self._pending = {**self.state, "completed": dict(self.state["completed"]), "phase": phase,
                                 "loop": loop_state, "history": list(self.history), "timing": dict(self.timing)}

        started = time.perf_counter()
        outcome = train_recommender(model, self.data.train, self.evaluator.selection_metrics, cfg,
                                    self.collective, phase, on_evaluation, resume=resume,
                                    snapshot=snapshot if self.with_state else None)
        self.timing[phase] = self.timing.get(phase, 0.0) + time.perf_counter() - started
        model.load_state_dict(outcome.best_state)
        return outcome

    def new_backbone(self, make_encoder: Callable[[], nn.Module], phase: str) -> Backbone:
        model = build_backbone(self.config, self.data, self.features, make_encoder,
                               stream_seed(self.config.train.seed, f"init-{phase}"))
        return model.to(self.device)


def _ground_truth_mask(data: InteractionData) -> np.ndarray:
    truth = data.ground_truth
    if truth is None or truth.invariant_dims is None:
        raise PainvrlInputError(f"method 'oracle': dataset {data.name!r} has no ground-truth invariant dims")
    return np.asarray(truth.invariant_dims, dtype=np.float32)


def _learn_mask(run: _Run, config: Config, data: InteractionData) -> dict[str, Any]:
    """Pretrain ERM, learn the mask; returns a plain dict (mask, env labels of train/val/test, sizes, ari)."""
    if "mask" in run.state["completed"]:
        return dict(run.state["completed"]["mask"])
    pretrained = run.new_backbone(
        lambda: FeatureProjection(data.feature_dim, config.model.k_f, config.model.init_std), "pretrain")
    run.train(pretrained, "pretrain", config.painvrl.pretrain_epochs)
    from painvrl.invariance.outer_loop import learn_invariant_mask

    def log(entry: dict[str, Any]) -> None:
        run.report({"phase": "mask", **entry})

    started = time.perf_counter()
    result = learn_invariant_mask(config, data, pretrained, run.collective, log)
    run.timing["mask"] = time.perf_counter() - started
    learned = {
        "mask": np.asarray(result.mask, dtype=np.float32),
        "logits": None if result.logits is None else np.asarray(result.logits, dtype=np.float32),
        "env_labels": np.asarray(result.env_labels, dtype=np.int64),
        "env_sizes": [int(s) for s in result.env_sizes],
        "ari": None if result.ari is None else float(result.ari),
        "val_env": np.asarray(result.label_pairs(data.val), dtype=np.int64),
        "test_env": np.asarray(result.label_pairs(data.test), dtype=np.int64),
        "history": list(result.history),
        "env_source": config.environments.source,
    }
    run.state["completed"]["mask"] = learned
    return learned


def run_pipeline(config: Config, data: InteractionData, collective: Collective | None = None,
                 reporter: Reporter | None = None, *, resume_state: dict[str, Any] | None = None) -> RunResult:
    """Train ``config.method`` on ``data``; select on validation; evaluate val and test; return metrics."""
    collective = collective or LocalCollective()
    started = time.perf_counter()
    if config.train.deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
    run = _Run(config, data, collective, reporter, resume_state)
    truth = data.ground_truth
    spec = encoder_spec(config)
    mask: np.ndarray | None = None
    learned: dict[str, Any] | None = None

    if config.method in ("painvrl", "invrl"):
        learned = _learn_mask(run, config, data)
        mask = learned["mask"]
        run.evaluator.set_env_labels(learned["val_env"], learned["test_env"])
        phase = "final"
    else:
        if config.method == "oracle":
            mask = _ground_truth_mask(data)
        if truth is not None and truth.val_env is not None and truth.test_env is not None:
            run.evaluator.set_env_labels(truth.val_env, truth.test_env)
        phase = "train"

    if spec["encoder"] == "convert" and config.method == "oracle":
        try:
            import painvrl.model.convert  # noqa: F401
        except ImportError:
            spec = {"encoder": "masked_projection", "mode": "invariant_only"}
    model = run.new_backbone(lambda: build_encoder(spec, config, data.feature_dim, mask), phase)
    outcome = run.train(model, phase, config.train.epochs)

    eval_started = time.perf_counter()
    val = run.evaluator.section(model, "val")
    test = run.evaluator.section(model, "test")
    run.timing["evaluate"] = time.perf_counter() - eval_started
    run.timing["total"] = time.perf_counter() - started

    metrics = {
        "method": config.method,
        "selection": {"source": config.eval.selection_source, "metric": config.eval.selection_metric,
                      "key": run.key, "phase": phase, "epoch": outcome.best_epoch, "value": outcome.best_value},
        "val": val,
        "test": test,
        "mask": mask_summary(mask, data.modality_slices(),
                             None if truth is None else truth.invariant_dims, learned=learned is not None,
                             logits=None if learned is None else learned.get("logits")),
        "environments": _environments(data, learned),
        "timing": run.timing,
        "provenance": provenance(config, data),
        "history": run.history,
    }
    if learned is not None:
        metrics["mask_history"] = learned["history"]
    meta = {**spec, "method": config.method, "feature_dim": data.feature_dim, "phase": phase,
            "best_epoch": outcome.best_epoch}
    return RunResult(metrics=metrics, mask=mask, model_state=outcome.best_state, model_meta=meta)


def _environments(data: InteractionData, learned: dict[str, Any] | None) -> dict[str, Any]:
    truth = data.ground_truth
    if learned is not None:
        source = "learned" if learned.get("env_source", "hei") == "hei" else "ground_truth (ablation)"
        return {"source": source, "sizes": learned["env_sizes"], "ari": learned["ari"]}
    if truth is not None and truth.train_env is not None:
        return {"source": "ground_truth", "sizes": np.bincount(truth.train_env).astype(int).tolist()}
    return {"source": "none", "sizes": [len(data.train)]}
