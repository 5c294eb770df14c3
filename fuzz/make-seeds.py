#!/usr/bin/env python3
"""Writes the seed corpora of the fuzz targets (fuzz/corpus/<target>/) from the
repo's test fixtures and small hand-made files. No weights: every file is a few
KiB. Run from anywhere; it overwrites the seeds it writes."""

import json
import struct
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CORPUS = ROOT / "fuzz" / "corpus"
FIXTURES = ROOT / "crates" / "engine" / "tests" / "fixtures" / "text"


def put(target, name, data):
    d = CORPUS / target
    d.mkdir(parents=True, exist_ok=True)
    if isinstance(data, str):
        data = data.encode()
    (d / name).write_bytes(data)


# --- safetensors ---------------------------------------------------------------
def safetensors(header, data=b"", declared=None):
    h = header if isinstance(header, bytes) else json.dumps(header).encode()
    n = len(h) if declared is None else declared
    return struct.pack("<Q", n) + h + data


put("safetensors_header", "valid", safetensors(
    {"__metadata__": {"format": "pt"},
     "a": {"dtype": "F32", "shape": [2, 2], "data_offsets": [0, 16]},
     "b": {"dtype": "F16", "shape": [3], "data_offsets": [16, 22]},
     "q": {"dtype": "U32", "shape": [1, 2], "data_offsets": [22, 30]},
     "f4": {"dtype": "F4", "shape": [4], "data_offsets": [30, 32]}},
    bytes(32)))
put("safetensors_header", "empty-header", safetensors({}))
put("safetensors_header", "garbage", safetensors(b"{this is not json at all}"))
put("safetensors_header", "huge-len", safetensors(b"{}", declared=2**64 - 1))
put("safetensors_header", "short-len", safetensors(b'{"a":', declared=4096))
put("safetensors_header", "beyond", safetensors(
    {"w": {"dtype": "F32", "shape": [1000, 1000], "data_offsets": [0, 4000000]}}, bytes(64)))
put("safetensors_header", "bad-shape", safetensors(
    {"w": {"dtype": "F32", "shape": [3], "data_offsets": [0, 8]}}, bytes(8)))
put("safetensors_header", "bad-utf8", safetensors(b'{"w\xff":{"dtype":"F32"}}'))

# --- GGUF ----------------------------------------------------------------------
U32, I32, F32, BOOL, STR, ARR, U64 = 4, 5, 6, 7, 8, 9, 10


def gstr(s):
    b = s.encode()
    return struct.pack("<Q", len(b)) + b


def gval(t, v):
    if t == U32:
        return struct.pack("<I", v)
    if t == I32:
        return struct.pack("<i", v)
    if t == F32:
        return struct.pack("<f", v)
    if t == BOOL:
        return struct.pack("<B", 1 if v else 0)
    if t == STR:
        return gstr(v)
    if t == U64:
        return struct.pack("<Q", v)
    raise ValueError(t)


def gguf(kvs, tensors, data=b"", version=3):
    out = b"GGUF" + struct.pack("<IQQ", version, len(tensors), len(kvs))
    for key, t, v in kvs:
        out += gstr(key) + struct.pack("<I", t)
        if t == ARR:
            it, items = v
            out += struct.pack("<IQ", it, len(items)) + b"".join(gval(it, x) for x in items)
        else:
            out += gval(t, v)
    for name, dims, ty, off in tensors:
        out += gstr(name) + struct.pack("<I", len(dims)) + b"".join(struct.pack("<Q", d) for d in dims)
        out += struct.pack("<IQ", ty, off)
    out += bytes(-len(out) % 32)
    return out + data


