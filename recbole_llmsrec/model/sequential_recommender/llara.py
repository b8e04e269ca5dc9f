r"""
LLaRA
################################################

Reference:
    Jiayi Liao et al. "LLaRA: Large Language-Recommendation Assistant." In SIGIR 2024.

Reference code:
    https://github.com/ljy0ustc/LLaRA

A hybrid prompt: each history title is followed by a ``[HistoryEmb]`` slot holding the item's
embedding from the frozen CF teacher through ``f_I`` (LLMSRec's prompt), and the LLM is
fine-tuned with LoRA. As in the LLM-SRec paper's comparison, it is used in next-item
retrieval form (``[UserOut]`` / ``[ItemOut]`` vectors, the retrieval loss and protocol of
LLMSRec) instead of generating the title of the next item; there is no distillation.
"""

from recbole_llmsrec.model.abstract_recommender import LoRARecommender


class LLaRA(LoRARecommender):
    r"""LLaRA: a LoRA-tuned LLM over hybrid (text + CF embedding) prompts."""

    uses_teacher = True
    injects_history = True
