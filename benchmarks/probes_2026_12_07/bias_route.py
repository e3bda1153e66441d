"""Probe: the MMD's gradient reaches only a per-batch shift of the encoder's first hidden layer."""
import sys, time, math
import numpy as np, pandas as pd, torch, scvi
import torch.nn.functional as F
from torch import nn
from pathlib import Path; sys.path[:0] = [str(Path(__file__).parent), str(Path(__file__).parents[1])]
from scvi_mmd import SCVIMMD
from scvi_mmd.module import MMDVAE


class BiasRouteVAE(MMDVAE):
    route = "bias"  # "bias": MMD grads to the shift only; "all": shift + everything (control)

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        layer0 = self.z_encoder.encoder.fc_layers[0]
        self.batch_shift = nn.Embedding(self.n_batch, layer0[0].out_features)
        nn.init.zeros_(self.batch_shift.weight)
        self._batch = None
        layer0[0].register_forward_hook(self._hook)

    def _hook(self, mod, inp, out):
        if self._batch is None:
            return out
        self._h1 = out.detach()
        return out + self.batch_shift(self._batch.reshape(-1).long())

    def _regular_inference(self, x, batch_index, *args, **kwargs):
        self._batch = batch_index
        try:
            return super()._regular_inference(x, batch_index, *args, **kwargs)
        finally:
            self._batch = None

    def mmd_codes(self, inference_outputs):
        if self.route == "all":
            return super().mmd_codes(inference_outputs)
        layer0 = self.z_encoder.encoder.fc_layers[0]
        bn = layer0[1]
        h = self._h1 + self.batch_shift(self._cur_batch.reshape(-1).long())
        h = F.batch_norm(h, None, None, bn.weight.detach(), bn.bias.detach(), True, 0.0, bn.eps)
        h = F.relu(h)
        me = self.z_encoder.mean_encoder
        return F.linear(h, me.weight.detach(), me.bias.detach())

    def loss(self, tensors, *args, **kwargs):
        from scvi import REGISTRY_KEYS
        self._cur_batch = tensors[REGISTRY_KEYS.BATCH_KEY]
        return super().loss(tensors, *args, **kwargs)


class BiasRouteSCVIMMD(SCVIMMD):
    _module_cls = BiasRouteVAE
