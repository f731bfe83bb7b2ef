"""One folder, several frameworks: a library with several backends declares one variant per backend.

A fabricated folder declares two variants (DESCRIPTORS) that differ only in the backend variable their library reads
at import. Both are frameworks of their own on the command line; the registry sets each one's variable before the
folder's code is imported, worker processes get it, and a variant whose library this process already imported with
the other backend is unavailable here (a skip that says to run it alone), never run on the wrong backend.
"""

from __future__ import annotations

import os
import sys
import textwrap
import types
from pathlib import Path

import pytest

import bnparity.frameworks
from bnparity.frameworks import registry
from bnparity.suites.workers import worker_env

FOLDER = "numpyvariants"
VARIABLE = "BNPARITY_TEST_BACKEND"
LIBRARY = "bnparity_test_fake_library"  # the module whose import fixes the backend (a stand-in)

DESCRIPTOR = f'''
"""Two variants of one fabricated library (data only)."""

from bnparity.frameworks.descriptor import Framework, LayerImpl, ModelLayout

_LAYOUT = ModelLayout(conv_kernel="OIHW", dense_weight="(out, in)", bn_params="gamma, beta", bn_stats="mean, var",
                      activations="NCHW")
DESCRIPTORS = tuple(
    Framework(name=f"{FOLDER}-{{backend}}", display_name=f"Variants ({{backend}})", order=20 + i, pip_extra="x",
              distributions=("numpy",), color="#CC79A7", native_axis=1,
              layers=(LayerImpl("batchnorm", "builtin", "batchnorm", "BuiltinBatchNorm"),),
              model_layout=_LAYOUT, folder="{FOLDER}", environment=(("{VARIABLE}", backend),),
              fixed_at_import="{LIBRARY}", imported_with="{LIBRARY}:backend")
    for i, backend in enumerate(("a", "b")))
'''

BATCHNORM = f'''
"""Reports the backend it was imported under."""

import os

from bnparity.frameworks.base import LayerAdapter

BACKEND = os.environ["{VARIABLE}"]


class BuiltinBatchNorm(LayerAdapter):
    framework = "{FOLDER}-" + BACKEND
    normalization = "batchnorm"
    impl = "builtin"
    native_axis = 1

    def realize(self, spec, dtype):
        return spec

    def build(self, spec, *, shape, dtype, gamma, beta, use_defaults):
        raise NotImplementedError
'''


CONVENTION = f'''
"""Each variant's row: the baseline's under its own name (the variants differ here in ε only, to tell them apart)."""

import dataclasses

from bnparity.frameworks.conventions import convention
from bnparity.frameworks.registry import baseline

_BASE = convention(baseline().name)
CONVENTION = {{f"{FOLDER}-{{b}}": dataclasses.replace(_BASE, framework=f"{FOLDER}-{{b}}", eps=eps)
              for b, eps in (("a", 1e-3), ("b", 1e-5))}}
'''


