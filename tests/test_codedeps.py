from __future__ import annotations

from pathlib import Path

from dynsparse.codedeps import library_modules


def test_transitive_imports_are_found(tmp_path: Path) -> None:
    package = tmp_path / "dynsparse"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "a.py").write_text("from dynsparse import b\nimport numpy\n")
    (package / "b.py").write_text("from .c import thing\n")
    (package / "c.py").write_text("thing = 1\n")
    (package / "unused.py").write_text("")
    script = tmp_path / "stage.py"
    script.write_text("import os\nfrom dynsparse.a import x\n")
    assert library_modules(script, package) == [str(package / f"{m}.py") for m in "abc"]


def test_every_stage_script_imports_only_existing_modules() -> None:
    workflow = Path(__file__).resolve().parents[1] / "workflow"
    for script in workflow.glob("*.py"):
        for module in library_modules(script, workflow / "dynsparse"):
            assert Path(module).is_file()


def test_the_checkpoint_hash_covers_every_training_module() -> None:
    from dynsparse.checkpoint import training_code_files

    names = {path.name for path in training_code_files()}
    expected = {"train.py", "steps.py", "models.py", "layers.py", "ops.py", "records.py"}
    assert expected | {"rigl.py", "methods.py", "registry.py", "board.py"} <= names
    assert "render.py" not in names and "summary.py" not in names


def test_picture_and_table_stages_do_not_depend_on_the_model_code() -> None:
    workflow = Path(__file__).resolve().parents[1] / "workflow"
    for script in ("extract_records", "render_frames", "summarize"):
        names = {
            Path(m).name for m in library_modules(workflow / f"{script}.py", workflow / "dynsparse")
        }
        assert not names & {"models.py", "layers.py", "ops.py", "train.py"}, (script, names)
