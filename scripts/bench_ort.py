"""Times a model with onnxruntime (the CPU peer), printing one JSON line like `tessera bench`.

    python scripts/bench_ort.py model.onnx [--threads N] [--runs R] [--warmup W] [--batch B]
"""
import argparse
import json
import time

import numpy as np
import onnx
import onnxruntime as ort


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("model")
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--runs", type=int, default=50)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--batch", type=int, default=1)
    a = ap.parse_args()
    so = ort.SessionOptions()
    if a.threads:
        so.intra_op_num_threads = a.threads
        so.inter_op_num_threads = 1
    sess = ort.InferenceSession(a.model, so, providers=["CPUExecutionProvider"])
    model = onnx.load(a.model)
    inits = {i.name for i in model.graph.initializer}
    rng = np.random.default_rng(42)
    feeds = {}
    for vi in model.graph.input:
        if vi.name in inits:
            continue
        tt = vi.type.tensor_type
        shape = [d.dim_value if d.HasField("dim_value") else a.batch for d in tt.shape.dim]
        feeds[vi.name] = rng.standard_normal(shape).astype(onnx.helper.tensor_dtype_to_np_dtype(tt.elem_type))
    for _ in range(a.warmup):
        sess.run(None, feeds)
    times = []
    for _ in range(a.runs):
        t = time.perf_counter()
        sess.run(None, feeds)
        times.append((time.perf_counter() - t) * 1e3)
    times.sort()
    print(json.dumps({"peer": "onnxruntime", "version": ort.__version__, "model": a.model, "threads": a.threads or "default",
                      "runs": len(times), "median_ms": times[len(times) // 2], "min_ms": times[0]}))


if __name__ == "__main__":
    main()
