"""Applying networks to the tiny SD1 and SDXL models: effects, composition, formats, exact restore."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

from webui.core.models.components import Components, Precision
from webui.core.models.loader import load_model
from webui.core.networks.apply import NetworkCache, apply_networks
from webui.core.networks.registry import LoraFile
from webui.core.networks.tiny import write_tiny_lora

ENCODERS = ("unet", "text_encoder", "text_encoder_2")


@pytest.fixture(scope="module")
def models(tiny_files: dict[str, Path]) -> dict[str, Components]:
    return {arch: load_model(tiny_files[arch], Precision()) for arch in ("sd1", "sdxl")}


def ref(path: Path) -> LoraFile:
    st = path.stat()
    return LoraFile(path, path.stem, path.stem, st.st_size, st.st_mtime_ns)


def params(c: Any) -> dict[str, torch.Tensor]:
    return {
        f"{n}.{k}": v.detach().clone()
        for n in ENCODERS
        if getattr(c, n, None) is not None
        for k, v in getattr(c, n).state_dict().items()
    }


def same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@torch.no_grad()
def outputs(c: Components) -> dict[str, torch.Tensor]:
    """UNet noise prediction for fixed inputs (text states given, not encoded) and each encoder's states."""
    g = torch.Generator().manual_seed(0)
    cfg = c.unet.config
    sample = torch.randn(1, cfg.in_channels, 8, 8, generator=g)
    states = torch.randn(1, 77, cfg.cross_attention_dim, generator=g)
    extra = {}
    if cfg.addition_embed_type == "text_time":
        pooled = cfg.projection_class_embeddings_input_dim - 6 * cfg.addition_time_embed_dim
        extra = {
            "text_embeds": torch.randn(1, pooled, generator=g),
            "time_ids": torch.randn(1, 6, generator=g),
        }
    out = {"unet": c.unet(sample, torch.tensor([500]), states, added_cond_kwargs=extra or None).sample}
    ids = torch.tensor([[49406, 320, 1125, 539, 49407] + [49407] * 72])
    for name in ENCODERS[1:]:
        te = getattr(c, name)
        if te is not None:
            out[name] = te(ids, output_hidden_states=True).hidden_states[-2]
    return out


def run_with(
    c: Components, nets: list[tuple[LoraFile, float, float]], cache: NetworkCache | None = None
) -> Any:
    with apply_networks(c, nets, cache or NetworkCache()) as info:
        return info, outputs(c), params(c)


@pytest.mark.parametrize("arch", ["sd1", "sdxl"])
@pytest.mark.parametrize("fmt", ["kohya", "peft"])
def test_weight_zero_is_no_lora_weight_one_changes_and_exit_restores(
    models: dict[str, Components], tmp_path: Path, arch: str, fmt: str
) -> None:
    c = models[arch]
    before, base = params(c), outputs(c)
    net = ref(write_tiny_lora(tmp_path / f"{fmt}.safetensors", c, fmt))
    info, zero, during = run_with(c, [(net, 0.0, 0.0)])
    assert same(during, before) and all(torch.equal(zero[k], base[k]) for k in base)
    assert [a.modules for a in info.applied] == [0]
    info, one, during = run_with(c, [(net, 1.0, 1.0)])
    assert info.messages == () and info.applied[0].modules > 50
    for k in base:
        assert not torch.allclose(one[k], base[k], atol=1e-3), f"{k} did not change"
    assert info.text_encoder_key == ((net.key, 1.0),)
    assert same(params(c), before), "weights not restored bit for bit"
    after = outputs(c)
    assert all(torch.equal(after[k], base[k]) for k in base)


@pytest.mark.parametrize("arch", ["sd1", "sdxl"])
def test_text_encoder_and_unet_weights_act_separately(
    models: dict[str, Components], tmp_path: Path, arch: str
) -> None:
    c = models[arch]
    base = outputs(c)
    net = ref(write_tiny_lora(tmp_path / "k.safetensors", c))
    info, te_only, _ = run_with(c, [(net, 1.0, 0.0)])
    assert torch.equal(te_only["unet"], base["unet"]) and not torch.equal(
        te_only["text_encoder"], base["text_encoder"]
    )
    info, unet_only, _ = run_with(c, [(net, 0.0, 1.0)])
    assert not torch.equal(unet_only["unet"], base["unet"]) and torch.equal(
        unet_only["text_encoder"], base["text_encoder"]
    )
    assert info.text_encoder_key == ()  # the text encoders were left alone: encodings stay valid


