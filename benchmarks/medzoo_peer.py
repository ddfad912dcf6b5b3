"""MedicalZoo's own PyTorch modules as the peers of medjax's zoo, loaded with medjax's weights.

`benchmarks/models.py --medzoo DIR` runs each network twice: medjax's, then MedicalZoo's module
(`lib/medzoo` of a MedicalZoo-pytorch checkout at DIR, built as its `create_model` builds it for
2 input channels and 4 classes) with the same weights, so that both compute the same function
(the worker prints the largest difference of their logits) and the times compare like for like.

The weights are matched by the order in which the layers run: medjax's variables come in the
order its modules were created (flax's compact modules are created when first called) and
MedicalZoo's layers are recorded by forward hooks on a first call. Each pair must agree in kind
(convolution, transposed convolution, BatchNorm, PReLU) and shape; anything else is an error that
names both layers. torch is imported lazily.
"""

from __future__ import annotations

import os
import sys
import types
from typing import Any

import numpy as np

# registry name -> (lib/medzoo module, class, constructor arguments), as MedicalZoo's
# `lib/medzoo/__init__.py: create_model` builds them with inChannels=2, classes=4.
# DENSENET2 (`DualPathDenseNet`) is left out: MedicalZoo's own module cannot run (its paths
# produce 426 channels where its 1x1x1 convolution takes 400; see tests/test_model_zoo.py).
MODELS = {
    "VNET": ("Vnet", "VNet", {"in_channels": 2, "elu": False, "classes": 4}),
    "VNET2": ("Vnet", "VNetLight", {"in_channels": 2, "elu": False, "classes": 4}),
    "DENSENET1": ("Densenet3D", "SinglePathDenseNet", {"in_channels": 2, "classes": 4}),
    "DENSENET3": ("Densenet3D", "DualSingleDenseNet",
                  {"in_channels": 2, "drop_rate": 0.1, "classes": 4}),
    "HYPERDENSENET": ("HyperDensenet", "HyperDenseNet_2Mod", {"classes": 4}),
}
# MedicalZoo's DualSingleDenseNet applies `early_conv_1` to both modalities (its `early_conv_2`
# never runs); medjax's DENSENET3 has one early layer per modality. With medjax's `early2` given
# `early1`'s weights the two compute the same function, at the same cost.
TIED = {"DENSENET3": {"early2": "early1"}}


def import_class(root: str, name: str):
  """MedicalZoo's module class for registry `name` from the checkout at `root`.

  `lib/medzoo/__init__.py` imports every network, COVID-Net's torchvision included; the package
  is registered without running it, so only the network's own file is imported.
  """
  module_name, class_name, _ = MODELS[name]
  medzoo_dir = os.path.join(os.path.abspath(os.path.expanduser(root)), "lib", "medzoo")
  if not os.path.isfile(os.path.join(medzoo_dir, module_name + ".py")):
    raise FileNotFoundError(f"--medzoo {root}: no lib/medzoo/{module_name}.py there; expected a "
                            "checkout of https://github.com/black0017/MedicalZoo-pytorch.")
  for package, path in (("lib", os.path.dirname(medzoo_dir)), ("lib.medzoo", medzoo_dir)):
    if package not in sys.modules:
      module = types.ModuleType(package)
      module.__path__ = [path]
      sys.modules[package] = module
  module = __import__(f"lib.medzoo.{module_name}", fromlist=[class_name])
  return getattr(module, class_name)


def build(root: str, name: str):
  """MedicalZoo's module for registry `name`, NCDHW."""
  return import_class(root, name)(**MODELS[name][2])


def medjax_layers(variables: dict[str, Any]) -> list[tuple[str, dict[str, np.ndarray]]]:
  """medjax's layers in creation order: `(path, {name: array})`, BatchNorm statistics merged in.

  `variables` must keep flax's insertion order: take it from `model.init` in Python (e.g. while
  tracing), not from the output of a jitted function (pytrees come back with sorted keys).
  """
  stats = variables.get("batch_stats", {})
  out = []

  def walk(tree, stat_tree, path):
    leaves = {k: v for k, v in tree.items() if not isinstance(v, dict)}
    if leaves:
      leaves.update({k: v for k, v in (stat_tree or {}).items() if not isinstance(v, dict)})
      out.append(("/".join(path), leaves))
    for k, v in tree.items():
      if isinstance(v, dict):
        walk(v, (stat_tree or {}).get(k), path + (k,))

  walk(variables["params"], stats, ())
  return out


def _lookup(tree: dict[str, Any], path: str) -> dict[str, Any]:
  for key in path.split("/"):
    tree = tree[key]
  return tree


