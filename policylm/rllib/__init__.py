"""RLlib integration (needs Ray): loading RLlib checkpoints as policies."""
