"""The network: backbone bodies and the lesson's SSD head; raw activations out."""

from __future__ import annotations

from detector.model.backbones import BACKBONES, Backbone, backbone_stats, build_backbone
from detector.model.head import SSDHead
from detector.model.ssd import SSD, build_ssd

__all__ = ["BACKBONES", "SSD", "Backbone", "SSDHead", "backbone_stats", "build_backbone", "build_ssd"]
