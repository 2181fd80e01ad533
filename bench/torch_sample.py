#!/usr/bin/env python3
"""The peer of bench_sample: a decode loop with a KV cache in PyTorch, on
the same shape, the same LoRA (unmerged, rank --rank on q, k, v, o, gate,
up, down) and the same thread count, so that bench_sample can print the
ratio.

The model is written plainly, float32 (Llama decoder: RMSNorm, rotary
embeddings, grouped-query attention against preallocated key and value
caches, SwiGLU MLP, tied unembedding; --head-dim when it is not hidden /
heads, --qk-norm for Qwen3's head norms, --qkv-bias for Qwen2's biases).
A batch of --batch sequences is prefilled with --prompt random tokens,
then decodes --tokens tokens, each drawn from the softmax of its logits
(temperature 1, as bench_sample draws).  Only the decode loop is timed.
At batch 1 every product is torch.mv (a matrix-vector product, PyTorch's
fastest path for one row), above it F.linear.  Configure PyTorch at its
best before starting Python: OMP_WAIT_POLICY=PASSIVE and OMP_NUM_THREADS
equal to --threads (bench_sample does this).

usage: torch_sample.py --hidden 576 --layers 30 --heads 9 --kv-heads 3
           --intermediate 1536 --vocab 49152 --rank 32 --batch 1
           --prompt 64 --tokens 64 --threads 2 --reps 3 [--head-dim D]
           [--qk-norm] [--qkv-bias]
Prints one line: TORCH tokens_per_s=<median> min=<> max=<>.  Exit status
77 when PyTorch is not installed.
"""
import math
import time

from torch_llama import (frozen, head_dim, lora_a, lora_b, make_layers, parse_args,
                         project_qkv, rms, rope_tables, summary, torch)
import torch.nn.functional as F


def main():
    a = parse_args([("batch", 1), ("prompt", 64), ("tokens", 64), ("reps", 3)])
    C, H, KVH, V, r = a.hidden, a.heads, a.kv_heads, a.vocab, a.rank
    D = head_dim(a)
    G = H // KVH
    scale = 32.0 / r
    Bsz, P, N = a.batch, a.prompt, a.tokens
    L = P + N

    embed = frozen(V, C)
    layers = make_layers(a, lambda k, n: (frozen(n, k), lora_a(r, k), lora_b(n, r)))
    final_norm = torch.ones(C)
    cos_t, sin_t = rope_tables(D, L, 100000.0)

    def rope(x, pos):
        # x (B, T, heads, D); pos (T)
        c, s = cos_t[pos][None, :, None], sin_t[pos][None, :, None]
        x1, x2 = x[..., :D // 2], x[..., D // 2:]
        return x * c + torch.cat([-x2, x1], -1) * s

    def lin(x, w):
        W, A, B = w
        if x.dim() == 1:
            return W.mv(x) + scale * B.mv(A.mv(x))
        return F.linear(x, W) + scale * F.linear(F.linear(x, A), B)

    def forward(tokens, pos0, kc, vc):
        # tokens (B, T); the caches (layers, B, KVH, L, D) hold pos0 positions
        T = tokens.shape[1]
        pos = torch.arange(pos0, pos0 + T)
        x = embed[tokens]
        one = Bsz == 1 and T == 1
        if one:
            x = x.view(C)
        for li, lay in enumerate(layers):
            h = rms(x, lay["n1"])
            q, k, v = project_qkv(a, lay, h, lin, Bsz, T)
            q, k = rope(q, pos), rope(k, pos)
            kc[li, :, :, pos0:pos0 + T] = k.transpose(1, 2)
            vc[li, :, :, pos0:pos0 + T] = v.transpose(1, 2)
            keys, vals = kc[li, :, :, :pos0 + T], vc[li, :, :, :pos0 + T]
            # (B, KVH, G*T, D) queries against (B, KVH, S, D) keys
            qg = q.view(Bsz, T, KVH, G, D).permute(0, 2, 3, 1, 4).reshape(Bsz, KVH, G * T, D)
            att = (qg @ keys.transpose(-1, -2)) / math.sqrt(D)
            if T > 1:
                qpos = pos.repeat(G)
                mask = torch.arange(pos0 + T)[None, :] > qpos[:, None]
                att = att.masked_fill(mask, float("-inf"))
            o = att.softmax(-1) @ vals
            o = o.view(Bsz, KVH, G, T, D).permute(0, 3, 1, 2, 4).reshape(Bsz, T, H * D)
            if one:
                o = o.view(H * D)
            x = x + lin(o, lay["o"])
            h = rms(x, lay["n2"])
            x = x + lin(F.silu(lin(h, lay["gate"])) * lin(h, lay["up"]), lay["down"])
        hf = rms(x, final_norm)
        if one:
            return embed.mv(hf).view(1, V)
        return F.linear(hf[:, -1], embed)

    times = []
    with torch.inference_mode():
        for rep in range(a.reps + 1):  # the first warms up
            kc = torch.zeros(a.layers, Bsz, KVH, L, D)
            vc = torch.zeros(a.layers, Bsz, KVH, L, D)
            prompt = torch.randint(0, V, (Bsz, P))
            logits = forward(prompt, 0, kc, vc)
            t0 = time.perf_counter()
            for i in range(N):
                tok = torch.multinomial(logits.softmax(-1), 1)
                logits = forward(tok, P + i, kc, vc)
            dt = time.perf_counter() - t0
            if rep > 0:
                times.append(Bsz * N / dt)
    print("TORCH tokens_per_s=%.2f min=%.2f max=%.2f batch=%d threads=%d" %
          (summary(times) + (Bsz, torch.get_num_threads())))


if __name__ == "__main__":
    main()
