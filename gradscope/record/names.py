"""Qualified names for modules and parameters, found without a reference to the model.

The first time a module with parameters runs and is not yet known, it is a root: all
its submodules and parameters get their qualified names from it. Its forward pre-hook
fires before any child's, so children are named before they run. Later roots are
prefixed with their class name and index (``Discriminator1.fc``). Entries are weak:
gradscope never keeps a user's model alive.
"""

from __future__ import annotations

import weakref

import torch
from torch import nn
from torch.utils.weak import WeakIdKeyDictionary


class ModuleNames:
    def __init__(self) -> None:
        self._modules: weakref.WeakKeyDictionary[nn.Module, str] = weakref.WeakKeyDictionary()
        # tensors compare by value, so parameters are keyed by identity
        self._params: WeakIdKeyDictionary = WeakIdKeyDictionary()
        self._roots: list[weakref.ref[nn.Module]] = []

    def add_root(self, root: nn.Module) -> bool:
        """Name ``root``'s tree unless known; returns True when a new root was added."""
        if root in self._modules or next(root.parameters(), None) is None:
            return False
        prefix = f"{type(root).__name__}{len(self._roots)}." if self._roots else ""
        self._roots.append(weakref.ref(root))
        for name, module in root.named_modules():
            self._modules.setdefault(module, (prefix + name).rstrip("."))
            for param_name, param in module.named_parameters(recurse=False):
                layer = self._modules[module]
                self._params.setdefault(param, (layer, f"{layer}.{param_name}".lstrip(".")))
        return True

    def module(self, module: nn.Module) -> str | None:
        return self._modules.get(module)

    def param(self, param: torch.Tensor) -> tuple[str, str]:
        """(layer, parameter) names; parameters outside every known root get a stand-in."""
        found = self._params.get(param)
        if found is None:
            found = ("<unnamed>", f"<unnamed>.{len(self._params)}")
            self._params[param] = found
        return found

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
        """meta.json's layer table: one entry per module with direct parameters."""
        table = []
        for root in self.roots():
            for module in root.modules():
                params = list(module.named_parameters(recurse=False))
                if not params:
                    continue
                judged = coverage(module)
                table.append(
                    {
                        "name": self._modules.get(module, "?"),
                        "type": type(module).__name__,
                        "params": [
                            {"name": n, "shape": list(p.shape), "numel": p.numel()}
                            for n, p in params
                        ],
                        "numel": sum(p.numel() for _, p in params),
                        "method": judged.method,
                        "covered": judged.covered,
                        "reason": judged.reason,
                    }
                )
        return table
