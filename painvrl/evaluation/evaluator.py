"""Full-ranking evaluation of a recommender on validation and test: IID, OOD and per environment.

Items excluded per user are the training positives for val, training + val positives for test; for OOD,
training positives for ood_val and training + val + ood_val for ood_test. Cold-start splits rank only the items
their environment released. The selection key is ``<eval.selection_source>.<eval.selection_metric>`` on
VALIDATION.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from painvrl.config import Config
from painvrl.data.dataset import InteractionData
from painvrl.distributed.collective import Collective
from painvrl.errors import PainvrlInputError
from painvrl.evaluation.metrics import N_USERS_KEY, evaluate_positives_sharded
from painvrl.evaluation.ranking import PositiveSets
from painvrl.model.recommender import Recommender


class Evaluator:
    """Full-ranking evaluation of val / test (IID, OOD, per environment), sharded over ranks."""

    def __init__(self, config: Config, data: InteractionData, collective: Collective) -> None:
        self.config, self.data, self.collective = config, data, collective
        n_users, n_items = data.n_users, data.n_items

        def sets(*splits: np.ndarray | None) -> PositiveSets:
            pairs = [s for s in splits if s is not None and len(s)]
            stacked = np.concatenate(pairs) if pairs else np.empty((0, 2), dtype=np.int64)
            return PositiveSets.from_pairs(stacked, n_users, n_items)

        # Cold-start splits rank only the items their environment released (IID: ``iid_candidates``, OOD:
        # ``ood_candidates``). Items outside get -inf in the score function; seen pairs on them are dropped from
        # the exclusion so that legacy_invrl's 1e-5 for seen items cannot lift them back into the ranking.
        def restricted_sets(candidates: np.ndarray | None, *splits: np.ndarray | None
                            ) -> tuple[PositiveSets, torch.Tensor | None]:
            if candidates is None:
                return sets(*splits), None
            inside = np.zeros(n_items, dtype=bool)
            inside[candidates] = True
            kept = (pairs[inside[pairs[:, 1]]] for pairs in splits if pairs is not None)
            return sets(*kept), torch.from_numpy(np.flatnonzero(~inside))

        self.exclude: dict[str, PositiveSets] = {}
        self.ood_exclude: dict[str, PositiveSets] = {}
        self.exclude["val"], self.iid_blocked = restricted_sets(data.iid_candidates, data.train)
        self.exclude["test"], _ = restricted_sets(data.iid_candidates, data.train, data.val)
        self.ood_exclude["val"], self.ood_blocked = restricted_sets(data.ood_candidates, data.train)
        self.ood_exclude["test"], _ = restricted_sets(data.ood_candidates, data.train, data.val, data.ood_val)
        self.env_labels: dict[str, np.ndarray | None] = {"val": None, "test": None}

    def set_env_labels(self, val: np.ndarray | None, test: np.ndarray | None) -> None:
        self.env_labels = {"val": None if val is None else np.asarray(val, dtype=np.int64),
                           "test": None if test is None else np.asarray(test, dtype=np.int64)}

    def _rank(self, score_users: Callable[[torch.Tensor], torch.Tensor], pairs: np.ndarray,
              exclude: PositiveSets, env_labels: np.ndarray | None) -> Any:
        ev = self.config.eval
        return evaluate_positives_sharded(score_users, self.data.n_items, pairs, exclude, ev.ks,
                                          self.collective.rank, self.collective.world_size,
                                          self.collective.all_gather_objects, ev.chunk_size, env_labels,
                                          ev.legacy_invrl)

    @staticmethod
    def _restricted(score_users: Callable[[torch.Tensor], torch.Tensor], blocked_items: torch.Tensor | None,
                    device: torch.device) -> Callable[[torch.Tensor], torch.Tensor]:
        """``score_users`` with -inf on ``blocked_items`` (the items outside a split's candidates)."""
        if blocked_items is None or blocked_items.numel() == 0:
            return score_users
        blocked = blocked_items.to(device)  # once per section, not once per user chunk

        def restricted(users: torch.Tensor) -> torch.Tensor:
            scores = score_users(users)
            scores[:, blocked] = float("-inf")
            return scores

        return restricted

    def section(self, model: Recommender, which: str) -> dict[str, Any]:
        """{"iid", "ood"?, "envs", "worst_env", "spread"} of split ``which`` ("val" or "test")."""
        was_training = model.training
        model.eval()
        device = model.features.device
        with torch.no_grad():
            score_users = model.ranking_scorer()
            pairs = self.data.val if which == "val" else self.data.test
            iid_scores = self._restricted(score_users, self.iid_blocked, device)
            iid = self._rank(iid_scores, pairs, self.exclude[which], self.env_labels[which])
            out: dict[str, Any] = {"iid": dict(iid.overall)}
            if self.data.has_ood():
                ood_pairs = self.data.ood_val if which == "val" else self.data.ood_test
                if ood_pairs is not None and len(ood_pairs):
                    ood_scores = self._restricted(score_users, self.ood_blocked, device)
                    out["ood"] = dict(self._rank(ood_scores, ood_pairs, self.ood_exclude[which], None).overall)
        model.train(was_training)
        if iid.envs:
            out.update(envs=iid.envs, worst_env=iid.worst_env, spread=iid.spread)
        else:  # no environment labels: one environment "all"
            overall = {k: v for k, v in iid.overall.items() if k != N_USERS_KEY}
            out.update(envs={"all": dict(iid.overall)}, worst_env=overall, spread=dict.fromkeys(overall, 0.0))
        return out

    def selection_metrics(self, model: Recommender) -> dict[str, float]:
        """Flat validation metrics ``{"iid.recall@20": ..., "ood.ndcg@10": ..., "worst_env.hit@20": ...}``."""
        return flatten_section(self.section(model, "val"))


def flatten_section(section: dict[str, Any]) -> dict[str, float]:
    flat: dict[str, float] = {}
    for part in ("iid", "ood", "worst_env"):
        for key, value in (section.get(part) or {}).items():
            if key != N_USERS_KEY:
                flat[f"{part}.{key}"] = float(value)
    return flat


def selection_key(config: Config, data: InteractionData) -> str:
    source = config.eval.selection_source
    if source == "ood" and not data.has_ood_validation():
        raise PainvrlInputError(f"config field 'eval.selection_source': 'ood' but dataset {data.name!r} has no "
                                "OOD validation split (for OOD test rows only, set dataset.ood_val_fraction)")
    return f"{source}.{config.eval.selection_metric}"
