"""Networks saved with `torch.export.save` (.pt2 files), loaded without their Python code.

torch.export's format rebuilds the graph from its own schema (no pickled code is run), and it
supersedes TorchScript, which torch 2.13 deprecates. A loaded program is an nn.Module whose
weights are frozen constants of the graph as exported (a BatchNorm exported in eval mode keeps
using its running statistics); gradients still flow to its inputs.
"""

from __future__ import annotations

import logging
import os
import zipfile

import torch
from torch import nn


def load_program(path: str | os.PathLike) -> nn.Module:
    """The module of the torch.export program at `path`; ValueError naming the file if it is
    not one."""
    if not zipfile.is_zipfile(path):  # a .pt2 program is a zip archive
        raise ValueError(f"{path}: not a torch.export program (not a .pt2 archive)")
    quiet = logging.getLogger("torch.export")  # it logs a traceback before raising
    level = quiet.level
    quiet.setLevel(logging.CRITICAL)
    try:
        program = torch.export.load(str(path))
    except Exception as e:  # noqa: BLE001 - any unreadable file is the user's to fix
        raise ValueError(f"{path}: not a torch.export program ({type(e).__name__}: {e})"
                         ) from None
    finally:
        quiet.setLevel(level)
    return program.module()