@pytest.mark.parametrize("arch", ["sd1", "sdxl"])
def test_kohya_and_peft_names_reach_the_same_modules(
    models: dict[str, Components], tmp_path: Path, arch: str
) -> None:
    """Same factors under both namings (SDXL kohya: UNet in LDM names) give the same patched weights."""
    c = models[arch]
    kohya = ref(write_tiny_lora(tmp_path / "kohya.safetensors", c, "kohya", seed=3))
    peft = ref(write_tiny_lora(tmp_path / "peft.safetensors", c, "peft", seed=3))
    assert next(iter(load_file(str(kohya.path)))).startswith("lora_")
    _, _, with_kohya = run_with(c, [(kohya, 1.0, 1.0)])
    _, _, with_peft = run_with(c, [(peft, 1.0, 1.0)])
    assert not same(with_kohya, params(c))
    assert with_kohya.keys() == with_peft.keys()
    for k in with_kohya:
        torch.testing.assert_close(with_kohya[k], with_peft[k], rtol=0, atol=1e-6, msg=k)


def _lora_delta(sd: dict[str, torch.Tensor], stem: str) -> torch.Tensor:
    up, down = sd[f"{stem}.lora_up.weight"], sd[f"{stem}.lora_down.weight"]
    return (up.flatten(1) @ down.flatten(1)) * (float(sd[f"{stem}.alpha"]) / down.shape[0])


def test_two_loras_compose_as_the_sum_of_their_deltas(models: dict[str, Components], tmp_path: Path) -> None:
    c = models["sd1"]
    a = ref(write_tiny_lora(tmp_path / "a.safetensors", c, seed=1, alpha=1.0))
    b = ref(write_tiny_lora(tmp_path / "b.safetensors", c, seed=2, rank=4))
    stem = "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q"
    mod = c.unet.down_blocks[0].attentions[0].transformer_blocks[0].attn1.to_q
    w = mod.weight.detach().clone()
    expected = (
        w + 0.7 * _lora_delta(load_file(str(a.path)), stem) - 0.4 * _lora_delta(load_file(str(b.path)), stem)
    )
    base = outputs(c)
    cache = NetworkCache()
    with apply_networks(c, [(a, 1.0, 0.7), (b, 1.0, -0.4)], cache) as info:
        torch.testing.assert_close(mod.weight, expected, rtol=0, atol=1e-6)
        both = outputs(c)
    assert [n.name for n in info.applied] == ["a", "b"]
    _, only_a, _ = run_with(c, [(a, 1.0, 0.7)], cache)
    assert not torch.allclose(both["unet"], only_a["unet"]) and not torch.allclose(
        only_a["unet"], base["unet"]
    )
    assert torch.equal(mod.weight, w)


