"""Generates the test data the Rust tests read (nothing generated is committed).

    .venv/bin/python scripts/gen_test_data.py tests/data/generated

For each model — the bundled ones (rebuilt from examples/models/make_models.py), the
architecture blocks of scripts/arch_models.py (as arch_<name>) and the `light_*` models
shipped in the onnx wheel — writes
    models/<name>/model.onnx (a copy), input_<i>.npy (seeded random), ort_output_<i>.npy
where the outputs come from onnxruntime, the reference the model tests compare against.
For bundled models with a symbolic batch, batch sizes 1, 3 and 8 are written as
    models/<name>/batch<B>/...
Idempotent: a case whose folder is complete for the same model bytes is skipped.
"""
import hashlib
import os
import shutil
import sys
import glob
import importlib.util

import numpy as np
import onnx
import onnxruntime as ort

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)


def numpy_dtype(elem_type):
    return onnx.helper.tensor_dtype_to_np_dtype(elem_type)


def write_case(model_path, out_dir, batch, seed):
    # `done` holds the model's hash: a model rebuilt differently gets its case written again.
    with open(model_path, "rb") as f:
        digest = hashlib.sha256(f.read()).hexdigest()
    done = os.path.join(out_dir, "done")
    if os.path.exists(done) and open(done).read() == digest:
        return
    os.makedirs(out_dir, exist_ok=True)
    model = onnx.load(model_path)
    inits = {i.name for i in model.graph.initializer}
    rng = np.random.default_rng(seed)
    feeds = {}
    for i, vi in enumerate([v for v in model.graph.input if v.name not in inits]):
        tt = vi.type.tensor_type
        shape = [d.dim_value if d.HasField("dim_value") else batch for d in tt.shape.dim]
        dt = numpy_dtype(tt.elem_type)
        x = rng.standard_normal(shape).astype(dt) if np.issubdtype(dt, np.floating) else rng.integers(0, 5, shape).astype(dt)
        feeds[vi.name] = x
        np.save(os.path.join(out_dir, f"input_{i}.npy"), x)
    sess = ort.InferenceSession(model_path, providers=["CPUExecutionProvider"])
    outs = sess.run(None, feeds)
    for i, y in enumerate(outs):
        np.save(os.path.join(out_dir, f"ort_output_{i}.npy"), y)
    with open(done, "w") as f:
        f.write(digest)


def main():
    out = sys.argv[1] if len(sys.argv) > 1 else os.path.join(ROOT, "tests", "data", "generated")
    models_dir = os.path.join(out, "models")
    os.makedirs(models_dir, exist_ok=True)

    # Bundled models, rebuilt from code so the committed copies are checked too.
    spec = importlib.util.spec_from_file_location("make_models", os.path.join(ROOT, "examples", "models", "make_models.py"))
    mm = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mm)
    for name in ["mlp", "small_cnn", "transformer_block", "exported_style", "upsample"]:
        d = os.path.join(models_dir, name)
        os.makedirs(d, exist_ok=True)
        shutil.copy(os.path.join(ROOT, "examples", "models", f"{name}.onnx"), os.path.join(d, "model.onnx"))
        for b in [1, 3, 8]:
            write_case(os.path.join(d, "model.onnx"), os.path.join(d, f"batch{b}"), b, seed=b)

    # Architectures the bundled models do not cover (scripts/arch_models.py).
    spec = importlib.util.spec_from_file_location("arch_models", os.path.join(ROOT, "scripts", "arch_models.py"))
    am = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(am)
    for name, build in am.MODELS.items():
        d = os.path.join(models_dir, f"arch_{name}")
        os.makedirs(d, exist_ok=True)
        onnx.save(build(), os.path.join(d, "model.onnx"))
        write_case(os.path.join(d, "model.onnx"), os.path.join(d, "batch1"), 1, seed=0)

    light = os.path.join(os.path.dirname(onnx.__file__), "backend", "test", "data", "light")
    for path in sorted(glob.glob(os.path.join(light, "light_*.onnx"))):
        name = os.path.basename(path)[: -len(".onnx")]
        d = os.path.join(models_dir, name)
        os.makedirs(d, exist_ok=True)
        shutil.copy(path, os.path.join(d, "model.onnx"))
        write_case(os.path.join(d, "model.onnx"), os.path.join(d, "batch1"), 1, seed=0)
    print(f"test data in {out}")


if __name__ == "__main__":
    main()
