"""Data: the trajectory schema and files (``trajectories``), return-to-go and group advantages
(``returns``), return-conditioned datasets (``datasets``), Minari import and export
(``minari_io``) and RLlib's offline columns (``rllib_offline``).
"""
