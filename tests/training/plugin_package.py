"""A third-party plugin package for the tests: written to a folder, pip-installed (not editable) into the running
interpreter's environment, uninstalled afterwards.

It registers two backbones through the ``painvrl.models`` entry-point group, so they reach every process that
looks a model name up, Ray Train workers included:

- ``plugin_mf``: a matrix-factorisation backbone of the package's own (score <P_u, [Q_i ; W f_i]>, BPR loss);
- ``crash_once``: UltraGCN, except that the worker of rank 1 (or the only process) exits once, at the
  ``crash_at``-th training epoch its process starts, when the file ``marker`` does not exist yet (it creates it
  first). The tests use it to lose a worker in the middle of a Ray Train run; everything else computes exactly
  as ``ultragcn`` does.
"""

from __future__ import annotations

import importlib
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

DISTRIBUTION = "painvrl-test-plugin"

PYPROJECT = """\
[build-system]
requires = ["setuptools>=61"]
build-backend = "setuptools.build_meta"

[project]
name = "painvrl-test-plugin"
version = "0.1.0"

[project.entry-points."painvrl.models"]
plugin_mf = "painvrl_test_plugin.backbones:PluginMF"
crash_once = "painvrl_test_plugin.backbones:CrashOnce"

[tool.setuptools]
packages = ["painvrl_test_plugin"]
"""

BACKBONES = '''
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import torch
import torch.nn.functional as F

from painvrl.model.common import settings_from
from painvrl.model.linear_content import LinearContentRecommender
from painvrl.model.recommender import BuildContext
from painvrl.model.ultragcn import UltraGCN, degree_weights


class PluginMF(LinearContentRecommender):
    name: ClassVar[str] = "plugin_mf"

    @classmethod
    def build(cls, context: BuildContext) -> PluginMF:
        m = context.model_config
        return cls(context.n_users, context.n_items, context.features, context.encoder, m.k_id, m.k_f,
                   m.init_std, m.l2)

    def scores_loss(self, users: torch.Tensor, pos_items: torch.Tensor, pos_scores: torch.Tensor,
                    neg_items: torch.Tensor, neg_scores: torch.Tensor) -> torch.Tensor:
        return F.softplus(neg_scores - pos_scores.unsqueeze(1)).mean(1)


@dataclass(frozen=True)
class CrashOnceSettings:
    marker: str = ""
    crash_at: int = 0


class CrashOnce(UltraGCN):
    name: ClassVar[str] = "crash_once"
    settings_type: ClassVar[type[CrashOnceSettings]] = CrashOnceSettings
    epochs_started: ClassVar[int] = 0

    @classmethod
    def build(cls, context: BuildContext) -> CrashOnce:
        m = context.model_config
        b_user, b_item = degree_weights(context.train, context.n_users, context.n_items)
        model = cls(context.n_users, context.n_items, context.features, context.encoder, b_user, b_item,
                    k_id=m.k_id, k_f=m.k_f, init_std=m.init_std, l2=m.l2)
        model.crash = settings_from(m, cls.name, CrashOnceSettings)
        return model

    def start_epoch(self, epoch: int, seed: int) -> None:
        super().start_epoch(epoch, seed)
        CrashOnce.epochs_started += 1
        distributed = torch.distributed.is_available() and torch.distributed.is_initialized()
        victim = 1 if distributed and torch.distributed.get_world_size() > 1 else 0
        rank = torch.distributed.get_rank() if distributed else 0
        marker = Path(self.crash.marker) if self.crash.marker else None
        if (marker is not None and rank == victim and CrashOnce.epochs_started == self.crash.crash_at
                and not marker.exists()):
            marker.write_text(f"crashed at epoch start {CrashOnce.epochs_started} of rank {rank}\\n")
            os._exit(17)
'''


def write_plugin(folder: Path) -> Path:
    """The plugin's source tree in ``folder`` (created); returns it."""
    package = folder / "painvrl_test_plugin"
    package.mkdir(parents=True, exist_ok=True)
    (folder / "pyproject.toml").write_text(PYPROJECT)
    (package / "__init__.py").write_text('"""A painvrl plugin written by the tests."""\n')
    (package / "backbones.py").write_text(textwrap.dedent(BACKBONES).lstrip())
    return folder


def _pip(*args: str) -> None:
    done = subprocess.run([sys.executable, "-m", "pip", *args], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]


@contextmanager
def installed_plugin(folder: Path) -> Iterator[None]:
    """The plugin written to ``folder`` and installed (``pip install --no-deps --no-build-isolation``) for the
    duration of the block; uninstalled after it, also on failure."""
    _pip("install", "--no-deps", "--no-build-isolation", "--quiet", str(write_plugin(folder)))
    importlib.invalidate_caches()
    try:
        yield
    finally:
        _pip("uninstall", "--yes", "--quiet", DISTRIBUTION)
        importlib.invalidate_caches()
