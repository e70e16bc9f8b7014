#!/usr/bin/env python3
"""Independent pure-Python model of bitsandbytes 4-bit quantization (CUDA semantics).

Standard library only. Written from bitsandbytes' sources (csrc/kernels.cu kQuantizeBlockwise,
dQuantizeNF4, dQuantizeFP4, dQuantize, dDequantizeFP4Tree; bitsandbytes/functional.py
get_4bit_type, create_dynamic_map, quantize_4bit, quantize_blockwise, QuantState.as_dict;
bitsandbytes/utils.py pack_dict_to_tensor) and ../../shared/REFERENCE.md, as a cross-check for
src/quant/*.ts. Decisions shared with the TypeScript side (both documented there):
  * scale = float32(1 / absmax), x = float32(w * scale) (CUDA multiplies by the reciprocal);
  * an all-zero block uses scale 0 (every value becomes the code of 0.0);
  * the odd-n pad nibble is the code of the value 0.0;
  * offset = float32(float64 sum in index order / count);
  * torch.linspace in float32 is one FMA per entry (as the x86-64/arm64 torch kernels compute it).

Job (JSON on stdin), one of:
  {"mode": "quantize", "weights_b64": <float32 LE>, "shape": [out, in], "quant_type": "nf4",
   "blocksize": 64, "double_quant": true, "dtype": "bfloat16"}
  {"mode": "dynamic8", "values_b64": <float32 LE>}   -> 8-bit dynamic-map codes
  {"mode": "repr", "values_b64": <float64 LE>}        -> json.dumps of each value
  {"mode": "maps"}                                    -> the three tables
Output: one JSON object on stdout, byte fields base64.
"""

import base64
import json
import struct
import sys
from array import array


def f32(x):
    """Round a Python float to the nearest float32 (ties to even)."""
    return struct.unpack("<f", struct.pack("<f", x))[0]


def floats_from_b64(text, code="f"):
    a = array(code)
    a.frombytes(base64.b64decode(text))
    if sys.byteorder != "little":
        a.byteswap()
    return list(a)


def b64_f32(values):
    a = array("f", values)
    if sys.byteorder != "little":
        a.byteswap()
    return base64.b64encode(a.tobytes()).decode("ascii")


def b64_bytes(values):
    return base64.b64encode(bytes(values)).decode("ascii")


# --- tables --------------------------------------------------------------------------------------

NF4 = [f32(v) for v in (
    -1.0, -0.6961928009986877, -0.5250730514526367, -0.39491748809814453,
    -0.28444138169288635, -0.18477343022823334, -0.09105003625154495, 0.0,
    0.07958029955625534, 0.16093020141124725, 0.24611230194568634, 0.33791524171829224,
    0.44070982933044434, 0.5626170039176941, 0.7229568362236023, 1.0)]

# The literals of the comparison tree in kernels.cu::dQuantizeNF4, as float32, ascending.
NF4_SPLITS = [f32(v) for v in (
    -0.8480964004993439, -0.6106329262256622, -0.4599952697753906, -0.33967943489551544,
    -0.23460740596055984, -0.13791173323988914, -0.045525018125772476, 0.03979014977812767,
    0.1202552504837513, 0.2035212516784668, 0.2920137718319893, 0.3893125355243683,
    0.5016634166240692, 0.6427869200706482, 0.8614784181118011)]

# get_4bit_type("fp4"): the list (its "-0" is an int, hence +0.0) divided by 12 in float32.
FP4 = [f32(f32(v) / 12.0) for v in (0, 0.0625, 8.0, 12.0, 4.0, 6.0, 2.0, 3.0,
                                     0, -0.0625, -8.0, -12.0, -4.0, -6.0, -2.0, -3.0)]


def quant_nf4(x):
    # Code = how many tree literals x is strictly above; NaN is above none.
    code = 0
    for t in NF4_SPLITS:
        if x > t:
            code += 1
    return code


def quant_fp4(x):
    sign = 8 if x < 0 else 0
    a = abs(x)
    # Magnitude pattern chosen by the dQuantizeFP4 tree, its literals rounded to float32.
    if a > f32(0.29166667):
        if a > f32(0.583333):
            bits = 0b011 if a > f32(0.8333333) else 0b010
        else:
            bits = 0b101 if a > f32(0.4166667) else 0b100
    elif a > f32(0.0859375):
        bits = 0b111 if a > f32(0.20833333) else 0b110
    else:
        bits = 0b001 if a > f32(0.00260417) else 0b000
    return sign + bits


def dequant_value(quant_type, code):
    if quant_type == "nf4":
        return NF4[code]
    # dDequantizeFP4Tree: magnitude table times (1 - 2 * sign bit); code 8 gives -0.0.
    mag = FP4[code & 7]
    return mag * (-1.0 if code & 8 else 1.0)


def torch_linspace_f32(start, end, steps):
    start, end = f32(start), f32(end)
    step = f32(f32(end - start) / (steps - 1))
    out = []
    for i in range(steps):
        # One rounding of the exact a*b+c (FMA); the float64 expression is exact here.
        if i < steps // 2:
            out.append(f32(start + step * i))
        else:
            out.append(f32(end - step * (steps - 1 - i)))
    return out


