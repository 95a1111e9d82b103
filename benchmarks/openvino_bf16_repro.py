"""A minimal reproducer of OpenVINO's BF16 fault, for its issue tracker: one Conv, 12 input channels.

On a Xeon with AMX (OpenVINO 2026.4.1), the network's stem convolution (12 input channels, kernel 16)
in BF16 departs from FP32 by a relative error near 1; with 16 input channels, or with oneDNN held
below AMX (ONEDNN_MAX_CPU_ISA=AVX512_CORE_BF16), it stays at BF16 rounding (~1e-2). This script
builds that one convolution in ONNX (no project code, numpy + onnx + openvino only), runs it in
f32 and bf16 for 12 and 16 input channels and prints the relative L2 error and the kernels that ran.

    python benchmarks/openvino_bf16_repro.py
"""

from __future__ import annotations

import numpy as np
import openvino as ov
from onnx import TensorProto, helper, numpy_helper


def one_conv(c_in: int, seed: int = 0) -> bytes:
    rng = np.random.default_rng(seed)
    weight = rng.normal(0, 0.1, (64, c_in, 1, 16)).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "w"], ["y"], kernel_shape=[1, 16], pads=[0, 7, 0, 8])], "one_conv",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, c_in, 1, 4096])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 64, 1, 4096])],
        [numpy_helper.from_array(weight, "w")])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString()


def main() -> None:
    core = ov.Core()
    print(f"OpenVINO {ov.__version__}; CPU capabilities {core.get_property('CPU', 'OPTIMIZATION_CAPABILITIES')}")
    for c_in in (12, 16):
        x = np.random.default_rng(1).normal(0, 0.3, (8, c_in, 1, 4096)).astype(np.float32)
        model = core.read_model(one_conv(c_in), b"")
        out = {}
        for precision in ("f32", "bf16"):
            compiled = core.compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": precision})
            out[precision] = compiled.create_infer_request().infer({0: x})[compiled.output(0)]
            kernels = sorted({op.get_rt_info()["primitiveType"].astype(str)
                              for op in compiled.get_runtime_model().get_ordered_ops()
                              if op.get_rt_info()["layerType"].astype(str) == "Convolution"})
            print(f"  {c_in} input channels, {precision}: {', '.join(kernels)}")
        error = np.linalg.norm(out["bf16"] - out["f32"]) / np.linalg.norm(out["f32"])
        print(f"{c_in} input channels: bf16 vs f32 relative L2 error {error:.2e} "
              f"({'wrong' if error > 0.1 else 'rounding only'})")


if __name__ == "__main__":
    main()
