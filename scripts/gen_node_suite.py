"""Writes the ONNX backend *node* test suite to disk (nothing generated is committed).

    .venv/bin/python scripts/gen_node_suite.py tests/data/generated/node

The onnx wheel ships the generators of the node tests, not their data: this runs
`onnx.backend.test.case.node.collect_testcases()` and writes each case in the layout of the
official backend data folders, which the conformance runner (`tessera conformance`) reads:

    <out>/<test name>/model.onnx, meta.json ({"op": tested operator, "rtol", "atol"})
    <out>/<test name>/test_data_set_0/input_<i>.pb, output_<i>.pb   (TensorProto, or the
                                                  Sequence/Map/Optional protos for those types)

Idempotent: a `done` file recording the onnx version skips regeneration.
"""
import json
import os
import shutil
import sys
import warnings

import numpy as np
import onnx
from onnx import TensorProto, numpy_helper


def write_value(path, value, vi, name):
    """Serialises one input or output the way onnx's own `backend-test-tools` does."""
    ty = vi.type
    with open(path, "wb") as f:
        if ty.HasField("map_type"):
            f.write(numpy_helper.from_dict(value, name).SerializeToString())
        elif ty.HasField("sequence_type"):
            f.write(numpy_helper.from_list(value, name).SerializeToString())
        elif ty.HasField("optional_type"):
            f.write(numpy_helper.from_optional(value, name).SerializeToString())
        elif isinstance(value, TensorProto):
            f.write(value.SerializeToString())
        else:
            f.write(numpy_helper.from_array(np.asarray(value), name).SerializeToString())


def main():
    out = sys.argv[1] if len(sys.argv) > 1 else "tests/data/generated/node"
    stamp = os.path.join(out, "done")
    if os.path.exists(stamp) and open(stamp).read().strip() == onnx.__version__:
        print(f"node suite already in {out}")
        return
    if os.path.exists(out):
        shutil.rmtree(out)
    os.makedirs(out)
    import onnx.backend.test.case.node as node_cases

    # The cases do not record which operator they test (an `_expanded` case is the op's
    # function body, several nodes): wrap `expect` to note the op of every case it adds.
    op_of = {}
    original_expect = node_cases.expect

    def expect(node_op, *args, **kwargs):
        before = len(node_cases._NodeTestCases)
        original_expect(node_op, *args, **kwargs)
        for case in node_cases._NodeTestCases[before:]:
            op_of[case.name] = node_op.op_type

    node_cases.expect = expect
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # some generators divide by zero on purpose
        np.seterr(all="ignore")
        cases = node_cases.collect_testcases(None)
    for case in cases:
        d = os.path.join(out, case.name)
        os.makedirs(d)
        with open(os.path.join(d, "model.onnx"), "wb") as f:
            f.write(case.model.SerializeToString())
        with open(os.path.join(d, "meta.json"), "w") as f:
            json.dump({"op": op_of.get(case.name, ""), "rtol": case.rtol, "atol": case.atol}, f)
        g = case.model.graph
        for k, (inputs, outputs) in enumerate(case.data_sets):
            ds = os.path.join(d, f"test_data_set_{k}")
            os.makedirs(ds)
            for j, x in enumerate(inputs):
                write_value(os.path.join(ds, f"input_{j}.pb"), x, g.input[j], g.input[j].name)
            for j, y in enumerate(outputs):
                write_value(os.path.join(ds, f"output_{j}.pb"), y, g.output[j], g.output[j].name)
    with open(stamp, "w") as f:
        f.write(onnx.__version__)
    print(f"{len(cases)} node tests in {out}")


if __name__ == "__main__":
    main()
