"""An RD4AD-size reference network for timing only (random weights): WideResNet-50-2 layers 1-3
teacher, OCBE bottleneck (layer4-like, 3 blocks) and the mirrored de-WideResNet decoder, as in
anomalib's Reverse Distillation. Written here because torchvision does not import beside the pinned torch.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

EXPANSION = 4
WIDTH_MULT = 2  # wide_resnet50_2


class Bottleneck(nn.Module):
    def __init__(self, cin: int, planes: int, stride: int = 1, up: bool = False):
        super().__init__()
        w = planes * WIDTH_MULT
        cout = planes * EXPANSION
        self.conv1 = nn.Sequential(nn.Conv2d(cin, w, 1, bias=False), nn.BatchNorm2d(w), nn.ReLU(inplace=True))
        mid = nn.ConvTranspose2d(w, w, 2, 2, bias=False) if up and stride == 2 else nn.Conv2d(w, w, 3, stride, 1, bias=False)
        self.conv2 = nn.Sequential(mid, nn.BatchNorm2d(w), nn.ReLU(inplace=True))
        self.conv3 = nn.Sequential(nn.Conv2d(w, cout, 1, bias=False), nn.BatchNorm2d(cout))
        self.short = None
        if stride != 1 or cin != cout:
            sc = nn.ConvTranspose2d(cin, cout, 2, 2, bias=False) if up and stride == 2 else nn.Conv2d(cin, cout, 1, stride, bias=False)
            self.short = nn.Sequential(sc, nn.BatchNorm2d(cout))

    def forward(self, x):
        idt = x if self.short is None else self.short(x)
        return F.relu(self.conv3(self.conv2(self.conv1(x))) + idt)


def layer(cin: int, planes: int, blocks: int, stride: int, up: bool = False) -> nn.Sequential:
    mods = [Bottleneck(cin, planes, stride, up)] + [Bottleneck(planes * EXPANSION, planes) for _ in range(blocks - 1)]
    return nn.Sequential(*mods)


class ReferenceRD4AD(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 64, 7, 2, 3, bias=False), nn.BatchNorm2d(64), nn.ReLU(inplace=True),
                                  nn.MaxPool2d(3, 2, 1))
        self.layer1, self.layer2, self.layer3 = layer(64, 64, 3, 1), layer(256, 128, 4, 2), layer(512, 256, 6, 2)
        # OCBE: fuse the three scales at stride 16, then a layer4-like block stack to stride 32
        self.f1 = nn.Sequential(nn.Conv2d(256, 512, 3, 2, 1, bias=False), nn.BatchNorm2d(512), nn.ReLU(inplace=True),
                                nn.Conv2d(512, 1024, 3, 2, 1, bias=False), nn.BatchNorm2d(1024), nn.ReLU(inplace=True))
        self.f2 = nn.Sequential(nn.Conv2d(512, 1024, 3, 2, 1, bias=False), nn.BatchNorm2d(1024), nn.ReLU(inplace=True))
        self.bn = layer(3072, 512, 3, 2)
        # decoder block counts 3, 4, 6 as in RD4AD de_wide_resnet50_2 (layers=[3, 4, 6, 3])
        self.de3, self.de2, self.de1 = layer(2048, 256, 3, 2, up=True), layer(1024, 128, 4, 2, up=True), layer(512, 64, 6, 2, up=True)

    def forward(self, x):
        t1 = self.layer1(self.stem(x))
        t2 = self.layer2(t1)
        t3 = self.layer3(t2)
        e = self.bn(torch.cat([self.f1(t1), self.f2(t2), t3], 1))
        s3 = self.de3(e)
        s2 = self.de2(s3)
        s1 = self.de1(s2)
        return tuple(1 - F.cosine_similarity(t, s, dim=1).unsqueeze(1) for t, s in ((t1, s1), (t2, s2), (t3, s3)))
