"""Analysis of study results: Pareto fronts and hypervolume (pure, in ``front``), and their plots (``plots``).

``painvrl.analysis.plots`` imports matplotlib lazily, inside each function, so importing this package stays
light.
"""

from __future__ import annotations

from painvrl.study.front import front_table, hypervolume, hypervolume_history, non_dominated_mask

__all__ = ["front_table", "hypervolume", "hypervolume_history", "non_dominated_mask"]
