"""One study, one configuration (a changed base trial is named field by field), and passwords in
storage/tracking URLs never reach the terminal, a file or the study database."""
from __future__ import annotations

import json
import subprocess
import sys
import uuid
from pathlib import Path

import optuna
import pytest
import yaml

from explorer.redact import MaskingFilter, mask, remember
from explorer.study.storage import BASE_CHANGES_ATTR, StorageError, normalize_storage_url, open_study
from explorer.study.load import parse_study
from test_study_fixtures import study_data

SECRET = "Sup3rSecretPW"


def _spec(tmp_path, **base_changes):
    data = study_data("guarded", {"type": "greedy", "base": ["A", "B"]})
    data["base_trial"] = json.loads(json.dumps(data["base_trial"]))
    for dotted, value in base_changes.items():
        node = data["base_trial"]
        *head, last = dotted.split("__")
        for key in head:
            node = node[key]
        node[last] = value
    return parse_study(data, "guarded.yaml", tmp_path)


def test_a_changed_base_trial_is_an_error_naming_the_fields_unless_accepted(tmp_path):
    url = f"sqlite:///{tmp_path / 'study.db'}"
    open_study(_spec(tmp_path), url)
    open_study(_spec(tmp_path), url)  # the same configuration resumes
    with pytest.raises(StorageError) as err:
        open_study(_spec(tmp_path, eval__limit=4, llm__template="vicuna_v1"), url)
    line = str(err.value)
    assert "\n" not in line and "different base trial" in line
    assert "eval.limit (8 -> 4)" in line and 'llm.template ("plain" -> "vicuna_v1")' in line
    assert "--accept-base-change" in line

    study = open_study(_spec(tmp_path, eval__limit=4), url, accept_base_change=True)
    history = study._storage.get_study_system_attrs(study._study_id)[BASE_CHANGES_ATTR]
    assert len(history) == 1 and history[0]["changed"] == ["eval.limit (8 -> 4)"]
    open_study(_spec(tmp_path, eval__limit=4), url)  # the accepted one is now the study's
    with pytest.raises(StorageError, match=r"eval\.limit \(4 -> 8\)"):
        open_study(_spec(tmp_path), url)


def test_mask_hides_url_passwords_and_remembered_ones():
    assert mask("postgresql://bob:pa%40ss@db:5432/x") == "postgresql://bob:***@db:5432/x"
    assert mask("http://u:p@host/ and sqlite:////tmp/a.db") == "http://u:***@host/ and sqlite:////tmp/a.db"
    assert mask("postgresql://bob@db/x") == "postgresql://bob@db/x"  # no password: unchanged
    remember(f"postgresql://bob:{SECRET}@db/x")
    assert mask(f"driver says: password {SECRET!r} rejected") == "driver says: password '***' rejected"
    import logging

    record = logging.LogRecord("x", logging.INFO, __file__, 1, "open %s", (f"mysql://a:{SECRET}@h/d",), None)
    MaskingFilter().filter(record)
    assert record.getMessage() == "open mysql://a:***@h/d"


def test_an_unreachable_database_error_hides_its_password(tmp_path):
    from typer.testing import CliRunner

    from explorer.cli.main import app

    study = tmp_path / "s.yaml"
    study.write_text(yaml.safe_dump(study_data("unreach", {"type": "greedy", "base": ["A", "B"]})))
    res = CliRunner().invoke(app, ["run", str(study), "--workdir", str(tmp_path / "w"),
                                   "--storage", f"postgresql://postgres:{SECRET}@127.0.0.1:1/none"])
    assert res.exit_code == 2
    assert SECRET not in res.output and "postgres:***@127.0.0.1:1/none" in res.output


CHILD = r'''
import sys
sys.path[:0] = [sys.argv[1], sys.argv[2]]
import explorer.controller
from explorer.cli.main import app
from test_report_support import PaperRunner
explorer.controller.LocalRunner = lambda: PaperRunner()
app(sys.argv[3:])
'''


@pytest.mark.postgres
@pytest.mark.slow
def test_a_study_with_a_secret_in_its_url_leaves_it_nowhere(tmp_path, postgres_url):
    from sqlalchemy.engine import make_url

    name = f"secret_{uuid.uuid4().hex[:8]}"
    url = make_url(postgres_url).set(password=SECRET).render_as_string(hide_password=False)
    assert SECRET in url  # trust auth: any password is accepted, so the study really runs
    study = tmp_path / "s.yaml"
    study.write_text(yaml.safe_dump(study_data(name, {"type": "greedy", "base": ["A", "B"]},
                                               resources={"max_concurrent_trials": 2})))
    work = tmp_path / "work"
    here = Path(__file__).resolve().parent
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    proc = subprocess.run([sys.executable, str(script), str(here.parents[1]), str(here), "run", str(study),
                           "--workdir", str(work), "--storage", url], capture_output=True, text=True, timeout=300)
    try:
        assert proc.returncode == 0, proc.stderr[-2000:]
        assert "***" in proc.stderr  # the storage URL was shown, masked
        assert SECRET not in proc.stdout + proc.stderr
        leaks = [p for p in work.rglob("*") if p.is_file() and SECRET.encode() in p.read_bytes()]
        assert leaks == []
        stored = optuna.load_study(study_name=name, storage=normalize_storage_url(postgres_url))
        blob = json.dumps([stored.user_attrs, stored._storage.get_study_system_attrs(stored._study_id)]
                          + [[t.user_attrs, t.system_attrs, t.params] for t in stored.trials], default=str)
        assert len(stored.trials) == 11 and SECRET not in blob
    finally:
        optuna.delete_study(study_name=name, storage=normalize_storage_url(postgres_url))
