"""The `lensops` command line: data commands, exit codes, and the train passthrough."""

from lensops.cli import main


def test_data_synth_then_check(tmp_path, capsys):
    out = tmp_path / "cls"
    assert (
        main(
            ["data", "synth", "--task", "classification", "--out", str(out), "--n", "30", "--seed", "1", "--size", "32"]
        )
        == 0
    )
    assert main(["data", "check", str(out), "--task", "classification", "--report", str(tmp_path / "r.json")]) == 0
    assert (tmp_path / "r.json").is_file()


def test_data_check_fails_on_corrupt_image(tmp_path, capsys):
    out = tmp_path / "cls"
    main(["data", "synth", "--task", "classification", "--out", str(out), "--n", "30", "--seed", "1", "--size", "32"])
    victim = sorted(out.rglob("*.jpg"))[3]
    victim.write_bytes(victim.read_bytes()[:100])
    code = main(["data", "check", str(out), "--task", "classification"])
    err = capsys.readouterr().err
    assert code != 0 and victim.name in err, err
    assert main(["data", "check", str(out), "--task", "classification", "--policy", "skip"]) == 0


def test_video_synth_writes_mp4_and_ground_truth(tmp_path):
    assert main(["data", "synth", "--task", "video", "--out", str(tmp_path / "v"), "--n", "10"]) == 0
    assert (tmp_path / "v" / "video.mp4").is_file() and (tmp_path / "v" / "video_gt.json").is_file()


def test_train_help_passes_through(capsys):
    try:
        main(["train", "--help"])
    except SystemExit as exc:
        assert exc.code == 0
    assert "--init-from" in capsys.readouterr().out


def test_the_pipeline_stages_are_named_once():
    """`lensops STAGE` for each of pipelines.stages.STAGES, which pipelines.cli parses and dvc.yaml runs
    (one `foreach` stage per pipeline stage, in the same order, after the training stages)."""
    from pathlib import Path

    import yaml

    from lensops.cli import build_parser
    from pipelines.cli import build_parser as pipeline_parser
    from pipelines.stages import STAGES

    def commands(parser) -> list[str]:
        return list(next(a for a in parser._actions if a.dest == "command").choices)

    assert [c for c in commands(build_parser()) if c in STAGES] == list(STAGES)
    assert commands(pipeline_parser()) == list(STAGES)
    stages = yaml.safe_load((Path(__file__).resolve().parents[2] / "dvc.yaml").read_text())["stages"]
    assert [name for name, stage in stages.items() if "foreach" in stage] == list(STAGES)
