"""Training objectives: what one batch's loss is. ERM is the default; the out-of-distribution baselines
(``ips``, ``pda``, ``dro``, ``vrex``, ``invpref``) reweight the examples, adjust the training logits, weigh
environments or add a variant part that infers its own environments
(painvrl/training/methods.py names which method uses which)."""
