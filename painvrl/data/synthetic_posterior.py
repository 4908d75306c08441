"""Which training environment a synthetic positive most likely came from, under the true click model.

A synthetic benchmark's training positives of environment e are user u's top-k items by the utility
``w_u . z_inv[i] / sqrt(k_inv) + s_e * v_u . z_sp[i] / sqrt(k_sp) + Gumbel noise`` (painvrl/data/
synthetic_sampling.py), i.e. draws from the softmax of the noiseless utility. With the true latent factors and
strengths, the log-likelihood of a positive (u, i) under environment e is that softmax's log-probability of i,
and the environment with the largest posterior (likelihood times the environment's share of the positives) is
the Bayes assignment. No method sees the latents, so the agreement of the Bayes assignment with the true
environments bounds what any partition of the positives can reach: where two environments differ only a little
in strength, most positives are as likely under either, and even the Bayes assignment recovers little of the
split. Used by benchmarks/environment_ceiling.py.
"""

from __future__ import annotations

import math

import numpy as np

from painvrl.data.synthetic_sampling import CHUNK_ELEMENTS, UTILITY_NOISE, SyntheticLatents


def environment_log_likelihoods(latents: SyntheticLatents, pairs: np.ndarray,
                                chunk_elements: int = CHUNK_ELEMENTS) -> np.ndarray:
    """float64 [n_pairs, E]: log softmax probability of each (user, item) pair's item among all items under each
    training environment's utility (E = the training environments, the OOD one excluded). Users are processed
    in chunks of about ``chunk_elements`` utilities."""
    pairs = np.asarray(pairs, dtype=np.int64)
    if pairs.ndim != 2 or pairs.shape[1] != 2:
        raise ValueError(f"pairs: expected [n, 2] (user, item), got shape {list(pairs.shape)}")
    strengths = latents.strengths[:-1]
    n_items = latents.item_invariant.shape[0]
    inv_items = latents.item_invariant.T / math.sqrt(latents.item_invariant.shape[1])
    sp_items = latents.item_spurious.T / math.sqrt(max(latents.item_spurious.shape[1], 1))
    out = np.empty((len(pairs), len(strengths)), dtype=np.float64)
    order = np.argsort(pairs[:, 0], kind="stable")  # pairs grouped by user, so a block of users is one slice
    sorted_users = pairs[order, 0]
    users = np.unique(sorted_users)
    chunk = max(1, chunk_elements // n_items)
    for start in range(0, len(users), chunk):
        block = users[start:start + chunk]
        invariant = latents.user_preference[block] @ inv_items
        spurious = latents.user_spurious[block] @ sp_items
        rows = order[np.searchsorted(sorted_users, block[0]):np.searchsorted(sorted_users, block[-1], side="right")]
        local = np.searchsorted(block, pairs[rows, 0])
        for env, strength in enumerate(strengths):
            utility = (invariant + strength * spurious) / UTILITY_NOISE
            peak = utility.max(axis=1, keepdims=True)
            log_norm = peak[:, 0] + np.log(np.exp(utility - peak).sum(axis=1))
            out[rows, env] = utility[local, pairs[rows, 1]] - log_norm[local]
    return out


def bayes_environments(log_likelihoods: np.ndarray, shares: np.ndarray) -> np.ndarray:
    """int64 [n]: the environment of largest posterior, log-likelihood plus log share, for every positive."""
    shares = np.asarray(shares, dtype=np.float64)
    if shares.shape != (log_likelihoods.shape[1],) or (shares <= 0).any():
        raise ValueError(f"shares: expected {log_likelihoods.shape[1]} positive values, got {shares.tolist()}")
    return np.argmax(log_likelihoods + np.log(shares / shares.sum()), axis=1).astype(np.int64)
