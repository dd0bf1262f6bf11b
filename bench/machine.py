"""Machine info stamped into every benchmark's JSON, so numbers can be compared honestly."""

from __future__ import annotations

import os
import platform


def machine_info() -> dict:
    import torch

    info = {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "cuda": torch.cuda.is_available(),
        "load_avg_1m": os.getloadavg()[0],
    }
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def label_and_save(fig, ax, path, ylabel: str, title: str, legend_size: int | None = None, dpi: int = 110) -> None:
    """The last lines of every benchmark plot: axis label, title, legend, layout, file."""
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.legend(fontsize=legend_size) if legend_size else ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=dpi)


def title_and_save(fig, path, title: str, dpi: int = 110) -> None:
    """The last lines of a multi-panel benchmark plot: the figure's title, layout, file."""
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=dpi)
