"""PyTorch baselines for scripts/gpu_check.sh, timed in the same run as tessera's GPU code.

Measures a large device-to-device copy (the bandwidth ceiling), cuBLAS fp16 and fp32 GEMM
(TF32 off for fp32), and eager add / softmax / layer norm at the bundle's shapes; then prints a
table against tessera's JSON lines (argv[1]).
"""
import json
import sys

import torch


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
    print(json.dumps({"pytorch": torch.__version__, **out}))

    rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
    copy = out["copy_gbytes_per_s"]
    print(f"\n{'case':<22}{'pass':>6}{'ms':>10}{'GB/s':>9}{'of copy':>9}{'torch ms':>10}{'ratio':>8}")
    for r in rows:
        if "median_ms" not in r:
            print(f"{r['case']:<22}{'ERROR':>6}  {r.get('error', '')}")
            continue
        torch_ms = out.get(f"{r['case']}_ms") or (
            out["gemm_float32_1024_ms"] if r["case"] == "gemm_f32_1024" else None
        )
        ratio = f"{r['median_ms'] / torch_ms:8.2f}" if torch_ms else f"{'':>8}"
        tm = f"{torch_ms:10.4f}" if torch_ms else f"{'':>10}"
        print(
            f"{r['case']:<22}{str(r['pass']):>6}{r['median_ms']:10.4f}{r['gbytes_per_s']:9.1f}"
            f"{r['gbytes_per_s'] / copy:9.1%}{tm}{ratio}"
        )
    print(f"\ndevice-to-device copy: {copy:.0f} GB/s; cuBLAS fp16 4096^3: "
          f"{out['gemm_float16_4096_tflops']:.0f} TFLOP/s, bf16: {out['gemm_bfloat16_4096_tflops']:.0f}; "
          f"fp32 1024^3 (no TF32): {out['gemm_float32_1024_tflops']:.1f} TFLOP/s")


if __name__ == "__main__":
    main()
