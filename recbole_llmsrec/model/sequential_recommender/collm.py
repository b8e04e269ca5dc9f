r"""
CoLLM
################################################

Reference:
    Yang Zhang et al. "CoLLM: Integrating Collaborative Embeddings into Large Language Models for
    Recommendation." arXiv:2310.19488, 2023.

Reference code:
    https://github.com/zyang1580/CoLLM

The user prompt lists the history as text (titles and dates) and adds, in CoLLM's words, that
"we have information about the user's preferences encoded in the feature" ``[HistoryEmb]``: one
slot holding the user's vector from the frozen CF teacher (SASRec, as in the LLM-SRec paper's
comparison) through a mapping MLP; each item prompt holds its item's teacher embedding through
the same MLP. The LLM is fine-tuned with LoRA. As in the LLM-SRec paper's comparison, it is
used in next-item retrieval form (``[UserOut]`` / ``[ItemOut]`` vectors, the retrieval loss and
protocol of LLMSRec) instead of answering yes/no for one target; there is no distillation.
CoLLM's mapping is Linear-ReLU-Linear with a 10x hidden layer, tuned after the LoRA stage;
here it is LLM-SRec's ``f_I`` (Linear-LayerNorm-LeakyReLU-Linear), trained jointly with LoRA.
"""

from recbole_llmsrec.model.abstract_recommender import LoRARecommender


class CoLLM(LoRARecommender):
    r"""CoLLM: a LoRA-tuned LLM over text prompts with the user's CF vector as one input token."""

    uses_teacher = True
    injects_history = False
    injects_user = True
