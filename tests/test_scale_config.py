"""Scale-out settings without Ray running: storage at a URI (pyarrow's real local filesystem behind a
file:// URI), cluster addresses, per-trial resources and the Colab profile."""

from __future__ import annotations

import pytest
import yaml

from harness.config import ConfigError, load_sweep
from trainables.storage import Storage


def test_uri_storage_pushes_changes_and_pulls_what_a_resume_needs(tmp_path):
    remote = tmp_path / "bucket"
    store = Storage(f"file://{remote}/sweep", mirror=tmp_path / "mirror")
    assert store.remote and store.read_text("sweep.yaml") is None
    d = store.workdir("trials/t1")
    assert d == tmp_path / "mirror" / "trials" / "t1" and d.is_dir()
    (d / "metrics.jsonl").write_text('{"step": 1}\n')
    (d / "adapter").mkdir()
    (d / "adapter" / "adapter_config.json").write_text("{}")
    (tmp_path / "mirror" / "sweep.yaml").write_text("name: x\n")
    assert store.push() == 3
    assert store.push() == 0  # nothing changed: nothing uploaded
    (d / "metrics.jsonl").write_text('{"step": 1}\n{"step": 2}\n')
    assert store.push() == 1
    assert (remote / "sweep" / "trials" / "t1" / "metrics.jsonl").read_text().count("step") == 2
    assert store.read_text("sweep.yaml") == "name: x\n"

    (remote / "sweep" / "tune").mkdir()
    (remote / "sweep" / "tune" / "experiment_state.json").write_text("{}")
    fresh = Storage(f"file://{remote}/sweep", mirror=tmp_path / "elsewhere")  # a driver on another machine
    assert fresh.pull() == 2
    got = {p.relative_to(tmp_path / "elsewhere").as_posix() for p in (tmp_path / "elsewhere").rglob("*")
           if p.is_file()}
    assert got == {"sweep.yaml", "trials/t1/metrics.jsonl"}  # Ray's state and adapters stay remote
    assert fresh.push() == 0  # what was pulled is not uploaded back


def test_local_storage_is_written_in_place(tmp_path):
    store = Storage(str(tmp_path / "runs" / "s"))
    assert not store.remote and store.workdir("trials/a") == tmp_path / "runs" / "s" / "trials" / "a"
    assert store.push() == 0 and store.pull() == 0


def write(tmp_path, doc: dict):
    p = tmp_path / "s.yaml"
    p.write_text(yaml.safe_dump(doc))
    return p


def test_uri_output_keeps_a_local_mirror(tmp_path):
    cfg, _ = load_sweep(write(tmp_path, {"name": "x"}),
                        ["output.dir=s3://bucket/runs/", f"output.mirror={tmp_path / 'm'}"])
    assert cfg.storage == "s3://bucket/runs/x" and cfg.run_dir == tmp_path / "m" / "x"
    cfg, _ = load_sweep(write(tmp_path, {"name": "x"}), [f"output.dir={tmp_path}"])
    assert cfg.storage == str(tmp_path / "x") and cfg.run_dir == tmp_path / "x"


@pytest.mark.parametrize("address", ["auto", "local", "10.0.0.5:6379", "ray://head.example.com:10001"])
def test_cluster_addresses_validate(tmp_path, address):
    cfg, _ = load_sweep(write(tmp_path, {"ray": {"address": address}}))
    assert cfg.ray_address == address


def test_address_precedence(tmp_path, monkeypatch):
    monkeypatch.setenv("RAY_ADDRESS", "10.0.0.9:6379")
    assert load_sweep(write(tmp_path, {}))[0].ray_address == "10.0.0.9:6379"
    assert load_sweep(write(tmp_path, {}), ["ray.address=local"])[0].ray_address == "local"
    monkeypatch.delenv("RAY_ADDRESS")
    assert load_sweep(write(tmp_path, {}))[0].ray_address == "local"