def test_lycoris_formats_rebuild_their_deltas(models: dict[str, Components], tmp_path: Path) -> None:
    c = models["sd1"]
    before, base = params(c), outputs(c)
    conv = c.unet.down_blocks[0].resnets[0].conv1
    lin = c.unet.down_blocks[0].attentions[0].transformer_blocks[0].attn2.to_k
    conv_stem = "lora_unet_down_blocks_0_resnets_0_conv1"
    lin_stem = "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn2_to_k"

    def loha(sd: dict[str, torch.Tensor], s: str) -> torch.Tensor:
        w1 = sd[f"{s}.hada_w1_a"] @ sd[f"{s}.hada_w1_b"]
        return (
            w1
            * (sd[f"{s}.hada_w2_a"] @ sd[f"{s}.hada_w2_b"])
            * float(sd[f"{s}.alpha"])
            / sd[f"{s}.hada_w1_b"].shape[0]
        )

    def lokr(sd: dict[str, torch.Tensor], s: str) -> torch.Tensor:
        w2 = sd[f"{s}.lokr_w2_a"] @ sd[f"{s}.lokr_w2_b"]
        return torch.kron(sd[f"{s}.lokr_w1"], w2) * float(sd[f"{s}.alpha"]) / sd[f"{s}.lokr_w2_b"].shape[0]

    rebuild: dict[str, Callable[[dict[str, torch.Tensor], str], torch.Tensor]] = {
        "locon": _lora_delta,
        "loha": loha,
        "lokr": lokr,
        "full": lambda sd, s: sd[f"{s}.diff"],
    }
    for fmt, fn in rebuild.items():
        net = ref(write_tiny_lora(tmp_path / f"{fmt}.safetensors", c, fmt, rank=3, alpha=1.5))
        sd = load_file(str(net.path))
        with apply_networks(c, [(net, 1.0, 1.0)], NetworkCache()) as info:
            assert info.messages == (), fmt
            for module, stem in ((conv, conv_stem), (lin, lin_stem)):
                want = before[f"unet.{_name(c.unet, module)}.weight"] + fn(sd, stem).reshape(
                    module.weight.shape
                )
                torch.testing.assert_close(module.weight, want, rtol=0, atol=1e-5, msg=f"{fmt} {stem}")
            assert not torch.allclose(outputs(c)["unet"], base["unet"], atol=1e-3), fmt
        assert same(params(c), before), fmt


def _name(root: torch.nn.Module, module: torch.nn.Module) -> str:
    return str(next(n for n, m in root.named_modules() if m is module))


