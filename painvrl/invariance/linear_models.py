"""Closed-form fast paths for backbones whose score is linear in the content vector (LinearContentRecommender).

With s(u, i) = <P_u, [Q_i ; h_i]> and a linear slot h = W x, every environment model and the mask model are a
matrix product away from their scores:

- :class:`StackedEnvironmentModels` scores a batch under all E environment models with one matmul
  (``x @ W_flat^T``) and batches training over environments without a Python loop;
- :class:`LinearMaskModel` encodes the items of every environment's batch once and computes the per-environment
  gradients dL_k/dW in closed form (first-order graph only), which makes the gradvar penalty a first-order
  backward too.

Every backbone reaches them through its feature path (painvrl/invariance/feature_path.py). Tests check both
against autograd through the backbone's own per-interaction loss.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

from painvrl.invariance.environment_models import check_input_mode
from painvrl.invariance.mask_models import EnvBatch, MaskModel
from painvrl.model.linear_content import LinearContentRecommender


class StackedEnvironmentModels(nn.Module):
    """E environment scorers with stacked projections ``weight [E, k_f, d]`` on the frozen P and Q of a linear
    content backbone (read, not copied).

    score_k(u, i) = <P_u, [Q_i ; W_k x_i]> with x_i = (1 - m) * f_i (``input="variant"``) or f_i
    (``input="invrl"``, with the penalty rho * mean|W_k * m| added by :meth:`penalty`).
    """

    user_embedding: torch.Tensor
    item_embedding: torch.Tensor
    features: torch.Tensor
    mask: torch.Tensor

    def __init__(
        self,
        n_envs: int,
        pretrained: LinearContentRecommender,
        mask: torch.Tensor,
        k_f: int,
        input_mode: str = "variant",
        l1_rho: float = 0.0,
        init_std: float = 0.01,
        generator: torch.Generator | None = None,
        train_users: bool = False,
        feature_bias: bool = False,
    ) -> None:
        super().__init__()
        features = pretrained.features
        device = features.device
        d = int(features.shape[1])
        check_input_mode(input_mode)
        # feature_bias: each model also gets a global item term b_k . x_i + c_k ("in environment k, items with
        # this feature pattern are clicked more by everyone", with an intercept so that relabelling by score
        # has a threshold). Implemented as one extra output row of W_k read by a constant-1 user column and a
        # constant-1 input column (which also gives each user a per-environment offset), so every scoring path
        # below stays a plain <user, item> product.
        extra = 1 if feature_bias else 0
        self.n_envs, self.k_f, self.feature_dim, self.input_mode = n_envs, k_f + extra, d + extra, input_mode
        self.l1_rho = float(l1_rho)
        self.l2 = pretrained.l2
        self.n_items = int(pretrained.n_items)
        weight = torch.randn(n_envs, self.k_f, self.feature_dim, generator=generator) * init_std
        self.weight = nn.Parameter(weight.to(device))
        users = pretrained.user_embedding.detach()
        if feature_bias:
            users = torch.cat([users, users.new_ones(users.shape[0], 1)], dim=1)
            features = torch.cat([features, features.new_ones(features.shape[0], 1)], dim=1)
            mask = torch.cat([mask.detach().to(features), mask.new_zeros(1).to(features)])
        if train_users:
            # One user table shared by the E models, trained jointly with them (starts at the pretrained P).
            # Frozen P holds only what ERM learned from the MIXTURE of environments: where the environments'
            # spurious strengths average out, P carries no spurious taste and no W_k can express it.
            self.user_embedding = nn.Parameter(users.clone())
        else:
            self.register_buffer("user_embedding", users, persistent=False)
        self.register_buffer("item_embedding", pretrained.item_embedding.detach(), persistent=False)
        self.register_buffer("features", features, persistent=False)
        self.register_buffer("mask", mask.detach().to(device=device, dtype=torch.float32).clone(),
                             persistent=False)
        # The backbone's loss from scores (same weights and degree buffers); a bound method, not a submodule.
        self._per_example_loss: Callable[..., torch.Tensor] = pretrained.scores_loss

    def trainable(self) -> list[nn.Parameter]:
        """Stacked projections, plus the shared user table when ``train_users``."""
        params = [self.weight]
        if isinstance(self.user_embedding, nn.Parameter):
            params.append(self.user_embedding)
        return params

    # ----------------------------------------------------------------------------------------------- inputs
    def inputs(self, items: torch.Tensor) -> torch.Tensor:
        x = self.features[items]
        return x * (1.0 - self.mask) if self.input_mode == "variant" else x

    def item_vectors(self, items: torch.Tensor, env: int) -> torch.Tensor:
        """[len(items), k_id + k_f] under model ``env``."""
        return torch.cat([self.item_embedding[items], self.inputs(items) @ self.weight[env].T], dim=1)

    # ----------------------------------------------------------------------------------------------- losses
    def env_example_losses(
        self, env: int, users: torch.Tensor, pos_items: torch.Tensor, neg_items: torch.Tensor
    ) -> torch.Tensor:
        """[b] backbone loss of each positive under model ``env`` (each unique item encoded once)."""
        all_items = torch.cat([pos_items, neg_items.reshape(-1)])
        unique, inverse = torch.unique(all_items, return_inverse=True)
        vectors = self.item_vectors(unique, env)
        user_vectors = self.user_embedding[users]
        b = users.shape[0]
        pos_scores = (user_vectors * vectors[inverse[:b]]).sum(-1)
        neg_vectors = vectors[inverse[b:]].view(b, -1, vectors.shape[1])
        neg_scores = torch.bmm(neg_vectors, user_vectors.unsqueeze(2)).squeeze(2)
        return self._per_example_loss(users, pos_items, pos_scores, neg_items, neg_scores)

    def env_example_losses_pooled(
        self, env: int, users: torch.Tensor, pos_items: torch.Tensor, pool: torch.Tensor, positions: torch.Tensor
    ) -> torch.Tensor:
        """[b] loss under model ``env`` with negatives ``pool[positions]``: the b positives and the P pool items
        are encoded once and every user is scored against the pool with one matrix product."""
        b = users.shape[0]
        vectors = self.item_vectors(torch.cat([pos_items, pool]), env)
        user_vectors = self.user_embedding[users]
        pos_scores = (user_vectors * vectors[:b]).sum(-1)
        neg_scores = torch.gather(user_vectors @ vectors[b:].T, 1, positions)
        return self._per_example_loss(users, pos_items, pos_scores, pool[positions], neg_scores)

    def example_losses_pooled(
        self, users: torch.Tensor, pos_items: torch.Tensor, pools: torch.Tensor, positions: torch.Tensor,
        envs: torch.Tensor
    ) -> torch.Tensor:
        """[B] own-environment losses; environment k's negatives are ``pools[k][positions]`` (pools [E, P]).

        Fully batched over environments: rows are grouped by environment into a padded [E, max_b, ...] layout,
        so positives, pools and user-pool scores of all E models each take ONE bmm (no Python loop over E).
        """
        n_envs, d = self.n_envs, self.feature_dim
        b = users.shape[0]
        order = torch.argsort(envs, stable=True)
        sorted_envs = envs[order]
        counts = torch.bincount(envs, minlength=n_envs)
        starts = torch.cumsum(counts, 0) - counts
        slot = torch.arange(b, device=users.device) - starts[sorted_envs]
        max_b = int(counts.max()) if b else 0
        users_s, pos_s, positions_s = users[order], pos_items[order], positions[order]
        weight_t = self.weight.transpose(1, 2)  # [E, d, k_f]
        padded = self.features.new_zeros(n_envs, max_b, d)
        padded[sorted_envs, slot] = self.inputs(pos_s)
        h_pos = torch.bmm(padded, weight_t)[sorted_envs, slot]  # [B, k_f], each row under its own model
        p = pools.shape[1]
        h_pool = torch.bmm(self.inputs(pools.reshape(-1)).view(n_envs, p, d), weight_t)  # [E, P, k_f]
        pool_vectors = torch.cat([self.item_embedding[pools], h_pool], dim=2)  # [E, P, k]
        user_vectors = self.user_embedding[users_s]
        pos_scores = (user_vectors * torch.cat([self.item_embedding[pos_s], h_pos], dim=1)).sum(-1)
        users_padded = user_vectors.new_zeros(n_envs, max_b, user_vectors.shape[1])
        users_padded[sorted_envs, slot] = user_vectors
        pool_scores = torch.bmm(users_padded, pool_vectors.transpose(1, 2))[sorted_envs, slot]  # [B, P]
        neg_scores = torch.gather(pool_scores, 1, positions_s)
        neg_items = pools[sorted_envs.unsqueeze(1), positions_s]
        per = self._per_example_loss(users_s, pos_s, pos_scores, neg_items, neg_scores)
        return per[torch.argsort(order)]

    def example_losses(
        self, users: torch.Tensor, pos_items: torch.Tensor, neg_items: torch.Tensor, envs: torch.Tensor
    ) -> torch.Tensor:
        """[B] loss of each positive under ITS OWN environment's model (rows grouped by environment)."""
        out = torch.zeros(users.shape[0], device=users.device, dtype=self.weight.dtype)
        parts, rows = [], []
        for env in torch.unique(envs).tolist():
            sel = torch.nonzero(envs == env, as_tuple=True)[0]
            parts.append(self.env_example_losses(int(env), users[sel], pos_items[sel], neg_items[sel]))
            rows.append(sel)
        if not parts:
            return out
        return out.index_put((torch.cat(rows),), torch.cat(parts))

    def penalty(self) -> torch.Tensor:
        """L2 on the projections (backbone weight) plus, for ``input="invrl"``, rho * mean|W_k * m|."""
        reg = self.l2 * self.weight.pow(2).sum()
        if self.input_mode == "invrl" and self.l1_rho > 0:
            reg = reg + self.l1_rho * (self.weight * self.mask).abs().mean()
        return reg

    # ------------------------------------------------------------------------------------------- relabeling
    @torch.no_grad()
    def score_all(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """[B, E] scores of each pair under every model: one matmul with the stacked projections."""
        base = (self.user_embedding[users, : self.item_embedding.shape[1]] * self.item_embedding[items]).sum(-1)
        proj = self.inputs(items) @ self.weight.reshape(-1, self.feature_dim).T  # [B, E*k_f]
        user_f = self.user_embedding[users, self.item_embedding.shape[1]:]
        return base[:, None] + torch.einsum("bek,bk->be", proj.view(-1, self.n_envs, self.k_f), user_f)

    @torch.no_grad()
    def loss_all(
        self, users: torch.Tensor, pos_items: torch.Tensor, neg_items: torch.Tensor, chunk: int = 1024
    ) -> torch.Tensor:
        """[B, E] own loss of each positive under every model (negatives shared by all models)."""
        if users.shape[0] > chunk:
            return torch.cat([self.loss_all(users[s:s + chunk], pos_items[s:s + chunk], neg_items[s:s + chunk])
                              for s in range(0, users.shape[0], chunk)])
        all_items = torch.cat([pos_items, neg_items.reshape(-1)])
        unique, inverse = torch.unique(all_items, return_inverse=True)
        k_id = self.item_embedding.shape[1]
        proj = (self.inputs(unique) @ self.weight.reshape(-1, self.feature_dim).T).view(-1, self.n_envs, self.k_f)
        b, n_neg = users.shape[0], neg_items.shape[1]
        pos_idx, neg_idx = inverse[:b], inverse[b:].view(b, n_neg)
        user_id, user_f = self.user_embedding[users, :k_id], self.user_embedding[users, k_id:]
        q = self.item_embedding[unique]
        base_pos = (user_id * q[pos_idx]).sum(-1)
        base_neg = torch.bmm(q[neg_idx], user_id.unsqueeze(2)).squeeze(2)
        pos_f = torch.einsum("bek,bk->be", proj[pos_idx], user_f)  # [B, E]
        neg_f = torch.einsum("bnek,bk->bne", proj[neg_idx], user_f)  # [B, n_neg, E]
        out = [self._per_example_loss(users, pos_items, base_pos + pos_f[:, env], neg_items,
                                      base_neg + neg_f[:, :, env]) for env in range(self.n_envs)]
        return torch.stack(out, dim=1)


class LinearMaskModel(MaskModel):
    """:class:`MaskModel` for a linear content backbone: the items of every environment's batch (and the shared
    negative pool) are encoded once, and dL_k/dW is assembled from the score derivatives in closed form."""

    backbone: LinearContentRecommender

    def env_forward(
        self, gates: torch.Tensor, batches: Sequence[EnvBatch], scales: Sequence[torch.Tensor] | None = None
    ) -> tuple[torch.Tensor, dict[str, Any]]:
        backbone = self.backbone
        device = self.weight.device
        pool = batches[0].pool if batches else None
        if pool is not None:
            items = [b.pos_items for b in batches]
        else:
            items = [torch.cat([b.pos_items, b.neg_items.reshape(-1)]) for b in batches]
        unique, inverse = torch.unique(torch.cat([*items, *([pool] if pool is not None else [])]),
                                       return_inverse=True)
        gated = self.features[unique] * gates
        vectors = torch.cat([backbone.item_embedding[unique], gated @ self.weight.T], dim=1)
        pool_index = inverse[-pool.shape[0]:] if pool is not None else None
        pool_vectors = vectors[pool_index] if pool_index is not None else None
        out = []
        records: list[tuple[Any, ...] | None] = []
        offset = 0
        for k, batch in enumerate(batches):
            b = batch.users.shape[0]
            n_rows = items[k].shape[0]
            idx = inverse[offset:offset + n_rows]
            offset += n_rows
            if b == 0 or batch.global_count == 0:
                out.append(vectors.sum() * 0.0)  # keeps every entry attached to the graph
                records.append(None)
                continue
            users = backbone.user_embedding[batch.users]
            pos_scores = (users * vectors[idx[:b]]).sum(-1)
            if pool_vectors is not None and pool_index is not None and batch.positions is not None:
                neg_scores = torch.gather(users @ pool_vectors.T, 1, batch.positions)
                neg_index = pool_index[batch.positions]
            else:
                neg_index = idx[b:].view(b, -1)
                neg_scores = torch.bmm(vectors[neg_index], users.unsqueeze(2)).squeeze(2)
            if scales is not None:
                pos_scores, neg_scores = pos_scores * scales[k], neg_scores * scales[k]
            per = backbone.scores_loss(batch.users, batch.pos_items, pos_scores, batch.neg_items, neg_scores)
            out.append(per.sum() / batch.global_count)
            scale = scales[k] if scales is not None else None
            records.append((users, idx[:b], neg_index, pos_scores, neg_scores, batch.positions, scale))
        losses = torch.stack(out) if out else torch.zeros(0, device=device)
        return losses, {"gated": gated, "records": records, "partials": out, "n_unique": unique.shape[0],
                        "pool_index": pool_index}

    def env_weight_grads(self, cache: dict[str, Any]) -> torch.Tensor:
        """[E, k_f, d] dL_k/dW of this rank's partial losses, differentiable in (mu, W).

        With ds/dW = P_u^f (g * f_i)^T: G_k = C_k^T X where X = g * f of the unique items and C_k [U, k_f]
        accumulates dL_k/ds * P_u^f over each item's occurrences. The score derivatives dL_k/ds come from
        autograd on the element-wise loss (any ``scores_loss``); the graph stays first order in W.
        """
        k_id = self.backbone.k_id
        gated: torch.Tensor = cache["gated"]
        grads = []
        for record, partial in zip(cache["records"], cache["partials"], strict=True):
            if record is None:
                grads.append(self.weight.new_zeros(self.weight.shape) + 0.0 * self.weight)
                continue
            users, pos_index, neg_index, pos_scores, neg_scores, positions, scale = record
            delta_pos, delta_neg = torch.autograd.grad(partial, [pos_scores, neg_scores], create_graph=True)
            if scale is not None:  # the scores were multiplied by the dummy scale w: d(w s)/dW = w ds/dW
                delta_pos, delta_neg = delta_pos * scale, delta_neg * scale
            user_f = users[:, k_id:]  # [b, k_f]
            pool_index = cache["pool_index"]
            pooled = pool_index is not None and positions is not None
            # only the items this environment's rows touch: G_k = C_k^T X over those rows of X, not over every
            # unique item of the step (which the other environments' rows bring in)
            touched = torch.cat([pos_index, pool_index if pooled else neg_index.reshape(-1)])
            rows, local = torch.unique(touched, return_inverse=True)
            coef = user_f.new_zeros(rows.shape[0], user_f.shape[1])
            coef = coef.index_add(0, local[:pos_index.shape[0]], delta_pos.unsqueeze(1) * user_f)
            if pooled:
                # pooled negatives: delta summed per pool slot ([b, P], scalars), then one [P, b] x [b, k_f]
                per_slot = delta_neg.new_zeros(delta_neg.shape[0], pool_index.shape[0])
                per_slot = per_slot.scatter_add(1, positions, delta_neg)
                coef = coef.index_add(0, local[pos_index.shape[0]:], per_slot.T @ user_f)
            else:
                neg_coef = (delta_neg.unsqueeze(2) * user_f.unsqueeze(1)).reshape(-1, user_f.shape[1])
                coef = coef.index_add(0, local[pos_index.shape[0]:], neg_coef)
            grads.append(coef.T @ gated[rows])
        return torch.stack(grads)
