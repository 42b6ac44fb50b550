from __future__ import annotations

import pytest

from archselect.architectures import architectures
from archselect.config.errors import ConfigError
from archselect.registry import Registry


def test_register_returns_the_object_and_refuses_duplicates() -> None:
    reg: Registry[object] = Registry("thing", "things")

    @reg.register("a", flavour="x")
    def a() -> None: ...

    assert reg.get("a") is a
    assert reg.meta("a") == {"flavour": "x"}
    assert reg.names() == ["a"] and "a" in reg and len(reg) == 1
    with pytest.raises(ValueError, match="already registered"):
        reg.register("a")(a)


def test_unknown_name_lists_known_names_and_suggests() -> None:
    with pytest.raises(ConfigError, match=r"arch: unknown architecture 'lstn'.*lstm.*did you mean 'lstm'"):
        architectures.get("lstn")


def test_text_architectures_are_registered() -> None:
    assert {"fasttext", "lstm", "transformer", "sentence_embeddings",
            "pretrained"} <= set(architectures.names())
