"""Train edgert's zoo models and write models_zoo/<name>/{model.onnx, meta.json, card.md}.

PyTorch is used here only (never at edgert run time). Needs, in a throwaway venv:
    python3 -m venv torch-venv
    torch-venv/bin/pip install torch==2.13.0 onnx numpy scikit-learn onnxruntime
    torch-venv/bin/pip install --no-deps -e .

Usage:
    torch-venv/bin/python tools/train_zoo.py [NAME ...]     (all models by default)

Training is deterministic (fixed seed, deterministic algorithms, 2 threads) and uses
only the "train" split; the accuracy in meta.json is measured with onnxruntime on the
exported ONNX over the whole "val" split, one sample (batch 1) at a time.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import math
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch
import torch.nn.functional as F
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
ZOO = ROOT / "models_zoo"
SEED = 0
OPSET = 17


def _datasets():
    """edgert.zoo.datasets, loaded straight from its file (no import of edgert.zoo's __init__)."""
    path = ROOT / "edgert" / "zoo" / "datasets.py"
    spec = importlib.util.spec_from_file_location("_edgert_zoo_datasets", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


DATASETS = _datasets()


# --------------------------------------------------------------------------- models


def conv_bn(cin: int, cout: int, k: int, stride: int = 1, groups: int = 1, act: type[nn.Module] | None = nn.ReLU):
    layers: list[nn.Module] = [
        nn.Conv2d(cin, cout, k, stride=stride, padding=k // 2, groups=groups, bias=False),
        nn.BatchNorm2d(cout),
    ]
    if act is not None:
        layers.append(act())
    return nn.Sequential(*layers)


class DigitsCNN(nn.Module):
    """8x8 -> conv-bn-relu x2 -> maxpool -> conv-bn-relu -> flatten 4x4 -> linear."""

    def __init__(self, classes: int = 10):
        super().__init__()
        self.features = nn.Sequential(
            conv_bn(1, 16, 3),
            conv_bn(16, 32, 3),
            nn.MaxPool2d(2),
            conv_bn(32, 32, 3),
        )
        self.dropout = nn.Dropout(0.2)
        self.fc = nn.Linear(32 * 4 * 4, classes)

    def forward(self, x):
        x = self.features(x)
        return self.fc(self.dropout(torch.flatten(x, 1)))


class InvertedResidual(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int, expand: int):
        super().__init__()
        hidden = cin * expand
        self.use_res = stride == 1 and cin == cout
        self.block = nn.Sequential(
            conv_bn(cin, hidden, 1, act=nn.ReLU6),
            conv_bn(hidden, hidden, 3, stride=stride, groups=hidden, act=nn.ReLU6),
            conv_bn(hidden, cout, 1, act=None),
        )

    def forward(self, x):
        y = self.block(x)
        return x + y if self.use_res else y


class MobileNetV2Digits(nn.Module):
    """32x32 -> stem s2 (16x16) -> 5 inverted residual blocks (to 4x4) -> 1x1 conv -> GAP -> linear."""

    # (cin, cout, stride, expand)
    BLOCKS = ((16, 16, 1, 4), (16, 24, 2, 4), (24, 24, 1, 4), (24, 32, 2, 4), (32, 32, 1, 4))

    def __init__(self, classes: int = 10, last: int = 128):
        super().__init__()
        self.stem = conv_bn(1, 16, 3, stride=2, act=nn.ReLU6)
        self.blocks = nn.Sequential(*(InvertedResidual(*b) for b in self.BLOCKS))
        self.head = conv_bn(self.BLOCKS[-1][1], last, 1, act=nn.ReLU6)
        self.dropout = nn.Dropout(0.2)
        self.fc = nn.Linear(last, classes)

    def forward(self, x):
        x = self.head(self.blocks(self.stem(x)))
        x = x.mean(dim=(2, 3))
        return self.fc(self.dropout(x))


class Attention(nn.Module):
    """Multi-head self-attention from plain Linear/MatMul/Softmax (exports as MatMul + Softmax)."""

    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.heads = heads
        self.head_dim = dim // heads
        self.scale = self.head_dim ** -0.5
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x):
        b, n, d = x.shape
        qkv = self.qkv(x).reshape(b, n, 3, self.heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]  # (b, heads, n, head_dim)
        attn = torch.softmax(torch.matmul(q * self.scale, k.transpose(-2, -1)), dim=-1)
        out = torch.matmul(attn, v).transpose(1, 2).reshape(b, n, d)
        return self.proj(out)


class EncoderBlock(nn.Module):
    def __init__(self, dim: int, heads: int, mlp: int, dropout: float):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = Attention(dim, heads)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, mlp), nn.GELU(), nn.Dropout(dropout), nn.Linear(mlp, dim))
        self.drop = nn.Dropout(dropout)

    def forward(self, x):
        x = x + self.drop(self.attn(self.norm1(x)))
        return x + self.drop(self.mlp(self.norm2(x)))


