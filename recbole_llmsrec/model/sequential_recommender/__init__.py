"""Sequential recommenders of the plugin."""

from recbole_llmsrec.model.sequential_recommender.llmsrec import LLMSRec

__all__ = ["LLMSRec"]