def problems(tmp_path, doc: dict, overrides=()) -> list[str]:
    with pytest.raises(ConfigError) as e:
        load_sweep(write(tmp_path, doc), overrides)
    return e.value.problems


def test_resource_shapes_are_checked_all_at_once(tmp_path, monkeypatch):
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    got = problems(tmp_path, {"ray": {"address": "head"}, "resources": {"gpus_per_trial": 3, "workers_per_trial": 2}})
    assert got == ["ray.address: expected auto, local, host:port (GCS, default port 6379) or ray://host:port "
                   "(Ray Client) (got 'head')"]
    got = problems(tmp_path, {"resources": {"gpus_per_trial": 3, "workers_per_trial": 2, "cpus_per_trial": 512}})
    assert got[0] == ("resources.gpus_per_trial: 3 GPUs over 2 workers is 1.5 each, but each data-parallel "
                      "worker needs whole GPUs (NCCL); use a multiple of resources.workers_per_trial")
    assert got[1].startswith("resources.cpus_per_trial: a trial needs 512 CPUs but this machine has ")
    assert "one worker trains on one GPU" in problems(tmp_path, {"resources": {"gpus_per_trial": 2}})[0]


def test_a_trial_bigger_than_this_machine_is_fine_on_a_cluster(tmp_path):
    # Ray keeps such a trial pending until a node that fits joins (or the autoscaler adds one).
    cfg, _ = load_sweep(write(tmp_path, {"resources": {"cpus_per_trial": 512, "gpus_per_trial": 8,
                                                       "workers_per_trial": 8}}), ["ray.address=auto"])
    assert cfg.resources.gpus_per_trial == 8


def test_colab_profile_is_sized_for_one_t4():
    cfg, _ = load_sweep("sweeps/colab_t4.yaml", ["ray.address=auto"])  # validated as if a GPU were there
    assert cfg.model.quantization == "nf4" and cfg.train.bf16 == "off" and cfg.train.device == "cuda"
    assert cfg.train.gradient_checkpointing and cfg.recovery.max_failures >= 1
    assert cfg.resources.gpus_per_trial * cfg.search.max_concurrent <= 1  # trials share the one GPU
    assert cfg.storage == "/content/drive/MyDrive/runs/colab_t4"  # on Drive: survives a disconnect


def test_cluster_launcher_example_passes_rays_own_schema():
    import copy

    from ray.autoscaler._private.util import prepare_config, validate_config

    config = yaml.safe_load(open("sweeps/cluster/aws.yaml"))
    validate_config(prepare_config(copy.deepcopy(config)))  # what `ray up` checks before launching anything
    assert config["file_mounts"]["~/harness"] == "." and config["available_node_types"]["head"]["resources"]["CPU"] == 0
    config["available_node_types"]["gpu_1x"]["min_worker"] = 1  # a typo Ray must refuse
    with pytest.raises(Exception, match="min_worker"):
        validate_config(prepare_config(config))


def test_each_worker_gets_an_equal_share_of_a_step(tokenizer):
    # Real micro-batches; a short share is topped up with a blank one (no labels: loss and gradient 0).
    from trainables.batching import pack
    from trainables.data.tokenize import IGNORE, encode
    from trainables.distributed import Session

    rows = [encode(tokenizer, [{"role": "user", "content": f"Say {w}."}, {"role": "assistant", "content": w}], 64)
            for w in ("one", "two", "three")]
    step = [pack([r]) for r in rows]
    assert Session("t").step_share(step) == step  # one process: the whole step, untouched
    first, second = Session("t", 0, 2).step_share(step), Session("t", 1, 2).step_share(step)
    assert first == [step[0], step[2]] and len(second) == 2 and second[0] is step[1]
    blank = second[1]
    assert blank.n_labels == 0 and (blank.targets == IGNORE).all() and blank.inputs is step[0].inputs
    assert sum(b.n_labels for b in first + second) == sum(b.n_labels for b in step)

