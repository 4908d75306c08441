"""painvrl.training."""
