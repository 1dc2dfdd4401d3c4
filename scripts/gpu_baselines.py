"""PyTorch baselines for scripts/gpu_check.sh, timed in the same run as tessera's GPU code.

Measures a large device-to-device copy (the bandwidth ceiling), cuBLAS fp16, bf16 (4096^3) and
fp32 (1024^3, TF32 off) GEMM, eager add / softmax / layer norm at the bundle's shapes, and the
GPU-sized transformer block in PyTorch eager (f32 and f16); then prints a table against
tessera's JSON lines (argv[1]), with the GEMMs' share of cuBLAS.
"""
import json
import sys

import torch


# tessera's product cases → this script's keys. A case named after one of these and more
# (`gemm_f16_4096_wgmma`, the sweep's `gemm_f16_4096_wgmma_128x128x32_w2x1_s6`: the same product on
# other tilings) has the same baseline.
GEMMS = {
    "gemm_f32_1024": "gemm_float32_1024",
    "gemm_f16_4096": "gemm_float16_4096",
    "gemm_bf16_4096": "gemm_bfloat16_4096",
}


def torch_name(case):
    """This script's key for tessera's case `case` (its own name where there is no GEMM)."""
    for prefix, key in GEMMS.items():
        if case == prefix or case.startswith(prefix + "_"):
            return key
    return case


def bench(fn, reps=50):
    for _ in range(5):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(reps):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        fn()
        b.record()
        b.synchronize()
        times.append(a.elapsed_time(b))
    times.sort()
    return times[len(times) // 2]


# The GPU-sized transformer block of scripts/gpu_models.py (the bundled block's structure).
SEQ, D, HEADS, FF = 512, 384, 6, 1536
NAMES = {torch.float32: "f32", torch.float16: "f16", torch.bfloat16: "bf16"}


class TransformerBlock(torch.nn.Module):
    """Pre-norm attention (no projection biases) and a GELU (erf) MLP with biases, residuals
    around both: the ONNX graph of examples/models/make_models.py, eagerly."""

    def __init__(self):
        super().__init__()
        self.ln1, self.ln2 = torch.nn.LayerNorm(D), torch.nn.LayerNorm(D)
        self.q, self.k, self.v, self.o = (torch.nn.Linear(D, D, bias=False) for _ in range(4))
        self.f1, self.f2 = torch.nn.Linear(D, FF), torch.nn.Linear(FF, D)

    def forward(self, x):
        n, s, _ = x.shape
        dh = D // HEADS
        h = self.ln1(x)
        q, k, v = (p(h).view(n, s, HEADS, dh).transpose(1, 2) for p in (self.q, self.k, self.v))
        attn = torch.softmax(q @ k.transpose(-1, -2) / dh**0.5, dim=-1)
        ctx = (attn @ v).transpose(1, 2).reshape(n, s, D)
        r = x + self.o(ctx)
        return r + self.f2(torch.nn.functional.gelu(self.f1(self.ln2(r))))


def main():
    torch.backends.cuda.matmul.allow_tf32 = False
    dev = "cuda"
    g = torch.Generator(device=dev).manual_seed(0)
    out = {}
    src = torch.rand(64 << 20, device=dev, generator=g)  # 256 MiB
    dst = torch.empty_like(src)
    ms = bench(lambda: dst.copy_(src))
    out["copy_gbytes_per_s"] = 2 * src.numel() * 4 / (ms * 1e-3) / 1e9
    for dtype, n in [(torch.float16, 4096), (torch.bfloat16, 4096), (torch.float32, 1024)]:
        a = torch.rand(n, n, device=dev, dtype=dtype, generator=g) - 0.5
        b = torch.rand(n, n, device=dev, dtype=dtype, generator=g) - 0.5
        ms = bench(lambda: a @ b)
        out[f"gemm_{str(dtype)[6:]}_{n}_ms"] = ms
        out[f"gemm_{str(dtype)[6:]}_{n}_tflops"] = 2 * n**3 / (ms * 1e-3) / 1e12
    x = torch.rand(4096, 4096, device=dev, generator=g)
    y = torch.rand(4096, 4096, device=dev, generator=g)
    out["add_f32_16M_ms"] = bench(lambda: x + y)
    s = torch.rand(4096, 1024, device=dev, generator=g)
    out["softmax_4096x1024_ms"] = bench(lambda: torch.softmax(s, -1))
    w = torch.rand(1024, device=dev, generator=g)
    out["layernorm_4096x1024_ms"] = bench(
        lambda: torch.nn.functional.layer_norm(s, (1024,), w, w)
    )
    for dtype in (torch.float32, torch.float16):
        block = TransformerBlock().to(dev, dtype)
        xb = torch.rand(1, SEQ, D, device=dev, generator=g).to(dtype)
        with torch.no_grad():
            out[f"transformer_gpu_{NAMES[dtype]}_ms"] = bench(lambda: block(xb))
    print(json.dumps({"pytorch": torch.__version__, **out}))

    rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
    copy = out["copy_gbytes_per_s"]
    print(f"\n{'case':<40}{'pass':>6}{'ms':>10}{'GB/s':>9}{'of copy':>9}{'torch ms':>10}{'ratio':>8}")
    for r in rows:
        if "median_ms" not in r:
            print(f"{r['case']:<40}{'ERROR':>6}  {r.get('error', '')}")
            continue
        torch_ms = out.get(f"{torch_name(r['case'])}_ms")
        ratio = f"{r['median_ms'] / torch_ms:8.2f}" if torch_ms else f"{'':>8}"
        tm = f"{torch_ms:10.4f}" if torch_ms else f"{'':>10}"
        print(
            f"{r['case']:<40}{str(r['pass']):>6}{r['median_ms']:10.4f}{r['gbytes_per_s']:9.1f}"
            f"{r['gbytes_per_s'] / copy:9.1%}{tm}{ratio}"
        )
    best = {}
    for r in rows:
        if r.get("gflops") and torch_name(r["case"]) in GEMMS.values():
            tflops = r["gflops"] / 1e3
            ref = out[f"{torch_name(r['case'])}_tflops"]
            print(f"{r['case']}: {tflops:.1f} TFLOP/s = {tflops / ref:.1%} of cuBLAS ({ref:.1f})")
            # Only a tiling whose results passed the check counts.
            key = torch_name(r["case"])
            if r.get("pass") and tflops > best.get(key, ("", 0.0))[1]:
                best[key] = (r["case"], tflops)
    for key, (case, tflops) in best.items():
        ref = out[f"{key}_tflops"]
        print(f"best for {key}: {case}, {tflops / ref:.1%} of cuBLAS")
    print(f"\ndevice-to-device copy: {copy:.0f} GB/s; cuBLAS fp16 4096^3: "
          f"{out['gemm_float16_4096_tflops']:.0f} TFLOP/s, bf16: {out['gemm_bfloat16_4096_tflops']:.0f}; "
          f"fp32 1024^3 (no TF32): {out['gemm_float32_1024_tflops']:.1f} TFLOP/s")


if __name__ == "__main__":
    main()
