"""gateway/profiles."""
