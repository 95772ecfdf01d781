"""chainrule in the team's peer harness (``../shared/bench/run_peers.py``), in the same run as the peers.

The seed functions' ``chainrule`` and ``chainrule-compiled`` engines are already in the harness;
this adds chainrule's per-op chain and MLP training step, then runs the harness with its own
command line (its worker processes re-enter this file, so the additions are there too):

    PEERS=../peers-venv; $PEERS/bin/python bench/peers.py --engines chainrule,chainrule-compiled \\
        --cpus 0 --json ../cr-bench.json --markdown ../cr-bench.md
"""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _harness import run_peers  # noqa: E402


def chain_chainrule(x0: float):
    """100 scalar ops (50 × (v*1.001, v+0.001)) on a shape-(1,) float64 tensor, then backward."""
    import chainrule as cr

    x = cr.tensor([x0], requires_grad=True)

    def call():
        x.grad = None
        v = run_peers._chain_generic(x)
        v.backward()
        return v.data, x.grad

    return call


def mlp_chainrule(init, X, y, lr):
    """One SGD step of the 784-256-256-10 ReLU MLP with chainrule's nn and optim."""
    import chainrule as cr

    sizes = run_peers.MLP_SIZES
    model = cr.nn.Sequential(cr.nn.Linear(sizes[0], sizes[1]), cr.nn.ReLU(), cr.nn.Linear(sizes[1], sizes[2]),
                             cr.nn.ReLU(), cr.nn.Linear(sizes[2], sizes[3]))
    linears = [m for m in model if isinstance(m, cr.nn.Linear)]
    for i, lin in enumerate(linears, 1):  # chainrule's Linear, like the harness, is x @ W + b with W (in, out)
        lin.load_state_dict({"weight": init[f"W{i}"].copy(), "bias": init[f"b{i}"].copy()})
    opt = cr.optim.SGD(model.parameters(), lr=lr)

    def step():
        loss = cr.nn.cross_entropy(model(X), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        return loss.data

    def params():
        out = []
        for lin in linears:
            out += [lin.weight.data.copy(), lin.bias.data.copy()]
        return out

    return step, params


def mlp_chainrule_compiled(init, X, y, lr):
    """The same step with ``cr.compile``: the loss as a function of the parameters and the batch,
    forward+backward generated and compiled once, then optim.SGD's in-place update with its gradients.
    The labels are closed over: they index the cross-entropy, so a compiled function fixes them."""
    import chainrule as cr

    params = [cr.nn.Parameter(init[k].copy()) for k in run_peers.PARAM_NAMES]
    opt = cr.optim.SGD(params, lr=lr)

    def loss_fn(W1, b1, W2, b2, W3, b3, xb):
        h = cr.relu(xb @ W1 + b1)
        h = cr.relu(h @ W2 + b2)
        return cr.nn.cross_entropy(h @ W3 + b3, y)

    fast = cr.compile(loss_fn, argnums=(0, 1, 2, 3, 4, 5))

    def step():
        loss, grads = fast(*params, X)
        opt.step(grads)
        return loss

    return step, lambda: [p.data.copy() for p in params]


run_peers.CHAIN_IMPLS["chainrule"] = (chain_chainrule, "Tensor shape (1,) float64, backward()")
run_peers.MLP_IMPLS["chainrule"] = (mlp_chainrule, "cr.nn.Sequential, cross_entropy, optim.SGD")
run_peers.MLP_IMPLS["chainrule-compiled"] = (mlp_chainrule_compiled, "cr.compile(loss of the parameters), "
                                             "optim.SGD.step(grads)")
run_peers.__file__ = os.path.abspath(__file__)  # workers re-enter here, with the additions above

if __name__ == "__main__":
    sys.exit(run_peers.main())
