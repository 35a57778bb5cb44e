"""lorascope/checkpoint/configs.py: the one reader of the JSON configs beside weights."""

import pytest

from lorascope.checkpoint.configs import model_config, read_config
from lorascope.errors import LorascopeError


def test_read_config_takes_a_file_or_a_folder(tmp_path):
    (tmp_path / "config.json").write_text('{"model_type": "gpt2", "n_layer": 2}')
    assert (
        read_config(tmp_path) == read_config(tmp_path / "config.json") == {"model_type": "gpt2", "n_layer": 2}
    )
    assert model_config(tmp_path)["n_layer"] == 2
    assert model_config(tmp_path / "config.json") is None and model_config(tmp_path / "nothing") is None


@pytest.mark.parametrize(
    "text, message",
    [
        ("[1, 2]", "must hold a JSON object"),
        ('{"r": 8, "r": 4}', "gives the key 'r' twice"),
        ('{"n_layer": NaN}', "not valid JSON"),
        ('{"n_layer": 100000000}', "'n_layer' is 100000000"),
    ],
)
def test_what_is_not_a_usable_config_is_refused_naming_the_file(tmp_path, text, message):
    path = tmp_path / "adapter_config.json"
    path.write_text(text)
    with pytest.raises(LorascopeError, match=message) as info:
        read_config(path, "a PEFT adapter config")
    assert str(path) in str(info.value)
