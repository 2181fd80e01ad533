"""What the PyTorch peers of the benchmarks (torch_train_step.py,
torch_sample.py) share: PyTorch itself (exit status 77 when it is not
installed), the model's command-line options, its frozen weights and LoRA
adapters, RMSNorm and the rotary tables.  The forward passes stay in each
script: training and decoding run them differently.  Not a model library:
only the plain Llama decoder the benchmarks measure.
"""
import argparse
import math
import sys

try:
    import torch
except ImportError:
    print("PyTorch is not installed")
    sys.exit(77)

LORA_TARGETS = ("q", "k", "v", "o", "gate", "up", "down")


def parse_args(extra, flags=()):
    """The model's shape options (SmolLM2-135M's by default) and --rank,
    --threads, --head-dim, --qk-norm, --qkv-bias, then the script's own
    integer options extra [(name, default)] and store_true flags."""
    p = argparse.ArgumentParser()
    for name, default in [("hidden", 576), ("layers", 30), ("heads", 9), ("kv-heads", 3),
                          ("intermediate", 1536), ("vocab", 49152), ("rank", 32),
                          ("threads", 2), ("head-dim", 0)] + list(extra):
        p.add_argument("--" + name, type=int, default=default)
    for flag in ("qk-norm", "qkv-bias") + tuple(flags):
        p.add_argument("--" + flag, action="store_true")
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    return a


def head_dim(a):
    return a.head_dim or a.hidden // a.heads


def frozen(*shape):
    """A frozen weight: normal(0, 0.02)."""
    return torch.randn(*shape) * 0.02


def make_layers(a, adapter):
    """a.layers dicts: norms n1, n2, qn, kn (ones), biases bq, bk, bv and,
    for each LORA_TARGETS linear, (W (out, in), A (r, in), B (out, r)).
    adapter(k, n) draws A and B for a linear of k inputs and n outputs
    before or after W as the caller's peer always has."""
    C, H, KVH, I = a.hidden, a.heads, a.kv_heads, a.intermediate
    D = head_dim(a)
    layers = []
    for _ in range(a.layers):
        lay = {"n1": torch.ones(C), "n2": torch.ones(C), "qn": torch.ones(D),
               "kn": torch.ones(D), "bq": frozen(H * D), "bk": frozen(KVH * D),
               "bv": frozen(KVH * D)}
        for name, (k, n) in {"q": (C, H * D), "k": (C, KVH * D), "v": (C, KVH * D),
                             "o": (H * D, C), "gate": (C, I), "up": (C, I),
                             "down": (I, C)}.items():
            lay[name] = adapter(k, n)
        layers.append(lay)
    return layers


def lora_a(r, k):
    return torch.randn(r, k) / math.sqrt(k)


def lora_b(n, r):
    return torch.randn(n, r) * 0.01


def project_qkv(a, lay, h, lin, B, T):
    """The layer's q (B, T, heads, D), k and v (B, T, kv_heads, D) of h:
    biases with --qkv-bias, q/k norms with --qk-norm; no rotary."""
    D = head_dim(a)
    q, k, v = lin(h, lay["q"]), lin(h, lay["k"]), lin(h, lay["v"])
    if a.qkv_bias:
        q, k, v = q + lay["bq"], k + lay["bk"], v + lay["bv"]
    q = q.view(B, T, a.heads, D)
    k = k.view(B, T, a.kv_heads, D)
    if a.qk_norm:
        q, k = rms(q, lay["qn"]), rms(k, lay["kn"])
    return q, k, v.view(B, T, a.kv_heads, D)


def rms(x, w):
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-5) * w


def rope_tables(D, positions, theta):
    """cos and sin (positions, D) of the rotary embedding."""
    inv = 1.0 / (theta ** (torch.arange(0, D, 2).float() / D))
    freqs = torch.outer(torch.arange(positions).float(), inv)
    emb = torch.cat([freqs, freqs], -1)
    return emb.cos(), emb.sin()


def summary(times):
    """(median, min, max) of times."""
    times = sorted(times)
    return times[len(times) // 2], times[0], times[-1]
