"""Distributed helpers below every algorithm layer: collectives (exact global reductions) and seeded sampling."""
