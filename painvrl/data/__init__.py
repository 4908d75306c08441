"""painvrl.data."""
