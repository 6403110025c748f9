"""Sources, batching, writers and the predict loop."""