class ViTDigits(nn.Module):
    """16x16 -> 4x4 patches (conv stride 4) -> 16 tokens + learned pos-emb -> 2 pre-norm blocks -> mean pool -> head."""

    def __init__(self, classes: int = 10, dim: int = 64, depth: int = 2, heads: int = 4, mlp: int = 128,
                 patch: int = 4, size: int = 16, dropout: float = 0.1):
        super().__init__()
        tokens = (size // patch) ** 2
        self.patch = nn.Conv2d(1, dim, patch, stride=patch)
        self.pos = nn.Parameter(torch.zeros(1, tokens, dim))
        nn.init.trunc_normal_(self.pos, std=0.02)
        self.blocks = nn.Sequential(*(EncoderBlock(dim, heads, mlp, dropout) for _ in range(depth)))
        self.norm = nn.LayerNorm(dim)
        self.fc = nn.Linear(dim, classes)

    def forward(self, x):
        x = self.patch(x).flatten(2).transpose(1, 2) + self.pos  # (b, 16, dim)
        x = self.norm(self.blocks(x))
        return self.fc(x.mean(dim=1))


class CausalBlock(nn.Module):
    """Left zero padding + Conv1d(padding=0): causal, dilated; BN + ReLU; residual when channels match."""

    def __init__(self, cin: int, cout: int, dilation: int, k: int = 3):
        super().__init__()
        self.pad = (k - 1) * dilation
        self.conv = nn.Conv1d(cin, cout, k, dilation=dilation, padding=0, bias=False)
        self.bn = nn.BatchNorm1d(cout)
        self.use_res = cin == cout

    def forward(self, x):
        y = F.relu(self.bn(self.conv(F.pad(x, (self.pad, 0)))))
        return x + y if self.use_res else y


class TCNKWS(nn.Module):
    """(1, 8, 64) -> causal dilated conv blocks d=1,2,4,8 (k=3) -> global average pool over time -> linear."""

    def __init__(self, cin: int = 8, classes: int = 6, width: int = 32):
        super().__init__()
        self.blocks = nn.Sequential(
            CausalBlock(cin, width, 1),
            CausalBlock(width, width, 2),
            CausalBlock(width, width, 4),
            CausalBlock(width, width, 8),
        )
        self.fc = nn.Linear(width, classes)

    def forward(self, x):
        return self.fc(self.blocks(x).mean(dim=2))


# --------------------------------------------------------------------------- specs


def shift2d(x: torch.Tensor, g: torch.Generator, max_shift: int) -> torch.Tensor:
    """Shift every image by its own random (dy, dx) in [-max_shift, max_shift], zero fill."""
    n, c, h, w = x.shape
    padded = F.pad(x, (max_shift,) * 4)
    dy = torch.randint(0, 2 * max_shift + 1, (n,), generator=g)
    dx = torch.randint(0, 2 * max_shift + 1, (n,), generator=g)
    rows = (dy[:, None] + torch.arange(h)[None])[:, None, :, None].expand(n, c, h, w + 2 * max_shift)
    out = torch.gather(padded, 2, rows)
    cols = (dx[:, None] + torch.arange(w)[None])[:, None, None, :].expand(n, c, h, w)
    return torch.gather(out, 3, cols)


def shift1d(x: torch.Tensor, g: torch.Generator, max_shift: int) -> torch.Tensor:
    """Circular time shift per sample (the keyword can sit anywhere in the window)."""
    n, c, t = x.shape
    s = torch.randint(-max_shift, max_shift + 1, (n,), generator=g)
    idx = (torch.arange(t)[None] - s[:, None]) % t
    return torch.gather(x, 2, idx[:, None, :].expand(n, c, t))


@dataclass(frozen=True)
class Spec:
    name: str
    task: str
    dataset: str
    dataset_args: dict
    classes: int
    build: Callable[[], nn.Module]
    epochs: int
    lr: float
    weight_decay: float
    batch: int
    augment: Callable[[torch.Tensor, torch.Generator], torch.Tensor] | None
    target: float
    summary: str
    augment_doc: str


SPECS = {
    s.name: s
    for s in (
        Spec(
            name="digits_cnn",
            task="image classification (handwritten digits 0-9)",
            dataset="digits",
            dataset_args={"size": 8},
            classes=10,
            build=DigitsCNN,
            epochs=60,
            lr=3e-3,
            weight_decay=1e-4,
            batch=64,
            augment=lambda x, g: shift2d(x, g, 1),
            target=0.97,
            summary=(
                "Conv3x3(1->16)+BN+ReLU, Conv3x3(16->32)+BN+ReLU, MaxPool 2x2 (8x8 -> 4x4), "
                "Conv3x3(32->32)+BN+ReLU, Flatten (512), Dropout 0.2 (training only), Linear(512->10)."
            ),
            augment_doc="random shifts by up to +-1 px (zero fill)",
        ),
        Spec(
            name="mobilenetv2_digits",
            task="image classification (handwritten digits 0-9)",
            dataset="digits",
            dataset_args={"size": 32},
            classes=10,
            build=MobileNetV2Digits,
            epochs=60,
            lr=3e-3,
            weight_decay=4e-5,
            batch=64,
            augment=lambda x, g: shift2d(x, g, 2),
            target=0.95,
            summary=(
                "MobileNetV2-style. Stem Conv3x3 stride 2 (1->16)+BN+ReLU6 (32x32 -> 16x16); five inverted "
                "residual blocks (expand 4: 1x1 Conv+BN+ReLU6, 3x3 depthwise Conv+BN+ReLU6, 1x1 project Conv+BN) "
                "16->16 s1 (+residual), 16->24 s2, 24->24 s1 (+residual), 24->32 s2, 32->32 s1 (+residual) "
                "(to 4x4); 1x1 Conv(32->128)+BN+ReLU6; global average pool; Dropout 0.2 (training only); "
                "Linear(128->10)."
            ),
            augment_doc="random shifts by up to +-2 px (zero fill)",
        ),
        Spec(
            name="vit_digits",
            task="image classification (handwritten digits 0-9)",
            dataset="digits",
            dataset_args={"size": 16},
            classes=10,
            build=ViTDigits,
            epochs=150,
            lr=2e-3,
            weight_decay=5e-2,
            batch=64,
            augment=lambda x, g: shift2d(x, g, 1),
            target=0.93,
            summary=(
                "Vision transformer. Patch embedding Conv4x4 stride 4 (1->64): 16 tokens of width 64 plus a "
                "learned positional embedding; 2 pre-norm encoder blocks (LayerNorm, 4-head self-attention "
                "written as Linear/MatMul/Softmax, residual; LayerNorm, MLP 64->128 GELU ->64, residual); "
                "final LayerNorm; mean pooling over tokens; Linear(64->10)."
            ),
            augment_doc="random shifts by up to +-1 px (zero fill)",
        ),
        Spec(
            name="tcn_kws",
            task="keyword spotting (6 classes; class 0 = noise only, no keyword)",
            dataset="kws",
            dataset_args={},
            classes=6,
            build=TCNKWS,
            epochs=40,
            lr=3e-3,
            weight_decay=1e-4,
            batch=64,
            augment=None,
            target=0.90,
            summary=(
                "Causal temporal convolution net. Four blocks, each left zero padding (Pad) + Conv1d kernel 3 "
                "(no bias, padding 0) + BN + ReLU, with dilations 1, 2, 4, 8 (receptive field 31 steps): "
                "8->32, 32->32 (+residual), 32->32 (+residual), 32->32 (+residual); global average pool over "
                "time; Linear(32->6)."
            ),
            augment_doc="none",
        ),
    )
}


# --------------------------------------------------------------------------- training


def setup_torch() -> None:
    torch.manual_seed(SEED)
    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(2)


def load(spec: Spec) -> dict:
    return getattr(DATASETS, spec.dataset)(**spec.dataset_args)


def train(spec: Spec, model: nn.Module, data: dict) -> float:
    torch.manual_seed(SEED)
    g = torch.Generator().manual_seed(SEED)
    x = torch.from_numpy(data["train"].x)
    y = torch.from_numpy(data["train"].y)
    steps_per_epoch = math.ceil(len(x) / spec.batch)
    opt = torch.optim.AdamW(model.parameters(), lr=spec.lr, weight_decay=spec.weight_decay)
    sched = torch.optim.lr_scheduler.OneCycleLR(
        opt, max_lr=spec.lr, epochs=spec.epochs, steps_per_epoch=steps_per_epoch, pct_start=0.15
    )
    start = time.perf_counter()
    for epoch in range(spec.epochs):
        model.train()
        order = torch.randperm(len(x), generator=g)
        total = 0.0
        for i in range(0, len(x), spec.batch):
            idx = order[i : i + spec.batch]
            xb, yb = x[idx], y[idx]
            if spec.augment is not None:
                xb = spec.augment(xb, g)
            loss = F.cross_entropy(model(xb), yb, label_smoothing=0.05)
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            total += loss.item() * len(idx)
        if (epoch + 1) % 10 == 0 or epoch == spec.epochs - 1:
            print(f"  {spec.name} epoch {epoch + 1}/{spec.epochs} loss {total / len(x):.4f} "
                  f"val(torch) {torch_accuracy(model, data['val']):.4f}", flush=True)
    return time.perf_counter() - start


@torch.no_grad()
def torch_accuracy(model: nn.Module, split) -> float:
    was = model.training
    model.eval()
    pred = model(torch.from_numpy(split.x)).argmax(1).numpy()
    model.train(was)
    return float((pred == split.y).mean())


# --------------------------------------------------------------------------- export and measurement


def export(model: nn.Module, shape: tuple[int, ...], path: Path) -> None:
    model.eval()
    dummy = torch.zeros(shape, dtype=torch.float32)
    torch.onnx.export(
        model,
        (dummy,),
        str(path),
        dynamo=False,
        opset_version=OPSET,
        input_names=["input"],
        output_names=["logits"],
        do_constant_folding=True,
    )
    onnx.save(fold_constants(onnx.load(str(path))), str(path))


def fold_constants(m: onnx.ModelProto) -> onnx.ModelProto:
    """Fold what the legacy exporter leaves computed at run time (F.pad's pads arithmetic,
    Shape-of-a-static-tensor chains for flatten/reshape) with edgert's own pass, so Pad gets a
    plain int64 ``pads`` initializer and Reshape a plain shape."""
    from edgert.compress.graph import fold_static_shapes

    m = fold_static_shapes(m)
    # The exporter could not see through the unfolded pads, so it may have declared a symbolic
    # batch on the output ("Gemmlogits_dim_0"); the model is batch 1, so write the inferred shape.
    inferred = onnx.shape_inference.infer_shapes(m, strict_mode=True)
    for out, inf in zip(m.graph.output, inferred.graph.output, strict=True):
        dims = inf.type.tensor_type.shape.dim
        if dims and all(d.HasField("dim_value") for d in dims):
            out.type.tensor_type.shape.CopyFrom(inf.type.tensor_type.shape)
    onnx.checker.check_model(m, full_check=True)
    return m


def count_params(m: onnx.ModelProto) -> int:
    """Elements of the floating-point initializers (weights, biases, BN statistics, embeddings)."""
    total = 0
    for init in m.graph.initializer:
        if init.data_type in (onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16, onnx.TensorProto.DOUBLE):
            total += int(np.prod(init.dims))
    return total


def count_macs(m: onnx.ModelProto) -> int:
    """Multiply-accumulates of Conv, Gemm and MatMul nodes, from the inferred shapes."""
    m = onnx.shape_inference.infer_shapes(m, strict_mode=True)
    shapes: dict[str, list[int]] = {}
    for vi in list(m.graph.input) + list(m.graph.value_info) + list(m.graph.output):
        dims = vi.type.tensor_type.shape.dim
        shapes[vi.name] = [d.dim_value for d in dims]
    for init in m.graph.initializer:
        shapes[init.name] = list(init.dims)

    def shape(name: str) -> list[int]:
        s = shapes.get(name)
        if s is None or any(d <= 0 for d in s):
            raise RuntimeError(f"MAC counter: unknown shape for {name!r}")
        return s

    macs = 0
    for node in m.graph.node:
        if node.op_type == "Conv":
            w = shape(node.input[1])  # (cout, cin/groups, *kernel)
            out = shape(node.output[0])
            macs += int(np.prod(out)) * int(np.prod(w[1:]))
        elif node.op_type == "Gemm":
            a = shape(node.input[0])
            trans_a = next((at.i for at in node.attribute if at.name == "transA"), 0)
            k = a[0] if trans_a else a[1]
            macs += int(np.prod(shape(node.output[0]))) * k
        elif node.op_type == "MatMul":
            a = shape(node.input[0])
            k = a[-1]
            macs += int(np.prod(shape(node.output[0]))) * k
    return macs


def ort_accuracy(path: Path, split) -> tuple[float, np.ndarray]:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 2
    sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    preds = np.empty(len(split.x), dtype=np.int64)
    for i in range(len(split.x)):
        (logits,) = sess.run(["logits"], {"input": split.x[i : i + 1]})
        preds[i] = int(np.argmax(logits[0]))
    return float((preds == split.y).mean()), preds


def write_card(spec: Spec, meta: dict, data: dict, folder: Path) -> None:
    shape = meta["input"]["shape"]
    n = {k: len(v.x) for k, v in data.items()}
    if spec.dataset == "digits":
        data_doc = (
            "scikit-learn's bundled handwritten digits (1797 8x8 images, 10 classes), scaled to [0, 1]"
            + (f" and upsampled to {shape[2]}x{shape[3]} by pixel repetition" if shape[2] != 8 else "")
            + f" (`edgert.zoo.datasets.digits({spec.dataset_args['size']})`)."
        )
        input_doc = (
            f"`input`: float32 `{shape}` (NCHW, one grey image, values in [0, 1], 0 = background, "
            f"1 = ink)."
        )
    else:
        data_doc = (
            "seeded keyword-spotting-like streams (`edgert.zoo.datasets.kws()`): 3000 samples of 8 channels "
            "x 64 time steps of coloured noise; classes 1-5 each add one fixed smooth 12-step multichannel "
            "pattern at a random position and amplitude; class 0 is noise only."
        )
        input_doc = f"`input`: float32 `{shape}` (batch, channels, time), unnormalised signal values."
    acc = meta["float_accuracy"]
    text = f"""# {spec.name}

**Task:** {spec.task}.

## Data and split
Data: {data_doc}

Fixed, non-overlapping splits: train {n['train']}, calib {n['calib']}, val {n['val']} samples. The model was
trained on `train` only; `calib` is for compression passes; accuracy is measured on `val`.

## Input and output
- {input_doc} Fixed batch 1.
- `logits`: float32 `[1, {spec.classes}]`, unnormalised class scores; the prediction is the argmax.

## Accuracy
Float accuracy on `val`: **{acc:.4f}** ({round(acc * n['val'])}/{n['val']}), measured with onnxruntime on this
`model.onnx`, one sample at a time.

## Size
- Parameters: {meta['params']:,} (elements of the floating-point ONNX initializers; the exporter folds
  each eval-mode BatchNorm into the preceding Conv, so there are no separate BN statistics)
- MACs per inference: {meta['macs']:,} (Conv, Gemm and MatMul)
- ONNX: opset {OPSET}, {(folder / 'model.onnx').stat().st_size:,} bytes

## Architecture
{spec.summary}

## Training
AdamW (weight decay {spec.weight_decay}), {meta['train']['epochs']} epochs, batch {spec.batch}, one-cycle
learning-rate schedule (max lr {spec.lr}), label smoothing 0.05, augmentation: {spec.augment_doc}; seed {SEED},
deterministic algorithms, 2 CPU threads ({meta['train']['seconds']:.0f} s on the machine that produced it).
Exported in eval mode with `torch.onnx.export(..., dynamo=False, opset_version={OPSET},
do_constant_folding=True)`, fixed batch 1; the constant subgraphs the exporter leaves (pads and
reshape-shape arithmetic) are then folded into initializers by `fold_constants`.

## Retrain
```
python3 -m venv torch-venv
torch-venv/bin/pip install torch==2.13.0 onnx numpy scikit-learn onnxruntime
torch-venv/bin/pip install --no-deps -e .
torch-venv/bin/python tools/train_zoo.py {spec.name}
```
"""
    (folder / "card.md").write_text(text)


def build_one(spec: Spec) -> dict:
    print(f"== {spec.name}", flush=True)
    setup_torch()
    data = load(spec)
    model = spec.build()
    seconds = train(spec, model, data)
    model.eval()
    folder = ZOO / spec.name
    folder.mkdir(parents=True, exist_ok=True)
    onnx_path = folder / "model.onnx"
    shape = (1, *data["val"].x.shape[1:])
    export(model, shape, onnx_path)

    acc, preds = ort_accuracy(onnx_path, data["val"])
    with torch.no_grad():
        torch_preds = model(torch.from_numpy(data["val"].x)).argmax(1).numpy()
    agree = float((preds == torch_preds).mean())
    m = onnx.load(str(onnx_path))
    meta = {
        "name": spec.name,
        "task": spec.task,
        "dataset": spec.dataset,
        "dataset_args": spec.dataset_args,
        "input": {"name": "input", "shape": list(shape), "dtype": "float32"},
        "output": "logits",
        "classes": spec.classes,
        "float_accuracy": round(acc, 4),
        "params": count_params(m),
        "macs": count_macs(m),
        "train": {
            "epochs": spec.epochs,
            "optimizer": f"AdamW(lr={spec.lr}, weight_decay={spec.weight_decay}), one-cycle schedule",
            "seed": SEED,
            "seconds": round(seconds, 1),
        },
    }
    (folder / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")
    write_card(spec, meta, data, folder)
    size = onnx_path.stat().st_size
    status = "ok" if acc >= spec.target else f"BELOW TARGET {spec.target}"
    print(f"   {spec.name}: val acc (onnxruntime) {acc:.4f} [{status}], torch/ort agreement {agree:.4f}, "
          f"params {meta['params']}, MACs {meta['macs']}, onnx {size} B, {seconds:.1f} s", flush=True)
    return {**meta, "onnx_bytes": size}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("names", nargs="*", help=f"models to train (default: all of {', '.join(SPECS)})")
    args = ap.parse_args(argv)
    names = args.names or list(SPECS)
    unknown = [n for n in names if n not in SPECS]
    if unknown:
        print(f"unknown model(s): {', '.join(unknown)}; known: {', '.join(SPECS)}", file=sys.stderr)
        return 2
    rows = [build_one(SPECS[n]) for n in names]
    print("\nname                 params      MACs  val_acc  onnx_bytes  seconds")
    for r in rows:
        print(f"{r['name']:<20} {r['params']:>6} {r['macs']:>9}  {r['float_accuracy']:.4f}  {r['onnx_bytes']:>10}"
              f"  {r['train']['seconds']:>7.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