def medjax_variables(name: str, model, x, seed: int = 0):
  """medjax's variables for the comparison, and its layers in creation order.

  BatchNorm running statistics and scales and PReLU slopes are drawn at random (rather than
  left at 0 / 1 / 0.25), so that the comparison of the two networks' logits also checks them.

  Returns:
    `(variables, layers)`: numpy variables for `model.apply`, and `medjax_layers` without the
    layers `TIED` to another (they hold that one's weights).
  """
  import jax  # pylint: disable=g-import-not-at-top
  paths = []

  def init(x):
    variables = model.init(jax.random.key(seed), x, train=False)
    paths.extend(p for p, _ in medjax_layers(variables))  # insertion order, while tracing
    return variables

  variables = jax.tree.map(np.array, jax.device_get(jax.jit(init)(x)))
  rng = np.random.default_rng(seed)
  for path in paths:
    params = _lookup(variables["params"], path)
    if "scale" in params:
      stats = _lookup(variables["batch_stats"], path)
      stats["mean"] = rng.normal(0.0, 0.1, stats["mean"].shape).astype(np.float32)
      stats["var"] = rng.uniform(0.5, 1.5, stats["var"].shape).astype(np.float32)
      params["scale"] = rng.uniform(0.5, 1.5, params["scale"].shape).astype(np.float32)
    if "negative_slope" in params:
      params["negative_slope"] = rng.uniform(0.0, 0.5, params["negative_slope"].shape).astype(
          np.float32)
  tied = TIED.get(name, {})
  for copy, source in tied.items():
    for collection in variables:
      if copy in variables[collection]:
        variables[collection][copy] = jax.tree.map(np.copy, variables[collection][source])
  layers = []
  for path in paths:
    if path.split("/")[0] in tied:
      continue
    arrays = dict(_lookup(variables["params"], path))
    if "scale" in arrays:
      arrays.update(_lookup(variables["batch_stats"], path))
    layers.append((path, arrays))
  return variables, layers


def save_layers(path: str, layers: list[tuple[str, dict[str, np.ndarray]]]) -> None:
  """`layers` to an .npz whose keys keep their order (`0003|down1_conv|kernel`)."""
  np.savez(path, **{f"{i:04d}|{p}|{k}": a for i, (p, arrays) in enumerate(layers)
                    for k, a in arrays.items()})


def load_layers(path: str) -> list[tuple[str, dict[str, np.ndarray]]]:
  """The layers `save_layers` wrote, in order."""
  layers: dict[tuple[int, str], dict[str, np.ndarray]] = {}
  with np.load(path) as data:
    for key in data.files:
      index, layer, name = key.split("|")
      layers.setdefault((int(index), layer), {})[name] = data[key]
  return [(layer, arrays) for (_, layer), arrays in sorted(layers.items())]


def _torch_layers_in_call_order(model, x) -> list[tuple[str, Any]]:
  import torch  # pylint: disable=g-import-not-at-top
  kinds = (torch.nn.Conv3d, torch.nn.ConvTranspose3d, torch.nn.BatchNorm3d, torch.nn.PReLU)
  names = {m: n for n, m in model.named_modules()}
  order, handles = [], []
  for module in model.modules():
    if isinstance(module, kinds):
      handles.append(module.register_forward_hook(
          lambda m, _i, _o: order.append(m) if m not in order else None))
  model.eval()
  with torch.inference_mode():
    model(x)
  for h in handles:
    h.remove()
  return [(names[m], m) for m in order]


def _as_torch(module, path: str, arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
  """medjax arrays of one layer, laid out as the torch module's parameters and buffers."""
  import torch  # pylint: disable=g-import-not-at-top
  if isinstance(module, torch.nn.BatchNorm3d):
    return {"weight": arrays["scale"], "bias": arrays["bias"], "running_mean": arrays["mean"],
            "running_var": arrays["var"]}
  if isinstance(module, torch.nn.PReLU):
    return {"weight": arrays["negative_slope"]}
  kernel = arrays["kernel"]
  if kernel.ndim == 2:  # a 1x1x1 convolution stored as a Dense kernel [I, O]
    kernel = kernel[None, None, None]
  if isinstance(module, torch.nn.ConvTranspose3d):
    # torch: out[2i + p] += x[i] W[:, :, p]; flax's transposed convolution flips the kernel.
    weight = kernel[::-1, ::-1, ::-1].transpose(3, 4, 0, 1, 2)
  else:
    weight = kernel.transpose(4, 3, 0, 1, 2)
  out = {"weight": weight}
  if "bias" in arrays:
    out["bias"] = arrays["bias"]
  return out


def copy_weights(model, x, layers: list[tuple[str, dict[str, np.ndarray]]]) -> int:
  """Loads medjax's `layers` (`medjax_layers`) into MedicalZoo's `model`; returns the count.

  `x` is an NCDHW input for the hooks' first call.
  """
  import torch  # pylint: disable=g-import-not-at-top
  targets = _torch_layers_in_call_order(model, x)
  if len(targets) != len(layers):
    raise ValueError(f"medjax has {len(layers)} layers with weights, MedicalZoo's "
                     f"{type(model).__name__} runs {len(targets)}.")
  with torch.no_grad():
    for (tname, module), (jpath, arrays) in zip(targets, layers):
      for key, value in _as_torch(module, jpath, arrays).items():
        tensor = getattr(module, key)
        if tuple(tensor.shape) != value.shape:
          raise ValueError(f"medjax {jpath} {key} {value.shape} does not fit MedicalZoo "
                           f"{tname}.{key} {tuple(tensor.shape)}.")
        tensor.copy_(torch.from_numpy(np.array(value)))
  # PReLU modules that never ran (none in these networks) would keep PyTorch's values.
  return len(targets)
