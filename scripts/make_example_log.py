"""Write configs/logs/wine_noisy_labels.csv: a real training log in the layout of Lightning's CSVLogger
(train and validation losses on separate rows), for the `nn-doctor check-curves` example.

The run: a wide MLP on standardized wine where a quarter of the training labels were moved to the next
class (label noise), trained with Adam for 150 epochs: a real overfitting curve.
"""
import csv
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import nn

ROOT = Path(__file__).resolve().parent.parent
torch.manual_seed(0)
rng = np.random.default_rng(0)
df = pd.read_csv(ROOT / "sample_data" / "wine.csv")
X = df.drop(columns="label").to_numpy(np.float32)
y = df["label"].to_numpy()
perm = rng.permutation(len(X))
tr, va = perm[:120], perm[120:]
mu, sd = X[tr].mean(0), X[tr].std(0)
X = (X - mu) / sd
y_tr = y[tr].copy()
noisy = rng.choice(len(tr), size=len(tr) // 4, replace=False)
y_tr[noisy] = (y_tr[noisy] + 1) % 3
Xt, yt = torch.tensor(X[tr]), torch.tensor(y_tr)
Xv, yv = torch.tensor(X[va]), torch.tensor(y[va])
model = nn.Sequential(nn.Linear(13, 256), nn.ReLU(), nn.Linear(256, 256), nn.ReLU(), nn.Linear(256, 3))
opt = torch.optim.Adam(model.parameters(), lr=3e-3)
loss_fn = nn.CrossEntropyLoss()
out = ROOT / "configs" / "logs" / "wine_noisy_labels.csv"
out.parent.mkdir(parents=True, exist_ok=True)
step = 0
with open(out, "w", newline="") as fh:
    w = csv.writer(fh)
    w.writerow(["epoch", "step", "train_loss", "val_loss"])
    for epoch in range(150):
        model.train()
        for idx in torch.randperm(len(Xt)).split(32):
            opt.zero_grad()
            loss = loss_fn(model(Xt[idx]), yt[idx])
            loss.backward()
            opt.step()
            step += 1
        with torch.no_grad():
            model.eval()
            w.writerow([epoch, step, f"{loss_fn(model(Xt), yt).item():.5f}", ""])
            w.writerow([epoch, step, "", f"{loss_fn(model(Xv), yv).item():.5f}"])
print(f"wrote {out}")
