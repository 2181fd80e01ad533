#!/usr/bin/env python3
"""The peer of bench_train: one LoRA training step (forward_backward +
AdamW step) of a Llama-family model in PyTorch, on the same shape and the
same thread count, so that bench_train can print the ratio.

The model is written plainly (Llama decoder: RMSNorm, rotary embeddings,
grouped-query causal attention, SwiGLU MLP, tied unembedding unless
--untied; --head-dim when it is not hidden / heads, --qk-norm for Qwen3's
per-head RMSNorm of q and k, --qkv-bias for Qwen2's biases), base weights
frozen, LoRA on the listed linears.  Configure PyTorch at its best before
starting Python: OMP_WAIT_POLICY=PASSIVE and OMP_NUM_THREADS equal to
--threads (bench_train does this).

usage: torch_train_step.py --hidden 576 --layers 30 --heads 9 --kv-heads 3
           --intermediate 1536 --vocab 49152 --rank 32 --batch 4 --seq 256
           --threads 2 --steps 3 [--head-dim D] [--qk-norm] [--qkv-bias]
           [--untied]
Prints one line: TORCH ms_per_step=<median> min=<> max=<>.  Exit status 77
when PyTorch is not installed.
"""
import math
import time

from torch_llama import (frozen, head_dim, lora_a, lora_b, make_layers, parse_args,
                         project_qkv, rms, rope_tables, summary, torch)


def main():
    a = parse_args([("batch", 4), ("seq", 256), ("steps", 3)], ["untied"])
    C, H, KVH, V, r = a.hidden, a.heads, a.kv_heads, a.vocab, a.rank
    D = head_dim(a)
    alpha = 32.0
    scale = alpha / r

    embed = frozen(V, C)
    head = frozen(V, C) if a.untied else embed
    lora_params = []

    def adapter(k, n):
        A = torch.nn.Parameter(lora_a(r, k))
        B = torch.nn.Parameter(lora_b(n, r))
        lora_params.extend([A, B])
        return frozen(n, k), A, B

    layers = make_layers(a, adapter)
    final_norm = torch.ones(C)
    opt = torch.optim.AdamW(lora_params, lr=1e-4, betas=(0.9, 0.95), eps=1e-12,
                            weight_decay=0.0)

    T = a.seq
    cos, sin = (t[None, None] for t in rope_tables(D, T, 10000.0))
    mask = torch.full((T, T), float("-inf")).triu(1)

    def rope(x):
        x1, x2 = x[..., :D // 2], x[..., D // 2:]
        return x * cos + torch.cat([-x2, x1], -1) * sin

    def lin(x, w):
        W, A, B = w
        return x @ W.t() + scale * ((x @ A.t()) @ B.t())

    tokens = torch.randint(0, V, (a.batch, T + 1))
    inputs, targets = tokens[:, :-1], tokens[:, 1:]

    def step():
        x = embed[inputs]
        Bn = x.shape[0]
        for lay in layers:
            h = rms(x, lay["n1"])
            q, k, v = (t.transpose(1, 2) for t in project_qkv(a, lay, h, lin, Bn, T))
            q, k = rope(q), rope(k)
            k = k.repeat_interleave(H // KVH, dim=1)
            v = v.repeat_interleave(H // KVH, dim=1)
            att = (q @ k.transpose(-1, -2)) / math.sqrt(D) + mask
            o = (att.softmax(-1) @ v).transpose(1, 2).reshape(Bn, T, H * D)
            x = x + lin(o, lay["o"])
            h = rms(x, lay["n2"])
            x = x + lin(torch.nn.functional.silu(lin(h, lay["gate"])) * lin(h, lay["up"]),
                        lay["down"])
        logits = rms(x, final_norm) @ head.t()
        loss = torch.nn.functional.cross_entropy(logits.view(-1, V), targets.reshape(-1),
                                                 reduction="sum")
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        return loss.item()

    step()  # warm-up: first-touch allocation
    times = []
    for _ in range(a.steps):
        t0 = time.perf_counter()
        step()
        times.append((time.perf_counter() - t0) * 1e3)
    print("TORCH ms_per_step=%.1f min=%.1f max=%.1f threads=%d" %
          (summary(times) + (torch.get_num_threads(),)))


if __name__ == "__main__":
    main()
