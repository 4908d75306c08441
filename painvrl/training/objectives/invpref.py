"""InvPref (Wang et al., KDD 2022, "Invariant Preference Learning for General Debiasing in Recommendation"):
invariant and variant user preferences over environments the method infers itself (method ``invpref``).

InvPref assumes a user's behaviour comes from an invariant preference (the true one) and a variant preference
(the effect of unobserved confounders, which differs from one environment to another). Each training
interaction belongs to one of E latent environments. Over a matrix-factorisation backbone (a
LinearContentRecommender: ultragcn, vbpr) with user vector p_u and item vector q_i:

- invariant prediction: the backbone's score f(u, i) = <p_u, q_i>, trained by the backbone's own loss L_B;
- variant prediction in environment e: g_e(u, i) = <phi_u * v_i, t_e>, with the variant user and item
  embeddings phi_u, v_i and the environment embedding t_e (owned by this objective; ID embeddings of the
  backbone's ID width model.k_id, as the paper's variant part has no content);
- environment-aware prediction: y^e(u, i) = sigma(f(u, i)) sigma(g_e(u, i)), trained by BCE on the example's
  positive (label 1) and negatives (label 0) in the example's environment e_n:
  L_V = -log y^e(u, i) - mean_j log(1 - y^e(u, j));
- environment classifier on the invariant pair representation z = p_u * q_i behind a gradient reversal layer:
  L_C = -log softmax(W R(z) + b)[e_n], where R is the identity forward and multiplies the gradient by -alpha
  backward: the classifier learns to tell the environments apart, the backbone's vectors learn to hide them.

A batch's loss is sum_n (L_B + lambda_V L_V + lambda_C L_C) / N plus the backbone's regularisation and
l2 (|phi_u|^2 + |v_i|^2) with the backbone's model.l2 (the paper has one L2 coefficient for every embedding).
The first assignment is uniform at random; every ``reassign_every`` epochs (the EM step) each training positive
moves to the environment whose environment-aware prediction fits it best, argmin_e -log y^e(u, i); the factor
sigma(f) is common to every environment, so this is argmin_e softplus(-g_e(u, i)). Ranking uses f alone: the
backbone is the invariant preference, so evaluation is the backbone's.

Left out: the paper's L1 terms and the per-environment reweighting of the authors' code (options off or
tuned per dataset there); the backbone's own loss stands for the paper's BCE on the invariant score. The
assignment is a function of the synced parameters and the full training set, so it is identical on every
rank; every term is a per-example sum over the global batch size.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from painvrl.config.ood_methods import InvPrefConfig
from painvrl.distributed.collective import Collective
from painvrl.errors import PainvrlInputError
from painvrl.model.linear_content import LinearContentRecommender
from painvrl.model.recommender import Recommender
from painvrl.training.objectives.base import Batch, Objective, ObjectiveContext

REASSIGN_CHUNK = 65536
"""Training positives scored per step of a reassignment ([chunk, E] scores at a time)."""


class GradientReversal(torch.autograd.Function):
    """Identity forward; the gradient times -factor backward (Ganin & Lempitsky, ICML 2015)."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, factor: float) -> torch.Tensor:
        ctx.factor = factor
        return x.view_as(x)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        return -ctx.factor * grad, None


def reverse_gradient(x: torch.Tensor, factor: float) -> torch.Tensor:
    return GradientReversal.apply(x, factor)


def environment_aware_loss(pos_scores: torch.Tensor, neg_scores: torch.Tensor, pos_variant: torch.Tensor,
                           neg_variant: torch.Tensor) -> torch.Tensor:
    """[B] BCE of y = sigma(f) sigma(g) on the positive (label 1) plus the mean over the negatives (label 0).

    log y = log sigma(f) + log sigma(g), and 1 - y = sigma(-f) + sigma(f) sigma(-g), a sum of positive terms
    (no cancellation where y is close to 1)."""
    log_pos = F.logsigmoid(pos_scores) + F.logsigmoid(pos_variant)
    log_neg = torch.log(torch.sigmoid(-neg_scores) + torch.sigmoid(neg_scores) * torch.sigmoid(-neg_variant))
    return -(log_pos + log_neg.mean(dim=1))


