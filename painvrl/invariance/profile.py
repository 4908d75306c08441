"""What the environments are: a short profile of each environment HEI (or EIIL) found on the training positives.

Per environment: its size and share, the mean training popularity of its positives' items and the mean training
degree of their users, the mean interaction time where the data has timestamps (also as the mean rank of the
positives' times in [0, 1], which reads the same on any clock), and per modality the mean feature value of
its items and the distance of its mean feature block from the mean over all positives (which modality
separates the environments). With ground truth, the share of each true environment in it.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from painvrl.data.dataset import InteractionData


def environment_profile(data: InteractionData, labels: np.ndarray, n_envs: int) -> list[dict[str, Any]]:
    """One dict per environment (see the module docstring); ``labels`` are the training positives' environments."""
    labels = np.asarray(labels, dtype=np.int64)
    if labels.shape != (len(data.train),):
        raise ValueError(f"labels have shape {labels.shape}, expected ({len(data.train)},)")
    users, items = data.train[:, 0], data.train[:, 1]
    popularity = np.bincount(items, minlength=data.n_items).astype(np.float64)
    user_degree = np.bincount(users, minlength=data.n_users).astype(np.float64)
    times = None if data.train_timestamps is None else np.asarray(data.train_timestamps, dtype=np.float64)
    time_rank = None
    if times is not None and len(times) > 1:
        time_rank = np.argsort(np.argsort(times, kind="stable"), kind="stable") / (len(times) - 1)
    blocks = {name: np.asarray(block, dtype=np.float64)[items] for name, block in data.features.items()}
    overall = {name: block.mean(axis=0) for name, block in blocks.items()}
    truth = data.ground_truth.train_env if data.ground_truth is not None else None
    profile: list[dict[str, Any]] = []
    for env in range(n_envs):
        rows = labels == env
        size = int(rows.sum())
        entry: dict[str, Any] = {"env": env, "size": size, "share": size / max(len(labels), 1)}
        if size == 0:
            profile.append(entry)
            continue
        entry["item_popularity"] = float(popularity[items[rows]].mean())
        entry["user_degree"] = float(user_degree[users[rows]].mean())
        if times is not None and time_rank is not None:
            entry["time"] = float(times[rows].mean())
            entry["time_rank"] = float(time_rank[rows].mean())
        entry["feature_mean"] = {name: float(block[rows].mean()) for name, block in blocks.items()}
        entry["feature_shift"] = {name: float(np.linalg.norm(block[rows].mean(axis=0) - overall[name]))
                                  for name, block in blocks.items()}
        if truth is not None and len(truth) == len(labels):
            counts = np.bincount(np.asarray(truth)[rows], minlength=int(np.max(truth)) + 1)
            entry["true_env_share"] = (counts / size).round(4).tolist()
        profile.append(entry)
    return profile