def dynamic_map():
    values = []
    for e in range(7):
        pts = torch_linspace_f32(0.1, 1.0, 2 ** e + 1)
        factor = f32(10.0 ** (e - 6))
        for k in range(len(pts) - 1):
            mean = f32(pts[k] + pts[k + 1]) / 2.0
            values.append(f32(factor * mean))
            values.append(f32(-factor * mean))
    values += [0.0, 1.0]
    assert len(values) == 256
    return sorted(values)


DYN = dynamic_map()


def quant_dynamic8(x, code):
    """Nearest entry by float32 midpoints; an exact midpoint goes to the even index.

    kernels.cu::dQuantize bisects from 127 with steps 64..1, so its last probe is always an even
    index and a tie is resolved toward that probe. Here: find the gap, then apply that rule.
    """
    if not (x > code[0]):  # includes NaN
        return 0
    lo = 0
    while lo < 255 and x > code[lo + 1]:
        lo += 1
    if lo == 255:
        return 255
    mid = f32(code[lo] + code[lo + 1]) * 0.5
    if x > mid:
        return lo + 1
    if x < mid:
        return lo
    return lo if lo % 2 == 0 else lo + 1


# --- blockwise -----------------------------------------------------------------------------------

def quantize_4bit(w, quant_type, blocksize):
    q = quant_nf4 if quant_type == "nf4" else quant_fp4
    n = len(w)
    codes = []
    absmax = []
    for start in range(0, n, blocksize):
        block = w[start:start + blocksize]
        m = max(abs(v) for v in block)
        absmax.append(m)
        scale = 0.0 if m == 0 else f32(1.0 / m)
        codes.extend(q(f32(v * scale)) for v in block)
    if n % 2:
        codes.append(q(0.0 * scale))
    packed = [(codes[2 * j] << 4) | codes[2 * j + 1] for j in range(len(codes) // 2)]
    return packed, absmax


def quantize_blockwise_8bit(values, code, blocksize):
    out = []
    absmax = []
    for start in range(0, len(values), blocksize):
        block = values[start:start + blocksize]
        m = max(abs(v) for v in block)
        absmax.append(m)
        scale = 0.0 if m == 0 else f32(1.0 / m)
        out.extend(quant_dynamic8(f32(v * scale), code) for v in block)
    return out, absmax


def double_quant(absmax):
    total = 0.0
    for v in absmax:
        total += v
    offset = f32(total / len(absmax))
    centered = [f32(v - offset) for v in absmax]
    codes, nested = quantize_blockwise_8bit(centered, DYN, 256)
    return codes, nested, offset


def quantize_job(job):
    w = floats_from_b64(job["weights_b64"])
    out_f, in_f = job["shape"]
    assert len(w) == out_f * in_f
    qt, bs = job["quant_type"], job["blocksize"]
    packed, absmax = quantize_4bit(w, qt, bs)
    result = {"packed": b64_bytes(packed)}
    state = {"quant_type": qt, "blocksize": bs, "dtype": job["dtype"], "shape": [out_f, in_f]}
    if job["double_quant"]:
        codes, nested, offset = double_quant(absmax)
        result["absmax_codes"] = b64_bytes(codes)
        result["nested_absmax"] = b64_f32(nested)
        result["offset"] = offset
        state.update({"nested_blocksize": 256, "nested_dtype": "float32", "nested_offset": offset})
        used = [f32(f32(DYN[c] * nested[i // 256]) + offset) for i, c in enumerate(codes)]
    else:
        result["absmax"] = b64_f32(absmax)
        used = absmax
    # bitsandbytes.utils.pack_dict_to_tensor: json.dumps with default separators.
    result["quant_state"] = b64_bytes(json.dumps(state).encode("utf-8"))
    deq = []
    for i in range(len(w)):
        byte = packed[i // 2]
        c = byte >> 4 if i % 2 == 0 else byte & 15
        deq.append(dequant_value(qt, c) * used[i // bs])
    result["dequantized"] = b64_f32(deq)
    return result


def main():
    job = json.load(sys.stdin)
    mode = job.get("mode", "quantize")
    if mode == "quantize":
        result = quantize_job(job)
    elif mode == "dynamic8":
        result = {"codes": b64_bytes(quant_dynamic8(x, DYN) for x in floats_from_b64(job["values_b64"]))}
    elif mode == "repr":
        result = {"texts": [json.dumps(x) for x in floats_from_b64(job["values_b64"], "d")]}
    elif mode == "maps":
        result = {"nf4": b64_f32(NF4), "fp4": b64_f32(FP4), "dynamic": b64_f32(DYN),
                  "nf4_splits": b64_f32(NF4_SPLITS)}
    else:
        raise SystemExit("unknown mode " + repr(mode))
    json.dump(result, sys.stdout)


if __name__ == "__main__":
    main()
