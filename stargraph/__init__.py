"""stargraph: the star-graph testbed (Bachmann & Nagarajan 2024; Setlur et al. 2024, Fig. 8).

Modules: :mod:`~stargraph.graphs` (seeded generator, Next-Token-Failures format),
:mod:`~stargraph.tokenizer`, :mod:`~stargraph.model` (nanoGPT-style GPT), :mod:`~stargraph.train`
(SFT), :mod:`~stargraph.evaluate` (exact metrics from one teacher-forced pass),
:mod:`~stargraph.rollouts` (sampling, exact and Monte-Carlo Q), :mod:`~stargraph.loop` (the one
training loop: schedule, optimizer, evaluations, kill-and-resume), :mod:`~stargraph.objectives` (the
post-training objective registry), :mod:`~stargraph.posttrain` (pools and batches),
:mod:`~stargraph.reproduce`, :mod:`~stargraph.sweep`, :mod:`~stargraph.figures` and the CLI
:mod:`~stargraph.cli`.  Every loss, advantage and pair
builder comes from :mod:`shared`.  Never imports transformers or vLLM.
"""

__all__ = ["__version__"]
__version__ = "0.1.0"
