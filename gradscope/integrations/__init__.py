"""Callbacks for the trainers people use, each imported only when asked for.

``from gradscope.integrations.lightning import GradscopeCallback`` (Lightning) and
``from gradscope.integrations.transformers import GradscopeCallback`` (Hugging Face
Trainer) record the same run directory as ``gradscope record``; importing gradscope (or
this package) imports neither trainer.
"""
