"""Training objectives: what one batch's loss is. ERM is the default; the out-of-distribution baselines
(``ips``, ``pda``, ``dro``, ``vrex``) reweight the examples, adjust the training logits or weigh environments
(painvrl/training/methods.py names which method uses which)."""
