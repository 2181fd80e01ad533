#!/usr/bin/env python3
"""Independent reference for Tinkerbell's LoRA math, written with PyTorch.

Loads a Hugging Face directory of one of the three families Tinkerbell runs
(config.json + model.safetensors, or a sharded model.safetensors.index.json;
F32, F16 or BF16) and a PEFT LoRA adapter (adapter_config.json +
adapter_model.safetensors), runs the batch described in batch.json in
float64, and writes the loss, the per-token target logprobs of every datum
and the gradients of every LoRA tensor to result.json.  The model is written
out plainly here (no transformers), after the transformers classes:
  LlamaForCausalLM  RMSNorm, rotary (rope_scaling "llama3" as
                    _compute_llama3_parameters), GQA, SwiGLU, tied or not
  Qwen2ForCausalLM  the same with biases on q_proj, k_proj, v_proj
  Qwen3ForCausalLM  the same with an RMSNorm over each head of q and k
                    (q_norm, k_norm) before rotary, and head_dim from config
so it checks the C implementation against an independent one.

usage: torch_lora_reference.py MODEL_DIR ADAPTER_DIR BATCH_JSON RESULT_JSON

batch.json: {"loss_fn": "cross_entropy"|"importance_sampling"|"ppo"|"cispo"|"dro",
             "loss_fn_config": {...},
             "data": [{"tokens": [...], "target_tokens": [...], "weights": [...],
                       "logprobs": [...], "advantages": [...]}, ...]}
Exit status 77 when PyTorch is not installed (the test reports a skip).
"""
import json
import math
import struct
import sys

try:
    import numpy as np
    import torch
except ImportError:
    print("PyTorch or numpy is not installed: reference check skipped")
    sys.exit(77)

DTYPES = {"F32": np.float32, "F16": np.float16, "F64": np.float64}


def read_safetensors(path):
    """A plain reader of the safetensors format (torch 1.13 has none)."""
    with open(path, "rb") as f:
        blob = f.read()
    (n,) = struct.unpack("<Q", blob[:8])
    header = json.loads(blob[8:8 + n])
    base = 8 + n
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        start, end = info["data_offsets"]
        dt = info["dtype"]
        raw = blob[base + start:base + end]
        if dt == "BF16":
            bits = np.frombuffer(raw, dtype=np.uint16).astype(np.uint32) << 16
            arr = bits.view(np.float32)
        else:
            arr = np.frombuffer(raw, dtype=DTYPES[dt])
        out[name] = torch.from_numpy(arr.astype(np.float64).reshape(info["shape"]))
    return out


def rms_norm(x, w, eps):
    return x * torch.rsqrt((x * x).mean(-1, keepdim=True) + eps) * w


def read_weights(model_dir):
    """model.safetensors, or every shard the index names."""
    try:
        return read_safetensors(model_dir + "/model.safetensors")
    except FileNotFoundError:
        index = json.load(open(model_dir + "/model.safetensors.index.json"))
        out = {}
        for shard in sorted(set(index["weight_map"].values())):
            out.update(read_safetensors(model_dir + "/" + shard))
        return out


def inv_freq(cfg, D):
    theta = cfg.get("rope_theta", 10000.0)
    inv = 1.0 / (theta ** (torch.arange(0, D, 2, dtype=torch.float64) / D))
    rs = cfg.get("rope_scaling")
    if rs is None or rs.get("rope_type", rs.get("type")) == "default":
        return inv
    assert rs.get("rope_type", rs.get("type")) == "llama3", rs
    factor, lo, hi = rs["factor"], rs["low_freq_factor"], rs["high_freq_factor"]
    old = rs["original_max_position_embeddings"]
    wavelen = 2 * math.pi / inv
    scaled = torch.where(wavelen > old / lo, inv / factor, inv)
    smooth = (old / wavelen - lo) / (hi - lo)
    smoothed = (1 - smooth) * scaled / factor + smooth * scaled
    medium = (wavelen >= old / hi) & (wavelen <= old / lo)
    return torch.where(medium, smoothed, scaled)