@pytest.fixture
def variants(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[str, str]:
    folder = tmp_path / "frameworks" / FOLDER
    folder.mkdir(parents=True)
    (folder / "__init__.py").write_text('"""A fabricated library with two backends."""\n')
    for name, text in (("descriptor", DESCRIPTOR), ("batchnorm", BATCHNORM), ("convention", CONVENTION)):
        (folder / f"{name}.py").write_text(textwrap.dedent(text).lstrip())
    monkeypatch.setattr(bnparity.frameworks, "__path__", [*bnparity.frameworks.__path__, str(folder.parent)])
    monkeypatch.delenv(VARIABLE, raising=False)
    registry.descriptors.cache_clear()
    yield f"{FOLDER}-a", f"{FOLDER}-b"
    registry.descriptors.cache_clear()
    for name in [m for m in sys.modules if m.startswith(f"bnparity.frameworks.{FOLDER}")]:
        del sys.modules[name]


def test_each_variant_is_a_framework_of_its_own_in_one_folder(variants):
    a, b = variants
    assert registry.framework_names()[-2:] == (a, b)
    assert registry.module_name(a, "batchnorm") == registry.module_name(b, "batchnorm") \
        == f"bnparity.frameworks.{FOLDER}.batchnorm"
    assert registry.parse_frameworks(f"{b},{a}") == (b, a)


def test_the_variable_is_set_before_the_folder_is_imported(variants):
    a, _ = variants
    adapter = registry.load_adapter(a, "builtin")
    assert os.environ[VARIABLE] == "a" and adapter.framework == a


def test_a_variant_whose_library_runs_another_backend_here_is_a_skip(variants, monkeypatch):
    a, b = variants
    registry.load_adapter(a, "builtin")
    monkeypatch.setitem(sys.modules, LIBRARY, _library("a"))  # the library is imported, backend a
    other = registry.load_adapter(b, "builtin")
    assert isinstance(other, registry.Unavailable) and not other.installed
    assert f"needs {VARIABLE}=b" in other.reason and "process of its own" in other.reason
    assert os.environ[VARIABLE] == "a"  # not switched under a library that already read it


def _library(backend: str) -> types.ModuleType:
    """The stand-in library, imported, running `backend` (what it says it runs: `backend()`, as keras.config's)."""
    library = types.ModuleType(LIBRARY)
    library.backend = lambda: backend
    return library


def test_an_imported_library_is_asked_which_backend_it_runs_not_the_environment(variants, monkeypatch):
    # a user imported the library configured otherwise (a file, not the variable): the variant it runs is usable,
    # the other is a skip, and the variable never decides
    a, b = variants
    monkeypatch.setitem(sys.modules, LIBRARY, _library("b"))
    monkeypatch.setenv(VARIABLE, "a")
    assert not isinstance(registry.load_adapter(b, "builtin"), registry.Unavailable)
    other = registry.load_adapter(a, "builtin")
    assert isinstance(other, registry.Unavailable) and "imported bnparity_test_fake_library with b" in other.reason


def test_load_every_tries_the_variant_of_the_users_environment_first(variants, monkeypatch):
    # the user chose backend b; nothing imported the library yet: b is loaded (and a is the skip), not the first one
    a, b = variants
    monkeypatch.setenv(VARIABLE, "b")

    def load_class(framework, module, cls, absent):
        if framework in (a, b):  # as the real one: the environment set, then the library imported
            try:
                registry._prepare_environment(registry.descriptor(framework))
            except registry.ProcessConflict as e:
                return registry.import_failure(framework, e)
            sys.modules.setdefault(LIBRARY, _library(os.environ[VARIABLE]))
            return type("Reader", (), {"framework": framework})
        return registry.Unavailable(framework, absent)

    monkeypatch.setattr(registry, "load_class", load_class)
    monkeypatch.delitem(sys.modules, LIBRARY, raising=False)
    found, missing = registry.load_every("reader", "Reader", "{framework} has none")
    assert [r.framework for r in found] == [b] and os.environ[VARIABLE] == "b"
    assert any(u.framework == a and "process of its own" in u.reason for u in missing)


def test_worker_processes_get_their_variant_s_variable(variants):
    a, b = variants
    assert worker_env(a, 1, {})[VARIABLE] == "a"
    assert worker_env(b, 1, {VARIABLE: "a"})[VARIABLE] == "b"


def test_a_descriptor_of_another_folder_is_refused(variants, tmp_path):
    descriptor = tmp_path / "frameworks" / FOLDER / "descriptor.py"
    descriptor.write_text(descriptor.read_text().replace(f'folder="{FOLDER}"', 'folder="elsewhere"'))
    sys.modules.pop(f"bnparity.frameworks.{FOLDER}.descriptor", None)
    registry.descriptors.cache_clear()
    with pytest.raises(RuntimeError, match="must declare frameworks of folder"):
        registry.descriptors()


def test_parity_workers_never_mix_two_backends_of_one_library(variants):
    from bnparity.suites.parity.cases import standard_cases
    from bnparity.suites.parity.command import _by_environment, _parts
    from bnparity.suites.parity.harness import MODES

    a, b = variants
    baseline = registry.baseline().name
    groups = _by_environment(_parts((a, baseline, b), MODES, standard_cases()[:2]))
    assert sorted(tuple(env.items()) for env, _ in groups) == [(), ((VARIABLE, "a"),), ((VARIABLE, "b"),)]
    assert {fw for _, parts in groups for p in parts for fw in p.frameworks} == {a, baseline, b}
    for env, parts in groups:
        assert all(registry.framework_environment(fw) == env for p in parts for fw in p.frameworks)


def test_each_variant_reads_its_own_conventions_row(variants):
    from bnparity.frameworks.conventions import all_conventions, convention

    a, b = variants
    assert (convention(a).framework, convention(a).eps) == (a, 1e-3)
    assert (convention(b).framework, convention(b).eps) == (b, 1e-5)
    assert [r.framework for r in all_conventions()][-2:] == [a, b]


def test_what_reads_a_users_object_loads_only_the_libraries_this_process_imported(variants, monkeypatch):
    # a user's object was made by a library already imported; the others are never imported to ask them
    import dataclasses

    a, b = variants
    absent = "bnparity_test_library_nobody_imported"
    real = registry.descriptor
    unimported = dataclasses.replace(real(b), distributions=(absent,))
    # not registry.descriptors: its cache would outlive the patch and leak the fabricated folder into other tests
    monkeypatch.setattr(registry, "descriptor", lambda name: unimported if name == b else real(name))
    loaded = []
    monkeypatch.setattr(registry, "load_class", lambda framework, *args: loaded.append(framework) or
                        type("Reader", (), {"framework": framework}))
    found, missing = registry.load_every("reader", "Reader", "{framework} has none", frameworks=(a, b),
                                         imported_only=True)
    assert loaded == [a] and [r.framework for r in found] == [a]
    assert [(u.framework, f"{absent} is not imported" in u.reason) for u in missing] == [(b, True)]
    assert len(registry.load_every("reader", "Reader", "{framework} has none", frameworks=(a, b))[0]) == 2


def test_an_object_of_another_frameworks_library_is_that_frameworks_to_read():
    # a library that builds its layers on another's (Keras 3's are torch Modules on its torch backend) keeps them
    from bnparity.frameworks.user_layers import another_frameworks_object

    first, second = registry.descriptors()[0], next(d for d in registry.descriptors()[1:]
                                                      if d.package != registry.descriptors()[0].package)
    foreign = type("Layer", (), {"__module__": f"{second.distributions[0]}.layers"})
    mine = type("Layer", (), {"__module__": f"{first.distributions[0]}.nn"})
    built_on_mine = type("Layer", (mine, foreign), {"__module__": "users_model"})
    assert another_frameworks_object(foreign(), first.name) and another_frameworks_object(built_on_mine(), first.name)
    assert not another_frameworks_object(mine(), first.name) and not another_frameworks_object(object(), first.name)
