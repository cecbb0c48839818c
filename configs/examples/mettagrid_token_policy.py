"""A worked external PyTorch policy for the MettaGrid arena, in the common external-policy shape:
built from the env's description (mettagrid's ``PolicyEnvInterface``), ``forward(observations,
state) -> (logits, value)`` over MettaGrid's token observations, with an LSTM state per agent.

Train it by imitating the scripted HeartSeeker (about a minute on 2 CPU cores), then play it:

    .venv/bin/python configs/examples/mettagrid_token_policy.py --out runs/token-policy.pt
    .venv/bin/policylm collect --config configs/mettagrid_external_policy.yaml

The policy URI is ``pytorch://runs/token-policy.pt?class=configs/examples/
mettagrid_token_policy.py:TokenLSTMPolicy`` (``&sample=1`` samples from its softmax).
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import torch
from torch import nn

EMPTY = 255


class TokenLSTMPolicy(nn.Module):
    """Tokens ``[location, feature, value]`` are scattered into a grid with one channel per
    feature (the value over the feature's normalization, at the token's row and column) and one
    per object tag (1 where that object is); global tokens go to their own vector. A small CNN
    reads the grid, an LSTM cell carries memory across steps, and two heads read both
    (this step's features and the memory) for the action logits and the value."""

    def __init__(self, env_info: Any, hidden: int = 64):
        super().__init__()
        self.hidden = hidden
        self.rows, self.cols = (int(x) for x in env_info.egocentric_shape)
        self.features = max(f.id for f in env_info.obs_features) + 1
        self.tags = len(env_info.tags)
        self.tag_feature = next(f.id for f in env_info.obs_features if f.name == "tag")
        scale = torch.ones(self.features)
        for f in env_info.obs_features:
            scale[f.id] = 1.0 / max(float(f.normalization), 1.0)
        self.register_buffer("scale", scale, persistent=False)
        self.cnn = nn.Sequential(
            nn.Conv2d(self.features + self.tags, 32, 3, padding=1), nn.ReLU(),
            nn.Conv2d(32, 32, 3, stride=2), nn.ReLU(), nn.Flatten())
        size = 32 * ((self.rows - 3) // 2 + 1) * ((self.cols - 3) // 2 + 1)
        self.encode = nn.Sequential(nn.Linear(size + self.features, hidden), nn.ReLU())
        self.lstm = nn.LSTMCell(hidden, hidden)
        self.actor = nn.Linear(2 * hidden, len(env_info.action_names))
        self.critic = nn.Linear(2 * hidden, 1)

    def initial_state(self, batch_size: int) -> dict[str, torch.Tensor]:
        zeros = torch.zeros(batch_size, self.hidden)
        return {"h": zeros, "c": zeros.clone()}

    def grids(self, observations: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``([B, features + tags, rows, cols], [B, features])``: spatial and global values."""
        x = observations.long()  # [B, tokens, 3]
        b = torch.arange(x.shape[0]).unsqueeze(1).expand(-1, x.shape[1])
        loc, feat = x[..., 0], x[..., 1].clamp(max=self.features - 1)
        val = x[..., 2].float() * self.scale[feat]
        row, col = loc >> 4, loc & 15
        spatial = (loc != EMPTY) & (row < self.rows) & (col < self.cols)
        grid = torch.zeros(x.shape[0], self.features + self.tags, self.rows, self.cols)
        grid[b[spatial], feat[spatial], row[spatial], col[spatial]] = val[spatial]
        tag = spatial & (feat == self.tag_feature) & (x[..., 2] < self.tags)
        grid[b[tag], self.features + x[..., 2][tag], row[tag], col[tag]] = 1.0
        glob = torch.zeros(x.shape[0], self.features)
        is_global = loc == 0xFE
        glob[b[is_global], feat[is_global]] = val[is_global]
        return grid, glob

    def forward(self, observations: torch.Tensor, state: dict | None
                ) -> tuple[torch.Tensor, torch.Tensor]:
        grid, glob = self.grids(observations)
        z = self.encode(torch.cat([self.cnn(grid), glob], dim=-1))
        if state is None:
            state = self.initial_state(z.shape[0])
        h, c = self.lstm(z, (state["h"], state["c"]))
        state["h"], state["c"] = h, c  # updated in place: the caller keeps it per agent
        out = torch.cat([z, h], dim=-1)  # the heads see this step's features and the memory
        return self.actor(out), self.critic(out).squeeze(-1)


def imitate(out: str, episodes: int, epochs: int, seed: int, bptt: int = 10) -> None:
    """Play ``episodes`` arena episodes with the scripted expert, then fit the policy to its
    actions (cross-entropy through each whole episode), and save the weights."""
    import numpy as np

    from policylm.platform.envs import make_adapter
    from policylm.platform.envs.mettagrid import HeartSeeker

    adapter = make_adapter("MettaGrid-Arena")
    env, expert = adapter.make_env(), HeartSeeker(adapter)
    n = adapter.num_agents
    data = []
    for e in range(episodes):
        obs, _ = env.reset(seed=seed + e)
        for a in range(n):
            expert.reset(a, seed * 1000 + e * n + a)
        steps, acts = [], []
        while True:
            actions = expert.act(obs, list(range(n)))
            steps.append(np.stack([o["tokens"] for o in obs]))
            acts.append(actions)
            obs, _, term, trunc, _ = env.step(actions)
            if (term | trunc).all():
                break
        data.append((torch.as_tensor(np.stack(steps)), torch.as_tensor(acts)))
    torch.manual_seed(seed)
    net = TokenLSTMPolicy(adapter.env_info)
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    t0 = time.time()
    for epoch in range(epochs):
        total, right, count, updates = 0.0, 0, 0, 0
        for tokens, actions in data:
            state = net.initial_state(n)
            for lo in range(0, tokens.shape[0], bptt):  # truncated backpropagation through time
                state = {k: v.detach() for k, v in state.items()}
                loss = torch.zeros(())
                for t in range(lo, min(lo + bptt, tokens.shape[0])):
                    logits, _ = net(tokens[t], state)
                    loss = loss + nn.functional.cross_entropy(logits, actions[t])
                    right += int((logits.argmax(-1) == actions[t]).sum())
                    count += n
                opt.zero_grad()
                (loss / bptt).backward()
                opt.step()
                total, updates = total + loss.item() / bptt, updates + 1
        print(f"epoch {epoch + 1}/{epochs}: loss {total / updates:.3f}, "
              f"accuracy {right / count:.3f} ({time.time() - t0:.0f} s)", flush=True)
    torch.save({"state_dict": net.state_dict()}, out)
    print(f"saved {out}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="runs/token-policy.pt")
    parser.add_argument("--episodes", type=int, default=8, help="expert episodes to imitate")
    parser.add_argument("--epochs", type=int, default=25)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    from pathlib import Path

    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    imitate(args.out, args.episodes, args.epochs, args.seed)
