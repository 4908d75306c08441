"""painvrl.study."""
