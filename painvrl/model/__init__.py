"""painvrl.model."""
