"""One run of one method on one dataset: train, select on validation, evaluate, assemble metrics.json.

:func:`run_pipeline` reads top to bottom: the config is resolved once (the method's overrides applied, every
check that can refuse it made: painvrl/training/checks.py) and the resolved config drives every phase; the
method (painvrl/training/methods.py) says where the mask comes from; a method with a learned mask pretrains the
backbone with ERM and learns the mask (HEI + IMG rounds); the final model is built from ``model.name`` with the
method's encoder and trained with early stopping on validation; then validation and test are evaluated once and
the metrics assembled.

The same function runs in-process (LocalCollective) and in every Ray Train worker (TorchCollective): all random
draws that must agree across ranks come from generators seeded from (seed, phase, ...), and models are
initialised from the same seed on every rank. Test data is only read once, after selection. Environment labels
of val/test positives come from the learned environment models (painvrl, invrl), else from the synthetic ground
truth, else there is one environment "all" (painvrl/evaluation/evaluator.py).
"""

from __future__ import annotations

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
from painvrl.model.encoders import FeatureProjection, build_encoder
from painvrl.model.recommender import Recommender
from painvrl.model.registry import build_model
from painvrl.training.checks import check_pretrained_encoder, resolve_run
from painvrl.training.loop import LoopConfig, TrainOutcome, train_recommender
from painvrl.training.methods import Method
from painvrl.training.objectives.base import Objective, ObjectiveContext
from painvrl.training.results import mask_summary, provenance

logger = logging.getLogger(__name__)

Reporter = Callable[[dict[str, Any], "dict[str, Any] | None"], None]
"""``reporter(update, state)``: called with every progress record ({phase, epoch, ...}: evaluations and mask
learning); ``state`` is the resumable pipeline state at evaluations when the run was started with
``checkpoints=True`` (see checkpoint.save_pipeline_state), else None."""


@dataclass
class RunResult:
    metrics: dict[str, Any]
    """The metrics.json content."""
    mask: np.ndarray | None
    """float32 [d] mask of the final model (learned, or the oracle's true invariant dims); None for erm."""
    model_state: dict[str, torch.Tensor]
    """CPU state_dict of the selected final model."""
    model_meta: dict[str, Any] = field(default_factory=dict)
    """How to rebuild the model's encoder (see painvrl.model.encoders.build_encoder)."""


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise PainvrlInputError(f"config field 'train.device': {name!r} requested but CUDA is not available")
    return torch.device(name)


def check_registered_names(config: Config) -> Method:
    """Fail before any training when ``method``, ``model.name``, a penalty or the solver is not registered, or
    the config asks for something the backbone cannot do (:func:`painvrl.training.checks.resolve_run`); returns
    the method that trains (ERM's phases for a backbone that consumes no features)."""
    return resolve_run(config).method


def new_model(config: Config, data: InteractionData, features: torch.Tensor,
              make_encoder: Callable[[], nn.Module], init_seed: int) -> Recommender:
    """``model.name`` built on the training graph; its random init depends only on ``init_seed``."""
    return build_model(config.model, data.n_users, data.n_items, data.train, features, data.modality_slices(),
                       make_encoder, init_seed)


def final_encoder(spec: dict[str, Any], config: Config, feature_dim: int, mask: np.ndarray | None) -> nn.Module:
    """The final model's encoder from its spec (also used to rebuild a saved run)."""
    return build_encoder(spec, config.model, config.convert.attention_dim, feature_dim, mask)


class _Run:
    """State shared by the phases of one pipeline run (history, timing, reporting, resumable state); ``config``
    is the resolved config."""

    def __init__(self, config: Config, data: InteractionData, collective: Collective,
                 reporter: Reporter | None, checkpoints: bool, resume_state: dict[str, Any] | None) -> None:
        self.config, self.data, self.collective, self.reporter = config, data, collective, reporter
        self.with_state = checkpoints and reporter is not None
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
        self.reporter(update, self._pending)
        self._pending = None

    def train(self, model: Recommender, phase: str, epochs: int, objective: Objective | None = None) -> TrainOutcome:
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
                                    snapshot=snapshot if self.with_state else None, objective=objective)
        self.timing[phase] = self.timing.get(phase, 0.0) + time.perf_counter() - started
        model.load_state_dict(outcome.best_state)
        return outcome

    def new_model(self, make_encoder: Callable[[], nn.Module], phase: str) -> Recommender:
        model = new_model(self.config, self.data, self.features, make_encoder,
                          stream_seed(self.config.train.seed, f"init-{phase}"))
        return model.to(self.device)