tokens = ["<|im_start|>", "<|im_end|>", "h", "e", "l", "o", "Ġ", "w", "r", "d", "he", "ll", "hell", "hello"]
types = [3, 3] + [1] * (len(tokens) - 2)
merges = ["h e", "l l", "he ll", "hell o"]
template = ("{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}"
            "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
meta = [
    ("general.architecture", STR, "llama"),
    ("general.alignment", U32, 32),
    ("llama.embedding_length", U32, 8),
    ("llama.block_count", U32, 1),
    ("llama.feed_forward_length", U32, 16),
    ("llama.attention.head_count", U32, 2),
    ("llama.attention.head_count_kv", U32, 1),
    ("llama.attention.layer_norm_rms_epsilon", F32, 1e-5),
    ("llama.rope.freq_base", F32, 10000.0),
    ("llama.context_length", U32, 256),
    ("tokenizer.ggml.model", STR, "gpt2"),
    ("tokenizer.ggml.pre", STR, "smollm"),
    ("tokenizer.ggml.tokens", ARR, (STR, tokens)),
    ("tokenizer.ggml.token_type", ARR, (I32, types)),
    ("tokenizer.ggml.merges", ARR, (STR, merges)),
    ("tokenizer.ggml.bos_token_id", U32, 0),
    ("tokenizer.ggml.eos_token_id", U32, 1),
    ("tokenizer.ggml.add_bos_token", BOOL, False),
    ("tokenizer.chat_template", STR, template),
]
n = len(tokens)
tensors = [
    ("token_embd.weight", [8, n], 0, 0),
    ("output_norm.weight", [8], 0, 8 * n * 4),
    ("blk.0.attn_q.weight", [32, 8], 8, 8 * n * 4 + 32),
]
data = bytes(8 * n * 4 + 32 + 8 * 34)
put("gguf_metadata", "tiny-llama", gguf(meta, tensors, data))
put("gguf_metadata", "tiny-llama-no-data", gguf(meta, tensors))
put("gguf_metadata", "named-templates", gguf(
    meta + [("tokenizer.chat_template.tool_use", STR, template), ("llama.rope.scaling.type", STR, "linear"),
            ("llama.rope.scaling.factor", F32, 2.0)], tensors[:2], data[: 8 * n * 4 + 32], version=2))
put("gguf_metadata", "llama3-pre", gguf(
    [kv for kv in meta if kv[0] != "tokenizer.ggml.pre"] + [("tokenizer.ggml.pre", STR, "llama-bpe"),
                                                            ("tokenizer.ggml.add_eos_token", BOOL, True)], []))
put("gguf_metadata", "garbage", b"this is not a GGUF file at all")
put("gguf_metadata", "bad-counts", b"GGUF" + struct.pack("<IQQ", 3, 2**64 - 1, 2**64 - 1))

# --- JSONL datasets ------------------------------------------------------------
ex = ROOT / "examples" / "datasets" / "unicode-names"
put("jsonl_dataset", "unicode-names-valid", (ex / "valid.jsonl").read_bytes())
put("jsonl_dataset", "text", '{"text": "hello world"}\n{"text": "second row"}\n')
put("jsonl_dataset", "completions", '{"prompt": "2+2?", "completion": "4"}\n{"prompt": "", "completion": "empty prompt"}\r\n')
put("jsonl_dataset", "chat-tools", json.dumps({
    "messages": [{"role": "system", "content": "You call tools."},
                 {"role": "user", "content": "weather?"},
                 {"role": "assistant", "content": None,
                  "tool_calls": [{"type": "function", "function": {"name": "w", "arguments": {"city": "Paris"}}}]},
                 {"role": "tool", "content": "sunny"},
                 {"role": "assistant", "content": "Sunny."}],
    "tools": [{"type": "function", "function": {"name": "w", "parameters": {"type": "object"}}}]}) + "\n")
put("jsonl_dataset", "bad-lines", '{"text": "a"}\n{"text": 5}\n\n{"text": oops}\n')

# --- config.json ---------------------------------------------------------------
llama = {"model_type": "llama", "hidden_size": 64, "num_hidden_layers": 2, "intermediate_size": 128,
         "num_attention_heads": 4, "num_key_value_heads": 2, "rms_norm_eps": 1e-5, "vocab_size": 300,
         "rope_theta": 500000.0, "tie_word_embeddings": False, "max_position_embeddings": 2048,
         "bos_token_id": 1, "eos_token_id": [2, 3],
         "rope_scaling": {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                          "high_freq_factor": 4.0, "original_max_position_embeddings": 8192},
         "quantization": {"group_size": 64, "bits": 4, "mode": "affine", "lm_head": False,
                          "model.layers.0.mlp.down_proj": {"bits": 8}}}
put("config_json", "llama", json.dumps(llama, indent=2))
qwen2 = {"model_type": "qwen2", "hidden_size": 64, "num_hidden_layers": 2, "intermediate_size": 128,
         "num_attention_heads": 4, "num_key_value_heads": 2, "rms_norm_eps": 1e-6, "vocab_size": 300,
         "rope_scaling": {"type": "linear", "factor": 2.0}, "eos_token_id": 7,
         "quantization_config": {"group_size": 32, "bits": 8}}
put("config_json", "qwen2", json.dumps(qwen2))
qwen3 = {"model_type": "qwen3", "hidden_size": 64, "num_hidden_layers": 2, "intermediate_size": 128,
         "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 16, "rms_norm_eps": 1e-6,
         "vocab_size": 300, "rope_parameters": {"rope_theta": 1000000.0}, "tie_word_embeddings": True,
         "max_position_embeddings": 4096, "quantization_config": {"quant_method": "awq"}}
put("config_json", "qwen3", json.dumps(qwen3))
put("config_json", "not-object", "[1, 2, 3]")

# --- chat templates ------------------------------------------------------------
for i, case in enumerate(json.loads((FIXTURES / "chat_cases.json").read_text())):
    body = {"messages": case["messages"], "add_generation_prompt": case.get("add_generation_prompt", False)}
    if "tools" in case:
        body["tools"] = case["tools"]
    put("chat_template_messages", f"case-{i}", json.dumps(body, ensure_ascii=False))
put("chat_template_messages", "list", json.dumps([{"role": "user", "content": "hi"}]))
put("chat_template_messages", "odd-roles", json.dumps(
    [{"role": "system", "content": 5}, {"role": "narrator", "content": None}, {"content": "no role"}]))

put("chat_template_source", "qwen", (FIXTURES / "qwen2_5_style.jinja").read_bytes())
put("chat_template_source", "features", (FIXTURES / "features.jinja").read_bytes())
put("chat_template_source", "macro-loop",
    "{% macro f(n) %}{% if n > 0 %}{{ f(n - 1) }}{% endif %}{{ n }}{% endmacro %}{{ f(20) }}"
    "{% for m in messages | reverse %}{{ loop.index }}{{ m.content | tojson }}{% endfor %}")
put("chat_template_source", "raise",
    "{% if messages[0].role != 'user' %}{{ raise_exception('first must be user') }}{% endif %}")
put("chat_template_source", "strings",
    "{{ strftime_now('%Y') | length }}{{ messages[1].content.split(' ') | join('|') }}"
    "{{ (messages | map(attribute='role') | list)[:2] }}{{ '%s-%d' | format('a', 3) }}{{ range(3) | list }}")

# --- OpenAI requests (first byte: 0 chat, 1 completions) ------------------------
chat = {"model": "tiny:1", "messages": [{"role": "user", "content": [{"type": "text", "text": "hi"}]}],
        "max_tokens": 16, "temperature": 0.7, "top_p": 0.9, "top_k": 40, "min_p": 0.05, "seed": 1,
        "stop": ["\n", "END"], "presence_penalty": 0.5, "frequency_penalty": 0.1,
        "repetition_penalty": 1.1, "logit_bias": {"5": -100}, "logprobs": True, "top_logprobs": 3,
        "n": 1, "stream": True, "stream_options": {"include_usage": True}, "keep_alive": "5m",
        "return_token_ids": True}
put("openai_request", "chat", b"\x00" + json.dumps(chat).encode())
put("openai_request", "chat-min", b"\x00" + b'{"model":"m","messages":[{"role":"user","content":"x"}]}')
comp = {"model": "m@prod", "prompt": [[1, 2, 3]], "max_tokens": 1, "logprobs": 2, "keep_alive": -1,
        "stop": "x", "echo": False}
put("openai_request", "completions", b"\x01" + json.dumps(comp).encode())
put("openai_request", "completions-ids", b"\x01" + b'{"model":"m","prompt":[1,2,4294967296]}')
put("openai_request", "wrong-types", b"\x00" + b'{"model":5,"messages":"no","max_tokens":-1}')
