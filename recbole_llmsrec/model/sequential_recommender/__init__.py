"""Sequential recommenders of the plugin."""

from recbole_llmsrec.model.sequential_recommender.collm import CoLLM
from recbole_llmsrec.model.sequential_recommender.llara import LLaRA
from recbole_llmsrec.model.sequential_recommender.llmsrec import LLMSRec
from recbole_llmsrec.model.sequential_recommender.tallrec import TALLRec

__all__ = ["CoLLM", "LLMSRec", "LLaRA", "TALLRec"]