def _ground_truth_mask(data: InteractionData) -> np.ndarray:
    truth = data.ground_truth
    if truth is None or truth.invariant_dims is None:
        raise PainvrlInputError(f"method 'oracle': dataset {data.name!r} has no ground-truth invariant dims")
    return np.asarray(truth.invariant_dims, dtype=np.float32)


def _invariance_phase(run: _Run, config: Config, data: InteractionData, phase: str) -> dict[str, Any]:
    """Pretrain ERM, then learn the mask (``phase`` "mask": HEI + IMG rounds) or identify the training
    environments only (``phase`` "environments": one HEI round); returns plain values (resumable state): the
    mask and its logits where learned, the pretrained weights where the final model continues from them
    (``environments.final_from_pretrained``), and the environments (:func:`_environment_record`)."""
    if phase in run.state["completed"]:
        return dict(run.state["completed"][phase])
    pretrained = _pretrain(run, config, data)

    def log(entry: dict[str, Any]) -> None:
        run.report({"phase": phase, **entry})

    started = time.perf_counter()
    values: dict[str, Any] = {}
    if phase == "mask":
        from painvrl.invariance.outer_loop import learn_invariant_mask

        result = learn_invariant_mask(config, data, pretrained, run.collective, log)
        values = {"mask": np.asarray(result.mask, dtype=np.float32),
                  "logits": None if result.logits is None else np.asarray(result.logits, dtype=np.float32)}
        found = (result.env_labels, result.env_sizes, result.ari, result.label_pairs, result.history,
                 result.profile, result.violation)
    else:
        from painvrl.invariance.identify import identify_training_environments

        if config.environments.final_from_pretrained:  # where the final model starts (resumable with the rest)
            values = {"pretrained_state": {k: v.detach().cpu().clone() for k, v in pretrained.state_dict().items()}}
        environments = identify_training_environments(config, data, pretrained, run.collective, log)
        found = (environments.labels, environments.sizes, environments.ari, environments.label_pairs,
                 environments.history, environments.profile, environments.violation)
    run.timing[phase] = time.perf_counter() - started
    record = {**values, **_environment_record(config, data, *found)}
    run.state["completed"][phase] = record
    return record


def _environment_record(config: Config, data: InteractionData, labels: np.ndarray, sizes: list[int],
                        ari: float | None, label_pairs: Callable[[np.ndarray], np.ndarray],
                        history: list[dict[str, Any]], profile: list[dict[str, Any]],
                        violation: dict[str, Any] | None) -> dict[str, Any]:
    """The environments of a run as plain values (resumable state): labels of train, val and test positives,
    sizes, ARI, history, profile and violation."""
    return {
        "env_labels": np.asarray(labels, dtype=np.int64),
        "env_sizes": [int(size) for size in sizes],
        "ari": None if ari is None else float(ari),
        "val_env": np.asarray(label_pairs(data.val), dtype=np.int64),
        "test_env": np.asarray(label_pairs(data.test), dtype=np.int64),
        "history": list(history),
        "env_source": config.environments.source,
        "profile": profile,
        "violation": violation,
    }


def _pretrain(run: _Run, config: Config, data: InteractionData) -> Recommender:
    """The ERM-pretrained backbone whose feature path environment identification and mask learning read."""
    pretrained = run.new_model(
        lambda: FeatureProjection(data.feature_dim, config.model.k_f, config.model.init_std), "pretrain")
    check_pretrained_encoder(pretrained, config, data.feature_dim)
    run.train(pretrained, "pretrain", config.painvrl.pretrain_epochs)
    return pretrained


