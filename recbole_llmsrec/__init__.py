"""recbole-llmsrec: LLM-SRec (Kim et al., KDD 2025) as a RecBole plugin."""

from recbole_llmsrec import compat

compat.apply()

__version__ = "0.1.0"