def best_environments(user_variant: torch.Tensor, item_variant: torch.Tensor,
                      env_embedding: torch.Tensor) -> torch.Tensor:
    """[n] the environment with the lowest variant loss softplus(-g_e) of each positive (u, i) given by its
    variant vectors [n, k]; ties go to the lowest index."""
    variant = (user_variant * item_variant) @ env_embedding.T
    return F.softplus(-variant).argmin(dim=1)


class InvPrefObjective(Objective):
    """The backbone as the invariant preference; the variant part, the classifier and the assignment here."""

    name = "invpref"

    def __init__(self, train: np.ndarray, n_users: int, n_items: int, dim: int, variant_dim: int,
                 cfg: InvPrefConfig, l2: float, init_std: float, seed: int, device: torch.device) -> None:
        """``dim``: the backbone's vector width (the classifier's input); ``variant_dim``: the variant
        embeddings' width."""
        self.n_envs, self.reassign_every = cfg.n_envs, cfg.reassign_every
        self.variant_weight, self.classifier_weight, self.reversal = \
            cfg.variant_weight, cfg.classifier_weight, cfg.reversal
        self.dim, self.l2 = dim, float(l2)
        # A private generator: the same start on every rank, and the global RNG stays the backbone's.
        generator = torch.Generator().manual_seed(seed)

        def normal(*shape: int) -> nn.Parameter:
            return nn.Parameter((torch.randn(*shape, generator=generator) * init_std).to(device))

        self.user_variant, self.item_variant = normal(n_users, variant_dim), normal(n_items, variant_dim)
        self.env_embedding = normal(cfg.n_envs, variant_dim)
        bound = float(np.sqrt(6.0 / (dim + cfg.n_envs)))  # Xavier-uniform classifier weight
        self.classifier = nn.Parameter(((torch.rand(cfg.n_envs, dim, generator=generator) * 2 - 1) * bound)
                                       .to(device))
        self.classifier_bias = nn.Parameter(torch.zeros(cfg.n_envs, device=device))
        pairs = torch.as_tensor(np.asarray(train), dtype=torch.long, device=device)
        self.users, self.items = pairs[:, 0], pairs[:, 1]
        start = np.random.default_rng(seed).integers(0, cfg.n_envs, len(pairs))
        self.envs = torch.as_tensor(start, dtype=torch.long, device=device)
        """The environment of every training positive (int64 [n_train]), uniform at random until the first
        reassignment."""
        self.reassigned: list[int] = []
        """How many positives changed environment at each reassignment."""
        self.last_terms = (torch.zeros(1, device=device), torch.zeros(1, device=device))
        """(environment-aware losses, classifier losses) of the latest batch slice, detached."""

    # ------------------------------------------------------------------------------------------ training
    def batch_loss(self, model: Recommender, batch: Batch, collective: Collective) -> torch.Tensor:
        if not isinstance(model, LinearContentRecommender):
            raise PainvrlInputError(f"method 'invpref' wraps a matrix-factorisation backbone (a "
                                    f"LinearContentRecommender), not {model.name!r}")
        pool = (batch.pool, batch.pool_positions) \
            if batch.pool is not None and batch.pool_positions is not None else None
        user_vectors, pos_vectors, pos_scores, neg_scores = model.batch_scores(
            batch.users, batch.pos_items, batch.neg_items, pool)
        if user_vectors.shape[1] != self.dim:
            raise PainvrlInputError(f"method 'invpref': the backbone's vectors have {user_vectors.shape[1]} dims, "
                                    f"expected model.k_id + model.k_f = {self.dim}")
        invariant = model.scores_loss(batch.users, batch.pos_items, pos_scores, batch.neg_items, neg_scores)
        pos_ids = pos_vectors[:, : model.k_id]
        invariant_reg = (user_vectors * user_vectors).sum() + (pos_ids * pos_ids).sum()  # as loss_terms
        envs = self.envs[batch.rows]
        variant, variant_reg = self.variant_terms(model, batch, envs, user_vectors, pos_scores, neg_scores)
        classifier = self.classifier_terms(user_vectors * pos_vectors, envs)
        self.last_terms = (variant.detach(), classifier.detach())
        example_sum = (invariant.sum() + model.l2 * invariant_reg + self.variant_weight * variant.sum()
                       + self.l2 * variant_reg + self.classifier_weight * classifier.sum())
        return self.total(model, batch, example_sum)

    def variant_terms(self, model: LinearContentRecommender, batch: Batch, envs: torch.Tensor,
                      user_vectors: torch.Tensor, pos_scores: torch.Tensor, neg_scores: torch.Tensor
                      ) -> tuple[torch.Tensor, torch.Tensor]:
        """([b] environment-aware losses, the slice's |phi_u|^2 + |v_i|^2).

        With a shared negative pool the term's negatives are the pool's first n_neg items (uniform draws, the
        same for every example of the step on every rank): an estimate of the same mean over uniform negatives
        at O(b x n_neg), where the examples' own pooled negatives would cost a second [b, P] product as large as
        the backbone's. Without a pool each example keeps its own negatives."""
        user_variant = F.embedding(batch.users, self.user_variant)
        pos_variant_items = F.embedding(batch.pos_items, self.item_variant)
        weighted = user_variant * F.embedding(envs, self.env_embedding)  # g_e(u, j) = <phi_u * t_e, v_j>
        pos_variant = (weighted * pos_variant_items).sum(-1)
        if batch.pool is not None:
            shared = batch.pool[: batch.neg_items.shape[1]]
            neg_scores = user_vectors @ model.item_vectors(shared).T
            neg_variant = weighted @ F.embedding(shared, self.item_variant).T
        else:
            neg_variant = torch.bmm(F.embedding(batch.neg_items, self.item_variant), weighted.unsqueeze(2)).squeeze(2)
        loss = environment_aware_loss(pos_scores, neg_scores, pos_variant, neg_variant)
        return loss, (user_variant * user_variant).sum() + (pos_variant_items * pos_variant_items).sum()

    def classifier_terms(self, invariant_pairs: torch.Tensor, envs: torch.Tensor) -> torch.Tensor:
        """[b] the classifier's NLL of each example's environment, through the gradient reversal layer."""
        logits = reverse_gradient(invariant_pairs, self.reversal) @ self.classifier.T + self.classifier_bias
        return F.cross_entropy(logits, envs, reduction="none")

    def parameters(self) -> list[nn.Parameter]:
        return [self.user_variant, self.item_variant, self.env_embedding, self.classifier, self.classifier_bias]

    # ------------------------------------------------------------------------------------ the EM step
    def start_epoch(self, epoch: int) -> None:
        if epoch > 0 and epoch % self.reassign_every == 0:
            self.reassign()

    @torch.no_grad()
    def reassign(self) -> int:
        """Move every training positive to its best environment (in chunks); the number that moved."""
        parts = [best_environments(self.user_variant[self.users[start: start + REASSIGN_CHUNK]],
                                   self.item_variant[self.items[start: start + REASSIGN_CHUNK]],
                                   self.env_embedding)
                 for start in range(0, len(self.users), REASSIGN_CHUNK)]
        envs = torch.cat(parts) if parts else self.envs
        moved = int((envs != self.envs).sum())
        self.envs = envs
        self.reassigned.append(moved)
        return moved

    def environment_sizes(self) -> list[int]:
        return [int(n) for n in torch.bincount(self.envs, minlength=self.n_envs)]

    # ----------------------------------------------------------------------------------------- state
    def state_dict(self) -> dict[str, Any]:
        state: dict[str, Any] = {name: p.detach().cpu().clone() for name, p in self._named()}
        return {**state, "envs": self.envs.cpu().clone(), "reassigned": list(self.reassigned)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if not state:
            return
        with torch.no_grad():  # in place: the optimiser holds these parameters
            for name, p in self._named():
                p.copy_(state[name])
        self.envs = state["envs"].to(self.envs.device)
        self.reassigned = list(state["reassigned"])

    def _named(self) -> list[tuple[str, nn.Parameter]]:
        names = ["user_variant", "item_variant", "env_embedding", "classifier", "classifier_bias"]
        return list(zip(names, self.parameters(), strict=True))

    def summary(self) -> dict[str, Any]:
        variant, classifier = (float(x.mean()) if x.numel() else 0.0 for x in self.last_terms)
        return {"n_envs": self.n_envs, "environment_sizes": self.environment_sizes(),
                "reassigned": list(self.reassigned), "environment_aware_loss": variant,
                "classifier_loss": classifier}


def invpref(context: ObjectiveContext) -> Objective:
    config = context.config
    m = config.model
    return InvPrefObjective(context.data.train, context.data.n_users, context.data.n_items, m.k_id + m.k_f,
                            m.k_id, config.invpref, m.l2, m.init_std, config.train.seed, context.device)
