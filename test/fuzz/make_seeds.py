#!/usr/bin/env python3
"""Writes the generated seeds of the fuzz corpora (test/fuzz/corpus/).

The recorded seeds (requests and results of the test suite, the README's
curl session) and the config.json files are kept as they are; this script
adds what is easier made than found: small valid safetensors files of each
dtype and layout, the protobuf and JSON reproducers of known faults, and
chat lines from examples/data/chat.jsonl.  It overwrites its own files
(names start with "gen-") and nothing else.

    python3 test/fuzz/make_seeds.py            # from the source root
"""
import json
import os
import struct
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CORPUS = os.path.join(ROOT, "test", "fuzz", "corpus")


def put(target, name, data):
    d = os.path.join(CORPUS, target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, "gen-" + name), "wb") as f:
        f.write(data)


# ------------------------------------------------------------ safetensors

def safetensors(tensors, metadata=None, pad_to=8):
    """tensors: [(name, dtype, shape, raw bytes)] -> the file's bytes."""
    header, data = {}, b""
    if metadata is not None:
        header["__metadata__"] = metadata
    for name, dtype, shape, raw in tensors:
        header[name] = {"dtype": dtype, "shape": shape,
                        "data_offsets": [len(data), len(data) + len(raw)]}
        data += raw
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * ((pad_to - (8 + len(text)) % pad_to) % pad_to)
    return struct.pack("<Q", len(text)) + text + data


def f32(*v):
    return struct.pack("<%df" % len(v), *v)


def f16(*v):
    return struct.pack("<%de" % len(v), *v)


def bf16(*v):
    return b"".join(struct.pack("<f", x)[2:] for x in v)


def safetensors_seeds():
    put("safetensors", "f32-2x3", safetensors(
        [("w", "F32", [2, 3], f32(1, 2, 3, 4, 5, 6))], {"format": "pt"}))
    put("safetensors", "f16-bf16-specials", safetensors([
        ("a", "F16", [4], f16(0.0, -1.5, 65504.0, float("inf"))),
        ("b", "BF16", [2, 2], bf16(1.0, -2.0, 3.0e38, float("nan"))),
    ]))
    put("safetensors", "scalar-empty-unpadded", safetensors([
        ("scalar", "F32", [], f32(7.0)),
        ("empty", "F32", [0, 4], b""),
        ("row", "BF16", [3], bf16(1, 2, 3)),
    ], pad_to=1))
    put("safetensors", "metadata-only", safetensors([], {"format": "pt", "note": "x"}))
    # The layout of a saved adapter (adapter_model.safetensors, PEFT names).
    r, c = 2, 4
    lora = []
    for layer in range(2):
        for t in ("q_proj", "v_proj"):
            pre = "base_model.model.model.layers.%d.self_attn.%s" % (layer, t)
            lora.append((pre + ".lora_A.weight", "F32", [r, c], f32(*[0.5] * (r * c))))
            lora.append((pre + ".lora_B.weight", "F32", [c, r], f32(*[0.0] * (r * c))))
    put("safetensors", "adapter-layout", safetensors(lora, {"format": "pt"}))
    # Refused: unsupported dtype, reversed and overlapping offsets.
    put("safetensors", "bad-dtype", safetensors([("i", "I64", [1], b"\0" * 8)]))
    hdr = json.dumps({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
                      "b": {"dtype": "F32", "shape": [1], "data_offsets": [4, 8]}}).encode()
    put("safetensors", "overlap", struct.pack("<Q", len(hdr)) + hdr + f32(1, 2))


# ------------------------------------------------------------ protobuf

def varint(n):
    out = b""
    n &= (1 << 64) - 1
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out += bytes([b | 0x80])
        else:
            return out + bytes([b])


def field(num, wire, payload):
    key = varint((num << 3) | wire)
    if wire == 0:
        return key + varint(payload)
    if wire == 1:
        return key + payload
    return key + varint(len(payload)) + payload


def tensor(dtype, shape, dense):
    # dtype: 1 float32, 2 int64, 3 int32, 4 bfloat16; shape packed.
    packed = b"".join(varint(d) for d in shape)
    return field(1, 2, dense) + field(3, 0, dtype) + field(4, 2, packed)


def datum(tokens, inputs):
    chunk = field(1, 2, field(1, 2, struct.pack("<%di" % len(tokens), *tokens)))
    out = field(1, 2, chunk)
    for k, t in inputs:
        out += field(2, 2, field(1, 2, k.encode()) + field(2, 2, t))
    return out


def fwdbwd(model_id, data, loss_fn="cross_entropy", seq_id=None, config=()):
    out = field(1, 2, model_id.encode())
    if seq_id is not None:
        out += field(2, 0, seq_id)
    for d in data:
        out += field(3, 2, d)
    out += field(4, 2, loss_fn.encode())
    for k, v in config:
        out += field(5, 2, field(1, 2, k.encode()) + field(2, 1, struct.pack("<d", v)))
    return out


