"""Qualified names for modules and parameters, found without a reference to the model.

The first time a module with parameters runs and is not yet known, it is a root: all
its submodules and parameters get their qualified names from it. Its forward pre-hook
fires before any child's, so children are named before they run. Later roots are
prefixed with their class name and index (``Discriminator1.fc``). A root that contains
earlier roots takes them over: their modules are renamed under it (a parametrization or a
submodule that ran on its own before the model did). Names are the user's:

- ``torch.compile(model)`` returns an ``OptimizedModule`` whose ``_orig_mod`` is the model:
  ``_orig_mod.`` never appears in a name.
- A root is named from the outermost module that holds it, when there is one: a
  LightningModule whose ``training_step`` calls ``self.net(x)`` never runs itself, yet its
  layers are ``net.0`` (as the Lightning callback, which is handed the LightningModule,
  names them), not ``0``. The holder is found by following ``_modules`` back (gc
  referrers, for the first OWNER_SEARCHES roots only: each search walks the heap once).
- Parametrization internals (``ParametrizationList``, and what runs inside it) never become
  roots; a parametrized weight is ``fc.parametrizations.weight.original`` in layer ``fc``.

Entries are weak: gradscope never keeps a user's model alive.
"""

from __future__ import annotations

import gc
import weakref
from typing import Any

import torch
from torch import nn
from torch.nn.utils import parametrize
from torch.utils.weak import WeakIdKeyDictionary

ORIG_MOD = "_orig_mod"
OWNER_SEARCHES = 4


def holder(module: nn.Module) -> nn.Module | None:
    """The one module whose ``_modules`` holds ``module`` (None for none, or for several):
    module <- its ``_modules`` dict <- the holder's ``__dict__`` <- the holder."""
    tables = {id(t): t for t in gc.get_referrers(module) if isinstance(t, dict)}
    if not tables:
        return None
    level = gc.get_referrers(*tables.values())
    dicts = [d for d in level if isinstance(d, dict) and d is not tables]
    found = {id(o): o for o in level + (gc.get_referrers(*dicts) if dicts else [])
             if isinstance(o, nn.Module) and id(o.__dict__.get("_modules")) in tables}
    return next(iter(found.values())) if len(found) == 1 else None


def outermost_holder(module: nn.Module, depth: int = 16) -> nn.Module:
    """The outermost module that holds ``module`` through its submodules (``module`` itself
    when none does)."""
    for _ in range(depth):
        parent = holder(module)
        if parent is None or is_parametrization(parent):
            break
        module = parent
    return module


def is_compiled(module: nn.Module) -> bool:
    """An ``OptimizedModule`` (``torch.compile(m)``) or a module compiled in place (``m.compile()``)."""
    return ORIG_MOD in module._modules or module.__dict__.get("_compiled_call_impl") is not None


def user_name(name: str) -> str:
    """The name without torch.compile's ``_orig_mod`` segments."""
    return ".".join(part for part in name.split(".") if part != ORIG_MOD)


def owner_layer(name: str) -> str:
    """The layer of a module name: a parametrization's owner (``fc.parametrizations.weight`` -> ``fc``)."""
    parts = name.split(".")
    if "parametrizations" in parts:
        return ".".join(parts[: parts.index("parametrizations")])
    return name


def is_parametrization(module: nn.Module) -> bool:
    return isinstance(module, parametrize.ParametrizationList)


