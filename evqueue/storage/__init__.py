"""storage layer (see README, Architecture)."""
