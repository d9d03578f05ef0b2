"""Every Python example in the README runs as written (on the CPU)."""

import pathlib
import re

import pytest

README = pathlib.Path(__file__).resolve().parents[1] / "README.md"
EXAMPLES = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)


def test_readme_has_examples():
    assert len(EXAMPLES) >= 2


@pytest.mark.parametrize("index", range(len(EXAMPLES)))
def test_readme_example_runs(index, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    exec(compile(EXAMPLES[index], f"README.md example {index}", "exec"), {"__name__": "__readme__"})


def _public_names():
    import inspect

    import fastclip
    import fastclip.adagc
    import fastclip.agc
    import fastclip.autoclip
    import fastclip.cli
    import fastclip.cli.bench
    import fastclip.cli.ceilings
    import fastclip.cli.command
    import fastclip.cli.demo
    import fastclip.cli.grads
    import fastclip.cli.machine
    import fastclip.cli.outputs
    import fastclip.cli.overhead
    import fastclip.cli.progress
    import fastclip.cli.reports
    import fastclip.cli.timing
    import fastclip.clip_grad
    import fastclip.clipper
    import fastclip.distributed
    import fastclip.integrations.lightning
    import fastclip.integrations.megatron
    import fastclip.ops
    import fastclip.stable_spam
    import fastclip.zclip

    modules = [
        fastclip,
        fastclip.ops,
        fastclip.clip_grad,
        fastclip.clipper,
        fastclip.zclip,
        fastclip.autoclip,
        fastclip.adagc,
        fastclip.agc,
        fastclip.stable_spam,
        fastclip.distributed,
        fastclip.integrations.lightning,
        fastclip.integrations.megatron,
        fastclip.cli,
        fastclip.cli.bench,
        fastclip.cli.ceilings,
        fastclip.cli.command,
        fastclip.cli.demo,
        fastclip.cli.grads,
        fastclip.cli.machine,
        fastclip.cli.outputs,
        fastclip.cli.overhead,
        fastclip.cli.progress,
        fastclip.cli.reports,
        fastclip.cli.timing,
    ]
    for module in modules:
        assert module.__all__, module.__name__
        yield module.__name__, module
        for name in module.__all__:
            obj = getattr(module, name)
            if not (callable(obj) or inspect.ismodule(obj)):
                continue  # data (e.g. bench.SUITES) carries its class's docstring, not ours
            yield f"{module.__name__}.{name}", obj
            if inspect.isclass(obj):
                for attr, value in vars(obj).items():
                    if not attr.startswith("_") and (callable(value) or isinstance(value, property)):
                        yield f"{module.__name__}.{name}.{attr}", value


def test_every_public_name_has_a_docstring():
    import inspect

    names = list(_public_names())
    assert len(names) > 20
    missing = [name for name, obj in names if not (inspect.getdoc(obj) or "").strip()]
    assert not missing, f"public names without a docstring: {missing}"


def test_help_on_a_clipper_shows_its_arguments_and_an_example():
    import pydoc

    import fastclip

    text = pydoc.render_doc(fastclip.ZClip, renderer=pydoc.plaintext)
    for needle in ("alpha", "z_thresh", "max_grad_norm", "step(", "state_dict(", "attach("):
        assert needle in text, needle


@pytest.mark.parametrize("name", ["ZClip", "AutoClip", "AdaGC", "AGC", "NormClip", "StableSPAM"])
def test_help_on_each_clipper_says_what_its_options_are(name):
    """``help(fastclip.ZClip)`` shows ``**options`` in the signature: the docstring names each
    shared option with a line on what it does (AGC, which takes none, says so)."""
    import inspect
    import pydoc
    import re

    import fastclip
    from fastclip.clipper import OPTIONS

    cls = getattr(fastclip, name)
    text = " ".join(pydoc.render_doc(cls, renderer=pydoc.plaintext).replace("|", " ").split())
    takes_options = any(p.kind is p.VAR_KEYWORD for p in inspect.signature(cls).parameters.values())
    assert set(OPTIONS) == {"on_nonfinite", "reference", "process_group", "norm_parameters", "grad_attr"}
    if not takes_options:
        assert f"{name} takes none of the options the other clippers share" in text
        assert all(f"``{option}``" in text for option in OPTIONS)
        return
    assert "**options" in text
    for option in OPTIONS:
        # "* ``option=default``: what it does", at least a clause long
        match = re.search(rf"\* ``{option}=[^`]*``: ([^*]+)", text)
        assert match and len(match.group(1).split()) >= 6, (option, text[-2000:])
    per_tensor = getattr(cls, "per_tensor", False)
    assert ("``norm_parameters=None``: not taken (a ValueError)" in text) == per_tensor
    assert '``on_nonfinite="skip"``' in text