def run_pipeline(config: Config, data: InteractionData, collective: Collective | None = None,
                 reporter: Reporter | None = None, *, checkpoints: bool = False,
                 resume_state: dict[str, Any] | None = None) -> RunResult:
    """Train ``config.method`` on ``data``; select on validation; evaluate val and test; return metrics.

    ``checkpoints=True`` hands ``reporter`` the resumable state at every evaluation; ``resume_state`` (one
    such state) continues a run from it. Every phase reads the resolved config (the method's overrides
    applied); the user's ``config`` is what the run records as its identity (metrics.json's provenance).
    """
    collective = collective or LocalCollective()
    started = time.perf_counter()
    user_config = config
    resolved = resolve_run(user_config)
    method, config = resolved.method, resolved.config
    if config.train.deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
    run = _Run(config, data, collective, reporter, checkpoints, resume_state)
    truth = data.ground_truth

    # 1. The mask (and the environment labels of val/test) the final model and the evaluation use.
    mask: np.ndarray | None = None
    learned: dict[str, Any] | None = None
    if method.mask_source == "learned":
        learned = _invariance_phase(run, config, data, "mask")
        mask = learned["mask"]
        run.evaluator.set_env_labels(learned["val_env"], learned["test_env"])
    elif method.environments:
        learned = _invariance_phase(run, config, data, "environments")
        run.evaluator.set_env_labels(learned["val_env"], learned["test_env"])
    else:
        if method.mask_source == "ground_truth":
            mask = _ground_truth_mask(data)
        if truth is not None and truth.val_env is not None and truth.test_env is not None:
            run.evaluator.set_env_labels(truth.val_env, truth.test_env)

    # 2. The final model, early-stopped on validation.
    phase = method.final_phase
    spec = method.encoder_spec(config)
    model = run.new_model(lambda: final_encoder(spec, config, data.feature_dim, mask), phase)
    epochs = config.train.epochs
    if learned is not None and "pretrained_state" in learned:  # continue ERM under the objective
        model.load_state_dict(learned["pretrained_state"])
        epochs -= config.painvrl.pretrain_epochs
    objective = method.objective(ObjectiveContext(
        config=config, data=data, device=run.device, n_envs=config.environments.n_envs,
        env_labels=None if learned is None else learned["env_labels"]))
    outcome = run.train(model, phase, epochs, objective)

    # 3. Validation and test, once, on the selected state.
    eval_started = time.perf_counter()
    val = run.evaluator.section(model, "val")
    test = run.evaluator.section(model, "test")
    run.timing["evaluate"] = time.perf_counter() - eval_started
    run.timing["total"] = time.perf_counter() - started

    metrics: dict[str, Any] = {
        "method": config.method,
        "selection": {"source": config.eval.selection_source, "metric": config.eval.selection_metric,
                      "key": run.key, "phase": phase, "epoch": outcome.best_epoch, "value": outcome.best_value},
        "val": val,
        "test": test,
        "mask": mask_summary(mask, data.modality_slices(),
                             None if truth is None else truth.invariant_dims, learned=method.mask_source == "learned",
                             logits=None if learned is None else learned.get("logits")),
        "environments": _environments(data, learned),
        "timing": run.timing,
        "provenance": provenance(user_config, data),
        "history": run.history,
    }
    if objective.summary():
        metrics["objective"] = {"name": objective.name, **objective.summary()}
    if learned is not None:
        metrics["mask_history" if method.mask_source == "learned" else "environment_history"] = learned["history"]
    meta = {**spec, "method": config.method, "model": config.model.name, "feature_dim": data.feature_dim,
            "phase": phase, "best_epoch": outcome.best_epoch}
    return RunResult(metrics=metrics, mask=mask, model_state=outcome.best_state, model_meta=meta)


def _environments(data: InteractionData, learned: dict[str, Any] | None) -> dict[str, Any]:
    truth = data.ground_truth
    if learned is not None:
        source = {"hei": "learned", "eiil": "eiil"}.get(learned.get("env_source", "hei"), "ground_truth (ablation)")
        return {"source": source, "sizes": learned["env_sizes"], "ari": learned["ari"],
                "violation": learned.get("violation"), "profile": learned.get("profile", [])}
    if truth is not None and truth.train_env is not None:
        return {"source": "ground_truth", "sizes": np.bincount(truth.train_env).astype(int).tolist()}
    return {"source": "none", "sizes": [len(data.train)]}
