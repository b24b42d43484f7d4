"""Idiom 2: torch.compile (backend="eager" on one nn.Linear; model.compile() on an MLP):
training identical, per-step scalars recorded, per-sample exact or layers not covered."""

from tests.conformance.suite import Conformance


class TestCompile(Conformance):
    idioms = ("compile_linear", "module_compile")
