"""Results that cannot be silently wrong: ad-hoc runs never replace published cells, changed data retrains,
snapshots belong to their run, and files follow the umask."""

from __future__ import annotations

import json
import os

import pytest

from kind_bench.cli import main
from kind_bench.io import FILE_MODE, write_json

from micro import MICRO, micro

PUBLISHED = "results/runs/digits/full_finetune/full_finetune-novel-0.json"


@pytest.mark.usefixtures("with_vanilla")  # the micro vanilla ancestry, pre-trained once
def test_an_ad_hoc_run_lands_in_its_own_namespace_and_leaves_the_published_cell_alone(in_workspace, capsys):
    cell = micro("method=full_finetune", ancestry=False)
    assert main(["run", *cell]) == 0
    published = (in_workspace / PUBLISHED).read_text()
    adhoc = [o for o in cell if not o.startswith("namespace=")] + ["transfer.steps=3"]
    capsys.readouterr()
    assert main(["run", *adhoc]) == 0
    out = capsys.readouterr().out
    assert "-> results/adhoc/digits/full_finetune/" in out
    assert (in_workspace / PUBLISHED).read_text() == published
    assert main(["leaderboard"]) == 0  # reads only the published namespace
    assert json.loads((in_workspace / PUBLISHED).read_text())["run_info"]["config"]["transfer"]["steps"] == 8


@pytest.mark.usefixtures("with_vanilla")  # the micro vanilla ancestry, pre-trained once
def test_changed_data_is_not_up_to_date(in_workspace, capsys):
    from kind_bench.io import load_metadata, load_tensors, save_tensors

    cell = micro("method=full_finetune", "quiet=false", ancestry=False)
    assert main(["transfer", *cell]) == 0
    assert main(["transfer", *cell]) == 0
    assert "up to date" in capsys.readouterr().out
    shared = in_workspace / "artifacts/data"
    source = shared.resolve() / "digits.safetensors"
    shared.unlink()  # the session's shared data: a private copy whose source files changed, same config
    shared.mkdir()
    tensors, meta = load_tensors(source), load_metadata(source)
    meta.pop("sha256")
    save_tensors(shared / "digits.safetensors", {**tensors, "images": tensors["images"].flip(-1)}, meta)
    assert main(["transfer", *cell]) == 2  # the ancestry was made from the old data: refused
    assert "was pre-trained with another config, seed or data" in capsys.readouterr().err
    assert main(["pretrain", "ancestry=vanilla", *micro(ancestry=False)]) == 2  # and so was the evaluator
    assert "were trained with other evaluator.* settings or data" in capsys.readouterr().err
    (in_workspace / "artifacts/evaluator").unlink()  # a private evaluator for the new data
    assert main(["evaluator", "evaluator.epochs=8", "quiet=true"]) == 0
    assert main(["pretrain", "ancestry=vanilla", *micro(ancestry=False)]) == 0
    assert main(["transfer", *cell]) == 0
    assert "up to date" not in capsys.readouterr().out


@pytest.mark.usefixtures("with_vanilla")  # the micro vanilla ancestry, pre-trained once
def test_a_snapshot_written_by_another_run_is_refused(in_workspace, capsys):
    from safetensors.torch import load_file

    from kind_bench.io import load_metadata, save_tensors

    cell = micro("method=full_finetune", ancestry=False)
    assert main(["transfer", *cell]) == 0
    snapshot = in_workspace / "artifacts/digits/runs/full_finetune/full_finetune-novel-0/step-000008.safetensors"
    meta = {**load_metadata(snapshot), "fingerprint": "another-run"}
    meta.pop("sha256")
    save_tensors(snapshot, load_file(str(snapshot)), meta)
    assert main(["evaluate", *cell]) == 2
    assert "was written by another run" in capsys.readouterr().err


@pytest.mark.usefixtures("with_vanilla")  # the micro vanilla ancestry, pre-trained once
def test_weights_trained_with_another_config_are_not_evaluated_under_this_one(in_workspace, capsys):
    cell = micro("method=full_finetune", ancestry=False)
    assert main(["transfer", *cell, "transfer.lr=0.05"]) == 0
    capsys.readouterr()
    assert main(["evaluate", *cell]) == 2  # the record would say lr 0.006 for weights trained at 0.05
    assert "were trained with another transfer section than this call's" in capsys.readouterr().err
    assert not (in_workspace / PUBLISHED).exists()
    references = []  # evaluation settings may differ; the record names how many reference images were scored
    for limit in ("null", "20"):
        assert main(["evaluate", *cell, "transfer.lr=0.05", "sample.steps=3", f"eval.reference_limit={limit}"]) == 0
        references.append(json.loads((in_workspace / PUBLISHED).read_text())["train_info"]["n_reference"])
    assert references[0] > references[1] == 20


