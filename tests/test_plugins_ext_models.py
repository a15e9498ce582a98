"""ExtensionModels' paths: names may not leave the models folder, links the user made inside it work."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from webui.core.models.cache import ModelCache
from webui.core.types import RequestError
from webui.plugins.ext_models import ExtensionModels


def test_links_inside_are_followed_names_that_leave_are_refused(tmp_path: Path) -> None:
    elsewhere = tmp_path / "other-disk" / "cn.safetensors"
    elsewhere.parent.mkdir()
    save_file({"weight": torch.ones(2, 2)}, str(elsewhere))
    models = tmp_path / "data" / "models"
    (models / "ControlNet").mkdir(parents=True)
    (models / "ControlNet" / "linked.safetensors").symlink_to(elsewhere)
    (models / "Shared").symlink_to(elsewhere.parent, target_is_directory=True)
    m = ExtensionModels(models, ModelCache(2**20))

    def build(sd: dict) -> torch.nn.Module:
        layer = torch.nn.Linear(2, 2, bias=False)
        layer.load_state_dict(sd)
        return layer

    for name in ("ControlNet/linked.safetensors", "Shared/cn.safetensors"):
        with m.use(name, build) as layer:
            assert torch.equal(layer.weight, torch.ones(2, 2))
    for bad in ("../other-disk/cn.safetensors", str(elsewhere), "ControlNet/../../x.pt"):
        with pytest.raises(RequestError, match="inside the models folder"), m.use(bad, build):
            pass
