import pytest

from llmkit import data


@pytest.fixture(scope="session")
def data_run(tmp_path_factory):
    """The data stage on the whole bundled corpus, run once per test session."""
    run_dir = tmp_path_factory.mktemp("run")
    result = data.run(data.config_for("tiny"), run_dir, progress=False)
    return result
