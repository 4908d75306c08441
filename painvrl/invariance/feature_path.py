"""The feature path: the model HEI's environment models and IMG's mask model score through, for every backbone.

For a backbone X with frozen pair score b_X(u, i) = <U_u, I_i> (:meth:`Recommender.score_factors`), the
invariance methods score

    s(u, i) = a b_X(u, i) + c + <t_u, W x_i>

where x_i are the item features (gated by the mask in IMG, the variant part in HEI), W a feature projection
(one per environment in HEI, the gated one in IMG) and t_u a user taste vector for content whose last
component is 1 for every user, so that one row of W is a global content term b . x_i ("in this environment,
items with this feature pattern are clicked more by everyone"). Without it a shift that every user shares
would be invisible: X's item representations absorb it on average, and user tastes fitted to X's residual carry
no common direction for the environment models to bend. (a, c) calibrate
X's score as a logit (X may be trained with BPR, whose scores have no scale or offset of their own); t and a
starting W are fitted once, by ERM with X's score as a fixed offset. This is InvRL's design (frozen user and ID
tables, a per-environment feature projection, an UltraGCN-style score) with X's score as the ID part, and it is
linear in the content vector, so HEI and IMG run on their closed-form paths (painvrl/invariance/linear_models.py)
at the same cost whatever X is.

Backbones whose own score is already linear in a content vector (ultragcn, vbpr) are their own feature path:
their user table holds t_u and their slot W. Any other backbone would otherwise reach the invariance methods
only through its encoder slot, which some never read in their ranking score (FREEDOM and BM3 read it only in
auxiliary losses): environment fits then tie and the mask sees only an auxiliary term.

The fit is exact under data parallelism: every rank draws the same global batches and negatives, divides its
loss by the global batch size and sums gradients with ``collective.sync_gradients``.
"""

from __future__ import annotations

import logging
import math

import numpy as np
import torch

from painvrl.config import Config
from painvrl.distributed.collective import Collective, LocalCollective, replicated, synced_step
from painvrl.distributed.sampling import EpochBatches, make_generator
from painvrl.errors import PainvrlInputError
from painvrl.model.encoders import FeatureProjection
from painvrl.model.linear_content import LinearContentRecommender
from painvrl.model.recommender import Recommender
from painvrl.model.ultragcn import UltraGCN, degree_weights

logger = logging.getLogger(__name__)

CALIBRATION_PAIRS = 50_000
"""Positives (and as many uniform negatives) the calibration of the backbone's score is fitted on."""


class FeaturePathScorer(UltraGCN):
    """UltraGCN's form over a frozen backbone's factors: user vector [a U_u ; c ; t_u], item vector
    [I_i ; 1 ; W x_i], t_u ending in a constant 1. The first ``k_id`` user columns, the constant column and the
    item table stay fixed."""

    source: str
    """``model.name`` of the backbone whose score is the fixed offset."""
    calibration: tuple[float, float]
    """(a, c): the backbone's score enters as the logit a b_X + c."""


def fit_scale(pos_scores: torch.Tensor, neg_scores: torch.Tensor, iterations: int = 50) -> tuple[float, float]:
    """(a, c) of the logistic regression label ~ sigmoid(a s + c) over positive and negative scores (Newton's
    method in float64, a few ridge-damped steps)."""
    s = torch.cat([pos_scores, neg_scores]).to(torch.float64)
    y = torch.cat([torch.ones_like(pos_scores), torch.zeros_like(neg_scores)]).to(torch.float64)
    std = float(s.std()) if s.numel() > 1 else 1.0
    if not math.isfinite(std) or std <= 0:
        return 1.0, 0.0
    x = torch.stack([s / std, torch.ones_like(s)], dim=1)
    beta = torch.zeros(2, dtype=torch.float64)
    for _ in range(iterations):
        p = torch.sigmoid(x @ beta)
        grad = x.T @ (p - y) + 1e-6 * beta
        hessian = (x * (p * (1 - p)).unsqueeze(1)).T @ x + 1e-6 * torch.eye(2, dtype=torch.float64)
        step = torch.linalg.solve(hessian, grad)
        beta = beta - step
        if float(step.abs().max()) < 1e-10:
            break
    return float(beta[0]) / std, float(beta[1])


