"""Export narrow, low-resolution versions of torchvision CNNs to ONNX for the pruning tests.

The graphs are torchvision's own modules (ResNet BasicBlock/Bottleneck with
downsample, MobileNetV2 inverted residuals, MobileNetV3 with
squeeze-excitation and hardswish, ShuffleNetV2 with channel split and
shuffle, SqueezeNet Fire modules with concat) exported by torch's ONNX
exporter exactly as users export them; only the channel counts and depths are
small so the files stay a few tens of kB. Weights are random (seed 0); the
BatchNorm statistics are re-estimated on random inputs so activations have
trained-like scales.

Needs torch and torchvision (a separate venv, see tools/export_torchvision.py):
    tv-venv/bin/python tools/export_tiny_cnns.py tests/data/tiny
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path


def models():
    import torch
    from torch import nn
    from torchvision.models import mobilenetv2, mobilenetv3, resnet, shufflenetv2, squeezenet

    def tiny_resnet(block, widths):
        m = resnet.ResNet(block, [1, 1, 1, 1], num_classes=10)
        m.inplanes = 8
        m.conv1 = nn.Conv2d(3, 8, 3, 1, 1, bias=False)
        m.bn1 = nn.BatchNorm2d(8)
        m.layer1 = m._make_layer(block, widths[0], 1)
        m.layer2 = m._make_layer(block, widths[1], 1, stride=2)
        m.layer3 = m._make_layer(block, widths[2], 1, stride=2)
        m.layer4 = m._make_layer(block, widths[3], 1, stride=2)
        m.fc = nn.Linear(widths[3] * block.expansion, 10)
        return m

    def tiny_squeezenet():
        m = squeezenet.SqueezeNet("1_1", num_classes=10)
        m.features = nn.Sequential(
            nn.Conv2d(3, 16, 3, stride=2), nn.ReLU(inplace=True),
            nn.MaxPool2d(3, 2, ceil_mode=True),
            squeezenet.Fire(16, 8, 16, 16), squeezenet.Fire(32, 8, 16, 16),
            nn.MaxPool2d(3, 2, ceil_mode=True),
            squeezenet.Fire(32, 16, 24, 24),
        )
        m.classifier[1] = nn.Conv2d(48, 10, 1)
        return m

    def tiny_mobilenet_v2():
        from torchvision.ops.misc import Conv2dNormActivation

        m = mobilenetv2.MobileNetV2(num_classes=10, round_nearest=4,
                                    inverted_residual_setting=[[1, 8, 1, 1], [6, 16, 2, 2], [6, 24, 2, 2], [6, 32, 1, 2]])
        m.features[-1] = Conv2dNormActivation(32, 64, 1, activation_layer=nn.ReLU6)  # was 1280 wide
        m.classifier[1] = nn.Linear(64, 10)
        return m

    v3 = mobilenetv3.InvertedResidualConfig
    v3_setting = [
        v3(16, 3, 16, 16, True, "RE", 2, 1, 1.0),
        v3(16, 3, 48, 24, False, "RE", 2, 1, 1.0),
        v3(24, 5, 64, 32, True, "HS", 2, 1, 1.0),
        v3(32, 5, 96, 32, True, "HS", 1, 1, 1.0),
    ]
    return {
        "resnet_basic": tiny_resnet(resnet.BasicBlock, [8, 16, 32, 32]),
        "resnet_bottleneck": tiny_resnet(resnet.Bottleneck, [4, 8, 8, 16]),
        "mobilenet_v2": tiny_mobilenet_v2(),
        "mobilenet_v3": mobilenetv3.MobileNetV3(v3_setting, last_channel=64, num_classes=10),
        "shufflenet_v2": shufflenetv2.ShuffleNetV2([1, 2, 1], [8, 16, 32, 48, 64], num_classes=10),
        "squeezenet": tiny_squeezenet(),
    }, torch


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out_dir", type=Path)
    args = parser.parse_args(argv)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    nets, torch = models()
    for name, net in nets.items():
        torch.manual_seed(0)
        for p in net.parameters():  # re-draw every weight with the fixed seed (module order)
            torch.nn.init.normal_(p, std=(2.0 / max(p[0].numel(), 1)) ** 0.5) if p.dim() > 1 else None
        net.train()
        with torch.no_grad():
            for _ in range(4):
                net(torch.randn(8, 3, 32, 32))
        net.eval()
        path = args.out_dir / f"{name}.onnx"
        torch.onnx.export(net, torch.randn(1, 3, 32, 32), str(path), input_names=["input"], output_names=["output"],
                          opset_version=17, dynamo=False)
        print(f"{path}: {path.stat().st_size:,} bytes")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
