"""TFLite graph rewrites applied in memory when a model is loaded (the model file is never changed)."""
from __future__ import annotations

import numpy as np


def fuse_dilated_convolutions(model: bytes) -> tuple[bytes, int]:
    """Replace each ``SPACE_TO_BATCH_ND -> (DEPTHWISE_)CONV_2D -> BATCH_TO_SPACE_ND`` chain (how
    TensorFlow exported atrous convolutions) with one SAME-padded convolution with a dilation factor.

    The arithmetic is the same (the DeepLab logits come out bit-identical, tested), but the XNNPACK
    delegate runs dilated convolutions and not the space/batch reshuffles: DeepLab then runs as one
    delegate partition instead of 21, ~15 % faster per image on 2 cores. A chain that does not match
    the SAME-padding pattern exactly is left alone. Returns the new model and the number of chains fused.
    """
    import flatbuffers
    from ai_edge_litert import schema_py_generated as schema

    op = schema.BuiltinOperator
    m = schema.ModelT.InitFromPackedBuf(model, 0)
    fused = 0
    for sg in m.subgraphs:
        def code(o):
            c = m.operatorCodes[o.opcodeIndex]
            return max(c.builtinCode, c.deprecatedBuiltinCode)

        def const(i):
            t = sg.tensors[i]
            data = m.buffers[t.buffer].data
            if data is None or t.type != schema.TensorType.INT32:
                return None
            return np.frombuffer(bytes(data), dtype=np.int32).reshape(t.shape)

        consumers: dict[int, list] = {}
        for o in sg.operators:
            for i in o.inputs:
                consumers.setdefault(int(i), []).append(o)
        drop = set()
        for s2b in sg.operators:
            if code(s2b) != op.SPACE_TO_BATCH_ND or len(consumers.get(int(s2b.outputs[0]), [])) != 1:
                continue
            [conv] = consumers[int(s2b.outputs[0])]
            if code(conv) not in (op.CONV_2D, op.DEPTHWISE_CONV_2D) or len(consumers.get(int(conv.outputs[0]), [])) != 1:
                continue
            [b2s] = consumers[int(conv.outputs[0])]
            if code(b2s) != op.BATCH_TO_SPACE_ND:
                continue
            block, pads, block2, crops = const(s2b.inputs[1]), const(s2b.inputs[2]), const(b2s.inputs[1]), const(b2s.inputs[2])
            if any(x is None for x in (block, pads, block2, crops)) or block.tolist() != block2.tolist() or block[0] != block[1]:
                continue
            opt, d = conv.builtinOptions, int(block[0])
            kh, kw = sg.tensors[conv.inputs[1]].shape[1:3]
            same = [((k - 1) * d) // 2 for k in (kh, kw)]  # leading SAME padding of the dilated kernel
            if (opt.padding != schema.Padding.VALID or opt.strideH != 1 or opt.strideW != 1
                    or pads[:, 0].tolist() != same or crops[:, 0].tolist() != [0, 0]
                    or getattr(opt, "dilationHFactor", 1) != 1 or getattr(opt, "dilationWFactor", 1) != 1
                    or list(sg.tensors[b2s.outputs[0]].shape[1:3]) != list(sg.tensors[s2b.inputs[0]].shape[1:3])):
                continue
            opt.padding, opt.dilationHFactor, opt.dilationWFactor = schema.Padding.SAME, d, d
            inputs = list(conv.inputs)
            inputs[0] = s2b.inputs[0]
            conv.inputs, conv.outputs = inputs, [b2s.outputs[0]]
            drop.update((id(s2b), id(b2s)))
            fused += 1
        sg.operators = [o for o in sg.operators if id(o) not in drop]
    if not fused:
        return model, 0
    b = flatbuffers.Builder(len(model) + 1024)
    b.Finish(m.Pack(b), file_identifier=b"TFL3")
    return bytes(b.Output()), fused