class ModuleNames:
    def __init__(self) -> None:
        self._modules: weakref.WeakKeyDictionary[nn.Module, str] = weakref.WeakKeyDictionary()
        self._owner: weakref.WeakKeyDictionary[nn.Module, int] = weakref.WeakKeyDictionary()
        # tensors compare by value, so parameters are keyed by identity
        self._params: WeakIdKeyDictionary = WeakIdKeyDictionary()
        self._roots: list[weakref.ref[nn.Module]] = []
        self._searches = 0

    def add_running(self, module: nn.Module) -> bool:
        """A module that runs and is not yet named: name it from its outermost holder."""
        if self._searches < OWNER_SEARCHES and module not in self._modules and not is_parametrization(module):
            if next(module.parameters(), None) is not None:
                self._searches += 1
                module = outermost_holder(module)
        return self.add_root(module)

    def add_root(self, root: nn.Module) -> bool:
        """Name ``root``'s tree unless known; returns True when a new root was added."""
        ddp = isinstance(root, nn.parallel.DistributedDataParallel)
        if ORIG_MOD in root._modules or ddp:  # torch.compile(model), DDP(model): name the model
            inner = root._modules["module" if ddp else ORIG_MOD]
            added = self.add_root(inner)
            if inner in self._modules:
                self._modules[root] = self._modules[inner]
            return added
        if root in self._modules or is_parametrization(root) or next(root.parameters(), None) is None:
            return False
        taken = {id(r) for r in self.roots() if any(m is r for m in root.modules())}
        self._roots = [ref for ref in self._roots if (r := ref()) is not None and id(r) not in taken]
        prefix = f"{type(root).__name__}{len(self._roots)}." if self._roots else ""
        self._roots.append(weakref.ref(root))
        for name, module in root.named_modules(remove_duplicate=False):
            if module in self._modules and self._owner.get(module) not in taken:
                continue
            self._modules[module] = user_name(prefix + name).rstrip(".")
            self._owner[module] = id(root)
            for param_name, param in module.named_parameters(recurse=False):
                if param in self._params and self._params[param][2] not in taken:
                    continue  # shared (tied): named by the first module that holds it
                layer = self._modules[module]
                self._params[param] = (owner_layer(layer), f"{layer}.{param_name}".lstrip("."), id(root))
        return True

    def module(self, module: nn.Module) -> str | None:
        return self._modules.get(module)

    def param(self, param: torch.Tensor) -> tuple[str, str]:
        """(layer, parameter) names; parameters outside every known root get a stand-in."""
        found = self._params.get(param)
        if found is None:
            found = ("<unnamed>", f"<unnamed>.{len(self._params)}", None)
            self._params[param] = found
        return found[0], found[1]

    def roots(self) -> list[nn.Module]:
        return [root for ref in self._roots if (root := ref()) is not None]

    def parameters(self) -> list[torch.Tensor]:
        """Every distinct trainable parameter of the known roots, in registration order."""
        seen: dict[int, torch.Tensor] = {}
        for root in self.roots():
            for param in root.parameters():
                if param.requires_grad:
                    seen.setdefault(id(param), param)
        return list(seen.values())

    def layer_table(self, coverage) -> list[dict]:
        """meta.json's layer table: one entry per module with direct parameters (a
        parametrized module's entry also lists ``parametrizations.<name>.original``)."""
        table = []
        for root in self.roots():
            for module in root.modules():
                params = layer_parameters(module)
                if is_parametrization(module) or not params:
                    continue
                judged = coverage(module)
                name = self._modules.get(module, "?")
                owners = {self.param(p)[0] for _, p in params}
                entry = {
                    "name": name,
                    "type": type(module).__name__,
                    "params": [{"name": n, "shape": list(p.shape), "numel": p.numel()} for n, p in params],
                    "numel": sum(p.numel() for _, p in params),
                    "method": judged.method,
                    "covered": judged.covered,
                    "reason": judged.reason,
                }
                if name not in owners and len(owners) == 1:  # tied: reported under the first user
                    entry["reported_under"] = owners.pop()
                table.append(entry)
        return table


def layer_parameters(module: nn.Module) -> list[tuple[str, Any]]:
    """A layer's parameters: its direct ones and, when parametrized, the originals."""
    params = list(module.named_parameters(recurse=False))
    if parametrize.is_parametrized(module):
        for attr, plist in module.parametrizations.items():
            params += [(f"parametrizations.{attr}.{n}", p) for n, p in plist.named_parameters(recurse=False)]
    return params
