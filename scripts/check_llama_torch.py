#!/usr/bin/env python3
"""Independent check of qlorad's loss: Hugging Face Llama written out in PyTorch.

Reads a bitsandbytes 4-bit folder written by qlorad (or by transformers + bitsandbytes),
dequantizes it here (REFERENCE.md sections 1-5), optionally adds a PEFT LoRA adapter
(scaling * B @ A), runs the Llama forward of transformers' modeling_llama.py (REFERENCE.md
section 7) in float64, and prints the mean next-token cross-entropy over a pre-tokenized JSONL
({"input_ids": [...]} per line). Shares no code with qlorad: it is the outside check.

    /usr/bin/python3 scripts/check_llama_torch.py MODEL_DIR DATA.jsonl [ADAPTER_DIR]

Needs Debian's python3-torch (not part of the test suite).
"""
import json
import math
import struct
import sys

import torch

DTYPES = {"F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16, "U8": torch.uint8}


def read_safetensors(path):
    with open(path, "rb") as f:
        data = f.read()
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + n])
    header.pop("__metadata__", None)
    base = 8 + n
    out = {}
    for name, info in header.items():
        begin, end = info["data_offsets"]
        raw = bytearray(data[base + begin:base + end])
        t = torch.frombuffer(raw, dtype=DTYPES[info["dtype"]]) if raw else torch.empty(0)
        out[name] = t.reshape(info["shape"])
    return out


def dequantize(t, prefix):
    """bitsandbytes 4-bit group -> float64 [out, in]."""
    state = json.loads(bytes(t[[k for k in t if k.startswith(prefix + "weight.quant_state.")][0]].tolist()))
    shape = state["shape"]
    n = shape[0] * shape[1]
    packed = t[prefix + "weight"].reshape(-1).to(torch.int64)
    codes = torch.stack([packed >> 4, packed & 15], dim=1).reshape(-1)[:n]
    qmap = t[prefix + "weight.quant_map"].to(torch.float32)
    blocks = (n + state["blocksize"] - 1) // state["blocksize"]
    if "nested_blocksize" in state:
        a8 = t[prefix + "weight.absmax"].to(torch.int64)
        nmap = t[prefix + "weight.nested_quant_map"].to(torch.float32)
        nabs = t[prefix + "weight.nested_absmax"].to(torch.float32)
        idx = torch.arange(blocks) // state["nested_blocksize"]
        absmax = nmap[a8] * nabs[idx] + torch.tensor(state["nested_offset"], dtype=torch.float32)
    else:
        absmax = t[prefix + "weight.absmax"].to(torch.float32)
    w = qmap[codes] * absmax[torch.arange(n) // state["blocksize"]]  # float32, as bnb does
    return w.reshape(shape).to(torch.float64)


def main():
    model_dir, data_path = sys.argv[1], sys.argv[2]
    adapter_dir = sys.argv[3] if len(sys.argv) > 3 else None
    cfg = json.load(open(f"{model_dir}/config.json"))
    t = read_safetensors(f"{model_dir}/model.safetensors")
    H, L = cfg["hidden_size"], cfg["num_hidden_layers"]
    nh = cfg["num_attention_heads"]
    nkv = cfg.get("num_key_value_heads", nh)
    hd = cfg.get("head_dim", H // nh)
    eps = cfg["rms_norm_eps"]
    theta = cfg.get("rope_theta", 10000.0)
    assert not cfg.get("rope_scaling"), "this check covers unscaled RoPE"

    def f64(name):
        return t[name].to(torch.float64)

    lora = {}
    if adapter_dir:
        acfg = json.load(open(f"{adapter_dir}/adapter_config.json"))
        at = read_safetensors(f"{adapter_dir}/adapter_model.safetensors")
        r = acfg["r"]
        scaling = acfg["lora_alpha"] / (math.sqrt(r) if acfg.get("use_rslora") else r)
        for k in at:
            if k.endswith("lora_A.weight"):
                module = k[len("base_model.model."):-len(".lora_A.weight")]
                b = at[k.replace("lora_A", "lora_B")].to(torch.float64)
                lora[module] = scaling * (b @ at[k].to(torch.float64))

    def linear(path):
        w = dequantize(t, path + ".") if path + ".weight.absmax" in t else f64(path + ".weight")
        return w + lora.get(path, 0)

    def rms(x, w):
        return x * torch.rsqrt((x * x).mean(-1, keepdim=True) + eps) * w

    inv_freq = 1.0 / (theta ** (torch.arange(0, hd, 2, dtype=torch.int64).to(torch.float64) / hd))

    def rope(x, pos):  # x [heads, T, hd]
        freqs = pos[:, None].to(torch.float64) * inv_freq[None, :]
        emb = torch.cat([freqs, freqs], dim=-1)
        rot = torch.cat([-x[..., hd // 2:], x[..., :hd // 2]], dim=-1)
        return x * emb.cos() + rot * emb.sin()

    layers = []
    for i in range(L):
        p = f"model.layers.{i}."
        layers.append({
            "in": f64(p + "input_layernorm.weight"), "post": f64(p + "post_attention_layernorm.weight"),
            **{m: linear(p + ("self_attn." if m in "qkvo" else "mlp.") + m + "_proj")
               for m in ["q", "k", "v", "o", "gate", "up", "down"]},
        })
    embed = f64("model.embed_tokens.weight")
    head = f64("lm_head.weight") if "lm_head.weight" in t else embed
    norm = f64("model.norm.weight")

    total, count = 0.0, 0
    for line in open(data_path):
        if not line.strip():
            continue
        ids = torch.tensor(json.loads(line)["input_ids"])
        T = len(ids)
        pos = torch.arange(T)
        x = embed[ids]
        mask = torch.full((T, T), float("-inf"), dtype=torch.float64).triu(1)
        for ly in layers:
            h = rms(x, ly["in"])
            q = (h @ ly["q"].T).reshape(T, nh, hd).transpose(0, 1)
            k = (h @ ly["k"].T).reshape(T, nkv, hd).transpose(0, 1)
            v = (h @ ly["v"].T).reshape(T, nkv, hd).transpose(0, 1)
            q, k = rope(q, pos), rope(k, pos)
            k = k.repeat_interleave(nh // nkv, dim=0)
            v = v.repeat_interleave(nh // nkv, dim=0)
            att = torch.softmax(q @ k.transpose(1, 2) / math.sqrt(hd) + mask, dim=-1)
            o = (att @ v).transpose(0, 1).reshape(T, nh * hd)
            x = x + o @ ly["o"].T
            h = rms(x, ly["post"])
            x = x + (torch.nn.functional.silu(h @ ly["gate"].T) * (h @ ly["up"].T)) @ ly["down"].T
        logits = rms(x, norm) @ head.T
        lp = torch.log_softmax(logits[:-1], dim=-1)
        total += -lp[torch.arange(T - 1), ids[1:]].sum().item()
        count += T - 1
    print(json.dumps({"loss": total / count, "tokens": count}))


if __name__ == "__main__":
    main()