def test_written_files_follow_the_umask(tmp_path):
    path = tmp_path / "record.json"
    write_json(path, {"a": 1})
    assert os.stat(path).st_mode & 0o777 == FILE_MODE == 0o666 & ~_umask()
    assert "namespace=runs" in MICRO


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@pytest.mark.usefixtures("with_vanilla")  # the micro vanilla ancestry, pre-trained once
def test_an_ad_hoc_tuning_leaves_the_published_rate_alone_and_serves_only_its_own_config(in_workspace):
    from kind_bench.errors import UserError
    from kind_bench.methods import compose_cell

    tune = micro("method=full_finetune", "tuning.tasks=[novel]", "tuning.seeds=[0]",
                 "tuning.grids={default:[0.001,0.003]}", "tuning.extend=0", "tuning.samples_per_class=6",
                 ancestry=False)
    assert main(["tune", *tune]) == 0
    assert not (in_workspace / "results/tuning/digits/full_finetune.json").exists()  # the published record
    (record,) = (in_workspace / "results/tuning/digits/adhoc").glob("*/full_finetune.json")
    chosen = json.loads(record.read_text())["chosen_lr"]
    assert compose_cell([*tune, "tuning.lr_source=tuned"]).transfer.lr == chosen  # the same config finds it
    with pytest.raises(UserError, match="no tuned learning rate for method=full_finetune"):
        compose_cell([*tune, "tuning.lr_source=tuned", "transfer.steps=9"])  # another: only the published one
    published = in_workspace / "results/tuning/digits/full_finetune.json"
    write_json(published, {**json.loads(record.read_text()), "chosen_lr": 0.5})  # filed as published, but micro
    with pytest.raises(UserError, match="was tuned with another config than it is filed for"):
        compose_cell([*tune, "tuning.lr_source=tuned", "transfer.steps=9"])
    edited = json.loads(record.read_text())
    edited["config"]["transfer"]["steps"] = 99
    record.write_text(json.dumps(edited))
    with pytest.raises(UserError, match="was tuned with another config than it is filed for"):
        compose_cell([*tune, "tuning.lr_source=tuned"])


def test_a_record_from_before_a_field_existed_compares_at_that_fields_default_only():
    from kind_bench.config import as_dict, compose, with_defaults
    from kind_bench.tuning import tuning_identity

    old = as_dict(compose([]))
    del old["sample"]["precision"]  # written before sample.precision existed
    assert with_defaults(old) == as_dict(compose([]))
    assert tuning_identity(with_defaults(old)) == tuning_identity(as_dict(compose([])))
    assert tuning_identity(with_defaults(old)) != tuning_identity(as_dict(compose(["sample.precision=bf16"])))
    assert with_defaults({"sample": {"precision": "bf16"}})["sample"]["precision"] == "bf16"  # recorded wins
    kind = as_dict(compose(["method=kind"]))
    del kind["method"]["tailors"]  # a method option added later
    assert with_defaults(kind)["method"] == as_dict(compose(["method=kind"]))["method"]
    # what a tuning trial sets itself cannot tell two tunings apart
    assert tuning_identity(as_dict(compose(["eval.draws=5"]))) == tuning_identity(as_dict(compose([])))


def test_how_many_processes_read_the_data_is_not_part_of_a_run():
    from kind_bench.checkpoint import fingerprint
    from kind_bench.config import as_dict
    from kind_bench.identity import ancestry_digest, namespace, seedless_digest
    from kind_bench.methods import compose_ancestry, compose_cell

    cells = [as_dict(compose_cell(["method=kind", "task=novel", "seed=0", *o])) for o in ([], ["data.workers=0"])]
    assert seedless_digest(cells[0]) == seedless_digest(cells[1])
    assert fingerprint(cells[0], "transfer") == fingerprint(cells[1], "transfer")
    assert namespace(compose_cell(["method=kind", "task=novel", "seed=0", "data.workers=0"])) == "runs"
    ancestries = [as_dict(compose_ancestry(o, "kind")) for o in ([], ["data.workers=1"])]
    assert ancestry_digest(ancestries[0]) == ancestry_digest(ancestries[1])
    other_split = as_dict(compose_cell(["method=kind", "data.test_fraction=0.25"]))  # a key that does count
    assert seedless_digest(other_split) != seedless_digest(cells[0])
