"""gateway/drivers."""