def rope(x, inv):
    # x: (T, heads, D); Hugging Face Llama convention (rotate_half).
    T, _, D = x.shape
    freqs = torch.outer(torch.arange(T, dtype=torch.float64), inv)
    emb = torch.cat([freqs, freqs], -1)
    cos, sin = emb.cos()[:, None, :], emb.sin()[:, None, :]
    x1, x2 = x[..., :D // 2], x[..., D // 2:]
    return x * cos + torch.cat([-x2, x1], -1) * sin


def main():
    model_dir, adapter_dir, batch_path, result_path = sys.argv[1:5]
    cfg = json.load(open(model_dir + "/config.json"))
    W = read_weights(model_dir)
    acfg = json.load(open(adapter_dir + "/adapter_config.json"))
    A = read_safetensors(adapter_dir + "/adapter_model.safetensors")
    for t in A.values():
        t.requires_grad_(True)
    batch = json.load(open(batch_path))

    C = cfg["hidden_size"]
    H = cfg["num_attention_heads"]
    KVH = cfg.get("num_key_value_heads", H)
    D = cfg.get("head_dim", C // H)
    L = cfg["num_hidden_layers"]
    eps = cfg["rms_norm_eps"]
    arch = cfg["architectures"][0]
    assert arch in ("LlamaForCausalLM", "Qwen2ForCausalLM", "Qwen3ForCausalLM"), arch
    inv = inv_freq(cfg, D)
    tied = cfg.get("tie_word_embeddings", False)
    scale = acfg["lora_alpha"] / acfg["r"]

    def linear(x, weight_name, peft_prefix, bias=False):
        y = x @ W[weight_name].T
        if bias:
            y = y + W[weight_name[:-len("weight")] + "bias"]
        a = A.get(peft_prefix + ".lora_A.weight")
        if a is not None:
            b = A[peft_prefix + ".lora_B.weight"]
            y = y + scale * ((x @ a.T) @ b.T)
        return y

    def forward(tokens):
        x = W["model.embed_tokens.weight"][torch.tensor(tokens)]
        T = x.shape[0]
        mask = torch.triu(torch.ones(T, T, dtype=torch.bool), 1)
        for l in range(L):
            p = f"model.layers.{l}."
            pp = "base_model.model." + p
            h = rms_norm(x, W[p + "input_layernorm.weight"], eps)
            qkv_bias = arch == "Qwen2ForCausalLM"
            q = linear(h, p + "self_attn.q_proj.weight", pp + "self_attn.q_proj",
                       qkv_bias).view(T, H, D)
            k = linear(h, p + "self_attn.k_proj.weight", pp + "self_attn.k_proj",
                       qkv_bias).view(T, KVH, D)
            v = linear(h, p + "self_attn.v_proj.weight", pp + "self_attn.v_proj",
                       qkv_bias).view(T, KVH, D)
            if arch == "Qwen3ForCausalLM":
                q = rms_norm(q, W[p + "self_attn.q_norm.weight"], eps)
                k = rms_norm(k, W[p + "self_attn.k_norm.weight"], eps)
            q, k = rope(q, inv), rope(k, inv)
            rep = H // KVH
            k = k.repeat_interleave(rep, dim=1)
            v = v.repeat_interleave(rep, dim=1)
            att = torch.einsum("thd,shd->hts", q, k) / math.sqrt(D)
            att = att.masked_fill(mask, float("-inf")).softmax(-1)
            o = torch.einsum("hts,shd->thd", att, v).reshape(T, H * D)
            x = x + linear(o, p + "self_attn.o_proj.weight", pp + "self_attn.o_proj")
            h = rms_norm(x, W[p + "post_attention_layernorm.weight"], eps)
            g = linear(h, p + "mlp.gate_proj.weight", pp + "mlp.gate_proj")
            u = linear(h, p + "mlp.up_proj.weight", pp + "mlp.up_proj")
            x = x + linear(torch.nn.functional.silu(g) * u, p + "mlp.down_proj.weight",
                           pp + "mlp.down_proj")
        x = rms_norm(x, W["model.norm.weight"], eps)
        head = "model.embed_tokens.weight" if tied else "lm_head.weight"
        return linear(x, head, "base_model.model.lm_head")

    fn = batch["loss_fn"]
    conf = batch.get("loss_fn_config") or {}
    total = torch.zeros((), dtype=torch.float64)
    all_lp = []
    for d in batch["data"]:
        logits = forward(d["tokens"])
        lp = logits.log_softmax(-1).gather(1, torch.tensor(d["target_tokens"])[:, None])[:, 0]
        all_lp.append(lp.detach().tolist())
        if fn == "cross_entropy":
            loss = -(lp * torch.tensor(d["weights"], dtype=torch.float64)).sum()
        else:
            adv = torch.tensor(d["advantages"], dtype=torch.float64)
            samp = torch.tensor(d["logprobs"], dtype=torch.float64)
            ratio = torch.exp(lp - samp)
            if fn == "importance_sampling":
                loss = -(ratio * adv).sum()
            elif fn == "ppo":
                lo = conf.get("clip_low_threshold", 0.8)
                hi = conf.get("clip_high_threshold", 1.2)
                loss = -torch.minimum(ratio * adv, ratio.clamp(lo, hi) * adv).sum()
            elif fn == "cispo":
                lo = conf.get("clip_low_threshold", 0.8)
                hi = conf.get("clip_high_threshold", 1.2)
                loss = -(ratio.clamp(lo, hi).detach() * lp * adv).sum()
            elif fn == "dro":
                beta = conf["beta"]
                loss = -(lp * adv - 0.5 * beta * (lp - samp) ** 2).sum()
            else:
                raise SystemExit("unknown loss_fn " + fn)
        total = total + loss
    total.backward()
    grads = {name: t.grad.reshape(-1).tolist() for name, t in A.items() if t.grad is not None}
    json.dump({"loss": total.item(), "logprobs": all_lp, "grads": grads}, open(result_path, "w"))


if __name__ == "__main__":
    main()
