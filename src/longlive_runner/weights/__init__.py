"""Weights on disk: `download` (the published files from the Hugging Face hub) and `convert` (the Wan
and LongLive folders merged into one converted folder). Both register their own subcommand.
"""