def wire_seeds():
    mid = "sess-3459a1:train:0"
    ok = fwdbwd(mid, [datum([72, 105, 33], [
        ("target_tokens", tensor(2, [3], struct.pack("<3q", 105, 33, 10))),
        ("weights", tensor(1, [3], f32(1, 1, 1))),
    ])], seq_id=1)
    put("wire", "fwdbwd-proto-small", b"\x02" + ok)
    put("wire", "fwdbwd-proto-ppo", b"\x02" + fwdbwd(mid, [datum([1, 2], [
        ("target_tokens", tensor(3, [2], struct.pack("<2i", 2, 3))),
        ("logprobs", tensor(4, [2], bf16(-1.0, -2.0))),
        ("advantages", tensor(1, [2], f32(0.5, -0.5))),
    ])], loss_fn="ppo", config=[("clip_low_threshold", 0.8), ("clip_high_threshold", 1.2)]))
    # Issue 11, fault 2: a declared shape far beyond the bytes sent was
    # allocated (and zeroed) before it was checked: [2^27] int64 is 1 GiB,
    # [2^40] cannot be allocated at all.
    for name, n in (("2p27", 1 << 27), ("2p40", 1 << 40)):
        body = fwdbwd(mid, [datum([72, 105, 33], [
            ("target_tokens", tensor(2, [n], struct.pack("<3q", 105, 33, 10))),
        ])], seq_id=1)
        put("wire", "fault2-proto-shape-" + name, b"\x02" + body)
    # A shape just short of 2^64 bytes: the arena's block header wrapped
    # it around to a tiny block, which the zeroing then overran.
    body = fwdbwd(mid, [datum([72], [
        ("target_tokens", tensor(2, [(1 << 61) - 3], struct.pack("<q", 105))),
    ])], seq_id=1)
    put("wire", "repro-proto-shape-2p61-3", b"\x02" + body)
    sparse = {"model_id": mid, "seq_id": 1, "forward_backward_input": {
        "loss_fn": "cross_entropy", "data": [{
            "model_input": {"chunks": [{"type": "encoded_text", "tokens": [72, 105, 33]}]},
            "loss_fn_inputs": {"target_tokens": {
                "data": [105], "dtype": "int64", "shape": [1 << 27, 1],
                "sparse_crow_indices": [0, 1], "sparse_col_indices": [0]}}}]}}
    put("wire", "fault2-json-sparse-2p27",
        b"\x00" + json.dumps(sparse, separators=(",", ":")).encode())


    # The same fault in a result the client decodes: an ArrayRecord's
    # num_datums (up to 2^24) sized per-datum arrays before any datum's
    # bytes were seen; 20 bytes of protobuf made the client allocate
    # 256 MiB.
    put("wire", "fault2-output-num-datums-2p24",
        b"\x05" + field(2, 2, field(1, 2, b"ArrayRecord") + field(3, 0, 1 << 24)))


    # Flat objects of the long poll (core/json_scan.h): the SDK's body and
    # a try_again answer.
    put("wire", "poll-body", b"\x08" + b'{"request_id": "req-fd94", "allow_metadata_only": true}')
    put("wire", "poll-try-again", b"\x08" + json.dumps({
        "type": "try_again", "request_id": "req-fd94", "queue_state": "paused_capacity",
        "queue_state_reason": "busy", "started_at": None, "queue_position": 3,
        "retry_after_ms": 1.5e3}).encode())


# ------------------------------------------------------------ config.json

def config_seeds():
    put("config", "fault3-layers-2p30", json.dumps({
        "architectures": ["LlamaForCausalLM"], "model_type": "llama",
        "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 1 << 30,
        "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 272,
        "max_position_embeddings": 2048, "rms_norm_eps": 1e-6, "rope_theta": 10000.0,
        "tie_word_embeddings": False, "hidden_act": "silu"}, indent=2).encode())


# ------------------------------------------------------------ chat

def chat_seeds():
    path = os.path.join(ROOT, "examples", "data", "chat.jsonl")
    with open(path, "rb") as f:
        lines = [l.rstrip(b"\n") for l in f if l.strip()]
    picks = sorted(lines, key=len)
    for i, line in enumerate(picks[:3] + picks[-1:]):
        put("chat", "train-line-%d" % i, b"\x00\x00" + line)
    # A file of two conversations, a blank line and CRLF endings, read with
    # --max-length 16.
    put("chat", "train-file", b"\x01\x0f" + picks[0] + b"\r\n\r\n  \n" + picks[1] + b"\n")


def main():
    safetensors_seeds()
    wire_seeds()
    config_seeds()
    chat_seeds()
    return 0


if __name__ == "__main__":
    sys.exit(main())
