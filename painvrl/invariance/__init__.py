"""Invariance: environment identification, IRM penalties, Pareto solvers and mask generation."""
