r"""
TALLRec
################################################

Reference:
    Keqin Bao et al. "TALLRec: An Effective and Efficient Tuning Framework to Align Large Language
    Model with Recommendation." In RecSys 2023.

Reference code:
    https://github.com/SAI990323/TALLRec

The LLM reads the user's history as text only (titles and dates, no injected vector) and is
fine-tuned with LoRA. As in the LLM-SRec paper's comparison, it is used in next-item
retrieval form: the hidden state at ``[UserOut]`` / ``[ItemOut]`` through ``f_user`` /
``f_item`` gives user and item vectors, trained with the same retrieval loss and evaluated
with the same protocol as LLMSRec, instead of generating a yes/no answer.
"""

from recbole_llmsrec.model.abstract_recommender import LoRARecommender


class TALLRec(LoRARecommender):
    r"""TALLRec: a LoRA-tuned LLM over text-only prompts."""

    uses_teacher = False
    injects_history = False