def test_tucker_locon_equals_its_three_convolutions(models: dict[str, Components], tmp_path: Path) -> None:
    """A LoCon with `lora_mid` changes a conv's output by up(mid(down(x))) * alpha / rank."""
    c = models["sd1"]
    conv = c.unet.down_blocks[0].resnets[0].conv1
    out_c, in_c = conv.weight.shape[:2]
    g = torch.Generator().manual_seed(5)
    down, mid, up = (
        torch.randn(s, generator=g) * 0.2 for s in ((4, in_c, 1, 1), (4, 4, 3, 3), (out_c, 4, 1, 1))
    )
    stem = "lora_unet_down_blocks_0_resnets_0_conv1"
    sd = {f"{stem}.lora_down.weight": down, f"{stem}.lora_mid.weight": mid, f"{stem}.lora_up.weight": up}
    save_file({**sd, f"{stem}.alpha": torch.tensor(2.0)}, str(tmp_path / "t.safetensors"))
    x = torch.randn(1, in_c, 8, 8, generator=g)
    with torch.no_grad():
        plain = conv(x)
        branch = F.conv2d(F.conv2d(F.conv2d(x, down), mid, padding=1), up) * (2.0 / 4)
        with apply_networks(c, [(ref(tmp_path / "t.safetensors"), 1.0, 1.0)], NetworkCache()):
            patched = conv(x)
    torch.testing.assert_close(patched - plain, branch, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize(("lora_arch", "model_arch"), [("sd1", "sdxl"), ("sdxl", "sd1")])
def test_lora_for_another_architecture_is_skipped_with_a_message(
    models: dict[str, Components], tmp_path: Path, lora_arch: str, model_arch: str
) -> None:
    c = models[model_arch]
    before = params(c)
    net = ref(write_tiny_lora(tmp_path / "other.safetensors", models[lora_arch]))
    info, _, during = run_with(c, [(net, 1.0, 1.0)])
    assert info.applied == () and same(during, before)
    assert len(info.messages) == 1 and "'other' skipped" in info.messages[0]
    assert "does not fit this" in info.messages[0]


def test_bad_files_are_skipped_and_unknown_modules_left_out(
    models: dict[str, Components], tiny_files: dict[str, Path], tmp_path: Path
) -> None:
    c = models["sd1"]
    before = params(c)
    good = write_tiny_lora(tmp_path / "good.safetensors", c)
    sd = load_file(str(good))
    sd["lora_unet_no_such_module.lora_down.weight"] = torch.ones(2, 4)
    sd["lora_unet_no_such_module.lora_up.weight"] = torch.ones(4, 2)
    save_file(sd, str(tmp_path / "extra.safetensors"))
    (tmp_path / "junk.safetensors").write_bytes(b"\x00" * 64)
    bad = load_file(str(good))
    stem = "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q"
    bad[f"{stem}.lora_up.weight"] = torch.ones(bad[f"{stem}.lora_up.weight"].shape[0], 3)  # rank 3 vs 2
    save_file(bad, str(tmp_path / "malformed.safetensors"))
    nets = [(ref(tmp_path / n), 1.0, 1.0) for n in ("junk.safetensors", "malformed.safetensors")]
    info, _, during = run_with(
        c, [(ref(tiny_files["sd1"]), 1.0, 1.0), *nets, (ref(tmp_path / "extra.safetensors"), 1.0, 1.0)]
    )
    assert [a.name for a in info.applied] == ["extra"]
    assert "not a LoRA" in info.messages[0] and "'junk' skipped" in info.messages[1]
    assert "'malformed' skipped" in info.messages[2] and "1 with other shapes" in info.messages[2]
    assert "1 of" in info.messages[3] and "not found" in info.messages[3]
    assert not same(during, before) and same(params(c), before)


def test_restore_is_exact_after_an_error_and_in_half_precision(
    tiny_files: dict[str, Path], tmp_path: Path
) -> None:
    c = load_model(tiny_files["sd1"], Precision(dtype=torch.float16, vae_dtype=torch.float16))
    assert c.dtype == torch.float16
    before = params(c)
    net = ref(write_tiny_lora(tmp_path / "k.safetensors", c, "locon"))
    with pytest.raises(RuntimeError, match="boom"), apply_networks(c, [(net, 1.0, 1.0)] * 2, NetworkCache()):
        assert not same(params(c), before)
        raise RuntimeError("boom")
    assert same(params(c), before)


def test_parsed_networks_are_cached_and_bounded(models: dict[str, Components], tmp_path: Path) -> None:
    c = models["sd1"]
    net = ref(write_tiny_lora(tmp_path / "k.safetensors", c))
    cache = NetworkCache()
    run_with(c, [(net, 1.0, 1.0)], cache)
    assert net in cache
    net.path.unlink()  # a repeat is served from the cache: the file is not read again
    info, _, _ = run_with(c, [(net, 1.0, 1.0)], cache)
    assert info.messages == () and info.applied[0].modules > 0
    tiny = NetworkCache(budget_bytes=1)
    net2 = ref(write_tiny_lora(tmp_path / "k2.safetensors", c))
    run_with(c, [(net2, 1.0, 1.0)], tiny)
    assert net2 not in tiny  # over budget: dropped once the job let go of it


def test_jobs_on_one_model_take_turns(models: dict[str, Components], tmp_path: Path) -> None:
    """A plain job (empty list) waits while another job's networks are on the shared model."""
    c = models["sd1"]
    before = params(c)
    net = ref(write_tiny_lora(tmp_path / "k.safetensors", c))
    cache = NetworkCache()
    inside, release = threading.Event(), threading.Event()
    seen: list[bool] = []

    def patched_job() -> None:
        with apply_networks(c, [(net, 1.0, 1.0)], cache):
            inside.set()
            release.wait(10)

    def plain_job() -> None:
        with apply_networks(c, [], cache):
            seen.append(same(params(c), before))

    t1 = threading.Thread(target=patched_job)
    t1.start()
    assert inside.wait(10)
    t2 = threading.Thread(target=plain_job)
    t2.start()
    time.sleep(0.2)
    assert seen == []  # still waiting
    release.set()
    t1.join(10)
    t2.join(10)
    assert seen == [True]


def test_suspended_gives_back_the_loaded_weights_exactly_then_the_patch(
    models: dict[str, Components], tmp_path: Path
) -> None:
    c = models["sd1"]
    base = params(c)
    net = ref(write_tiny_lora(tmp_path / "s.safetensors", c, "kohya", seed=5))
    with apply_networks(c, [(net, 1.0, 1.0)], NetworkCache()) as info:
        patched = params(c)
        assert not same(patched, base)
        with info.suspended():
            assert same(params(c), base)
        assert same(params(c), patched)
    assert same(params(c), base)
