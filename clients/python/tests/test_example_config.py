"""examples/jupyterhub_config.py must load and install the hook."""

from __future__ import annotations

from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[3]
EXAMPLE = REPO_ROOT / "examples" / "jupyterhub_config.py"


class Section(dict):
    """Stands in for traitlets' Config: c.A.b = v records {"A": {"b": v}}."""

    def __getattr__(self, name):
        if name.startswith("__"):
            raise AttributeError(name)
        return self.setdefault(name, Section())

    def __setattr__(self, name, value):
        self[name] = value


def test_example_config_loads(tmp_path, monkeypatch, server, spawner_token_file):
    monkeypatch.setenv("PRIVLEDGER_SERVER", server.url)
    monkeypatch.setenv("PRIVLEDGER_TOKEN_FILE", str(spawner_token_file))
    c = Section()
    code = compile(EXAMPLE.read_text(), str(EXAMPLE), "exec")
    exec(code, {"get_config": lambda: c, "__file__": str(EXAMPLE)})
    assert c.JupyterHub.spawner_class == "dockerspawner.DockerSpawner"
    hook = c.DockerSpawner.pre_spawn_hook
    assert callable(hook)
    assert hook.settings.target.target == f"127.0.0.1:{server.port}"
    assert hook.settings.on_unavailable == "deny"
    assert "/var/run/docker.sock" not in c.DockerSpawner.volumes
