"""PyTorch for the learned detector: where it is looked for and how it is installed.

The plugin manages one dependency folder per QGIS profile,
``<profile>/python/anomaly_detector_deps`` (override with the environment
variable ``ANOMALY_DETECTOR_DEPS``). When it exists it is appended to
``sys.path`` as soon as the plugin loads (``classFactory``), so QGIS desktop
and ``qgis_process`` both find what was installed there; packages already
installed for QGIS's Python keep priority.

The desktop offers to install the CPU build of PyTorch there with
``python -m pip install --target <folder> torch --index-url
https://download.pytorch.org/whl/cpu`` (run in a background task). RX and
polygonize never need it.
"""

import importlib
import importlib.util
import os
import shutil
import subprocess
import sys

ENV_FOLDER = "ANOMALY_DETECTOR_DEPS"
FOLDER_NAME = "anomaly_detector_deps"
TORCH_INDEX = "https://download.pytorch.org/whl/cpu"


def profile_folder():
    """The active QGIS profile folder (``~/.local/share/QGIS/QGIS3/profiles/default`` by default)."""
    try:
        from qgis.core import QgsApplication
        path = QgsApplication.qgisSettingsDirPath()
    except Exception:  # noqa: BLE001 - no QGIS (plain Python): use the default profile
        path = ""
    if not path:
        path = os.path.join(os.path.expanduser("~"), ".local", "share", "QGIS", "QGIS3",
                            "profiles", "default")
    return os.path.normpath(path)


def deps_folder():
    """The plugin-managed folder that holds PyTorch when the plugin installed it."""
    override = os.environ.get(ENV_FOLDER)
    if override:
        return os.path.abspath(override)
    return os.path.join(profile_folder(), "python", FOLDER_NAME)


def add_deps_to_path(folder=None):
    """Append the dependency folder to ``sys.path`` when it exists; True if it is on it."""
    folder = folder or deps_folder()
    if not os.path.isdir(folder):
        return False
    if folder not in sys.path:
        sys.path.append(folder)
        importlib.invalidate_caches()
    return True


def torch_available():
    """Whether ``import torch`` can work (checked without importing it)."""
    if "torch" in sys.modules:
        return True
    try:
        return importlib.util.find_spec("torch") is not None
    except (ImportError, ValueError):
        return False


def python_executable():
    """The Python interpreter that QGIS embeds (``sys.executable`` is QGIS itself there)."""
    exe = sys.executable or ""
    if os.path.basename(exe).lower().startswith("python"):
        return exe
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    if os.name == "nt":
        for candidate in (os.path.join(sys.exec_prefix, "python.exe"),
                          os.path.join(sys.exec_prefix, "python3.exe")):
            if os.path.isfile(candidate):
                return candidate
    for name in (f"python{version}", "python3"):
        found = shutil.which(name)
        if found:
            return found
    return "python3"


def install_command(folder=None):
    """The pip command line that installs the CPU build of PyTorch into ``folder``."""
    return [python_executable(), "-m", "pip", "install", "--upgrade", "--target",
            folder or deps_folder(), "torch", "--index-url", TORCH_INDEX]


def install_command_text(folder=None):
    """:func:`install_command` as one line to paste into a terminal."""
    parts = install_command(folder)
    return " ".join(f'"{p}"' if " " in p else p for p in parts)


def torch_missing_message():
    """The sentence shown (and raised by anomaly:detect) when PyTorch is missing."""
    return (
        "Anomaly detection needs PyTorch, which is not installed for the Python that QGIS "
        "uses. In QGIS, click 'Install PyTorch' in the message bar (shown when the plugin "
        "loads or from 'Detect anomalies in active layer'), or install the CPU build "
        f"yourself with: {install_command_text()} and restart QGIS. "
        "RX and polygonize work without it.")


def install_torch(folder=None, is_cancelled=None, timeout=3600):
    """Run the pip install; return ``(ok, last lines of pip's output)``."""
    folder = folder or deps_folder()
    os.makedirs(folder, exist_ok=True)
    cmd = install_command(folder)
    kwargs = {}
    if os.name == "nt":
        kwargs["creationflags"] = getattr(subprocess, "CREATE_NO_WINDOW", 0)
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            **kwargs)
    lines = []
    for line in proc.stdout:
        lines.append(line.rstrip())
        del lines[:-40]
        if is_cancelled is not None and is_cancelled():
            proc.kill()
            proc.wait()
            return False, "Installation cancelled."
    try:
        code = proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        return False, "pip did not finish in time."
    add_deps_to_path(folder)
    return code == 0, "\n".join(lines[-15:])
