"""Loading without initialisation (parameters built on meta, tensors assigned) gives exactly the networks that the
plain path gives (build with default initialisation, cast, ``load_state_dict``), leaves nothing on meta, computes
the buffers no checkpoint holds, and gives back the file pages it read."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from personalive.weights import NETWORKS, WeightsLayout, build_network, load_models, read_sizes
from personalive.weights.load import _read_network_state
from personalive.weights.materialize import (
    MappedPages,
    assign_state,
    build_empty,
    check_materialized,
    nonpersistent_buffers,
    parameters_on_meta,
)
from personalive.weights.report import PHASES, current_rss_gib

# buffers that are in no checkpoint and must be computed at construction (a test below checks they are found)
KNOWN_NONPERSISTENT = {
    "image_encoder": {"vision_model.embeddings.position_ids"},
    "motion_encoder": {f"model.att_{i}.pos_embed.pos_embed" for i in (1, 2, 3)},
}


def plain_load(layout: WeightsLayout, name: str, dtype: torch.dtype) -> nn.Module:
    """The path before meta building: default-initialised network, cast, then ``load_state_dict`` (copies)."""
    module = nn.Module.to(build_network(name, read_sizes(layout)), dtype=dtype)
    state, _ = _read_network_state(name, layout)
    module.load_state_dict(state, strict=True)
    return module.eval()


def tensors(module: nn.Module) -> dict[str, torch.Tensor]:
    return dict(module.named_parameters()) | dict(module.named_buffers())


@pytest.mark.parametrize(("dtype", "threads"), [(torch.float32, 1), (torch.float16, 3)])
def test_loaded_networks_equal_the_plain_path_bit_for_bit(tiny_weights, dtype, threads):
    layout = WeightsLayout(tiny_weights)
    models = load_models(tiny_weights, dtype, "cpu", threads=threads)
    for name in NETWORKS:
        want_dtype = torch.float32 if name == "image_encoder" else dtype  # clip_dtype's default
        expected, got = tensors(plain_load(layout, name, want_dtype)), tensors(getattr(models, name))
        assert list(got) == list(expected), name
        for key, value in expected.items():
            assert got[key].device.type == "cpu" and got[key].dtype == value.dtype, (name, key)
            assert torch.equal(got[key], value), (name, key)
            assert not got[key].requires_grad
        assert type(getattr(models, name)) is type(plain_load(layout, name, want_dtype))


def test_buffers_in_no_checkpoint_are_computed_not_left_empty(tiny_weights):
    models = load_models(tiny_weights, torch.float32, "cpu", networks=list(KNOWN_NONPERSISTENT))
    sizes = read_sizes(WeightsLayout(tiny_weights))
    for name, known in KNOWN_NONPERSISTENT.items():
        module = getattr(models, name)
        assert known <= set(nonpersistent_buffers(module)), name
        reference = dict(build_network(name, sizes).named_buffers())
        for key in nonpersistent_buffers(module):
            buffer = dict(module.named_buffers())[key]
            assert buffer.device.type == "cpu" and torch.equal(buffer, reference[key]), (name, key)
    position_ids = models.image_encoder.vision_model.embeddings.position_ids
    assert torch.equal(position_ids.flatten(), torch.arange(position_ids.numel()))


def test_build_empty_puts_parameters_on_meta_and_buffers_on_the_device(tiny_weights):
    sizes = read_sizes(WeightsLayout(tiny_weights))
    module = build_empty(lambda: build_network("motion_encoder", sizes), torch.device("cpu"), torch.float16)
    assert {p.device.type for p in module.parameters()} == {"meta"}
    assert {p.dtype for p in module.parameters()} == {torch.float16}
    assert {b.device.type for b in module.buffers()} == {"cpu"}
    assert nn.Linear(2, 2).weight.device.type == "cpu"  # the patch ends with the block


def test_the_patch_ends_when_building_fails():
    with pytest.raises(ZeroDivisionError), parameters_on_meta():
        assert nn.Linear(2, 2).weight.device.type == "meta"
        raise ZeroDivisionError
    assert nn.Linear(2, 2).weight.device.type == "cpu"


def test_a_tensor_left_on_meta_or_mistyped_is_named():
    module = nn.Sequential(nn.Linear(2, 2), nn.BatchNorm1d(2))
    with parameters_on_meta():
        module[0] = nn.Linear(2, 2)
    expected = {k: (v.dtype, torch.device("cpu")) for k, v in module.state_dict().items()}
    with pytest.raises(RuntimeError, match=r"2 tensor\(s\).*0\.weight is torch\.float32 on meta"):
        check_materialized(module, expected, torch.device("cpu"))
    expected["1.running_mean"] = (torch.float16, torch.device("cpu"))
    module[0] = nn.Linear(2, 2)
    with pytest.raises(RuntimeError, match=r"1\.running_mean is torch\.float32 on cpu \(expected torch\.float16"):
        check_materialized(module, expected, torch.device("cpu"))


def test_assign_state_casts_as_load_state_dict_and_keeps_integer_buffers(tmp_path):
    source = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4))
    source[1].num_batches_tracked.fill_(7)
    path = tmp_path / "net.pth"
    torch.save(source.state_dict(), path)
    state = torch.load(path, mmap=True, weights_only=True)
    module = build_empty(
        lambda: nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4)), torch.device("cpu"), torch.bfloat16
    )
    copied = assign_state(module, state, torch.device("cpu"), MappedPages([path]), threads=2)
    assert module[0].weight.dtype == torch.bfloat16 and module[1].num_batches_tracked.dtype == torch.int64
    assert torch.equal(module[0].weight, source[0].weight.detach().to(torch.bfloat16))
    assert int(module[1].num_batches_tracked) == 7
    assert copied == sum(t.numel() * t.element_size() for t in module.state_dict().values())


def test_released_pages_leave_the_resident_set_and_the_values_intact(tmp_path):
    path = tmp_path / "big.pth"
    values = torch.arange(64 * 2**20 // 4, dtype=torch.float32)  # 64 MiB
    torch.save({"x": values}, path)
    state = torch.load(path, mmap=True, weights_only=True)
    pages = MappedPages([path])
    assert pages.ranges, "the file mapping was not found in /proc/self/maps"
    before = current_rss_gib()
    assert float(state["x"].sum()) == float(values.sum())  # reads every page of the mapping
    touched = current_rss_gib()
    pages.release(state["x"])
    after = current_rss_gib()
    assert touched - before > 0.04 and touched - after > 0.04  # 64 MiB in, then out again
    assert pages.released >= 60 * 2**20
    assert torch.equal(state["x"], values)  # read again from the file


def test_tensors_outside_the_file_mapping_are_never_released(tmp_path):
    path = tmp_path / "small.pth"
    torch.save({"x": torch.ones(4)}, path)
    pages = MappedPages([path])
    ordinary = torch.arange(2**22, dtype=torch.float32)
    pages.release(ordinary)
    assert pages.released == 0 and torch.equal(ordinary, torch.arange(2**22, dtype=torch.float32))


def test_load_report_has_every_phase_and_network(tiny_weights):
    models = load_models(tiny_weights, torch.float32, "cpu")
    report = models.load_report
    assert set(PHASES) <= set(report.phases) and report.phases["build"] > 0 and report.phases["copy"] > 0
    assert set(report.networks) == set(NETWORKS)
    for name in NETWORKS:
        assert {"build", "read", "compare", "copy", "finite"} <= set(report.networks[name])
    per_network = sum(sum(p.values()) for p in report.networks.values())
    assert per_network <= report.seconds
    persistent = sum(
        t.numel() * t.element_size() for name in NETWORKS for t in getattr(models, name).state_dict().values()
    )
    assert report.bytes_copied == persistent
    as_json = report.as_dict()
    assert (
        as_json["peak_rss_gib"] >= as_json["rss_start_gib"] > 0 and as_json["phases_s"].keys() == report.phases.keys()
    )
