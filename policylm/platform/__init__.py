"""The Ray-free core: env adapters, trajectories, returns, datasets, policies."""