def build_feature_path(pretrained: Recommender, train: np.ndarray, k_f: int, init_std: float, seed: int,
                       generator: torch.Generator | None = None) -> FeaturePathScorer:
    """The (unfitted) feature path of ``pretrained``: its factors, calibrated, and a fresh t and W."""
    factors = pretrained.score_factors()
    if factors is None:
        raise PainvrlInputError(f"config field 'model.name': backbone {pretrained.name!r} does not expose its score "
                                "as a product of user and item factors (Recommender.score_factors), which the "
                                "invariance methods need as the frozen pair score")
    users, items = (f.detach().to(torch.float32) for f in factors)
    gen = make_generator(seed, "feature_path_calibration")
    sample = torch.randint(len(train), (min(CALIBRATION_PAIRS, len(train)),), generator=gen)
    rows = torch.as_tensor(np.asarray(train))[sample]
    negatives = torch.randint(pretrained.n_items, (len(rows),), generator=gen)
    device = users.device
    u, i, j = rows[:, 0].to(device), rows[:, 1].to(device), negatives.to(device)
    a, c = fit_scale((users[u] * items[i]).sum(-1).cpu(), (users[u] * items[j]).sum(-1).cpu())
    if a <= 0:
        raise PainvrlInputError(f"config field 'model.name': the pretrained {pretrained.name!r} scores random "
                                f"items above training positives (calibration slope {a:.3g}); pretraining "
                                "(painvrl.pretrain_epochs) has not fitted it")
    d = int(pretrained.features.shape[1])
    b_user, b_item = degree_weights(np.asarray(train), pretrained.n_users, pretrained.n_items)
    k_id = users.shape[1] + 1
    encoder = FeatureProjection(d, k_f)
    with torch.no_grad():
        encoder.weight.copy_(torch.randn(k_f, d, generator=generator) * init_std)
    scorer = FeaturePathScorer(pretrained.n_users, pretrained.n_items, pretrained.features.detach().cpu(), encoder,
                               b_user, b_item, k_id=k_id, k_f=k_f, init_std=init_std, l2=pretrained.l2)
    taste = torch.randn(pretrained.n_users, k_f, generator=generator) * init_std
    taste[:, -1] = 1.0  # the shared column: W's last row is a global content term b . x_i for every user
    with torch.no_grad():
        ones = torch.ones(pretrained.n_users, 1)
        scorer.user_embedding.copy_(torch.cat([a * users.cpu(), c * ones, taste], dim=1))
        scorer.item_embedding.copy_(torch.cat([items.cpu(), torch.ones(pretrained.n_items, 1)], dim=1))
    scorer.item_embedding.requires_grad_(False)
    scorer.source, scorer.calibration = pretrained.name, (a, c)
    return scorer.to(device)


def fit_feature_path(scorer: FeaturePathScorer, train: np.ndarray, *, epochs: int, lr: float, batch_size: int,
                     n_negatives: int, negative_pool: int, seed: int, collective: Collective | None = None,
                     progress: bool = False) -> list[float]:
    """Fit t and W by ERM (UltraGCN's loss) with the backbone's calibrated score as a fixed offset; returns the
    mean loss of each epoch. Afterwards every parameter of ``scorer`` is frozen."""
    collective = collective or LocalCollective()
    device = scorer.user_embedding.device
    projection = scorer.encoder.weight
    assert isinstance(projection, torch.nn.Parameter)
    params = [scorer.user_embedding, projection]
    fixed_columns = torch.zeros_like(scorer.user_embedding)
    fixed_columns[:, scorer.k_id:-1] = 1.0  # only the tastes train; the ID part and the shared column stay
    hook = scorer.user_embedding.register_hook(lambda grad: grad * fixed_columns)
    for param in params:
        param.grad = torch.zeros_like(param)
    optimizer = torch.optim.Adam(params, lr=lr)
    train_t = torch.as_tensor(np.asarray(train))
    ws = collective.world_size
    history: list[float] = []
    bar = None
    batches_per_epoch = math.ceil(len(train) / batch_size)
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=epochs * batches_per_epoch, desc="feature path", leave=False)
    try:
        for epoch in range(epochs):
            total = torch.zeros((), device=device)
            for batch in EpochBatches(len(train), batch_size, seed, epoch, collective.rank, ws,
                                      phase="feature_path", n_items=scorer.n_items, n_negatives=n_negatives,
                                      negative_pool=negative_pool):
                rows = train_t[batch.rows].to(device)
                assert batch.negatives is not None
                pool = None
                if batch.pool is not None and batch.pool_positions is not None:
                    pool = (batch.pool.to(device), batch.pool_positions.to(device))
                per, example_reg = scorer.loss_terms(rows[:, 0], rows[:, 1], batch.negatives.to(device), pool=pool)
                data_loss = per.sum() / batch.global_size
                loss = data_loss + example_reg / batch.global_size + replicated(scorer.shared_regularisation(), ws)
                synced_step(optimizer, loss, params, collective)
                total = total + data_loss.detach() * batch.global_size
                if bar is not None:
                    bar.update(1)
            history.append(float(collective.all_reduce_sum(total)) / len(train))
    finally:
        hook.remove()
        if bar is not None:
            bar.close()
    for param in scorer.parameters():
        param.requires_grad_(False)
        param.grad = None
    return history


def invariance_scorer(config: Config, train: np.ndarray, pretrained: Recommender,
                      collective: Collective | None = None, progress: bool = False
                      ) -> tuple[LinearContentRecommender, dict[str, object]]:
    """The model HEI and IMG score through, and a record of how it was made.

    A backbone linear in its content vector is used as it is. Any other is wrapped in a fitted
    :class:`FeaturePathScorer`.
    """
    if isinstance(pretrained, LinearContentRecommender):
        return pretrained, {"phase": "feature_path", "source": pretrained.name, "fitted": False}
    m, t, p = config.model, config.train, config.painvrl
    scorer = build_feature_path(pretrained, train, m.k_f, m.init_std, t.seed,
                                make_generator(t.seed, "feature_path_init"))
    losses = fit_feature_path(scorer, train, epochs=p.feature_path_epochs, lr=p.feature_path_lr,
                              batch_size=t.batch_size, n_negatives=m.n_negatives, negative_pool=m.negative_pool,
                              seed=t.seed, collective=collective, progress=progress)
    record: dict[str, object] = {"phase": "feature_path", "source": pretrained.name, "fitted": True,
                                 "losses": losses, "calibration": list(scorer.calibration)}
    logger.info("feature path over %s: loss %s", pretrained.name, ", ".join(f"{x:.4f}" for x in losses))
    return scorer, record
