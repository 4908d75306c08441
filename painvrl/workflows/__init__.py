"""The workflows the ``painvrl`` command ships beyond a single run: a study (``study``), backbone x method grids
on real data (``compare``), the synthetic benchmark family (``suite``), and dataset downloads (``download``).
Each module has ``add_arguments(parser)`` and ``run(args) -> int``; :mod:`painvrl.cli` wires them in."""
