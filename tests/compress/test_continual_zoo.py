"""The zoo's streaming model (tcn_kws) as a step model keeps its validation accuracy.

How a stream maps to the offline window prediction: each 64-step validation clip is
one stream from zero state (zero state = the offline model's left zero padding); the
step output after the clip's last frame (frame 63 = the step model's delay) is the
clip's prediction. Logits agree within 1e-5 x max|logit| on every clip.
"""
from __future__ import annotations

import numpy as np
from continual_cases import session, stream_ort

import edgert
from edgert.compress import continual
from edgert.zoo import harness
from edgert.zoo.registry import get


def test_tcn_kws_step_model_same_validation_accuracy():
    zoo = get("tcn_kws")
    offline = edgert.load(zoo.onnx_path)
    step, report = continual(offline, 2)
    window = zoo.input.shape[2]
    assert report.delay == window - 1 and report.stride == 1
    val = harness.validation_data("tcn_kws")
    sess = session(step.proto)
    off = session(offline.proto)
    preds, worst = [], 0.0
    for clip in val.x:
        x = clip[None]
        logits = stream_ort(step, report, x, 2, sess=sess, name="input")[report.delay]
        ref = off.run(None, {"input": x})[0]
        worst = max(worst, float(np.max(np.abs(logits - ref)) / np.max(np.abs(ref))))
        preds.append(int(np.argmax(logits)))
    step_acc = float(np.mean(np.array(preds) == val.y))
    offline_acc = harness.evaluate("tcn_kws", offline).accuracy
    assert worst <= 1e-5
    assert step_acc == offline_acc
    assert len(preds) == len(val.y) == 750
