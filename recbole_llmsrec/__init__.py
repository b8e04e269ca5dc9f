"""recbole-llmsrec: LLM-SRec (Kim et al., KDD 2025) as a RecBole plugin."""

import importlib.util
import sys

if importlib.util.find_spec("recbole") is None:
    raise ImportError(
        "recbole-llmsrec needs RecBole 1.2.1: `pip install recbole==1.2.1`"
        + (" --no-deps` (its ray requirement has no wheels for this Python; the plugin does not need ray)"
           if sys.version_info >= (3, 12) else "`")
    )

from recbole_llmsrec import compat  # noqa: E402

compat.apply()

__version__ = "0.1.0"
