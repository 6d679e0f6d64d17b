"""docs/config.md is the config schema, regenerated: it names every key, and the committed file is current."""

import os

import pytest

from ltn.sweep import _config
from ltn.sweep.config_reference import COMMAND, config_reference

DOC = os.path.join(os.path.dirname(__file__), "..", "..", "docs", "config.md")


def test_docs_config_md_is_up_to_date():
    with open(DOC, encoding="utf-8") as stream:
        committed = stream.read()
    assert committed == config_reference(), f"docs/config.md is out of date: run `{COMMAND}`"


def test_reference_covers_every_key_with_its_meaning():
    text = config_reference()
    for section, fields in _config.SCHEMA.items():
        for key, field in fields.items():
            assert f"| `{section}.{key}` |" in text and field.doc.replace("|", "\\|") in text
    for key in _config.TOP_LEVEL_KEYS:
        assert f"| `{key}` |" in text or key in _config.SECTIONS
    assert "`shaped`: depth-2 odeco networks" in text and "- `file`: `init.scale`, `init.path`" in text


def test_a_key_without_a_meaning_fails_the_generator(monkeypatch):
    schema = {**_config.SCHEMA, "init": {**_config.SCHEMA["init"], "new": _config.Field("float", 1.0)}}
    monkeypatch.setattr(_config, "SCHEMA", schema)
    monkeypatch.setattr("ltn.sweep.config_reference.SCHEMA", schema)
    with pytest.raises(ValueError, match="config field init.new has no doc"):
        config_reference()
